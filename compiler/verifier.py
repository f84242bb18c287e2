"""Checks that a graph is well formed: every value defined once before use,
types and shapes consistent with each op's inference, attributes valid.

Runs after every pass in tests and with `--verify`; a failure after a pass
names the pass, since a malformed graph there is a compiler bug.
"""
from __future__ import annotations

from .errors import AotcError, VerificationError
from .ir import Graph
from .ops import get_op, is_registered


def verify(graph: Graph, after: str | None = None) -> None:
    problems: list[str] = []
    defined: dict[str, object] = {}

    def define(v, where):
        if v.name in defined:
            problems.append(f"value %{v.name} is defined twice ({where})")
        defined[v.name] = v

    for v in graph.inputs:
        define(v, "graph input")
    for name, v in graph.initializers.items():
        if v.const is None:
            problems.append(f"initializer %{name} has no data")
        elif tuple(v.const.shape) != v.shape or v.const.dtype != v.dtype.numpy:
            problems.append(f"initializer %{name} is declared {v.type_str} but holds {v.const.dtype}{list(v.const.shape)}")
        if name != v.name:
            problems.append(f"initializer key {name!r} differs from its value's name %{v.name}")
        define(v, "initializer")
    node_names = set()
    for node in graph.nodes:
        where = f"node {node.name!r} ({node.op_type})"
        if node.name in node_names:
            problems.append(f"{where}: node name used twice")
        node_names.add(node.name)
        if not is_registered(node.op_type):
            problems.append(f"{where}: unknown op type")
            continue
        for v in node.inputs:
            if v is not None and defined.get(v.name) is not v:
                problems.append(f"{where}: input %{v.name} is not defined before use")
        for v in node.outputs:
            if v.producer is not node:
                problems.append(f"{where}: output %{v.name} does not record this node as its producer")
            define(v, where)
        op = get_op(node.op_type)
        lo, hi = op.num_inputs
        if not lo <= len(node.inputs) <= hi:
            problems.append(f"{where}: {len(node.inputs)} inputs, the op takes {lo}..{hi}")
            continue
        try:
            attrs = op.normalize_attrs(node.attrs, node.name)
            infos = op.infer(node.inputs, attrs)
        except AotcError as e:
            problems.append(f"{where}: {e}")
            continue
        if len(infos) < len(node.outputs):
            problems.append(f"{where}: {len(node.outputs)} outputs, the op produces {len(infos)}")
        for v, (shape, dtype) in zip(node.outputs, infos):
            if v.shape != tuple(shape) or v.dtype != dtype:
                problems.append(f"{where}: output %{v.name} is recorded as {v.type_str}, "
                                f"inference gives {dtype}[{','.join(map(str, shape))}]")
    for v in graph.outputs:
        if defined.get(v.name) is not v:
            problems.append(f"graph output %{v.name} is not defined")
    if problems:
        head = f"The graph is malformed after pass {after!r}" if after else "The graph is malformed"
        shown = problems[:20]
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise VerificationError(f"{head}: " + "; ".join(shown) + more + ".")

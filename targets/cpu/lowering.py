"""How IR nodes become kernel calls: the lowering registry and the `Call`
records the memory planner and the driver work from.

Each op type registers one lowering (`@lowers("MatMul")`). A lowering looks
at one node and returns a list of steps: `Call`s of a TVM PrimFunc over
operands (graph values, temporaries it creates, or constants it derives such
as pre-packed weights), or an `Alias` (the output is the input's bytes seen
with another shape, e.g. Reshape). A Call's `key` names everything its
PrimFunc depends on, so identical nodes (the six layers of a transformer)
share one kernel and the PrimFunc is built once per key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from compiler.dtypes import DType
from compiler.errors import AotcError
from compiler.ir import Graph, Node, Value

from .target import CpuTarget


class NoLoweringError(Exception):
    """Raised by a lowering for a node it cannot handle (dtype, attribute)."""


class UnsupportedOnTargetError(AotcError):
    """The graph has nodes this target cannot lower; every one is named."""

    def __init__(self, target: str, problems: dict[str, list[tuple[str, str]]]):
        self.problems = problems
        parts = []
        for op in sorted(problems):
            items = problems[op]
            names = ", ".join(repr(n) for n, _ in items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
            reasons = sorted({r for _, r in items if r})
            why = f" ({'; '.join(reasons)})" if reasons else ""
            parts.append(f"{op} ×{len(items)}: {names}{why}")
        super().__init__(
            f"The {target} target cannot lower {sum(len(v) for v in problems.values())} node(s) of "
            f"{len(problems)} op type(s): " + "; ".join(parts) + ". The reference interpreter runs them, "
            "but no kernel exists for them on this target yet.")


@dataclass(eq=False)
class Operand:
    """A kernel argument: a value (graph value, temporary or derived constant)
    seen by the kernel with `shape` (any shape with the same element count)."""
    value: Value
    shape: tuple[int, ...]

    @property
    def dtype(self) -> DType:
        return self.value.dtype


@dataclass(eq=False)
class Call:
    key: str
    build: Callable[[], object]      # -> tvm PrimFunc (parameters in operand order)
    operands: list[Operand]
    node: Node
    num_outputs: int = 1             # the last num_outputs operands are written
    flops: int = 0
    kernel: str = ""                 # symbol, assigned by the codegen


@dataclass(eq=False)
class Alias:
    """`dst` shares `src`'s bytes (same element count and dtype)."""
    src: Value
    dst: Value
    node: Node


class LoweringContext:
    """What a lowering may use: the target, and factories for temporaries and derived constants."""

    def __init__(self, graph: Graph, target: CpuTarget):
        self.graph = graph
        self.target = target
        self._derived: dict[str, Value] = {}
        self._temps = 0

    @property
    def lanes(self) -> int:
        return self.target.lanes

    def temp(self, like_name: str, shape: Sequence[int], dtype: DType) -> Value:
        self._temps += 1
        return Value(f"{like_name}.tmp{self._temps}", shape, dtype)

    def derived_const(self, key: str, make: Callable[[], np.ndarray]) -> Value:
        """A constant computed at compile time (e.g. a packed weight), made once per key."""
        if key not in self._derived:
            data = np.ascontiguousarray(make())
            self._derived[key] = Value(key, data.shape, DType.from_numpy(data.dtype), const=data)
        return self._derived[key]


Lowering = Callable[[Node, LoweringContext], list]
_LOWERINGS: dict[str, Lowering] = {}


def lowers(*op_types: str):
    def deco(fn: Lowering) -> Lowering:
        for op in op_types:
            if op in _LOWERINGS:
                raise RuntimeError(f"two CPU lowerings for {op}")
            _LOWERINGS[op] = fn
        return fn
    return deco


def lowered_ops() -> list[str]:
    _load_all()
    return sorted(_LOWERINGS)


def _load_all() -> None:
    from . import lower_elementwise, lower_fused, lower_gemm, lower_nn, lower_reduce, lower_shape  # noqa: F401
    from . import lower_quant  # noqa: F401  (int8: VNNI GEMM, Quantize/DequantizeLinear)
    from . import lower_blocked  # noqa: F401  (NCHWc convolutions, after passes.blocked_layout)
    from . import lower_extra_ops  # noqa: F401  (ConvTranspose, InstanceNormalization, LRN, ReduceProd, Shape & co.)


def operand(v: Value, shape: Sequence[int] | None = None) -> Operand:
    return Operand(v, tuple(v.shape if shape is None else shape))


def lower_graph(graph: Graph, target: CpuTarget) -> tuple[list, LoweringContext]:
    """Every node's steps, in graph order; one error naming every node that has no lowering."""
    _load_all()
    ctx = LoweringContext(graph, target)
    steps: list = []
    problems: dict[str, list[tuple[str, str]]] = {}
    for node in graph.nodes:
        fn = _LOWERINGS.get(node.op_type)
        if fn is None:
            problems.setdefault(node.op_type, []).append((node.name, ""))
            continue
        try:
            steps.extend(fn(node, ctx))
        except NoLoweringError as e:
            problems.setdefault(node.op_type, []).append((node.name, str(e)))
    if problems:
        raise UnsupportedOnTargetError(target.name, problems)
    return drop_dead_steps(graph, steps), ctx


def drop_dead_steps(graph: Graph, steps: list) -> list:
    """Steps whose results nothing reads (e.g. a Pad a convolution reads through) are dropped."""
    needed = {v.name for v in graph.outputs}
    kept = []
    for s in reversed(steps):
        if isinstance(s, Alias):
            if s.dst.name in needed:
                needed.add(s.src.name)
                kept.append(s)
            continue
        outs = s.operands[len(s.operands) - s.num_outputs:]
        if any(o.value.name in needed for o in outs):
            needed.update(o.value.name for o in s.operands[:len(s.operands) - s.num_outputs])
            kept.append(s)
    return kept[::-1]


def attrs_key(node: Node) -> str:
    def fmt(v):
        if isinstance(v, np.ndarray):
            return f"arr{v.dtype}{list(v.shape)}{v.reshape(-1).tolist()[:16]}"
        return repr(v)
    return ",".join(f"{k}={fmt(v)}" for k, v in sorted(node.attrs.items()))


def sig(*operands: Operand) -> str:
    return ";".join(f"{o.dtype}{list(o.shape)}" for o in operands)

"""aotc's graph IR: `Value`s with static shapes and dtypes, `Node`s that apply
registered ops, and a `Graph` that holds them in topological order.

The IR is deliberately small (in the spirit of torch.fx): a graph reads like
the program it computes, and `str(graph)` is a stable text form that diffs
well, one line per node.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterable, Sequence

import numpy as np

from .dtypes import DType

Shape = tuple[int, ...]


class Value:
    """A tensor flowing through the graph: a graph input, a constant
    (initializer, `const` holds its data) or a node output."""

    __slots__ = ("name", "shape", "dtype", "producer", "const")

    def __init__(self, name: str, shape: Sequence[int], dtype: DType, producer: "Node | None" = None,
                 const: np.ndarray | None = None):
        self.name = name
        self.shape: Shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.producer = producer
        self.const = const

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def type_str(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type_str}"


class Node:
    """One application of a registered op. `inputs` may contain None for an
    omitted optional input; `attrs` are normalized by the op's schema."""

    __slots__ = ("op_type", "name", "inputs", "outputs", "attrs")

    def __init__(self, op_type: str, name: str, inputs: list[Value | None], outputs: list[Value],
                 attrs: dict[str, Any]):
        self.op_type = op_type
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.attrs = attrs

    @property
    def op(self):
        from .ops import get_op
        return get_op(self.op_type)

    def __repr__(self) -> str:
        return format_node(self)


class Graph:
    """Inputs, outputs, constants and nodes in topological order."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.initializers: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._insert_at: int | None = None  # add_node appends unless inside inserting_before()

    # -- construction -------------------------------------------------------
    def unique_name(self, base: str) -> str:
        base = base or "v"
        if base not in self._names:
            self._names.add(base)
            return base
        i = 1
        while f"{base}_{i}" in self._names:
            i += 1
        name = f"{base}_{i}"
        self._names.add(name)
        return name

    def _unique_node_name(self, base: str) -> str:
        base = base or "node"
        name, i = base, 1
        while name in self._node_names:
            name = f"{base}_{i}"
            i += 1
        self._node_names.add(name)
        return name

    def add_input(self, name: str, shape: Sequence[int], dtype: DType) -> Value:
        v = Value(self.unique_name(name), shape, dtype)
        self.inputs.append(v)
        return v

    def add_const(self, name: str, data: np.ndarray) -> Value:
        data = np.asarray(data)
        v = Value(self.unique_name(name), data.shape, DType.from_numpy(data.dtype), const=data)
        self.initializers[v.name] = v
        return v

    def add_node(self, op_type: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None,
                 name: str = "", output_names: Sequence[str] | None = None, num_outputs: int | None = None
                 ) -> Node:
        """Append a node; its output shapes and dtypes come from the op's inference."""
        from .ops import get_op
        from .ops.registry import OpDefinitionError
        op = get_op(op_type)
        attrs = op.normalize_attrs(attrs or {}, node_name=name)
        lo, hi = op.num_inputs
        if not lo <= len(inputs) <= hi:
            # Refused here, not at run time: the interpreter would silently ignore extra inputs
            # (e.g. a Clip given min/max as inputs, which aotc's Clip reads from attributes).
            raise OpDefinitionError(
                f"Node {name or op_type!r} ({op_type}) has {len(inputs)} inputs; aotc's {op_type} takes "
                f"{lo}..{hi}. Parameters ONNX passes as inputs (Clip's min/max, Reshape's shape, Slice's "
                "starts, ...) are attributes in aotc's IR.")
        infos = op.infer(list(inputs), attrs)
        if num_outputs is not None:
            infos = infos[:num_outputs]
        node_name = self._unique_node_name(name or op_type)
        node = Node(op_type, node_name, list(inputs), [], attrs)
        for i, (shape, dtype) in enumerate(infos):
            base = output_names[i] if output_names and i < len(output_names) and output_names[i] else f"{node_name}:{i}"
            node.outputs.append(Value(self.unique_name(base), shape, dtype, producer=node))
        if self._insert_at is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self._insert_at, node)
            self._insert_at += 1
        return node

    @contextlib.contextmanager
    def inserting_before(self, node: Node):
        """Nodes added inside the block go right before `node` (keeps topological order when
        a rewrite replaces `node`, whose inputs are all defined earlier)."""
        saved = self._insert_at
        self._insert_at = self.nodes.index(node)
        try:
            yield
        finally:
            self._insert_at = saved

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Point every consumer (and graph output) of `old` at `new`. A graph output keeps its
        user-visible name: `new` takes it over when `old` was an output."""
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        if old in self.outputs:
            self.outputs = [new if v is old else v for v in self.outputs]
            if new.producer is not None and new not in self.inputs:
                old_name, new.name, old.name = old.name, old.name, new.name
                self._names.update((old_name, old.name))

    def copy(self) -> "Graph":
        """An independent copy (new Values and Nodes; the read-only constant arrays and attribute values are
        shared). Iterative, so deep graphs do not hit Python's recursion limit as copy.deepcopy does."""
        g = Graph(self.name)
        new: dict[int, Value] = {}

        def val(v: Value | None) -> Value | None:
            if v is None:
                return None
            if id(v) not in new:
                new[id(v)] = Value(v.name, v.shape, v.dtype, const=v.const)
            return new[id(v)]
        g.inputs = [val(v) for v in self.inputs]
        g.initializers = {k: val(v) for k, v in self.initializers.items()}
        for n in self.nodes:
            node = Node(n.op_type, n.name, [val(v) for v in n.inputs], [val(v) for v in n.outputs], dict(n.attrs))
            for o in node.outputs:
                o.producer = node
            g.nodes.append(node)
        g.outputs = [val(v) for v in self.outputs]
        g._names, g._node_names = set(self._names), set(self._node_names)
        return g

    # -- queries ------------------------------------------------------------
    def values(self) -> Iterable[Value]:
        yield from self.inputs
        yield from self.initializers.values()
        for n in self.nodes:
            yield from n.outputs

    def consumers(self) -> dict[str, list[Node]]:
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    uses.setdefault(v.name, []).append(n)
        return uses

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameter_count(self) -> int:
        return sum(v.size for v in self.initializers.values())

    def parameter_bytes(self) -> int:
        return sum(v.nbytes for v in self.initializers.values())

    def remove_unused(self) -> int:
        """Drop nodes and constants that no graph output depends on; returns nodes removed."""
        live = {v.name for v in self.outputs}
        kept = []
        for n in reversed(self.nodes):
            if any(o.name in live for o in n.outputs):
                kept.append(n)
                live.update(v.name for v in n.inputs if v is not None)
        removed = len(self.nodes) - len(kept)
        self.nodes = kept[::-1]
        self.initializers = {k: v for k, v in self.initializers.items() if k in live}
        return removed

    def __str__(self) -> str:
        return format_graph(self)


# -- text form --------------------------------------------------------------
def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return repr(float(np.float32(v))) if np.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_attr(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, np.ndarray):
        return f"tensor<{DType.from_numpy(v.dtype)}[{','.join(map(str, v.shape))}]>"
    return str(v)


def format_node(n: Node) -> str:
    outs = ", ".join(f"%{o.name}: {o.type_str}" for o in n.outputs)
    ins = ", ".join("%" + v.name if v is not None else "_" for v in n.inputs)
    attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
    attrs = f" {{{attrs}}}" if attrs else ""
    return f"{outs} = {n.op_type}({ins}){attrs}  # {n.name}"


def const_digest(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:12]


def format_graph(g: Graph) -> str:
    lines = [f"graph {g.name}("]
    lines += [f"  %{v.name}: {v.type_str}," for v in g.inputs]
    lines.append(f") -> ({', '.join('%' + v.name for v in g.outputs)}) {{")
    for v in g.initializers.values():
        body = (np.array2string(v.const.reshape(-1), separator=",", threshold=8)
                if v.size <= 8 else f"sha256:{const_digest(v.const)}")
        lines.append(f"  const %{v.name}: {v.type_str} = {body}")
    lines += ["  " + format_node(n) for n in g.nodes]
    lines.append(f"  return {', '.join('%' + v.name for v in g.outputs)}")
    lines.append("}")
    return "\n".join(lines)

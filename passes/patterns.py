"""A small pattern language for graph rewrites, in the spirit of torch.fx's
subgraph rewriter and tinygrad's pattern matcher: a rule is a source pattern
(a tree of `Op`, `Var`, `Const`, `Opt`, `Product`/`Sum`, `AnyOf`), optional
constraints, and a replacement function that builds the new subgraph.

    gelu = Op("Mul", Var("x"), Op("Sigmoid", Var("x")))   # x * sigmoid(x) == SiLU

A match binds names to values (`m["x"]`) and to nodes (`m.node("act")`).
Every node the pattern covers, except the root, must be used only inside the
match, so a rewrite never changes a value someone else still reads.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from aotc.compiler.ir import Graph, Node, Value

COMMUTATIVE = {"Add", "Mul", "And", "Or", "Xor", "Equal", "Max", "Min", "Sum"}


class Pattern:
    def root_ops(self) -> set[str] | None:
        return None


@dataclass
class Var(Pattern):
    """Any value; a name used twice must bind the same value."""
    name: str
    where: Callable[[Value], bool] | None = None


@dataclass
class Const(Var):
    """A constant. `value` matches a scalar-like constant (all elements ≈ value)."""
    value: float | None = None
    rtol: float = 1e-4

    def __init__(self, name: str = "", value: float | None = None, where: Callable[[Value], bool] | None = None,
                 rtol: float = 1e-4):
        self.name, self.value, self.where, self.rtol = name, value, where, rtol

    def accepts(self, v: Value) -> bool:
        if v.const is None:
            return False
        if self.value is not None:
            c = np.asarray(v.const, dtype=np.float64)
            return c.size >= 1 and bool(np.allclose(c, self.value, rtol=self.rtol, atol=0))
        return True


class Opt(Var):
    """An optional input: matches an omitted input (binding None) or any value."""


class Op(Pattern):
    """A node of one of `ops` whose inputs match `inputs` (commutative ops in either order)."""

    def __init__(self, ops: str | Sequence[str], *inputs: Pattern, name: str = "",
                 where: Callable[[Node], bool] | None = None, shared: bool = False):
        self.ops = {ops} if isinstance(ops, str) else set(ops)
        self.inputs = inputs
        self.name = name
        self.where = where
        # A shared node may have users outside the match; the replacement must redirect them.
        self.shared = shared

    def root_ops(self) -> set[str]:
        return self.ops


class AnyOf(Pattern):
    def __init__(self, *alternatives: Pattern):
        self.alternatives = alternatives

    def root_ops(self):
        roots = [a.root_ops() for a in self.alternatives]
        return None if any(r is None for r in roots) else set().union(*roots)


class _Tree(Pattern):
    """A tree of one associative, commutative op (Mul or Add) whose leaves match
    `terms` in any order, however the exporter parenthesized it."""
    op = ""

    def __init__(self, *terms: Pattern, name: str = ""):
        self.terms = terms
        self.name = name

    def root_ops(self):
        return {self.op}


class Product(_Tree):
    op = "Mul"


class Sum(_Tree):
    op = "Add"


@dataclass
class Match:
    values: dict[str, Value] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    covered: list[Node] = field(default_factory=list)
    root: Node | None = None
    shared: list[Node] = field(default_factory=list)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray:
        return self.values[name].const

    def _with(self, values=None, nodes=None, covered=(), shared=()) -> "Match":
        return Match({**self.values, **(values or {})}, {**self.nodes, **(nodes or {})},
                     self.covered + list(covered), self.root, self.shared + list(shared))


def _match(p: Pattern, v: Value | None, st: Match) -> Iterator[Match]:
    if v is None:
        if isinstance(p, Opt):
            yield st._with({p.name: None}) if p.name else st
        return
    if isinstance(p, Var):
        if isinstance(p, Const) and not p.accepts(v):
            return
        if p.name and p.name in st.values:
            if st.values[p.name] is v:
                yield st
            return
        if p.where is not None and not p.where(v):
            return
        yield st._with({p.name: v}) if p.name else st
    elif isinstance(p, Op):
        n = v.producer
        if n is None or n.op_type not in p.ops or v is not n.outputs[0] or len(n.inputs) != len(p.inputs):
            return
        if p.where is not None and not p.where(n):
            return
        st = st._with(nodes={p.name: n} if p.name else None, covered=[n], shared=[n] if p.shared else [])
        orders = [n.inputs]
        if n.op_type in COMMUTATIVE and len(n.inputs) == 2:
            orders.append(n.inputs[::-1])
        for ins in orders:
            yield from _match_all(p.inputs, ins, st)
    elif isinstance(p, AnyOf):
        for alt in p.alternatives:
            yield from _match(alt, v, st)
    elif isinstance(p, _Tree):
        for leaves, nodes in _splits(v, p.op, len(p.terms)):
            st2 = st._with(nodes={p.name: nodes[0]} if p.name else None, covered=nodes)
            seen = set()
            for perm in itertools.permutations(range(len(leaves))):
                key = tuple(id(leaves[i]) for i in perm)
                if key in seen:
                    continue
                seen.add(key)
                yield from _match_all(p.terms, [leaves[i] for i in perm], st2)
    else:
        raise TypeError(p)


def _match_all(ps: Sequence[Pattern], vs: Sequence[Value | None], st: Match) -> Iterator[Match]:
    if not ps:
        yield st
        return
    for st2 in _match(ps[0], vs[0], st):
        yield from _match_all(ps[1:], vs[1:], st2)


def _splits(v: Value, op: str, k: int) -> Iterator[tuple[list[Value], list[Node]]]:
    """Every way to see `v` as an `op`-tree with exactly k leaves (root first in nodes)."""
    n = v.producer
    if n is None or n.op_type != op or len(n.inputs) != 2 or k < 2:
        return
    a, b = n.inputs
    for ka in range(1, k):
        for la, na in ([([a], [])] if ka == 1 else list(_splits(a, op, ka))):
            for lb, nb in ([([b], [])] if k - ka == 1 else list(_splits(b, op, k - ka))):
                yield la + lb, [n] + na + nb


@dataclass
class Rule:
    """`replace(graph, match)` builds the new subgraph (inserted before the root)
    and returns the value that takes the root's place, or None to decline."""
    name: str
    pattern: Pattern
    replace: Callable[[Graph, Match], Value | None]
    where: Callable[[Match], bool] | None = None


def find_matches(graph: Graph, pattern: Pattern, root: Node, consumers: dict[str, list[Node]]) -> Iterator[Match]:
    outputs = {id(v) for v in graph.outputs}
    for m in _match(pattern, root.outputs[0], Match(root=root)):
        inside = {id(n) for n in m.covered}
        ok = True
        for n in m.covered:
            if n is root or any(n is s for s in m.shared):
                continue
            for o in n.outputs:
                if id(o) in outputs or any(id(c) not in inside for c in consumers.get(o.name, [])):
                    ok = False
        if ok:
            yield m


def apply_rules(graph: Graph, rules: Sequence[Rule], max_rewrites: int = 100000) -> int:
    """Rewrite to a fixed point. Nodes are visited last to first, so the largest
    pattern (rooted furthest down) wins over the smaller ones inside it."""
    count = 0
    by_op: dict[str, list[Rule]] = {}
    for r in rules:
        for op in r.pattern.root_ops() or ():
            by_op.setdefault(op, []).append(r)
    while count < max_rewrites:
        if not _rewrite_once(graph, by_op):
            break
        count += 1
    graph.remove_unused()
    return count


def _rewrite_once(graph: Graph, by_op: dict[str, list[Rule]]) -> bool:
    consumers = graph.consumers()
    outputs = {id(v) for v in graph.outputs}
    for node in reversed(graph.nodes):
        for rule in by_op.get(node.op_type, ()):
            for m in find_matches(graph, rule.pattern, node, consumers):
                if rule.where is not None and not rule.where(m):
                    continue
                with graph.inserting_before(node):
                    new = rule.replace(graph, m)
                if new is None:
                    continue
                old = node.outputs[0]
                if id(old) in outputs and (new.producer is None or id(new) in outputs):
                    # A graph output must stay a node's result under its own name; anything the
                    # declined replacement built is dead and goes with the next cleanup.
                    continue
                if new.shape != old.shape or new.dtype != old.dtype:
                    raise AssertionError(f"rule {rule.name} replaced {old.type_str} with {new.type_str}")
                graph.replace_all_uses(old, new)
                graph.remove_unused()
                return True
    return False


def replace_nodes(graph: Graph, nodes, build: Callable[[Graph, Node], Value], keep_name: bool = False) -> int:
    """Replace each node's (single) output by what `build(graph, node)` makes in its place, then drop the nodes.
    keep_name: the node's name is free for the replacement (reports and exclude lists keep naming it)."""
    count = 0
    for node in nodes:
        if keep_name:
            graph._node_names.discard(node.name)
        with graph.inserting_before(node):
            new = build(graph, node)
        graph.replace_all_uses(node.outputs[0], new)
        graph.nodes.remove(node)
        count += 1
    if count:
        graph.remove_unused()
    return count


def is_dequantized_const(v: Value | None) -> bool:
    """v = DequantizeLinear(8-bit constant, constant scale, constant zero point): a pre-quantized model's weight,
    which the importer keeps unfolded so the int8 values and scales reach fuse_quantized_ops."""
    n = v.producer if v is not None else None
    return n is not None and n.op_type == "DequantizeLinear" and all(i is None or i.const is not None for i in n.inputs)


def is_weight(v: Value | None) -> bool:
    """Known at compile time: a constant, or a dequantized 8-bit constant."""
    return v is not None and (v.const is not None or is_dequantized_const(v))


def per_channel(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant operand of an elementwise op on a [N, C, ...] result of `rank` axes as C per-channel values
    (float64), or None when it varies along another axis or broadcasts the result to a bigger shape."""
    c = np.asarray(c)
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,))


def scalar(v: Value) -> float | None:
    """The value of a constant whose elements are all equal, else None."""
    if v is None or v.const is None or v.const.size == 0:
        return None
    c = np.asarray(v.const, dtype=np.float64).reshape(-1)
    return float(c[0]) if np.all(c == c[0]) else None

"""How IR nodes become kernel calls: the lowering registry and the `Call`
records the memory planner and the driver work from.

Each op type registers one lowering (`@lowers("MatMul")`); a platform may
override it (`@lowers("int8_gemm", platform="arm64")`), JAX-style: the
platform's rule wins, the generic one is the fallback. Rule names are op
types, plus a few shared building blocks that several op lowerings call
through `ctx.rule(...)` (e.g. "int8_gemm"). A lowering looks
at one node and returns a list of steps: `Call`s of a TVM PrimFunc over
operands (graph values, temporaries it creates, or constants it derives such
as pre-packed weights), or an `Alias` (the output is the input's bytes seen
with another shape, e.g. Reshape). A Call's `key` names everything its
PrimFunc depends on, so identical nodes (the six layers of a transformer)
share one kernel and the PrimFunc is built once per key.

This module is the registry only; rules.py imports every rule module and
lowers whole graphs (so no rule module imports a module that imports it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph, Node, Value

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    label: str = ""                  # what the kernel's symbol names, when not the node's op (one of its steps)
    # The node's FLOPs as the model defines them that this call stands for, when it computes them by another
    # algorithm (Winograd's GEMM: fewer multiplications; its transforms: none of the model's); None: `flops`.
    model_flops: int | None = None


@dataclass(eq=False)
class Alias:
    """`dst` shares `src`'s bytes (same element count and dtype)."""
    src: Value
    dst: Value
    node: Node


class LoweringContext:
    """What a lowering may use: the target, and factories for temporaries and derived constants."""

    def __init__(self, graph: Graph, target: "CpuTarget"):
        self.graph = graph
        self.target = target
        self._derived: dict[str, Value] = {}
        self._temps = 0
        self._scratch: dict[str, dict] = {}

    def rule(self, name: str) -> "Lowering":
        """The target's rule `name` (its platform's override, else the generic one)."""
        fn = rule_for(name, self.target.platform)
        if fn is None:
            raise NoLoweringError(f"the {self.target.name} target has no {name} rule")
        return fn

    def scratch(self, name: str) -> dict:
        """A dict that lives as long as this lowering, for state rules share across nodes (e.g. one converted
        copy of an activation that several GEMMs read)."""
        return self._scratch.setdefault(name, {})

    def readers(self, v: Value) -> list:
        """The nodes that read `v`, and None for each time it is a graph output."""
        uses = self.scratch("readers")
        if not uses:
            uses.update(self.graph.consumers())
            uses.update({o.name: uses.get(o.name, []) + [None] for o in self.graph.outputs})
        return uses.get(v.name, [])

    def only_reader(self, v: Value, node: Node) -> bool:
        """Whether `node` is the one node that reads `v`, and `v` is no graph output: then `node`'s kernel may
        compute `v` itself, and `v`'s own step is dropped as dead."""
        return v.const is None and [id(n) for n in self.readers(v)] == [id(node)]

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


Lowering = Callable[..., list]  # (node, ctx, ...) -> steps
_RULES: dict[tuple[str, str | None], Lowering] = {}


def lowers(*names: str, platform: str | None = None):
    """Register the decorated function as the lowering rule for op types / rule `names`; `platform` (e.g.
    "arm64") makes it an override that only targets of that platform use."""
    def deco(fn: Lowering) -> Lowering:
        for name in names:
            if (name, platform) in _RULES:
                raise RuntimeError(f"two CPU lowerings for {name} (platform {platform})")
            _RULES[(name, platform)] = fn
        return fn
    return deco


def rule_for(name: str, platform: str | None) -> Lowering | None:
    return _RULES.get((name, platform)) or _RULES.get((name, None))


def registered_rules(platform: str | None = None) -> list[str]:
    """Rule names with a generic or `platform` lowering (of the rule modules imported so far)."""
    return sorted({n for n, p in _RULES if p is None or p == platform})


def operand(v: Value, shape: Sequence[int] | None = None) -> Operand:
    return Operand(v, tuple(v.shape if shape is None else shape))


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


def in_bounds(*conditions):
    """The conjunction of `conditions` (index comparisons) as the condition of a select whose value reads at
    clamped indices. A select evaluates both of its values, so that read must stay in bounds; but TVM's
    simplifier, given the condition as comparisons, proves the clamp redundant inside the select and drops it
    (a padded 5x5 depthwise convolution then read two rows before and after its input: other tensors' or
    stale bytes, or past the arena). As a product of 0/1 integers the condition tells the simplifier nothing,
    and the clamp stays."""
    from tvm import tirx as T
    flags = None
    for c in conditions:
        f = T.Cast("int32", c)
        flags = f if flags is None else flags * f
    return flags != 0


def sig(*operands: Operand) -> str:
    return ";".join(f"{o.dtype}{list(o.shape)}" for o in operands)

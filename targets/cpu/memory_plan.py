"""Static memory planning: every tensor the kernels touch gets a fixed place,
either in weights.bin (constants) or in one arena per execution context.

Aliases (Reshape and friends) share their source's storage. Each storage
lives from the step that writes it to the last step that reads it (graph
inputs from the start, graph outputs to the end); storages whose lifetimes
overlap never share bytes. Offsets are assigned greedily, biggest first, at
the lowest 64-byte-aligned offset that fits beside the storages already
placed and alive at the same time (the "greedy by size" heuristic of TFLite
and TVM's static planners)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from aotc.compiler.ir import Graph, Value

from .lowering import Alias, Call

ALIGN = 64


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass
class Storage:
    name: str
    nbytes: int
    const: bool
    start: int = 1 << 60
    end: int = -1
    offset: int = -1
    values: list = field(default_factory=list)


@dataclass
class MemoryPlan:
    arena_bytes: int
    weights: bytes                       # weights.bin contents
    place: dict[str, tuple[str, int]]    # value name -> ("arena"|"weights", byte offset)
    storages: list[Storage]

    @property
    def weight_bytes(self) -> int:
        return len(self.weights)


def plan_memory(graph: Graph, steps: list) -> MemoryPlan:
    root: dict[str, str] = {}        # value name -> storage name
    values: dict[str, Value] = {}
    storages: dict[str, Storage] = {}

    def storage_of(v: Value) -> Storage:
        name = root.get(v.name)
        if name is None:
            name = v.name
            root[v.name] = name
            values[v.name] = v
            storages[name] = Storage(name, v.nbytes, v.const is not None, values=[v])
        return storages[name]

    for v in graph.inputs:
        storage_of(v).start = -1
    calls = [s for s in steps if isinstance(s, Call)]
    t = 0
    for s in steps:
        if isinstance(s, Alias):
            src = storage_of(s.src)
            root[s.dst.name] = src.name
            values[s.dst.name] = s.dst
            src.values.append(s.dst)
            continue
        n_in = len(s.operands) - s.num_outputs
        for i, op in enumerate(s.operands):
            st = storage_of(op.value)
            if i >= n_in:
                st.start = min(st.start, t)
            st.end = max(st.end, t)
        t += 1
    for v in graph.outputs:
        st = storage_of(v)
        st.end = len(calls)
        st.start = min(st.start, len(calls))

    # Constants: in order of first appearance, each 64-byte aligned.
    weights = bytearray()
    place: dict[str, tuple[str, int]] = {}
    for st in storages.values():
        if st.const:
            st.offset = align(len(weights))
            weights.extend(b"\0" * (st.offset - len(weights)))
            weights.extend(st.values[0].const.tobytes())
    weights.extend(b"\0" * (align(len(weights)) - len(weights)))

    live = [st for st in storages.values() if not st.const]
    order = sorted(live, key=lambda s: (-align(s.nbytes), s.start, s.name))
    placed: list[Storage] = []
    arena = 0
    for st in order:
        size = align(max(st.nbytes, 1))
        busy = sorted((p.offset, p.offset + align(max(p.nbytes, 1))) for p in placed
                      if not (p.end < st.start or st.end < p.start))
        off = 0
        for lo, hi in busy:
            if off + size <= lo:
                break
            off = max(off, hi)
        st.offset = off
        placed.append(st)
        arena = max(arena, off + size)

    for name, sname in root.items():
        st = storages[sname]
        place[name] = ("weights" if st.const else "arena", st.offset)
    return MemoryPlan(arena, bytes(weights), place, list(storages.values()))


def share_weights(plans: list[MemoryPlan]) -> bytes:
    """One weights.bin for several plans (the variants of a shape-bucketed bundle): every constant is stored
    once, keyed by its bytes, and each plan's constants are moved to their places in it. A constant that
    differs between variants (a position table folded to the sequence length) is stored once per distinct
    content; everything else (the packed GEMM weights) is shared. Every plan's `weights` becomes the union, so
    each model.so is built for, and checked against, the one file."""
    union = bytearray()
    where: dict[bytes, int] = {}
    for plan in plans:
        for st in plan.storages:
            if not st.const:
                continue
            data = st.values[0].const.tobytes()
            key = hashlib.sha256(data).digest() + len(data).to_bytes(8, "little")
            if key not in where:
                where[key] = align(len(union))
                union.extend(b"\0" * (where[key] - len(union)))
                union.extend(data)
            st.offset = where[key]
            for v in st.values:
                plan.place[v.name] = ("weights", st.offset)
    union.extend(b"\0" * (align(len(union)) - len(union)))
    for plan in plans:
        plan.weights = bytes(union)
    return bytes(union)

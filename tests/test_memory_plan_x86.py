"""The static memory plan of the CPU target: live values never share bytes,
every offset is 64-byte aligned, aliases (Reshape & co.) share their source's
storage, and reuse makes the arena much smaller than the sum of the values."""
from __future__ import annotations

import numpy as np

from aotc import compiler
from aotc.targets.cpu.lowering import Alias, Call
from aotc.targets.cpu.rules import lower_graph
from aotc.targets.cpu.memory_plan import ALIGN, plan_memory
from aotc.targets.cpu.target import X86_AVX512


def chain_model(layers: int = 12) -> compiler.Graph:
    r = np.random.default_rng(0)
    g = compiler.Graph("chain")
    h = g.add_input("x", (32, 64), compiler.DType.float32)
    skip = h
    for i in range(layers):
        w = g.add_const(f"w{i}", r.standard_normal((64, 64)).astype(np.float32))
        h = g.add_node("MatMul", [h, w]).outputs[0]
        h = g.add_node("Relu", [h]).outputs[0]
        h = g.add_node("Reshape", [h], {"shape": [4, 8, 64]}).outputs[0]
        h = g.add_node("Reshape", [h], {"shape": [32, 64]}).outputs[0]
        if i % 3 == 2:
            h = g.add_node("Add", [h, skip]).outputs[0]
            skip = h
    g.outputs = [h]
    return g


def test_plan_invariants():
    g = chain_model()
    steps, _ = lower_graph(g, X86_AVX512)
    plan = plan_memory(g, steps)
    arena = [s for s in plan.storages if not s.const]
    for s in arena:
        assert s.offset % ALIGN == 0 and s.offset + s.nbytes <= plan.arena_bytes
    for i, a in enumerate(arena):
        for b in arena[i + 1:]:
            if a.end < b.start or b.end < a.start:
                continue  # never alive together
            assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset, (a.name, b.name)
    for s in steps:
        if isinstance(s, Alias):
            assert plan.place[s.dst.name] == plan.place[s.src.name]
    total = sum(s.nbytes for s in arena)
    assert plan.arena_bytes <= total / 3, (plan.arena_bytes, total)
    # Every kernel argument has a place; constants are in weights.bin, 64-byte aligned.
    for s in steps:
        if isinstance(s, Call):
            for o in s.operands:
                where, off = plan.place[o.value.name]
                assert off % ALIGN == 0 and (where == "weights") == (o.value.const is not None)
    assert plan.weight_bytes % ALIGN == 0


def test_graph_input_and_output_live_for_the_whole_run():
    g = chain_model(3)
    steps, _ = lower_graph(g, X86_AVX512)
    plan = plan_memory(g, steps)
    by_name = {v.name: s for s in plan.storages for v in s.values}
    calls = [s for s in steps if isinstance(s, Call)]
    assert by_name["x"].start == -1 and by_name[g.outputs[0].name].end == len(calls)

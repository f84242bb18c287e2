"""The packed GEMM's software prefetch of its next weight panel (targets/cpu/prefetch.py): which GEMMs get
it, that the statement lands at the head of each reduction group with addresses inside the next panel, and
that the kernels still compute the reference's numbers (the reduction order is unchanged)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from aotc.targets.cpu.lower_gemm import PF_K, prefetches_panels
from aotc.targets.cpu.prefetch import LINE_FLOATS, _split_grid_after, with_panel_prefetch
from x86_helpers import build_graph, check_graph, needs_avx512

R = np.random.default_rng(3)


def test_which_gemms_prefetch():
    assert prefetches_panels(64, 768, panels=72, mr=8)  # GPT-2's c_attn: 8 row tiles per panel
    assert not prefetches_panels(8, 768, panels=72, mr=8)  # one row tile: no time between panels
    assert not prefetches_panels(64, 768, panels=1, mr=8)  # no next panel
    assert not prefetches_panels(64, 100, panels=4, mr=8)  # K not in whole groups


def test_split_grid_nests_the_loops_and_keeps_the_body():
    text = "x\n    for k_0, k_1 in T.grid(48, 16):\n        a = 1\n\n        b = 2\n    c = 3\n"
    assert _split_grid_after(text, "k_0") == (
        "x\n    for k_0 in range(48):\n        for k_1 in range(16):\n            a = 1\n\n            b = 2\n"
        "    c = 3\n")
    text = "    for r_0, q_0, r_1, c in T.grid(4, 7, 8, 16):\n        a = 1\n"
    assert _split_grid_after(text, "q_0") == (
        "    for r_0, q_0 in T.grid(4, 7):\n        for r_1, c in T.grid(8, 16):\n            a = 1\n")
    assert _split_grid_after(text, "c") == text  # already the last loop of its header
    assert _split_grid_after("no grid here\n", "k_0") == "no grid here\n"


def gemm_func(m, k, n, nr=32, mr=8, split=PF_K):
    from tvm import te
    from aotc.targets.cpu.schedules import prim_func, schedule_contraction
    a = te.placeholder((m, k), "float32", name="A")
    b = te.placeholder((n // nr, k, nr), "float32", name="Bp")
    kk = te.reduce_axis((0, k), name="k")
    acc = te.compute((m, n), lambda i, j: te.sum(a[i, kk] * b[j // nr, kk, j % nr], axis=kk), name="acc")
    c = te.compute((m, n), lambda i, j: acc[i, j] * 2, name="C")
    return prim_func([a, b, c], lambda sch: schedule_contraction(sch, "acc", m, n, k, 16, mr, nr, epilogue="C",
                                                                 split_k=split))


def test_prefetch_covers_the_next_panel_once_over_its_row_tiles():
    m, k, n, nr, mr = 64, 256, 96, 32, 8
    text = with_panel_prefetch(gemm_func(m, k, n), "Bp", n // nr, k, nr, m // mr, k_step=PF_K).script()
    calls = re.findall(r"llvm\.prefetch", text)
    lines = k * nr // LINE_FLOATS
    per_group = -(-lines // ((m // mr) * (k // PF_K)))
    assert len(calls) == per_group
    # The prefetches sit in the group loop, ahead of the inner reduction loop.
    group = text.index("for k_0 in range(16):")
    assert group < text.index("llvm.prefetch") < text.index("for k_1 in range(16):")
    # Evaluated over every (panel, row tile, group), the addresses are lines of the next panel (the last
    # panel re-reads itself) and cover all of it.
    for panel in range(n // nr):
        seen = set()
        for r in range(m // mr):
            for g in range(k // PF_K):
                for q in range(per_group):
                    seen.add(min((r * (k // PF_K) + g) * per_group + q, lines - 1))
        assert seen == set(range(lines)), panel


def test_one_panel_is_left_alone():
    f = gemm_func(16, 64, 32)
    assert with_panel_prefetch(f, "Bp", 1, 64, 32, 2, k_step=PF_K).same_as(f)


@needs_avx512
@pytest.mark.parametrize("m,k,n", [(64, 768, 96), (37, 64, 200), (16, 48, 64)],
                         ids=["gpt2_like", "ragged_rows_and_columns", "two_row_tiles"])
def test_prefetching_gemm_matches_the_interpreter(m, k, n, tmp_path):
    x = R.standard_normal((m, k)).astype(np.float32)
    w = (R.standard_normal((k, n)) * 0.1).astype(np.float32)
    b = R.standard_normal(n).astype(np.float32)
    g = build_graph("Gemm", [("x", x)], consts=[("w", w), ("b", b)])
    check_graph(g, {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)


def pointwise_func(cin_blocks=32, p=49, mb=8, nb=2, mr=7, kb=8):
    from tvm import te
    import aotc.targets.cpu.conv_tiles as lb
    from aotc.targets.cpu.schedules import prim_func
    x = te.placeholder((1, cin_blocks, p, 16), "float32", name="X")
    w = te.placeholder((mb // nb, cin_blocks * 16, nb, 16), "float32", name="W")
    acc = lb.pointwise_acc(x, w, 1, mb, p, mr, nb, lambda n, mo: mo // nb)
    y = te.compute((1, mb, p, 16), lambda *o: acc[o] * 2, name="Y")
    return prim_func([x, w, y], lambda sch: lb._schedule_pointwise(sch, p, mr, nb, True, kb))


def test_pointwise_prefetch_sits_outside_the_reduction_and_covers_the_next_group():
    from aotc.targets.cpu.conv_tiles import pointwise_k_blocks
    from aotc.targets.cpu.prefetch import with_pointwise_prefetch
    assert pointwise_k_blocks(49, 32) == 8 and pointwise_k_blocks(3136, 32) == 0 and pointwise_k_blocks(49, 4) == 0
    cin, nb, k_blocks, tiles = 512, 2, 4, 7
    text = with_pointwise_prefetch(pointwise_func(), "W", 4, cin, nb, k_blocks, tiles).script()
    lines = cin * nb  # one 64-byte line per input channel and output block
    per_step = -(-lines // (k_blocks * tiles))
    assert text.count("llvm.prefetch") == per_step
    head = text.index("for rco_0, q_0 in T.grid(4, 7):")
    assert head < text.index("llvm.prefetch") < text.index("for rco_1, rci in T.grid(8, 16):")
    seen = {min(s * per_step + q, lines - 1) for s in range(k_blocks * tiles) for q in range(per_step)}
    assert seen == set(range(lines))


@needs_avx512
def test_prefetching_pointwise_conv_matches_the_interpreter(tmp_path):
    x = R.standard_normal((1, 256, 7, 7)).astype(np.float32)
    w = (R.standard_normal((96, 256, 1, 1)) * 0.1).astype(np.float32)
    g = build_graph("Conv", [("x", x)], consts=[("w", w), ("b", R.standard_normal(96).astype(np.float32))])
    check_graph(g, {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)

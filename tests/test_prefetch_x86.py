"""The packed GEMM's software prefetch of its next weight panel (targets/cpu/prefetch.py): which GEMMs get
it, that the statement lands at the head of each reduction group with addresses inside the next panel, and
that the kernels still compute the reference's numbers (the reduction order is unchanged)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from aotc.targets.cpu.lower_gemm import PF_K, prefetches_panels
from aotc.targets.cpu.prefetch import LINE_FLOATS, _split_grid, with_panel_prefetch
from x86_helpers import build_graph, check_graph, needs_avx512

R = np.random.default_rng(3)


def test_which_gemms_prefetch():
    assert prefetches_panels(64, 768, panels=72, mr=8)  # GPT-2's c_attn: 8 row tiles per panel
    assert not prefetches_panels(8, 768, panels=72, mr=8)  # one row tile: no time between panels
    assert not prefetches_panels(64, 768, panels=1, mr=8)  # no next panel
    assert not prefetches_panels(64, 100, panels=4, mr=8)  # K not in whole groups


def test_split_grid_nests_the_loops_and_keeps_the_body():
    text = "x\n    for k_0, k_1 in T.grid(48, 16):\n        a = 1\n\n        b = 2\n    c = 3\n"
    assert _split_grid(text, "k_0", "k_1") == (
        "x\n    for k_0 in range(48):\n        for k_1 in range(16):\n            a = 1\n\n            b = 2\n"
        "    c = 3\n")
    assert _split_grid("no grid here\n", "k_0", "k_1") == "no grid here\n"


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

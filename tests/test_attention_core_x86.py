"""The fused attention core's operand layouts on x86 (targets/cpu/lower_fused.py): K^T in panels of the score
tile's keys and V per head, so both stream contiguously; numbers are the op cases' business (tests/op_cases.py
runs every Attention case through every target)."""
from __future__ import annotations

import json

import numpy as np

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import compile_and_run, needs_avx512


@needs_avx512
def test_fused_core_reads_key_panels_and_per_head_values(tmp_path):
    rng = np.random.default_rng(0)
    s, h, hd = 100, 2, 32
    e = h * hd
    g = compiler.Graph("attention_layouts")
    x = g.add_input("x", (1, s, e), DType.float32)
    w = [g.add_const(n, (rng.standard_normal((e, e)) * 0.2 if n[0] == "w" else rng.standard_normal(e))
                     .astype(np.float32)) for n in ("wq", "bq", "wk", "bk", "wv", "bv")]
    g.outputs = list(g.add_node("Attention", [x, x, *w, None, None],
                                {"num_heads": h, "head_dim": hd, "scale": hd ** -0.5, "mask_fill": float("-inf"),
                                 "nan_to_zero": 0}).outputs)
    feeds = {"x": rng.standard_normal((1, s, e)).astype(np.float32)}
    got = compile_and_run(g, feeds, tmp_path)
    want = compiler.interpret(g, feeds)
    np.testing.assert_allclose(got[g.outputs[0].name], want[g.outputs[0].name], rtol=1e-5, atol=1e-5)
    kernels = json.loads(next(tmp_path.glob("*/kernels.json")).read_text())
    kt = next(k for k in kernels if k["kind"].startswith("attn_kt"))
    assert kt["shapes"][-1] == [1, h, 128 // 32, hd, 32]  # 100 keys padded to 128, panels of 32
    v = next(k for k in kernels if k["kind"].startswith("attn_v_padded"))
    assert v["shapes"][-1] == [1, h, s, hd]
    assert any(k["kind"].startswith("attn_core") for k in kernels)

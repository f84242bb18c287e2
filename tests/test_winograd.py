"""Winograd F(m, 3) convolutions on the x86 blocked layout (targets/cpu/lower_winograd.py): the transform
matrices against the direct correlation, the choice of m, and compiled bundles against the interpreter."""
from __future__ import annotations

import json

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from aotc.targets.cpu import lower_blocked
from aotc.targets.cpu.lower_winograd import matrices, transform_weight, winograd_tile
from x86_helpers import compile_and_run, needs_avx512

rng = np.random.default_rng(7)


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_correlation_of_a_tile(m):
    """Y = A^T [(G g G^T) * (B^T d B)] A is the 3x3 cross-correlation (ONNX Conv) of an (m+2)^2 tile, in
    float64 to rounding; transform_weight is G g G^T for every filter."""
    bt, g, at = matrices(m)
    a = m + 2
    d = rng.standard_normal((a, a))
    w = rng.standard_normal((5, 4, 3, 3))
    u = transform_weight(w, m).astype(np.float64).reshape(a, a, 5, 4)
    for o, i in ((0, 0), (4, 3), (2, 1)):
        want = np.array([[np.sum(d[y:y + 3, x:x + 3] * w[o, i]) for x in range(m)] for y in range(m)])
        got = at @ ((g @ w[o, i] @ g.T) * (bt @ d @ bt.T)) @ at.T
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(u[:, :, o, i], g @ w[o, i] @ g.T, rtol=1e-6, atol=1e-6)


def blocked(n, c, h, w):
    return (n, -(-c // 16), h, w, 16)


def test_tile_choice_follows_the_cost_of_weights_and_flops():
    three = ([3, 3], [1, 1], [1, 1])
    # ResNet-50's stride-1 3x3 convolutions at batch 1: F(4, 3) on big maps, F(2, 3) on 14x14 (F(4, 3)'s
    # 36 weight panels for 16 tiles wait on memory), the direct kernel on 7x7 (even F(2, 3)'s weights cost
    # more than its FLOPs save).
    assert winograd_tile(blocked(1, 64, 56, 56), blocked(1, 64, 56, 56), *three) == 4
    assert winograd_tile(blocked(1, 128, 28, 28), blocked(1, 128, 28, 28), *three) == 4
    assert winograd_tile(blocked(1, 256, 14, 14), blocked(1, 256, 14, 14), *three) == 2
    assert winograd_tile(blocked(1, 512, 7, 7), blocked(1, 512, 7, 7), *three) == 0
    # More images reuse the transformed weights more: batch 8 on 7x7 pays.
    assert winograd_tile(blocked(8, 512, 7, 7), blocked(8, 512, 7, 7), *three) != 0
    # Only 3x3, stride 1, undilated.
    assert winograd_tile(blocked(1, 64, 56, 56), blocked(1, 64, 28, 28), [3, 3], [2, 2], [1, 1]) == 0
    assert winograd_tile(blocked(1, 64, 56, 56), blocked(1, 64, 56, 56), [3, 3], [1, 1], [2, 2]) == 0
    assert winograd_tile(blocked(1, 64, 56, 56), blocked(1, 64, 56, 56), [5, 5], [1, 1], [1, 1]) == 0


def conv_graph(n, c, m, h, w, pads, epilogue):
    g = compiler.Graph(f"winograd_{n}_{c}_{m}_{h}_{w}_{'_'.join(map(str, pads))}_{epilogue}")
    x = g.add_input("x", (n, c, h, w), DType.float32)
    wt = g.add_const("w", (rng.standard_normal((m, c, 3, 3)) * 0.2).astype(np.float32))
    b = g.add_const("b", rng.standard_normal(m).astype(np.float32))
    attrs = {"kernel_shape": [3, 3], "pads": list(pads)}
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)}
    if epilogue == "relu_residual":
        oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
        r = g.add_input("r", (n, m, oh, ow), DType.float32)
        feeds["r"] = rng.standard_normal((n, m, oh, ow)).astype(np.float32)
        y = g.add_node("FusedConv", [x, wt, b, r], {**attrs, "activation": "relu", "residual_before_activation": 1},
                       name="conv").outputs[0]
    else:
        y = g.add_node("Conv", [x, wt, b], attrs, name="conv").outputs[0]
    g.outputs = [g.add_node("Relu", [y], name="consumer").outputs[0]]  # the conv runs blocked
    return g, feeds


def winograd_kinds(bundle_dir):
    calls = json.loads(next(bundle_dir.glob("*/kernels.json")).read_text())
    return [c["kind"].split("|")[0] for c in calls if c["node"] == "conv"]


CASES = [  # (n, cin, cout, h, w, pads, epilogue): maps no tile divides, partial channel blocks, batch, padding
    (1, 32, 32, 8, 8, (1, 1, 1, 1), "plain"),
    (1, 20, 40, 7, 9, (1, 1, 1, 1), "relu_residual"),
    (2, 16, 16, 14, 14, (1, 1, 1, 1), "plain"),
    (1, 48, 24, 5, 6, (0, 0, 0, 0), "relu_residual"),
    (1, 32, 32, 10, 11, (2, 1, 0, 1), "plain"),
]


@needs_avx512
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-{c[6]}")
def test_winograd_bundles_match_the_interpreter(case, m, tmp_path, monkeypatch):
    monkeypatch.setattr(lower_blocked, "winograd_tile", lambda *a: m)
    g, feeds = conv_graph(*case)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, tmp_path)
    assert winograd_kinds(tmp_path) == ["conv_zero_pad", "winograd_input", "winograd_gemm", "winograd_output"]
    for k in want:
        # F(4, 3)'s transforms scale values by up to 8 and back: a few float32 roundings more than direct.
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-5 * np.abs(want[k]).max())


@needs_avx512
def test_a_resnet_stage_convolution_takes_winograd_by_itself(tmp_path):
    g, feeds = conv_graph(1, 64, 64, 56, 56, (1, 1, 1, 1), "relu_residual")
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, tmp_path)
    assert "winograd_gemm" in winograd_kinds(tmp_path)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-5 * np.abs(want[k]).max())


@needs_avx512
@pytest.mark.parametrize("m", [2, 4])
def test_winograd_on_avx2_blocks_of_eight(m, tmp_path, monkeypatch):
    monkeypatch.setattr(lower_blocked, "winograd_tile", lambda *a: m)
    g, feeds = conv_graph(1, 12, 20, 9, 7, (1, 1, 1, 1), "relu_residual")
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, tmp_path, target="x86-avx2")
    assert "winograd_gemm" in winograd_kinds(tmp_path)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-5 * np.abs(want[k]).max())


@needs_avx512
def test_the_manifest_counts_the_models_flops_and_the_profile_the_executed_ones(tmp_path, monkeypatch):
    """GFLOP/s of a whole model compare engines, so the manifest keeps the convolution's FLOPs; kernels.json
    (the profile's roofline) has what each Winograd kernel executes: the GEMM far fewer than the direct one."""
    flops = {}
    for m in (0, 4):
        monkeypatch.setattr(lower_blocked, "winograd_tile", lambda *a, m=m: m)
        g, feeds = conv_graph(1, 32, 32, 16, 16, (1, 1, 1, 1), "plain")
        compile_and_run(g, feeds, tmp_path / str(m))
        bundle = next((tmp_path / str(m)).glob("*/manifest.json")).parent
        calls = json.loads((bundle / "kernels.json").read_text())
        flops[m] = (json.loads((bundle / "manifest.json").read_text())["flops"],
                    {c["kind"].split("|")[0]: c["flops"] for c in calls if c["node"] == "conv"})
    assert flops[4][0] == flops[0][0]
    assert flops[4][1]["winograd_gemm"] * 3 < flops[0][1]["blockedconv"] < flops[4][1]["winograd_gemm"] * 5

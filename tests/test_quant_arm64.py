"""INT8 on arm64-neon under qemu-aarch64: the QuantizedMatMul GEMM with `sdot`
(+dotprod) and its plain armv8.0 fallback (run on a Cortex-A53, which has no
dotprod) against the reference kernels, the disassembly, and a quantized
model's bundle against the x86-avx512 (VNNI) bundle's outputs."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from arm64_helpers import compare, compile_arm, needs_arm64, run_arm
from test_quant_x86 import qmm_graph
from x86_helpers import compile_and_run, has_avx512

pytestmark = needs_arm64
R = np.random.default_rng(7)


def arm(dotprod: bool):
    from aotc.targets.arm64.target import arm64_target
    return arm64_target(cpu_features=["dotprod"] if dotprod else [])


def cpu_for(dotprod: bool) -> str:
    return "cortex-a76" if dotprod else "cortex-a53"  # A76 has dotprod (armv8.2-a), A53 (armv8.0-a) has not


def disassembly(bundle: Path) -> str:
    return subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(bundle / "model.so")], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("dotprod", [True, False], ids=["sdot", "armv8.0"])
@pytest.mark.parametrize("m,k,n", [(8, 4, 16), (24, 384, 64), (7, 320, 1008)])
def test_int8_accumulation_is_exact(tmp_path, m, k, n, dotprod):
    """Scale 1, no bias: the output is float32(acc) itself, so the integer sum must match exactly."""
    g, feeds = qmm_graph(m, k, n, xz=131)
    b = compile_arm(g, tmp_path, target=arm(dotprod))
    got = run_arm(b, feeds, cpu=cpu_for(dotprod))["qmm:0"]
    np.testing.assert_array_equal(got, compiler.interpret(g, feeds)["qmm:0"])
    has_sdot = "\tsdot\t" in disassembly(b)
    assert has_sdot == dotprod, "sdot in the GEMM exactly when the target has dotprod"


def test_sdot_float_epilogue_and_requantized_output(tmp_path):
    ws = R.uniform(0.001, 0.01, 64).astype(np.float32)
    g, feeds = qmm_graph(2, 96, 64, xs=0.02, ws=ws, bias=True, res=True, act="gelu", before=1, batch=(3,))
    got = run_arm(compile_arm(g, tmp_path, target=arm(True)), feeds)["qmm:0"]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)["qmm:0"], rtol=2e-6, atol=2e-6)
    ws = R.uniform(0.001, 0.01, 32).astype(np.float32)
    g, feeds = qmm_graph(16, 64, 32, xs=0.02, ws=ws, bias=True, act="relu", requant=(0.03, 5))
    got = run_arm(compile_arm(g, tmp_path, target=arm(True)), feeds)["qmm:0"]
    want = compiler.interpret(g, feeds)["qmm:0"]
    assert got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


@pytest.mark.parametrize("dotprod", [True, False], ids=["sdot", "armv8.0"])
def test_quantized_attention(tmp_path, dotprod):
    """QuantizedAttention: three int8 projections (Q from one activation, K and V sharing another), then the
    Attention lowering's float core."""
    from aotc.passes.quantization import quantize_graph
    from test_quant_pipeline import attention_feeds, attention_graph
    g = attention_graph(b=2, s=8, e=32, h=2, d=16)
    quantize_graph(g, calibration=attention_feeds(3, b=2, s=8, e=32))
    assert g.op_histogram()["QuantizedAttention"] == 1
    b = compile_arm(g, tmp_path, target=arm(dotprod), tag=str(dotprod))
    assert ("\tsdot\t" in disassembly(b)) == dotprod
    for feeds in attention_feeds(2, seed=4, b=2, s=8, e=32):
        got = run_arm(b, feeds, cpu=cpu_for(dotprod))["out:0"]
        np.testing.assert_allclose(got, compiler.interpret(g, feeds)["out:0"], rtol=1e-4, atol=1e-4)


def quantized_mlp():
    from aotc.passes.quantization import quantize_graph
    g = compiler.Graph("qmlp_arm")
    x = g.add_input("x", (32, 64), DType.float32)
    h = g.add_node("FusedMatMul", [x, g.add_const("w1", R.standard_normal((64, 128)).astype(np.float32)),
                                   g.add_const("b1", R.standard_normal(128).astype(np.float32))],
                   {"activation": "relu"}, name="fc1").outputs[0]
    g.outputs = [g.add_node("MatMul", [h, g.add_const("w2", R.standard_normal((128, 32)).astype(np.float32))],
                            name="fc2").outputs[0]]
    quantize_graph(g, calibration=[{"x": R.standard_normal((32, 64)).astype(np.float32)} for _ in range(4)])
    assert g.op_histogram() == {"QuantizedMatMul": 2, "QuantizeLinear": 1}
    return g, {"x": R.standard_normal((32, 64)).astype(np.float32)}


def test_quantized_mlp_matches_the_reference_and_the_x86_bundle(tmp_path):
    g, feeds = quantized_mlp()
    name = g.outputs[0].name
    want = compiler.interpret(g, feeds)[name]
    tol = dict(rtol=1e-3, atol=float(np.abs(want).max()) * 0.01)  # a requantized value may move one step
    outs = {}
    for dotprod in (True, False):
        outs[dotprod] = run_arm(compile_arm(g, tmp_path, target=arm(dotprod), tag=str(dotprod)), feeds,
                                cpu=cpu_for(dotprod))[name]
        np.testing.assert_allclose(outs[dotprod], want, **tol)
    np.testing.assert_array_equal(outs[True], outs[False])  # same integer arithmetic, same epilogue code
    if has_avx512() and "avx512_vnni" in Path("/proc/cpuinfo").read_text():
        x86 = compile_and_run(g, feeds, tmp_path, target="x86-avx512")[name]
        np.testing.assert_allclose(outs[True], x86, **tol)


def test_cli_compile_quantize_int8_for_arm(tmp_path):
    import json
    import sys
    from aotc.compiler.onnx_export import save_onnx
    g = compiler.Graph("mlp")
    x = g.add_input("x", (16, 64), DType.float32)
    h = g.add_node("FusedMatMul", [x, g.add_const("w1", (R.standard_normal((64, 64)) * 0.2).astype(np.float32)),
                                   g.add_const("b1", R.standard_normal(64).astype(np.float32))],
                   {"activation": "gelu"}, name="fc1").outputs[0]
    g.outputs = [g.add_node("MatMul", [h, g.add_const("w2", (R.standard_normal((64, 32)) * 0.2).astype(np.float32))],
                            name="fc2").outputs[0]]
    save_onnx(g, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=R.standard_normal((64, 64)).astype(np.float32))
    p = subprocess.run([sys.executable, "-m", "aotc.cli", "compile", str(tmp_path / "mlp.onnx"), "-o",
                        str(tmp_path / "bundle"), "--target", "arm64-neon", "--cpu-features", "+dotprod",
                        "--quantize", "int8", "--calibration", str(tmp_path / "cal.npz"), "-q"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    man = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert man["target"]["cpu_features"] == ["neon", "dotprod"]
    assert any(s["name"] == "quantize_int8" for s in man["passes"])
    assert "\tsdot\t" in disassembly(tmp_path / "bundle")
    feeds = {"x": R.standard_normal((16, 64)).astype(np.float32)}
    got = run_arm(tmp_path / "bundle", feeds)[g.outputs[0].name]
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.995


@pytest.mark.parametrize("shape", [(4, 1000), (7, 13)])
def test_dynamic_quantize_linear_on_arm64(tmp_path, shape):
    """The CPU targets' DynamicQuantizeLinear kernels (targets/cpu/lower_dynamic_quant.py) on aarch64 under qemu:
    y, scale and zero point equal the reference (itself checked against onnxruntime in test_quant_x86.py)."""
    g = compiler.Graph(f"dql_{shape[0]}x{shape[1]}")
    n = g.add_node("DynamicQuantizeLinear", [g.add_input("x", shape, DType.float32)], name="dql", num_outputs=3)
    g.outputs = list(n.outputs)
    compare(g, {"x": (np.random.default_rng(4).standard_normal(shape) * 2).astype(np.float32)}, tmp_path)


def test_dequantize_reads_on_arm64(tmp_path):
    """The readers of a DequantizeLinear (dequantize_reads.py) on arm64: DQ(a), DQ(b) -> Add -> Q as one kernel,
    bit for bit the reference over every pair of uint8 inputs; a dequantized residual of the sdot GEMM's epilogue
    read as 8 bits, as the same kernel on the float residual (the llvm.arithmetic.fence lowers on AArch64)."""
    from test_dequantize_reads_x86 import dequantize_input, dq, every_pair, q
    a, b = every_pair(np.uint8)
    g = compiler.Graph("qdq_add_arm")
    s = g.add_node("Add", [dq(g, g.add_input("a", a.shape, DType.uint8), 0.0235, 131, "dqa"),
                           dq(g, g.add_input("b", b.shape, DType.uint8), 0.0173, 120, "dqb")], name="add").outputs[0]
    g.outputs = [q(g, s, 0.0391, 128, np.uint8, "requant")]
    feeds = {"a": a, "b": b}
    bundle = compile_arm(g, tmp_path)
    assert [c["op"] for c in json.loads((bundle / "kernels.json").read_text())] == ["QuantizeLinear"]
    np.testing.assert_array_equal(run_arm(bundle, feeds)[g.outputs[0].name], compiler.interpret(g, feeds)[g.outputs[0].name])

    ws = R.uniform(0.001, 0.01, 32).astype(np.float32)
    g, feeds = qmm_graph(8, 64, 32, xs=0.02, ws=ws, bias=True, res=True, act="relu")
    g8 = dequantize_input(g, "r", 0.0173, 131)
    g8.name = "qmm_dq_residual_arm"
    q8 = R.integers(0, 256, (8, 32)).astype(np.uint8)
    feeds8 = {"x": feeds["x"], "r_q": q8}
    bundle8 = compile_arm(g8, tmp_path)
    assert "DequantizeLinear" not in [c["op"] for c in json.loads((bundle8 / "kernels.json").read_text())]
    r = (q8.astype(np.int32) - 131).astype(np.float32) * np.float32(0.0173)
    out = g.outputs[0].name
    np.testing.assert_array_equal(run_arm(bundle8, feeds8)[out], run_arm(compile_arm(g, tmp_path), {**feeds, "r": r})[out])


def test_onnxruntime_integer_units_on_arm64(tmp_path):
    """QuantizedAdd (two fused multiply-adds, llvm.fma on aarch64 too) and QuantizedGlobalAveragePool from the
    generic CPU rules, under qemu: bit for bit the reference over every pair of uint8 inputs."""
    g = compiler.Graph("integer_units")
    a = g.add_input("a", (1, 4, 64, 256), DType.uint8)
    b = g.add_input("b", (1, 4, 64, 256), DType.uint8)

    def c(name, v):
        return g.add_const(name, np.asarray(v))
    s = g.add_node("QuantizedAdd", [a, c("sa", np.float32(0.0371)), c("za", np.uint8(131)), b,
                                    c("sb", np.float32(0.0219)), c("zb", np.uint8(97)), c("sy", np.float32(0.0433)),
                                    c("zy", np.uint8(121))], name="qadd").outputs[0]
    p = g.add_node("QuantizedGlobalAveragePool", [s, c("sy2", np.float32(0.0433)), c("zy2", np.uint8(121)),
                                                  c("sp", np.float32(0.011)), c("zp", np.uint8(7))], name="qpool").outputs[0]
    g.outputs = [s, p]
    grid = np.arange(256, dtype=np.uint8)
    feeds = {"a": np.broadcast_to(grid[:, None], (256, 256)).reshape(1, 4, 64, 256).copy(),
             "b": np.broadcast_to(grid[None, :], (256, 256)).reshape(1, 4, 64, 256).copy()}
    compare(g, feeds, tmp_path)

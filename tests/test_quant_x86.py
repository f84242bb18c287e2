"""INT8 kernels of the x86-avx512 target (VNNI vpdpbusd GEMM, Quantize/DequantizeLinear) against the
reference kernels: the int32 accumulation exactly, the float epilogue to float32 rounding, requantized
outputs to one step."""
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import compile_and_run, has_avx512

needs_vnni = pytest.mark.skipif(not (has_avx512() and "avx512_vnni" in Path("/proc/cpuinfo").read_text()),
                                reason="needs an x86-64 CPU with AVX-512 VNNI")
pytestmark = needs_vnni
R = np.random.default_rng(99)


def qmm_graph(m, k, n, xz=77, xs=1.0, ws=None, bias=False, res=False, act="none", requant=None, before=0,
              batch=()):
    g = compiler.Graph(f"qmm_{m}x{k}x{n}_{act}_{bias}_{res}_{requant is not None}_{before}")
    x = g.add_input("x", batch + (m, k), DType.uint8)
    ins = [x, g.add_const("xs", np.array(xs, np.float32)), g.add_const("xz", np.array(xz, np.uint8)),
           g.add_const("w", R.integers(-127, 128, (k, n)).astype(np.int8)),
           g.add_const("ws", np.ones(n, np.float32) if ws is None else ws)]
    ins.append(g.add_const("b", R.standard_normal(n).astype(np.float32)) if bias else None)
    ins.append(g.add_input("r", batch + (m, n), DType.float32) if res else None)
    if requant:
        ins += [g.add_const("ys", np.array(requant[0], np.float32)), g.add_const("yz", np.array(requant[1], np.uint8))]
    while ins[-1] is None:
        ins.pop()
    g.outputs = list(g.add_node("QuantizedMatMul", ins, {"activation": act, "residual_before_activation": before},
                                name="qmm").outputs)
    feeds = {"x": R.integers(0, 256, batch + (m, k)).astype(np.uint8)}
    if res:
        feeds["r"] = R.standard_normal(batch + (m, n)).astype(np.float32)
    return g, feeds


@pytest.mark.parametrize("m,k,n", [(8, 4, 16), (24, 384, 64), (128, 1536, 384), (7, 1280, 1008),
                                   (1, 1280, 1000), (5, 64, 40)])  # N % 16 != 0: zero-padded panels
def test_vnni_accumulation_is_exact(tmp_path, m, k, n):
    """Scale 1, no bias: the output is float32(acc) itself, so the integer sum must match exactly."""
    g, feeds = qmm_graph(m, k, n, xz=131)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, tmp_path)
    np.testing.assert_array_equal(got["qmm:0"], want["qmm:0"])


@pytest.mark.parametrize("act,res,before", [("none", False, 0), ("relu", True, 0), ("gelu", True, 1),
                                             ("gelu", False, 0), ("clip", False, 0)])
def test_vnni_float_epilogue(tmp_path, act, res, before):
    ws = R.uniform(0.001, 0.01, 64).astype(np.float32)
    g, feeds = qmm_graph(2, 96, 64, xs=0.02, ws=ws, bias=True, res=res, act=act, before=before, batch=(3,))
    if act == "clip":
        g.nodes[-1].attrs.update(act_alpha=0.0, act_beta=6.0)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, tmp_path)
    np.testing.assert_allclose(got["qmm:0"], want["qmm:0"], rtol=2e-6, atol=2e-6)


def test_vnni_requantized_output(tmp_path):
    ws = R.uniform(0.001, 0.01, 32).astype(np.float32)
    g, feeds = qmm_graph(16, 64, 32, xs=0.02, ws=ws, bias=True, act="relu", requant=(0.03, 5))
    want = compiler.interpret(g, feeds)["qmm:0"]
    got = compile_and_run(g, feeds, tmp_path)["qmm:0"]
    assert got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_quantize_dequantize_kernels(tmp_path):
    g = compiler.Graph("qdq")
    x = g.add_input("x", (4, 100), DType.float32)
    s, z = g.add_const("s", np.array(0.037, np.float32)), g.add_const("z", np.array(121, np.uint8))
    q = g.add_node("QuantizeLinear", [x, s, z], name="q").outputs[0]
    d = g.add_node("DequantizeLinear", [q, s, z], name="d").outputs[0]
    g.outputs = [q, d]
    xv = (R.standard_normal((4, 100)) * 5).astype(np.float32)
    xv[0, :6] = [0.5 * 0.037, 1.5 * 0.037, -0.5 * 0.037, 1e9, -1e9, 0.0]
    want = compiler.interpret(g, {"x": xv})
    got = compile_and_run(g, {"x": xv}, tmp_path)
    np.testing.assert_array_equal(got["q:0"], want["q:0"])
    np.testing.assert_array_equal(got["d:0"], want["d:0"])


def test_quantized_mlp_end_to_end(tmp_path):
    """quantize_graph's output (Q -> int8 matmul with requantized relu -> int8 matmul) compiles and runs."""
    from aotc.passes.quantization import quantize_graph
    g = compiler.Graph("qmlp")
    x = g.add_input("x", (32, 64), DType.float32)
    h = g.add_node("FusedMatMul", [x, g.add_const("w1", R.standard_normal((64, 128)).astype(np.float32)),
                                   g.add_const("b1", R.standard_normal(128).astype(np.float32))],
                   {"activation": "relu"}, name="fc1").outputs[0]
    g.outputs = [g.add_node("MatMul", [h, g.add_const("w2", R.standard_normal((128, 32)).astype(np.float32))],
                            name="fc2").outputs[0]]
    cal = [{"x": R.standard_normal((32, 64)).astype(np.float32)} for _ in range(4)]
    quantize_graph(g, calibration=cal)
    assert g.op_histogram() == {"QuantizedMatMul": 2, "QuantizeLinear": 1}
    feeds = {"x": R.standard_normal((32, 64)).astype(np.float32)}
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    got = compile_and_run(g, feeds, tmp_path)[g.outputs[0].name]
    # a requantized intermediate may differ by one step where rounding ties: a few output units at most
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=np.abs(want).max() * 0.01)


@pytest.mark.slow
def test_int8_minilm_bundle_matches_the_interpreter(model_cache, tmp_path):
    """The whole int8 MiniLM-L6 (VNNI GEMMs, float attention core and LayerNorms) as a bundle, against the
    reference interpreter on the same quantized graph."""
    from aotc import runtime_stub
    from aotc.passes.quantization import quantize_graph
    from aotc.passes.quantization.quantize import output_error
    from models import export_minilm, minilm_feeds
    from aotc.passes import PassManager
    import aotc
    from test_quant_models import _batches, CALIBRATION_SENTENCES, TEST_SENTENCES, BATCH, SEQ
    g = compiler.load_onnx(export_minilm(model_cache, "legacy", "eager", dynamic=True),
                           input_shapes={"input_ids": (BATCH, SEQ), "attention_mask": (BATCH, SEQ)})
    PassManager(None).run(g)
    quantize_graph(g, calibration=_batches(CALIBRATION_SENTENCES))
    assert g.op_histogram()["QuantizedMatMul"] + 3 * g.op_histogram().get("QuantizedAttention", 0) == 36
    model = runtime_stub.load(aotc.compile(g, tmp_path / "minilm-int8", target="x86-avx512", passes="none").path)
    for feeds in _batches(TEST_SENTENCES[:16]):
        want = compiler.interpret(g, feeds)
        got = model.run(feeds)
        # float rounding (erf/exp approximations, FMA) may move a requantized value by one step
        assert output_error(got, want) < 1e-3


def test_cli_compile_quantize_int8(tmp_path):
    """aotc compile --quantize int8: the manifest records the quantization report; the bundle runs close to
    the float model."""
    import json
    import subprocess
    import sys
    from aotc import runtime_stub
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
                        str(tmp_path / "bundle"), "--target", "x86-avx512", "--quantize", "int8", "--calibration",
                        str(tmp_path / "cal.npz"), "-q"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    q = next(s for s in manifest["passes"] if s["name"] == "quantize_int8")
    assert {n["node"] for n in q["report"]["quantized"]} == {"fc1", "fc2"}
    assert q["report"]["scheme"]["activations"].startswith("uint8")
    p = subprocess.run([sys.executable, "-m", "aotc.cli", "inspect", str(tmp_path / "bundle")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "int8 nodes: 2 (QuantizedMatMul 2)" in p.stdout and "calibration: minmax on 4 sample(s)" in p.stdout  # 64 rows, batches of 16
    feeds = {"x": R.standard_normal((16, 64)).astype(np.float32)}
    got = runtime_stub.load(tmp_path / "bundle").run(feeds)[g.outputs[0].name]
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.995


def test_quantized_attention_kernel(tmp_path):
    """QuantizedAttention on x86: three VNNI projections, then the Attention lowering's float core."""
    from aotc.passes.quantization import quantize_graph
    from test_quant_pipeline import attention_feeds, attention_graph
    g = attention_graph(b=2, s=8, e=32, h=2, d=16)
    quantize_graph(g, calibration=attention_feeds(3, b=2, s=8, e=32))
    assert g.op_histogram()["QuantizedAttention"] == 1
    for feeds in attention_feeds(2, seed=4, b=2, s=8, e=32):
        want = compiler.interpret(g, feeds)["out:0"]
        got = compile_and_run(g, feeds, tmp_path)["out:0"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cross", [False, True], ids=["self-attention-fused-qkv", "cross-attention"])
def test_quantized_attention_projection_paths(tmp_path, cross):
    """Self-attention (one x, one scale and zero point) runs one GEMM against [Wq|Wk|Wv] with a zero bias for a
    missing one; cross-attention three GEMMs. Both against the reference kernel."""
    b, sq, skv, e, h, d = 2, 8, (12 if cross else 8), 32, 2, 16
    g = compiler.Graph(f"qattn_{cross}")
    xq = g.add_input("xq", (b, sq, e), DType.uint8)
    xkv = g.add_input("xkv", (b, skv, e), DType.uint8) if cross else xq
    s, z = g.add_const("s", np.array(0.05, np.float32)), g.add_const("z", np.array(120, np.uint8))
    ins = [xq, s, z, xkv, s, z]
    for i in range(3):
        ins += [g.add_const(f"w{i}", R.integers(-127, 128, (e, h * d)).astype(np.int8)),
                g.add_const(f"ws{i}", R.uniform(0.001, 0.01, h * d).astype(np.float32)),
                None if i == 1 else g.add_const(f"b{i}", R.standard_normal(h * d).astype(np.float32))]
    ins += [g.add_input("mask", (b, 1, 1, skv), DType.float32), None]
    g.outputs = list(g.add_node("QuantizedAttention", ins, {"num_heads": h, "head_dim": d, "scale": d ** -0.5},
                                name="qattn").outputs)
    feeds = {"xq": R.integers(0, 256, (b, sq, e)).astype(np.uint8),
             "mask": np.where(R.random((b, 1, 1, skv)) < 0.3, -1e4, 0).astype(np.float32)}
    if cross:
        feeds["xkv"] = R.integers(0, 256, (b, skv, e)).astype(np.uint8)
    want = compiler.interpret(g, feeds)["qattn:0"]
    got = compile_and_run(g, feeds, tmp_path)["qattn:0"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _dynamic_quantize_model(path: Path, shape) -> Path:
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "y_scale", "y_zero_point"])
    g = helper.make_graph([node], "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, list(shape)),
                           helper.make_tensor_value_info("y_scale", TensorProto.FLOAT, []),
                           helper.make_tensor_value_info("y_zero_point", TensorProto.UINT8, [])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("shape,kind", [((1, 128, 384), "normal"), ((4, 1000), "normal"), ((7, 13), "normal"),
                                        ((64,), "positive"), ((64,), "negative"), ((32,), "zeros")])
def test_dynamic_quantize_linear_matches_onnxruntime(tmp_path, shape, kind):
    """DynamicQuantizeLinear's x86 kernels (run-time range, scale, zero point, then the quantization) and its
    reference kernel against onnxruntime, bit for bit: ranges that straddle 0, lie on one side of it (zero point
    0 or 255) or are all zero (scale 1), sizes with and without whole vectors and row partials."""
    import aotc
    import onnxruntime as ort
    x = {"normal": R.standard_normal(shape) * 3, "positive": np.abs(R.standard_normal(shape)),
         "negative": -np.abs(R.standard_normal(shape)), "zeros": np.zeros(shape)}[kind].astype(np.float32)
    path = _dynamic_quantize_model(tmp_path / "dql.onnx", shape)
    want = dict(zip(("y", "y_scale", "y_zero_point"),
                    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})))
    ref = compiler.interpret(compiler.load_onnx(path), {"x": x})
    got = aotc.compile(path, tmp_path / "b", target="x86-avx512").run({"x": x})
    for name, w in want.items():
        np.testing.assert_array_equal(ref[name], w, err_msg=f"reference {name}")
        np.testing.assert_array_equal(got[name], w, err_msg=f"bundle {name}")
    assert kind == "zeros" or len(np.unique(want["y"])) > 40  # the quantized range is exercised

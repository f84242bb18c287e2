"""INT8 quantization of small graphs end to end: which nodes become which int8
ops, the fused graph against its explicit Q/DQ form, options (quantize_ops,
exclude_nodes, smoothquant, max_drop), calibration data checks, the pass and
the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph
from aotc.passes.quantization import QuantizationError, quantize_graph
from aotc.passes.quantization.quantize import copy_graph, output_error

R = np.random.default_rng(7)


def mlp(outlier_channel: bool = False) -> Graph:
    """x[8,32] -> FusedMatMul(relu) -> LayerNorm -> FusedMatMul(+residual) -> Gemm(transB) -> y"""
    g = Graph()
    x = g.add_input("x", (8, 32), DType.float32)
    w1 = R.standard_normal((32, 64)).astype(np.float32) * 0.2
    h = g.add_node("FusedMatMul", [x, g.add_const("w1", w1), g.add_const("b1", R.standard_normal(64).astype(np.float32))],
                   {"activation": "relu"}, name="fc1").outputs[0]
    gamma = np.ones(64, np.float32)
    if outlier_channel:
        gamma[5] = 40.0  # a LayerNorm channel with huge activations, as in BERT
    ln = g.add_node("LayerNormalization", [h, g.add_const("gamma", gamma), g.add_const("beta", np.zeros(64, np.float32))],
                    {"axis": -1}, name="ln").outputs[0]
    w2 = R.standard_normal((64, 64)).astype(np.float32) * 0.1
    h2 = g.add_node("FusedMatMul", [ln, g.add_const("w2", w2), g.add_const("b2", np.zeros(64, np.float32)), ln],
                    {"activation": "none"}, name="fc2").outputs[0]
    w3 = R.standard_normal((10, 64)).astype(np.float32) * 0.1
    y = g.add_node("Gemm", [h2, g.add_const("w3", w3), g.add_const("b3", np.ones(10, np.float32))],
                   {"transB": 1, "alpha": 0.5}, name="head").outputs[0]
    g.outputs = [y]
    return g


def feeds(n, shape=(8, 32), seed=0, name="x"):
    r = np.random.default_rng(seed)
    return [{name: r.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def test_mlp_becomes_int8_ops_and_stays_close():
    g = mlp()
    want = [compiler.interpret(g, f) for f in feeds(4, seed=1)]
    report = quantize_graph(g, calibration=feeds(8))
    compiler.verify(g)
    hist = g.op_histogram()
    assert hist["QuantizedMatMul"] == 3 and "DequantizeLinear" not in hist and "Gemm" not in hist
    assert hist["LayerNormalization"] == 1  # stays float
    assert {q["node"] for q in report["quantized"]} == {"fc1", "fc2", "head/as_matmul"}
    # fc1 (relu) feeds only the float LayerNorm: float epilogue; fc2 feeds the int8 Gemm only through its Q
    assert report["scheme"]["weights"].startswith("int8, symmetric")
    got = [compiler.interpret(g, f) for f in feeds(4, seed=1)]
    for a, b in zip(got, want):
        assert output_error(a, b) < 1e-3


def test_fused_graph_matches_its_explicit_qdq_form():
    """Before fusion the graph is float code on fake-quantized values; the int8 kernels compute the same up to
    float32 rounding (the int32 accumulation is exact, the Q/DQ form sums rounded float products)."""
    from aotc.passes.quantization.calibrate import calibrate
    from aotc.passes.quantization.qdq import activation_values, find_sites, insert_qdq
    from aotc.passes.fuse_quantized import fuse_quantized_ops
    g = mlp()
    sites, _ = find_sites(g, ["FusedMatMul", "Gemm"], [])
    cal = calibrate(g, feeds(4), activation_values(sites))
    insert_qdq(g, sites, cal.ranges)
    compiler.verify(g)
    assert g.op_histogram()["DequantizeLinear"] == 6  # 3 activations + 3 weights
    qdq = copy_graph(g)
    fuse_quantized_ops(g, requantize=False)
    assert "DequantizeLinear" not in g.op_histogram()
    for f in feeds(3, seed=5):
        a, b = compiler.interpret(g, f), compiler.interpret(qdq, f)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4)


def test_requantizing_epilogue_when_only_int8_ops_read_the_result():
    g = Graph()
    x = g.add_input("x", (4, 16), DType.float32)
    h = g.add_node("FusedMatMul", [x, g.add_const("w1", R.standard_normal((16, 16)).astype(np.float32))],
                   {"activation": "relu"}, name="a").outputs[0]
    g.outputs = [g.add_node("MatMul", [h, g.add_const("w2", R.standard_normal((16, 8)).astype(np.float32))],
                            name="b").outputs[0]]
    quantize_graph(g, calibration=feeds(4, (4, 16)))
    a = next(n for n in g.nodes if n.name == "a")
    assert a.op_type == "QuantizedMatMul" and a.outputs[0].dtype == DType.uint8 and len(a.inputs) == 9
    assert g.op_histogram() == {"QuantizedMatMul": 2, "QuantizeLinear": 1}
    g2 = Graph()  # the same, with the intermediate also a graph output: it must stay float
    x = g2.add_input("x", (4, 16), DType.float32)
    h = g2.add_node("MatMul", [x, g2.add_const("w1", np.eye(16, dtype=np.float32))], name="a").outputs[0]
    y = g2.add_node("MatMul", [h, g2.add_const("w2", np.eye(16, dtype=np.float32))], name="b").outputs[0]
    g2.outputs = [h, y]
    quantize_graph(g2, calibration=feeds(2, (4, 16)))
    assert all(v.dtype == DType.float32 for v in g2.outputs)


def test_quantize_ops_and_exclude_nodes():
    g = mlp()
    r = quantize_graph(g, calibration=feeds(2), quantize_ops="FusedMatMul", exclude_nodes=["fc2"])
    assert [q["node"] for q in r["quantized"]] == ["fc1"]
    assert {"node": "fc2", "reason": "excluded (exclude_nodes)"} in r["float"]
    assert g.op_histogram()["Gemm"] == 1 and g.op_histogram()["FusedMatMul"] == 1
    with pytest.raises(QuantizationError, match="no int8 kernel for LayerNormalization"):
        quantize_graph(mlp(), calibration=feeds(2), quantize_ops=["LayerNormalization"])


def test_weights_shrink_about_4x():
    g = Graph()
    x = g.add_input("x", (2, 256), DType.float32)
    g.outputs = [g.add_node("MatMul", [x, g.add_const("w", R.standard_normal((256, 512)).astype(np.float32))]).outputs[0]]
    r = quantize_graph(g, calibration=feeds(2, (2, 256)))
    # int8 weights + a float32 scale per channel + the activation scale and zero point (weight zero points are dropped)
    assert r["constant_bytes"]["int8"] == 256 * 512 + 512 * 4 + 4 + 1
    assert r["constant_bytes"]["ratio"] > 3.9


def test_smoothquant_keeps_the_float_function_and_helps_outliers():
    from aotc.passes.quantization.qdq import find_sites
    from aotc.passes.quantization.smoothquant import smooth_sites
    g = mlp(outlier_channel=True)
    before = [compiler.interpret(g, f) for f in feeds(3, seed=2)]
    sites, _ = find_sites(g, ["FusedMatMul", "Gemm"], [])
    rep = smooth_sites(g, sites, feeds(4), 0.5)
    compiler.verify(g)
    after = [compiler.interpret(g, f) for f in feeds(3, seed=2)]
    for a, b in zip(after, before):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4)
    ln_entry = next(e for e in rep["smoothed"] if e["activation"] == "ln:0" or "ln" in e["activation"])
    assert ln_entry["inverse_scale_in"] == "Mul"  # the LayerNorm output is also the residual: not foldable
    assert ln_entry["max_channel_absmax_after"] < ln_entry["max_channel_absmax_before"] / 3
    plain = quantize_graph(mlp(outlier_channel=True), calibration=feeds(8))
    smooth = quantize_graph(mlp(outlier_channel=True), calibration=feeds(8), smoothquant=0.5)
    assert smooth["output_error"]["value"] < plain["output_error"]["value"]


def test_max_drop_falls_back_to_float():
    g = mlp(outlier_channel=True)
    full = quantize_graph(copy_graph(g), calibration=feeds(4))["output_error"]["value"]
    r = quantize_graph(g, calibration=feeds(4), max_drop=full / 4)
    s = r["sensitivity"]
    assert s["error_all_int8"] == pytest.approx(full)
    assert s["fallback"] and s["error_after"] <= full / 4
    assert r["output_error"]["value"] == pytest.approx(s["error_after"])
    assert {f["node"] for f in r["float"] if f["reason"].startswith("sensitivity")} == set(s["fallback"])
    # the most sensitive node goes first
    assert s["fallback"][0] == max(s["per_node"], key=s["per_node"].get)
    r0 = quantize_graph(mlp(), calibration=feeds(2), max_drop=0.5)
    assert r0["sensitivity"]["fallback"] == [] and len(r0["quantized"]) == 3


def test_conv_net_quantized(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"])
    from aotc.passes import PassManager
    g = compiler.load_onnx(path)
    PassManager(None).run(g)
    cal = feeds(6, (1, 3, 16, 16))
    want = [compiler.interpret(g, f)["y"] for f in feeds(4, (1, 3, 16, 16), seed=3)]
    r = quantize_graph(g, calibration=cal)
    compiler.verify(g)
    hist = g.op_histogram()
    assert hist["QuantizedConv"] == 3 and hist.get("QuantizedMatMul", 0) == 1, hist
    convs = [n for n in g.nodes if n.op_type == "QuantizedConv"]
    # the stem and the depthwise conv feed only int8 convs: requantized uint8 outputs
    assert [n.outputs[0].dtype for n in convs] == [DType.uint8, DType.uint8, DType.float32]
    got = [compiler.interpret(g, f)["y"] for f in feeds(4, (1, 3, 16, 16), seed=3)]
    for a, b in zip(got, want):
        assert output_error({"y": a}, {"y": b}) < 2e-3
    assert r["constant_bytes"]["ratio"] > 1.5


# -- calibration data --------------------------------------------------------------------------------
def test_generator_calibration_takes_the_first_samples():
    taken = []

    def gen():
        for i in range(100):
            taken.append(i)
            yield {"x": np.random.default_rng(i).standard_normal((8, 32)).astype(np.float32)}
    r = quantize_graph(mlp(), calibration=gen(), samples=5)
    assert r["samples"] == 5 and len(taken) <= 6


def test_calibration_mismatch_is_one_clear_error():
    from aotc.compiler.calibration import CalibrationError
    with pytest.raises(CalibrationError) as e:
        quantize_graph(mlp(), calibration=[{"x": np.zeros((8, 31), np.float32)}])
    msg = str(e.value)
    assert "x has shape [8, 31]" in msg and "float32[8,32]" in msg and "\n" not in msg
    with pytest.raises(CalibrationError, match="dtype float64"):
        quantize_graph(mlp(), calibration={"x": np.zeros((4, 8, 32))})
    with pytest.raises(CalibrationError, match="unknown key"):
        quantize_graph(mlp(), calibration={"x": np.zeros((4, 8, 32), np.float32), "y": np.zeros(3)})
    with pytest.raises(QuantizationError, match="--calibration"):
        quantize_graph(mlp(), calibration=None)


def test_npz_with_objects_is_refused(tmp_path):
    from aotc.compiler.calibration import CalibrationError, load_calibration
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CalibrationError, match="pickle"):
        load_calibration(p)


# -- the pass and the CLI -----------------------------------------------------------------------------
def test_quantize_int8_pass_in_a_pipeline():
    from aotc.passes import PassContext, PassManager, insert_pass
    pipeline = insert_pass(["canonicalize", "fuse_matmul_epilogue", "eliminate_dead_code"],
                           ("quantize_int8", {"method": "entropy", "samples": 3}), ("fuse_", "prune_"))
    assert [n for n, _ in pipeline] == ["canonicalize", "fuse_matmul_epilogue", "quantize_int8", "eliminate_dead_code"]
    pm = PassManager(pipeline, verify_each=True, context=PassContext(calibration=feeds(5)))
    g = pm.run(mlp())
    rep = pm.applied()[2]["report"]
    assert rep["method"] == "entropy" and rep["samples"] == 3 and "QuantizedMatMul" in g.op_histogram()
    json.dumps(pm.applied())  # the manifest can hold it


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aotc.cli", *args], capture_output=True, text=True, cwd=cwd)


def _save_mlp_onnx(path):
    from aotc.compiler.onnx_export import save_onnx
    save_onnx(mlp(), path)


def test_cli_optimize_quantize(tmp_path):
    model, out, rep = tmp_path / "mlp.onnx", tmp_path / "q.onnx", tmp_path / "report.json"
    _save_mlp_onnx(model)
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal((40, 32)).astype(np.float32))
    p = _cli("optimize", str(model), "-o", str(out), "--quantize", "int8", "--calibration", str(tmp_path / "cal.npz"),
             "--calibration-method", "percentile", "--calibration-percentile", "99.9", "--calibration-samples", "4",
             "--exclude-nodes", "fc1", "--report", str(rep))
    assert p.returncode == 0, p.stderr
    assert "int8: 2 node(s) quantized" in p.stderr and "kept float: fc1" in p.stderr
    steps = json.loads(rep.read_text())
    q = next(s for s in steps if s["name"] == "quantize_int8")
    assert q["report"]["method"] == "percentile" and q["report"]["percentile"] == 99.9 and q["report"]["samples"] == 4
    back = compiler.load_onnx(out)  # the quantized model reads back (ai.aotc domain ops)
    assert "QuantizedMatMul" in back.op_histogram()


def test_cli_quantize_errors(tmp_path):
    model = tmp_path / "mlp.onnx"
    _save_mlp_onnx(model)
    p = _cli("optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--quantize", "int8")
    assert p.returncode == 2 and "--calibration FILE.npz" in p.stderr
    p = _cli("optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--calibration-method", "entropy")
    assert p.returncode == 2 and "only take(s) effect with --quantize int8" in p.stderr
    p = _cli("optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--quantize", "int4", "--calibration", "x.npz")
    assert p.returncode == 2 and p.stderr.startswith("Usage: ") and "'int4' is not one of 'int8'" in p.stderr
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 7), np.float32))
    p = _cli("optimize", str(model), "-o", str(tmp_path / "o.onnx"), "--quantize", "int8", "--calibration",
             str(tmp_path / "bad.npz"))
    assert p.returncode == 2 and "x has shape [3, 7]" in p.stderr and "Traceback" not in p.stderr


def attention_graph(b=2, s=6, e=32, h=4, d=8, seed=3):
    # its own generator: the module's R is shared with the tests that run before, so weights (and the
    # quantization error checked against a bound) would depend on which test files run in the session
    R = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", (b, s, e), DType.float32)
    mask = g.add_input("mask", (b, 1, 1, s), DType.float32)
    ws = [g.add_const(f"w{i}", (R.standard_normal((e, h * d)) * 0.2).astype(np.float32)) for i in range(3)]
    bs = [g.add_const(f"b{i}", R.standard_normal(h * d).astype(np.float32)) for i in range(3)]
    att = g.add_node("Attention", [x, x, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], mask, None],
                     {"num_heads": h, "head_dim": d, "scale": d ** -0.5}, name="att").outputs[0]
    g.outputs = [g.add_node("MatMul", [att, g.add_const("wo", R.standard_normal((h * d, e)).astype(np.float32))],
                            name="out").outputs[0]]
    return g


def attention_feeds(n, seed=0, b=2, s=6, e=32):
    r = np.random.default_rng(seed)
    return [{"x": r.standard_normal((b, s, e)).astype(np.float32),
             "mask": np.where(r.random((b, 1, 1, s)) < 0.3, -1e4, 0).astype(np.float32)} for _ in range(n)]


def test_attention_projections_quantized_and_decomposed():
    from aotc.passes.decompose_quantized import decompose_quantized_attention
    g = attention_graph()
    want = [compiler.interpret(g, f) for f in attention_feeds(3, seed=1)]
    quantize_graph(g, calibration=attention_feeds(4))
    assert g.op_histogram() == {"QuantizedAttention": 1, "QuantizedMatMul": 1, "QuantizeLinear": 2}
    q = [compiler.interpret(g, f) for f in attention_feeds(3, seed=1)]
    for a, b in zip(q, want):
        assert output_error(a, b) < 1e-3
    assert decompose_quantized_attention(g) == 1
    compiler.verify(g)
    hist = g.op_histogram()
    assert hist["QuantizedMatMul"] == 4 and "QuantizedAttention" not in hist and hist["Softmax"] == 1
    for a, b in zip([compiler.interpret(g, f) for f in attention_feeds(3, seed=1)], q):
        np.testing.assert_allclose(a["out:0"], b["out:0"], rtol=1e-5, atol=1e-5)

"""Pre-quantized models (QAT exports, onnxruntime quantize_static QDQ) run on aotc's int8 ops with their own
scales, and compute what onnxruntime computes on the same model (passes/prequantized.py).

The yardstick is one quantization step of the output: the scale of the model's last QuantizeLinear before the
output (its DequantizeLinear when the output itself is quantized)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from aotc import compiler
from aotc.passes import PassContext, PassManager
from aotc.passes.prequantized import format_prequantized
from prequantized_models import ort_quantize_static, qat_cnn_onnx, qat_transformer_onnx


def ort_outputs(path: Path, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime optimized, onnxruntime without graph optimizations = the operators' reference semantics)."""
    import onnxruntime as ort
    outs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        outs.append(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0])
    return outs[0], outs[1]


def output_step(path: Path) -> float:
    """The scale of the last QuantizeLinear on the way to the (first) output."""
    m = onnx.load(str(path))
    producer = {o: n for n in m.graph.node for o in n.output}
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    seen, todo = set(), [m.graph.output[0].name]
    while todo:
        v = todo.pop(0)
        n = producer.get(v)
        if n is None or v in seen:
            continue
        seen.add(v)
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in consts:
            return float(np.max(consts[n.input[1]]))
        todo += [i for i in n.input if i]
    raise AssertionError("no quantizer before the output")


def prequantized_graph(path: Path, input_shapes=None) -> tuple[compiler.Graph, dict]:
    graph = compiler.load_onnx(path, input_shapes=input_shapes)
    ctx = PassContext()
    PassManager(None, context=ctx, verify_each=True).run(graph)
    return graph, ctx.reports["fuse_prequantized"]


def check_against_ort(path: Path, graph: compiler.Graph, feeds: dict, got: np.ndarray | None = None) -> dict:
    got = compiler.interpret(graph, feeds)[graph.outputs[0].name] if got is None else got
    opt, ref = ort_outputs(path, feeds)
    step = output_step(path)
    diff = {"step": step, "vs_reference": float(np.abs(got - ref).max()), "vs_optimized": float(np.abs(got - opt).max()),
            "ort_optimized_vs_reference": float(np.abs(opt - ref).max())}
    print(f"\n{path.name}: max |aotc - onnxruntime| {diff['vs_reference']:.3g} (reference), {diff['vs_optimized']:.3g} "
          f"(optimized); output step {step:.3g}")
    assert diff["vs_reference"] <= step and diff["vs_optimized"] <= step, diff
    return diff


def _check_x86_bundle(path: Path, graph: compiler.Graph, feeds: dict, tmp_path: Path) -> None:
    """The graph's x86-avx512 bundle (VNNI kernels), where this machine has AVX-512, against onnxruntime."""
    from x86_helpers import compile_and_run, has_avx512
    if has_avx512():
        check_against_ort(path, graph, feeds, got=compile_and_run(graph, feeds, tmp_path)[graph.outputs[0].name])


def test_qat_cnn_runs_int8_with_its_own_scales(tmp_path):
    path, x = qat_cnn_onnx(tmp_path / "qat_cnn.onnx")
    graph, report = prequantized_graph(path)
    hist = graph.op_histogram()
    assert hist.get("QuantizedConv") == 3 and "Conv" not in hist and "FusedConv" not in hist
    # the model's own scales, not recalibrated ones: every int8 conv reads a scale the file holds
    model_scales = {float(np.float32(onnx.numpy_helper.to_array(t)).reshape(-1)[0])
                    for t in onnx.load(str(path)).graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    model_scales |= {float(np.float32(onnx.numpy_helper.to_array(a.t)).reshape(-1)[0])
                     for n in onnx.load(str(path)).graph.node if n.op_type == "Constant" for a in n.attribute
                     if a.t.data_type == onnx.TensorProto.FLOAT and a.t.dims in ([], [1])}
    for n in graph.nodes:
        if n.op_type == "QuantizedConv":
            assert float(n.inputs[1].const.reshape(())) in model_scales
    assert report["int8_ops"] == {"QuantizedConv": 3}
    check_against_ort(path, graph, {"x": x})
    _check_x86_bundle(path, graph, {"x": x}, tmp_path)


def test_qat_transformer_block_runs_int8_attention(tmp_path):
    path, x = qat_transformer_onnx(tmp_path / "qat_block.onnx")
    graph, report = prequantized_graph(path)
    assert report["int8_ops"] == {"QuantizedMatMul": 3, "QuantizedAttention": 1}, report
    assert not report["float"]
    check_against_ort(path, graph, {"x": x})
    assert "1 QuantizedAttention" in format_prequantized(report)
    _check_x86_bundle(path, graph, {"x": x}, tmp_path)


def _small_cnn_onnx(path: Path) -> Path:
    """conv-relu, depthwise conv, pointwise conv with a residual, pooling, linear: the layers a CNN has."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.pw = nn.Conv2d(16, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            b = self.pw(torch.clamp(self.dw(a), 0, 6)) + a
            return self.fc(b.mean((2, 3)))
    if not path.exists():
        torch.manual_seed(0)
        torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["x"],
                          output_names=["y"], dynamo=False, opset_version=13)
    return path


ORT_LAYOUTS = {
    "per-channel-u8-sym": dict(per_channel=True),
    "per-tensor-u8": dict(per_channel=False),
    "per-channel-s8-activations": dict(per_channel=True, activation_type="QInt8"),
    "asymmetric-u8-weights": dict(per_channel=False, weight_type="QUInt8"),
}


@pytest.mark.parametrize("layout", list(ORT_LAYOUTS))
def test_onnxruntime_quantize_static_layouts(layout, model_cache, tmp_path):
    from onnxruntime.quantization import QuantType
    opts = {k: getattr(QuantType, v) if k.endswith("_type") else v for k, v in ORT_LAYOUTS[layout].items()}
    r = np.random.default_rng(0)
    cal = [{"x": r.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    path = ort_quantize_static(_small_cnn_onnx(model_cache / "prequant_small_cnn_op13.onnx"),
                               tmp_path / f"small_cnn_{layout}.onnx", cal, **opts)
    graph, report = prequantized_graph(path)
    hist = Counter(n.op_type for n in graph.nodes)
    if layout == "asymmetric-u8-weights":
        # q - zp of a uint8 weight fits int8 only where the weights happen to (here: the classifier); the rest stay
        # float on the model's fake-quantized values, and the report says why
        assert hist["QuantizedMatMul"] == 1 and hist["Conv"] + hist["FusedConv"] == 3, hist
        assert {f["why"] for f in report["float"]} == {"its weight has a zero point and does not fit symmetric int8"}
    else:
        # every conv and the classifier int8 (int8 activations become uint8 with z + 128)
        assert hist["QuantizedConv"] == 3 and hist["QuantizedMatMul"] == 1 and not report["float"], (hist, report)
    if "s8" in layout:
        assert all(n.inputs[0].dtype.value == "uint8" for n in graph.nodes if n.op_type.startswith("Quantized"))
    check_against_ort(path, graph, {"x": r.standard_normal((1, 3, 32, 32)).astype(np.float32)})


def test_qoperator_model_runs_int8(model_cache, tmp_path):
    """onnxruntime's QOperator format (QLinearConv, and its com.microsoft QLinearAdd and QGemm, around
    QuantizeLinear/DequantizeLinear at the model's edges): the same int8 ops as the QDQ format, and
    onnxruntime's numbers."""
    from onnxruntime.quantization import QuantFormat
    r = np.random.default_rng(0)
    cal = [{"x": r.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    path = ort_quantize_static(_small_cnn_onnx(model_cache / "prequant_small_cnn_op13.onnx"),
                               tmp_path / "small_cnn_qoperator.onnx", cal, quant_format=QuantFormat.QOperator)
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["QLinearConv"] == 3 and ops["QLinearAdd"] == 1 and ops["QGemm"] == 1, ops
    graph, report = prequantized_graph(path)
    hist = graph.op_histogram()
    assert hist.get("QuantizedConv") == 3 and hist.get("QuantizedMatMul") == 1, hist
    assert not {"QLinearConv", "QLinearAdd", "QGemm"} & set(hist) and not report["float"]
    check_against_ort(path, graph, {"x": r.standard_normal((1, 3, 32, 32)).astype(np.float32)})


def _com_microsoft_ops_onnx(path: Path) -> Path:
    """Conv + LeakyRelu, x * sigmoid(conv(x)), Concat, AveragePool, GlobalAveragePool, Linear: every op
    onnxruntime's QOperator format writes as a com.microsoft QLinear* op."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
            self.c3, self.fc = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)

        def forward(self, x):
            a = nn.functional.leaky_relu(self.c1(x), 0.1)
            b = a * torch.sigmoid(self.c2(a))
            y = self.c3(nn.functional.avg_pool2d(torch.cat([a, b], 1), 2))
            return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))
    if not path.exists():
        torch.manual_seed(0)
        torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 16, 16),), str(path), input_names=["x"],
                          output_names=["y"], dynamo=False, opset_version=13)
    return path


def test_com_microsoft_qoperator_ops_match_onnxruntime(model_cache, tmp_path):
    """onnxruntime's com.microsoft QLinearLeakyRelu, QLinearSigmoid, QLinearMul, QLinearConcat,
    QLinearAveragePool, QLinearGlobalAveragePool and QGemm import (reference kernels equal to onnxruntime),
    become Q/DQ around float ops and int8 convs/GEMMs, and the x86 bundle computes onnxruntime's numbers."""
    from onnxruntime.quantization import QuantFormat
    from aotc.compiler.model_summary import summarize_onnx
    r = np.random.default_rng(5)
    cal = [{"x": r.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    path = ort_quantize_static(_com_microsoft_ops_onnx(model_cache / "prequant_ms_ops_op13.onnx"),
                               tmp_path / "ms_ops_qoperator.onnx", cal, quant_format=QuantFormat.QOperator)
    ms = Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft")
    assert set(ms) == {"QLinearLeakyRelu", "QLinearSigmoid", "QLinearMul", "QLinearConcat", "QLinearAveragePool",
                       "QLinearGlobalAveragePool", "QGemm"}, ms
    assert set(ms) <= set(summarize_onnx(path)[0]["quantization"]["qoperator_ops"])
    feeds = {"x": r.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    imported = compiler.load_onnx(path)
    check_against_ort(path, imported, feeds)  # the reference kernels, before any pass
    graph, report = prequantized_graph(path)
    assert not set(ms) & set(graph.op_histogram()) and report["int8_ops"] == {"QuantizedConv": 3,
                                                                              "QuantizedMatMul": 1}
    check_against_ort(path, graph, feeds)
    _check_x86_bundle(path, graph, feeds, tmp_path)


def test_matmul_integer_is_exact(tmp_path):
    """MatMulInteger / ConvInteger (quantize_dynamic's integer ops) through the pipeline: the int32 sums exactly."""
    from onnx import TensorProto, helper
    r = np.random.default_rng(3)
    w = r.integers(-128, 128, (64, 48), dtype=np.int8)
    cw = r.integers(-128, 128, (8, 4, 3, 3), dtype=np.int8)
    nodes = [helper.make_node("MatMulInteger", ["a", "w", "az"], ["y"]),
             helper.make_node("ConvInteger", ["x", "cw", "xz"], ["z"], pads=[1, 1, 1, 1])]
    inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.array(7, np.uint8), "az"),
             onnx.numpy_helper.from_array(cw, "cw"), onnx.numpy_helper.from_array(np.array(3, np.uint8), "xz")]
    g = helper.make_graph(nodes, "ints", [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 64]),
                                          helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 48]),
                           helper.make_tensor_value_info("z", TensorProto.INT32, [1, 8, 6, 6])], inits)
    path = tmp_path / "ints.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    feeds = {"a": r.integers(0, 256, (4, 64), dtype=np.uint8), "x": r.integers(0, 256, (1, 4, 6, 6), dtype=np.uint8)}
    graph, report = prequantized_graph(path)
    assert report["int8_ops"] == {"QuantizedMatMul": 1, "QuantizedConv": 1}
    import onnxruntime as ort
    got = compiler.interpret(graph, feeds)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y", "z"], feeds)
    np.testing.assert_array_equal(got["y"], want[0])
    np.testing.assert_array_equal(got["z"], want[1])


def test_inspect_says_how_a_model_is_quantized(tmp_path):
    from aotc.compiler.model_summary import format_report, summarize_onnx
    path, _ = qat_cnn_onnx(tmp_path / "qat_cnn.onnx")
    report, error = summarize_onnx(path)
    assert error is None
    q = report["quantization"]
    # 5 activation pairs (input, 3 convs, the classifier) and 4 weights quantized in the graph (Q(float) -> DQ)
    assert q["qdq_pairs"] == 9 and q["weights"] == 4 and q["per_channel"] == 4 and q["activation_dtypes"] == ["uint8"]
    assert q["weight_dtypes"] == ["int8"] and not q["qoperator_ops"]
    assert "pre-quantized: 9 Q/DQ pairs" in format_report(report)

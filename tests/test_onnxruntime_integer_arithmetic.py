"""onnxruntime's integer arithmetic for pre-quantized units (compiler/ops/qlinear.py, requantization="integer"
in compiler/ops/quant.py), checked element for element against onnxruntime's own kernels on single-node
QOperator models with random grids: the reference interpreter, the x86 bundle, and the fusion that makes these
ops from a QDQ model's units. The ONNX definition of the same units (dequantize, float op, quantize) is checked
to differ somewhere on the same data, so the equality is not vacuous."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

from aotc import compiler
from aotc.compiler.ops.quant import dequantize, quantize
from aotc.compiler.ops.registry import get_op
from aotc.passes import PassContext, PassManager
from x86_helpers import compile_and_run, needs_avx512

MS = [oh.make_opsetid("", 13), oh.make_opsetid("com.microsoft", 1)]


def _ort(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the kernels themselves
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _model(node, inputs: dict, consts: dict) -> onnx.ModelProto:
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info(k, TP.UINT8, list(v.shape)) for k, v in inputs.items()],
                      [oh.make_tensor_value_info("y", TP.UINT8, None)],
                      [nh.from_array(np.asarray(v), k) for k, v in consts.items()])
    return oh.make_model(g, opset_imports=MS)


def _grid(rng, what: str) -> dict:
    return {f"s{what}": np.float32(rng.uniform(0.002, 0.08)), f"z{what}": np.uint8(rng.integers(0, 256))}


def test_quantized_add_is_onnxruntimes_qlinearadd():
    rng = np.random.default_rng(0)
    op, differ, total = get_op("QuantizedAdd"), 0, 0
    for _ in range(60):
        n = int(rng.integers(1, 4000))
        a, b = (rng.integers(0, 256, n).astype(np.uint8) for _ in range(2))
        c = {**_grid(rng, "a"), **_grid(rng, "b"), **_grid(rng, "y")}
        node = oh.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], domain="com.microsoft")
        want = _ort(_model(node, {"a": a, "b": b}, c), {"a": a, "b": b})
        got = op.run([a, c["sa"], c["za"], b, c["sb"], c["zb"], c["sy"], c["zy"]], {})[0]
        np.testing.assert_array_equal(got, want)
        onnx_def = quantize(dequantize(a, c["sa"], c["za"]) + dequantize(b, c["sb"], c["zb"]), c["sy"], c["zy"], np.uint8)
        differ, total = differ + int((onnx_def != want).sum()), total + n
    assert differ > 0, "the ONNX definition matched onnxruntime everywhere: the test would not see a wrong association"
    print(f"\nONNX definition vs onnxruntime QLinearAdd: {differ} of {total} elements differ; QuantizedAdd: none")


def test_quantized_global_average_pool_is_onnxruntimes():
    rng = np.random.default_rng(1)
    op = get_op("QuantizedGlobalAveragePool")
    for _ in range(40):
        c_, hw = int(rng.integers(1, 200)), int(rng.integers(1, 15))
        x = rng.integers(0, 256, (1, c_, hw, hw)).astype(np.uint8)
        c = {**_grid(rng, "x"), **_grid(rng, "y")}
        node = oh.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            channels_last=0)
        want = _ort(_model(node, {"x": x}, c), {"x": x})
        np.testing.assert_array_equal(op.run([x, c["sx"], c["zx"], c["sy"], c["zy"]], {})[0], want)


def _qlinearconv(rng, depthwise: bool, k: int, stride: int):
    cin = int(rng.integers(2, 40))
    m = cin if depthwise else int(rng.integers(2, 40))
    group = cin if depthwise else 1
    c = {"sx": np.float32(rng.uniform(0.005, 0.05)), "zx": np.uint8(rng.integers(0, 256)),
         "w": rng.integers(-127, 128, (m, cin // group, k, k)).astype(np.int8),
         "ws": rng.uniform(0.001, 0.02, m).astype(np.float32), "wz": np.zeros(m, np.int8),
         "sy": np.float32(rng.uniform(0.01, 0.3)), "zy": np.uint8(rng.integers(0, 256)),
         "b": rng.integers(-30000, 30000, m).astype(np.int32)}
    x = rng.integers(0, 256, (1, cin, 11, 11)).astype(np.uint8)
    node = oh.make_node("QLinearConv", ["x", "sx", "zx", "w", "ws", "wz", "sy", "zy", "b"], ["y"], group=group,
                        pads=[k // 2] * 4, strides=[stride] * 2)
    return _model(node, {"x": x}, c), x


@pytest.mark.parametrize("depthwise,k,stride", [(False, 1, 1), (False, 3, 1), (True, 3, 1), (True, 5, 2),
                                                (False, 3, 2)])
def test_qlinearconv_runs_integer_requantization_exactly(depthwise, k, stride, tmp_path):
    """QLinearConv -> QuantizedConv with requantization="integer": the interpreter and the x86 bundle (pointwise
    VNNI GEMM and direct kernels) equal onnxruntime's QLinearConv to the bit."""
    rng = np.random.default_rng(10 * k + stride + depthwise)
    model, x = _qlinearconv(rng, depthwise, k, stride)
    path = tmp_path / "qlinearconv.onnx"
    onnx.save(model, str(path))
    want = _ort(model, {"x": x})
    graph = compiler.load_onnx(path)
    PassManager(None).run(graph)
    qconv = [n for n in graph.nodes if n.op_type == "QuantizedConv"]
    assert len(qconv) == 1 and qconv[0].attrs["requantization"] == "integer" and qconv[0].inputs[5].dtype.value == "int32"
    np.testing.assert_array_equal(compiler.interpret(graph, {"x": x})["y"], want)
    from x86_helpers import has_avx512
    if has_avx512():
        np.testing.assert_array_equal(compile_and_run(graph, {"x": x}, tmp_path)["y"], want)


@needs_avx512
def test_integer_units_in_an_x86_bundle_equal_onnxruntime(tmp_path):
    """A QDQ unit chain as onnxruntime's quantize_static writes it (conv, residual Add, pool, Gemm with int32
    biases): fused into QuantizedConv/QuantizedMatMul (integer requantization), QuantizedAdd and
    QuantizedGlobalAveragePool, and the x86 bundle equal to onnxruntime's default session, output for output."""
    import onnxruntime as ort
    rng = np.random.default_rng(3)
    c, m, hw = 16, 10, 12
    consts, nodes = {}, []

    def const(name, arr):
        consts[name] = np.asarray(arr)
        return name

    def qdq(x, scale, zp, name):
        nodes.append(oh.make_node("QuantizeLinear", [x, const(f"{name}_s", np.float32(scale)),
                                                     const(f"{name}_z", np.uint8(zp))], [f"{name}_q"]))
        nodes.append(oh.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
        return f"{name}_dq"

    def weight(name, shape, axis):
        n = shape[axis]
        ws = rng.uniform(0.002, 0.01, n).astype(np.float32)
        nodes.append(oh.make_node("DequantizeLinear", [const(f"{name}_w", rng.integers(-127, 128, shape).astype(np.int8)),
                                                       const(f"{name}_ws", ws), const(f"{name}_wz", np.zeros(n, np.int8))],
                                  [f"{name}_wdq"], axis=axis))
        return f"{name}_wdq", ws

    def bias(name, xs, ws):
        bs = (np.float32(xs) * ws).astype(np.float32)
        nodes.append(oh.make_node("DequantizeLinear", [const(f"{name}_b", rng.integers(-5000, 5000, ws.size).astype(np.int32)),
                                                       const(f"{name}_bs", bs), const(f"{name}_bz", np.zeros(ws.size, np.int32))],
                                  [f"{name}_bdq"], axis=0))
        return f"{name}_bdq"

    x = qdq("x", 0.02, 128, "in")
    w1, ws1 = weight("c1", (c, 3, 3, 3), 0)
    nodes.append(oh.make_node("Conv", [x, w1, bias("c1", 0.02, ws1)], ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(oh.make_node("Relu", ["c1"], ["r1"]))
    h1 = qdq("r1", 0.05, 0, "h1")
    w2, ws2 = weight("c2", (c, 1, 3, 3), 0)
    nodes.append(oh.make_node("Conv", [h1, w2, bias("c2", 0.05, ws2)], ["c2"], pads=[1, 1, 1, 1], group=c))
    h2 = qdq("c2", 0.04, 120, "h2")
    nodes.append(oh.make_node("Add", [h2, h1], ["sum"]))
    s = qdq("sum", 0.06, 110, "s")
    nodes.append(oh.make_node("GlobalAveragePool", [s], ["pool"]))
    p = qdq("pool", 0.03, 100, "p")
    nodes.append(oh.make_node("Flatten", [p], ["flat"]))
    wf, wsf = weight("fc", (m, c), 0)
    nodes.append(oh.make_node("Gemm", ["flat", wf, bias("fc", 0.03, wsf)], ["fc"], transB=1))
    nodes.append(oh.make_node("QuantizeLinear", ["fc", const("out_s", np.float32(0.02)), const("out_z", np.uint8(128))],
                              ["out_q"]))
    nodes.append(oh.make_node("DequantizeLinear", ["out_q", "out_s", "out_z"], ["y"]))
    g = oh.make_graph(nodes, "units", [oh.make_tensor_value_info("x", TP.FLOAT, [2, 3, hw, hw])],
                      [oh.make_tensor_value_info("y", TP.FLOAT, None)],
                      [nh.from_array(v, k) for k, v in consts.items()])
    path = tmp_path / "units.onnx"
    onnx.save(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]), str(path))

    graph = compiler.load_onnx(path)
    ctx = PassContext()
    PassManager(None, context=ctx).run(graph)
    report = ctx.reports["fuse_prequantized"]
    assert report["integer_units"] == {"QuantizedAdd": 1, "QuantizedGlobalAveragePool": 1}, report
    assert report["integer_requantization"] == 3, report
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # default: optimized, QLinear*
    for seed in range(4):
        feeds = {"x": np.random.default_rng(seed).standard_normal((2, 3, hw, hw)).astype(np.float32)}
        want = session.run(None, feeds)[0]
        np.testing.assert_array_equal(compiler.interpret(graph, feeds)["y"], want)
        np.testing.assert_array_equal(compile_and_run(graph, feeds, tmp_path / f"b{seed}")["y"], want)


def test_activation_the_output_grid_does_not_absorb_keeps_float_requantization(tmp_path):
    """A Relu before a QuantizeLinear whose zero point is not 0 is not saturation (onnxruntime keeps it too):
    that conv keeps the float epilogue."""
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8)
    consts = {"xs": np.float32(0.02), "xz": np.uint8(128), "w": w, "ws": np.full(4, 0.01, np.float32),
              "ys": np.float32(0.05), "yz": np.uint8(100)}
    nodes = [oh.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             oh.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             oh.make_node("DequantizeLinear", ["w", "ws"], ["wd"], axis=0),
             oh.make_node("Conv", ["xd", "wd"], ["c"]), oh.make_node("Relu", ["c"], ["r"]),
             oh.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
             oh.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TP.FLOAT, [1, 3, 4, 4])],
                      [oh.make_tensor_value_info("y", TP.FLOAT, None)], [nh.from_array(v, k) for k, v in consts.items()])
    path = tmp_path / "relu.onnx"
    onnx.save(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]), str(path))
    graph = compiler.load_onnx(path)
    PassManager(None).run(graph)
    (conv,) = [n for n in graph.nodes if n.op_type == "QuantizedConv"]
    assert conv.attrs["requantization"] == "float" and conv.attrs["activation"] == "relu"


def test_targets_without_the_kernels_run_the_units_in_float():
    """fit_to_target: a target refusing QuantizedAdd / QuantizedGlobalAveragePool gets their ONNX definition
    (DequantizeLinear, float op, QuantizeLinear)."""
    g = compiler.Graph()
    a = g.add_input("a", (1, 4, 3, 3), compiler.DType.uint8)
    b = g.add_input("b", (1, 4, 3, 3), compiler.DType.uint8)

    def c(name, v):
        return g.add_const(name, np.asarray(v))
    s = g.add_node("QuantizedAdd", [a, c("sa", np.float32(0.1)), c("za", np.uint8(3)), b, c("sb", np.float32(0.2)),
                                    c("zb", np.uint8(5)), c("sy", np.float32(0.3)), c("zy", np.uint8(7))]).outputs[0]
    p = g.add_node("QuantizedGlobalAveragePool", [s, c("sy2", np.float32(0.3)), c("zy2", np.uint8(7)),
                                                  c("sp", np.float32(0.1)), c("zp", np.uint8(2))]).outputs[0]
    g.outputs.append(p)
    feeds = {"a": np.arange(36, dtype=np.uint8).reshape(1, 4, 3, 3), "b": np.full((1, 4, 3, 3), 9, np.uint8)}
    want = compiler.interpret(g, feeds)[p.name]
    ctx = PassContext(supports=lambda n: "no kernel" if n.op_type.startswith("Quantized") else None)
    PassManager(["fit_to_target"], context=ctx).run(g)
    assert {n.op_type for n in g.nodes} == {"DequantizeLinear", "Add", "QuantizeLinear", "GlobalAveragePool"}
    assert np.abs(compiler.interpret(g, feeds)[g.outputs[0].name].astype(int) - want.astype(int)).max() <= 1

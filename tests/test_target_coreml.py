"""The coreml target: every op lowering compiled alone into a bundle (model.mlpackage), the saved package
evaluated by the NumPy MIL evaluator (and on macOS by Core ML's predict) and compared with aotc's reference
interpreter; fp16 and int8; the deployment targets' differences; the compile-time errors; determinism; the
loader off macOS."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from coreml_helpers import ON_MACOS, check_graph, check_op, compile_coreml, evaluate
from x86_helpers import build_graph

R = np.random.default_rng(1234)


def f32(*shape, lo=None):
    x = R.standard_normal(shape).astype(np.float32)
    return np.abs(x) + lo if lo is not None else x


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("coreml-ops")


# -- elementwise -----------------------------------------------------------------------------------
UNARY = ["Neg", "Abs", "Relu", "Exp", "Tanh", "Erf", "Sigmoid", "Floor", "Ceil", "Sin", "Cos", "Sign",
         "Softplus", "HardSwish", "Identity", "Dropout"]


@pytest.mark.parametrize("op", UNARY)
def test_unary(op, out_dir):
    check_op(op, [("x", f32(3, 5, 37) * 3)], out_dir, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Reciprocal"])
def test_unary_positive(op, out_dir):
    check_op(op, [("x", f32(4, 64, lo=0.1))], out_dir, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}),
                                      ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("Gelu", {}),
                                      ("Gelu", {"approximate": "tanh"}), ("Clip", {"min": -0.5, "max": 0.7}),
                                      ("Clip", {"max": 6.0})])
def test_unary_with_attrs(op, attrs, out_dir):
    check_op(op, [("x", f32(2, 8, 48) * 3)], out_dir, attrs, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual",
                                "GreaterOrEqual"])
def test_binary_broadcast(op, out_dir):
    a, b = f32(2, 3, 40), f32(3, 1)
    if op == "Pow":
        a = np.abs(a) + 0.1
    if op in ("Equal", "LessOrEqual", "GreaterOrEqual"):
        b = a[:, :, :1][0]  # ties
    check_op(op, [("a", a), ("b", b)], out_dir, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub"])
def test_binary_int64(op, out_dir):
    """int64 tensors travel and compute as int32 in Core ML; Div truncates toward zero like ONNX."""
    a = R.integers(-50, 50, (4, 33)).astype(np.int64)
    b = R.integers(1, 7, (33,)).astype(np.int64) * np.where(R.random(33) < 0.5, -1, 1)
    check_op(op, [("a", a), ("b", b)], out_dir)


@pytest.mark.parametrize("fmod,dtype", [(0, np.int64), (1, np.int64), (1, np.float32)])
def test_mod(fmod, dtype, out_dir):
    a = (f32(3, 37) * 40).astype(dtype)
    b = (f32(37) * 9).astype(dtype)
    b[np.abs(b) < 1] = 3
    check_op("Mod", [("a", a), ("b", b)], out_dir, {"fmod": fmod}, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op, out_dir):
    check_op(op, [("a", R.random((5, 20)) < 0.5), ("b", R.random((20,)) < 0.5)], out_dir)


def test_not_where_isnan_isinf(out_dir):
    x = f32(4, 32)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    check_op("Not", [("c", R.random((3, 17)) < 0.5)], out_dir)
    check_op("IsNaN", [("x", x)], out_dir)
    check_op("IsInf", [("x", x)], out_dir, {"detect_negative": 0})
    check_op("IsInf", [("x", x)], out_dir)
    check_op("Where", [("c", R.random((4, 1)) < 0.5), ("x", f32(4, 32)), ("y", f32(32))], out_dir)


@pytest.mark.parametrize("op", ["Min", "Max", "Sum", "Mean"])
def test_variadic(op, out_dir):
    check_op(op, [("a", f32(3, 16)), ("b", f32(16)), ("c", f32(3, 1))], out_dir, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("src,to", [("int64", "float32"), ("float32", "int32"), ("bool", "float32"),
                                    ("float32", "bool"), ("int64", "int32"), ("int32", "int64")])
def test_cast(src, to, out_dir):
    x = (R.standard_normal((3, 21)) * 40).astype(src) if src != "bool" else R.random((3, 21)) < 0.5
    if src == "float32":
        x[0, :3] = 0.0
    check_op("Cast", [("x", x)], out_dir, {"to": to})


# -- data movement -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs,shape", [
    ("Reshape", {"shape": [4, -1]}, (2, 2, 12)), ("Flatten", {"axis": 2}, (2, 3, 4, 5)),
    ("Squeeze", {"axes": [1]}, (3, 1, 7)), ("Unsqueeze", {"axes": [0, 3]}, (3, 7)),
    ("Transpose", {"perm": [0, 2, 1, 3]}, (2, 16, 12, 32)), ("Transpose", {}, (5, 7, 3)),
    ("Slice", {"starts": [1, -1], "ends": [3, 0], "axes": [0, 2], "steps": [1, -2]}, (4, 6, 9)),
    ("Slice", {"starts": [5, 0], "ends": [-100, 4], "axes": [2, 1], "steps": [-1, 3]}, (4, 6, 9)),
    ("Expand", {"shape": [2, 4, 6]}, (4, 1)), ("Tile", {"repeats": [2, 1, 3]}, (2, 3, 5)),
    ("Trilu", {"upper": 0, "k": 1}, (2, 6, 6)), ("Trilu", {"upper": 1, "k": -1}, (3, 5, 7)),
    ("Pad", {"pads": [0, 1, 2, 0, 2, 1], "value": np.array(1.5, np.float32)}, (2, 5, 6)),
    ("Pad", {"pads": [0, 0, 2, 0, 1, 3], "mode": "reflect"}, (2, 5, 6)),
    ("Pad", {"pads": [0, 0, 1, 0, 0, 3], "mode": "edge"}, (2, 5, 6)),
    ("Pad", {"pads": [0, -1, 2, 0, 1, -2]}, (2, 5, 6)),
])
def test_data_movement(op, attrs, shape, out_dir):
    check_op(op, [("x", f32(*shape))], out_dir, attrs)


def test_gather_family(out_dir):
    table = f32(50, 24)
    g = compiler.Graph("gather_const_table")
    t = g.add_const("table", table)
    i = g.add_input("idx", (2, 3), DType.int64)
    g.outputs = list(g.add_node("Gather", [t, i], {"axis": 0}).outputs)
    check_graph(g, {"idx": np.array([[0, 3, -1], [49, -50, 7]], np.int64)}, out_dir)
    check_op("Gather", [("x", f32(3, 9, 4)), ("i", np.array([2, -1, 0, 8], np.int32))], out_dir, {"axis": 1})
    check_op("Gather", [("x", f32(3, 9, 4))], out_dir, {"axis": -1}, consts=[("i", np.array([[3, -4]], np.int64))])
    check_op("GatherElements", [("x", f32(4, 6)), ("i", R.integers(-6, 6, (4, 3)).astype(np.int64))], out_dir,
             {"axis": 1})
    check_op("GatherElements", [("x", f32(5, 6)), ("i", R.integers(-5, 5, (3, 2)).astype(np.int64))], out_dir,
             {"axis": 0})
    check_op("Gather", [("x", R.random((6, 3)) < 0.5)], out_dir, consts=[("i", np.array([5, 0, -2], np.int64))])
    check_op("GatherND", [("x", f32(3, 4, 5)), ("i", np.array([[1, 2], [0, -1]], np.int64))], out_dir)
    check_op("GatherND", [("x", f32(2, 4, 5)), ("i", np.array([[1], [3]], np.int64))], out_dir, {"batch_dims": 1},
             coreml_target="iOS17")


def test_split_concat(out_dir):
    check_op("Split", [("x", f32(2, 10, 3))], out_dir, {"axis": 1, "split": [3, 7]}, num_outputs=2)
    check_op("Concat", [("a", f32(2, 3, 5)), ("b", f32(2, 1, 5)), ("c", f32(2, 4, 5))], out_dir, {"axis": 1})


def test_static_shape_ops(out_dir):
    """Shape/Size (of a run-time input) and ConstantOfShape/Range are constants: shapes are static."""
    g = compiler.Graph("shape_ops")
    x = g.add_input("x", (3, 5, 2), DType.float32)
    s = g.add_node("Shape", [x], {"start": 1}).outputs[0]
    n = g.add_node("Size", [x]).outputs[0]
    c = g.add_node("ConstantOfShape", [], {"shape": [2, 3], "value": np.array([7], np.int64)}).outputs[0]
    r = g.add_node("Range", [g.add_const("a", np.array(1.0, np.float32)), g.add_const("b", np.array(4.0, np.float32)),
                             g.add_const("d", np.array(0.5, np.float32))]).outputs[0]
    y = g.add_node("Mul", [x, g.add_node("Cast", [n], {"to": "float32"}).outputs[0]]).outputs[0]
    g.outputs = [s, c, r, y]
    check_graph(g, {"x": f32(3, 5, 2)}, out_dir)


# -- reductions and normalization ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 128), (4, 7)])
def test_softmax(shape, out_dir):
    x = f32(*shape) * 4
    x[..., 0] = -3.4e38  # a masked position, as attention masks do
    check_op("Softmax", [("x", x)], out_dir, {"axis": -1}, rtol=1e-5, atol=1e-6)
    check_op("LogSoftmax", [("x", f32(*shape))], out_dir, {"axis": -1}, rtol=1e-5, atol=1e-5)
    check_op("Softmax", [("x", f32(*shape))], out_dir, {"axis": 0}, rtol=1e-5, atol=1e-6)
    check_op("LogSoftmax", [("x", f32(*shape))], out_dir, {"axis": 0}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,axis,bias", [((2, 16, 384), -1, True), ((3, 5, 6), 1, False), ((4, 20), -1, True)])
def test_layernorm(shape, axis, bias, out_dir):
    norm = shape[axis % len(shape):]
    consts = [("scale", f32(*norm))] + ([("bias", f32(*norm))] if bias else [])
    check_op("LayerNormalization", [("x", f32(*shape) * 2 + 1)], out_dir, {"axis": axis, "epsilon": 1e-5},
             consts=consts, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare",
                                "ReduceProd"])
@pytest.mark.parametrize("axes,keepdims", [([1, 2], 1), ([-1], 0), ([0], 1), ([0, 2], 0)])
def test_reduce(op, axes, keepdims, out_dir):
    check_op(op, [("x", f32(3, 4, 6))], out_dir, {"axes": axes, "keepdims": keepdims}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(1, 1, 0), (0, 0, 1), (-1, 0, 0)])
def test_argreduce(op, axis, keepdims, last, out_dir):
    x = np.round(f32(4, 6, 5) * 2)  # ties, so first/last index matters
    check_op(op, [("x", x)], out_dir, {"axis": axis, "keepdims": keepdims, "select_last_index": last})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op, out_dir):
    check_op(op, [("x", f32(2, 24, 7, 7))], out_dir, rtol=1e-5, atol=1e-6)


# -- GEMM family -----------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape,b_shape", [((1, 12, 384), (384, 64)), ((20, 33), (33, 40)), ((6, 64), (64, 1000)),
                                             ((2, 3, 5, 16), (16, 8))])
def test_matmul_const_weight(a_shape, b_shape, out_dir):
    check_op("MatMul", [("a", f32(*a_shape))], out_dir, consts=[("w", f32(*b_shape) * 0.1)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a_shape,b_shape", [((1, 4, 24, 32), (1, 4, 32, 24)), ((2, 3, 16, 8), (3, 8, 32)),
                                             ((5, 7), (7, 3)), ((2, 10, 16), (16, 48))])
def test_matmul_batched(a_shape, b_shape, out_dir):
    check_op("MatMul", [("a", f32(*a_shape)), ("b", f32(*b_shape))], out_dir, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs,bias_shape", [({}, (48,)), ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (1, 48)),
                                              ({"transB": 1}, None)])
def test_gemm_const(attrs, bias_shape, out_dir):
    w = f32(48, 64) if attrs.get("transB") else f32(64, 48)
    consts = [("w", w * 0.1)] + ([("c", f32(*bias_shape))] if bias_shape else [])
    check_op("Gemm", [("a", f32(5, 64))], out_dir, attrs, consts=consts, rtol=1e-5, atol=1e-5)


def test_gemm_dynamic_b(out_dir):
    check_op("Gemm", [("a", f32(8, 16)), ("b", f32(32, 16))], out_dir, {"transB": 1, "alpha": 0.25}, rtol=1e-5,
             atol=1e-5)


# -- CNN family --------------------------------------------------------------------------------------
CONVS = [
    ("pointwise_wide", (1, 16, 16, 16), (32, 16, 1, 1), {}),
    ("depthwise_s1", (1, 8, 14, 14), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ("depthwise_s2_5x5", (1, 16, 15, 15), (16, 1, 5, 5), {"group": 16, "strides": [2, 2]}),
    ("stem_s2", (2, 3, 18, 18), (8, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("grouped_dilated", (1, 8, 12, 12), (12, 4, 3, 3), {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("same_upper", (1, 4, 9, 9), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same_lower", (1, 4, 8, 8), (6, 4, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ("conv1d", (2, 6, 20), (5, 6, 3), {"pads": [1, 2], "strides": [2]}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONVS, ids=[c[0] for c in CONVS])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(name, x_shape, w_shape, attrs, bias, out_dir):
    consts = [("w", f32(*w_shape) * 0.3)] + ([("b", f32(w_shape[0]))] if bias else [])
    check_op("Conv", [("x", f32(*x_shape))], out_dir, attrs, consts=consts, rtol=1e-4, atol=1e-4)


CONV_T = [
    ("plain_3x3", (1, 4, 6, 6), (4, 5, 3, 3), {}),
    ("stride2_pads", (2, 6, 5, 7), (6, 8, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("stride2_outpad", (1, 8, 7, 7), (8, 4, 4, 4), {"strides": [2, 2], "pads": [1, 1, 2, 2], "output_padding": [1, 1]}),
    ("grouped_dilated", (1, 6, 5, 5), (6, 2, 3, 3), {"group": 3, "dilations": [2, 2]}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONV_T, ids=[c[0] for c in CONV_T])
def test_conv_transpose(name, x_shape, w_shape, attrs, out_dir):
    m = w_shape[1] * attrs.get("group", 1)
    check_op("ConvTranspose", [("x", f32(*x_shape))], out_dir, attrs,
             consts=[("w", f32(*w_shape) * 0.3), ("b", f32(m))], rtol=1e-4, atol=1e-4)


def test_batch_instance_lrn(out_dir):
    c = 6
    check_op("BatchNormalization", [("x", f32(2, c, 5, 5))], out_dir, {"epsilon": 1e-3},
             consts=[("s", f32(c)), ("b", f32(c)), ("m", f32(c)), ("v", f32(c, lo=0.5))], rtol=1e-5, atol=1e-5)
    check_op("InstanceNormalization", [("x", f32(2, c, 5, 7) * 2 + 1)], out_dir, {"epsilon": 1e-5},
             consts=[("s", f32(c)), ("b", f32(c))], rtol=1e-4, atol=1e-4)
    check_op("LRN", [("x", f32(2, 7, 4, 4))], out_dir, {"size": 3, "alpha": 0.2, "beta": 0.6, "bias": 1.5},
             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
])
def test_pool(op, attrs, out_dir):
    check_op(op, [("x", f32(1, 4, 11, 11))], out_dir, attrs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [
    {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]},
    {"mode": "nearest", "sizes": [1, 3, 7, 5], "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]},
    {"mode": "linear", "sizes": [1, 3, 4, 9], "coordinate_transformation_mode": "align_corners"},
    {"mode": "cubic", "scales": [1.0, 1.0, 2.0, 2.0]},
])
def test_resize(attrs, out_dir):
    check_op("Resize", [("x", f32(1, 3, 6, 6))], out_dir, attrs, rtol=1e-5, atol=1e-5)


# -- fused ops (what the default pass pipeline produces) --------------------------------------------------
@pytest.mark.parametrize("act,alpha,beta", [("none", None, None), ("gelu", None, None), ("clip", 0.0, 6.0),
                                            ("hardswish", None, None), ("silu", None, None), ("relu", None, None),
                                            ("gelu_tanh", None, None), ("sigmoid", None, None),
                                            ("leakyrelu", 0.1, None), ("hardsigmoid", 0.2, 0.5), ("tanh", None, None)])
@pytest.mark.parametrize("residual", ["none", "after", "before"])
def test_fused_matmul(act, alpha, beta, residual, out_dir):
    attrs = {"activation": act, "act_alpha": alpha, "act_beta": beta,
             "residual_before_activation": int(residual == "before")}
    g = compiler.Graph("fused_matmul")
    a = g.add_input("a", (2, 16, 48), DType.float32)
    ins = [a, g.add_const("w", f32(48, 64) * 0.2), g.add_const("b", f32(64))]
    if residual != "none":
        ins.append(g.add_input("r", (2, 16, 64), DType.float32))
    g.outputs = list(g.add_node("FusedMatMul", ins, attrs).outputs)
    feeds = {"a": f32(2, 16, 48), "r": f32(2, 16, 64)}
    check_graph(g, {k: v for k, v in feeds.items() if k in [i.name for i in g.inputs]}, out_dir, rtol=1e-5,
                atol=2e-5)


def test_fused_matmul_dynamic_b(out_dir):
    g = compiler.Graph("fused_matmul_dyn")
    a = g.add_input("a", (2, 3, 8, 16), DType.float32)
    b = g.add_input("b", (2, 3, 16, 32), DType.float32)
    r = g.add_input("r", (2, 3, 8, 32), DType.float32)
    g.outputs = list(g.add_node("FusedMatMul", [a, b, None, r], {"activation": "relu",
                                                                 "residual_before_activation": 1}).outputs)
    check_graph(g, {"a": f32(2, 3, 8, 16), "b": f32(2, 3, 16, 32), "r": f32(2, 3, 8, 32)}, out_dir)


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONVS, ids=[c[0] for c in CONVS])
def test_fused_conv(name, x_shape, w_shape, attrs, out_dir):
    g = compiler.Graph("fused_conv")
    x = g.add_input("x", x_shape, DType.float32)
    w = g.add_const("w", f32(*w_shape) * 0.3)
    b = g.add_const("b", f32(w_shape[0]))
    conv = g.add_node("Conv", [x, w, b], attrs).outputs[0]
    r = g.add_input("r", conv.shape, DType.float32)
    fa = {**attrs, "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}
    g.outputs = list(g.add_node("FusedConv", [x, w, b, r], fa).outputs)
    g.nodes = [n for n in g.nodes if n.op_type == "FusedConv"]
    check_graph(g, {"x": f32(*x_shape), "r": f32(*conv.shape)}, out_dir, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("b_shape", [(2, 16, 384), (384,)])
def test_skip_layernorm(b_shape, out_dir):
    g = build_graph("SkipLayerNormalization", [("a", f32(2, 16, 384)), ("b", f32(*b_shape))], {"epsilon": 1e-5},
                    consts=[("scale", f32(384)), ("beta", f32(384))])
    check_graph(g, {"a": f32(2, 16, 384), "b": f32(*b_shape)}, out_dir)


def attention_graph(masks: str, mask_fill=float("-inf"), nan_to_zero=1, cross=False):
    b, s, e, h, d = 2, 16, 64, 4, 16
    skv = 12 if cross else s
    g = compiler.Graph("attention")
    x = g.add_input("x", (b, s, e), DType.float32)
    kv = g.add_input("kv", (b, skv, e), DType.float32) if cross else x
    ws = [g.add_const(f"w{i}", f32(e, h * d) * 0.2) for i in range(3)]
    bs = [g.add_const(f"b{i}", f32(h * d)) for i in range(3)]
    add = g.add_input("add", (b, 1, 1, skv), DType.float32) if masks in ("add", "both") else None
    keep = g.add_input("keep", (b, 1, s, skv), DType.bool) if masks in ("keep", "both") else None
    node = g.add_node("Attention", [x, kv, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], add, keep],
                      {"num_heads": h, "head_dim": d, "scale": 0.3, "nan_to_zero": nan_to_zero,
                       "mask_fill": mask_fill})
    g.outputs = list(node.outputs)
    feeds = {"x": f32(b, s, e), "kv": f32(b, skv, e)}
    if add is not None:
        feeds["add"] = np.where(R.random((b, 1, 1, skv)) < 0.2, -1e4, 0).astype(np.float32)
    if keep is not None:
        k = R.random((b, 1, s, skv)) < 0.8
        k[0, 0, 3] = False  # a fully masked row: NaN in the softmax, zeroed by nan_to_zero
        feeds["keep"] = k
    return g, {i.name: feeds[i.name] for i in g.inputs}


@pytest.mark.parametrize("deployment", ["iOS16", "iOS18"])
@pytest.mark.parametrize("masks", ["none", "add", "keep", "both"])
def test_attention(masks, deployment, out_dir):
    g, feeds = attention_graph(masks)
    bundle = check_graph(g, feeds, out_dir, coreml_target=deployment)
    ops = _mil_ops(bundle)
    assert ("scaled_dot_product_attention" in ops) == (deployment == "iOS18"), ops


def test_cross_attention_finite_fill(out_dir):
    """A finite mask_fill replaces masked scores (a fully masked row averages V): MIL's attention only adds a
    mask, so iOS18 keeps the matmul/softmax chain here."""
    g, feeds = attention_graph("both", mask_fill=-1e4, nan_to_zero=0, cross=True)
    for deployment in ("iOS17", "iOS18"):
        assert "scaled_dot_product_attention" not in _mil_ops(check_graph(g, feeds, out_dir, coreml_target=deployment))
    g, feeds = attention_graph("keep", cross=True)
    assert "scaled_dot_product_attention" in _mil_ops(check_graph(g, feeds, out_dir, coreml_target="iOS18"))


def _mil_ops(bundle) -> list[str]:
    from aotc.targets.coreml.mil_eval import MilPackage
    return MilPackage(bundle / "model.mlpackage").op_types


# -- fp16 ----------------------------------------------------------------------------------------------
def _fp16_close(got, want, what):
    """fp16 storage between ops: a relative error of a few fp16 ulps (2**-11) of the output's scale."""
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err < 8e-3, f"{what}: max error {err:.2e} of the output's scale"


@pytest.mark.parametrize("case", ["fused_matmul_gelu", "conv_relu6", "layernorm", "softmax", "attention_ios18",
                                  "pool", "resize_linear"])
def test_fp16_keeps_io_float32_and_is_close(case, out_dir):
    consts, attrs, deployment = [], {}, "iOS16"
    if case == "fused_matmul_gelu":
        op, inputs = "FusedMatMul", [("a", f32(2, 16, 48))]
        consts, attrs = [("w", f32(48, 64) * 0.2), ("b", f32(64))], {"activation": "gelu"}
    elif case == "conv_relu6":
        op, inputs = "FusedConv", [("x", f32(1, 8, 14, 14))]
        consts = [("w", f32(16, 8, 3, 3) * 0.3), ("b", f32(16))]
        attrs = {"pads": [1, 1, 1, 1], "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}
    elif case == "layernorm":
        op, inputs, consts = "LayerNormalization", [("x", f32(2, 16, 384) * 2 + 1)], [("s", f32(384)), ("b", f32(384))]
    elif case == "softmax":
        op, inputs, attrs = "Softmax", [("x", f32(2, 3, 128) * 4)], {"axis": -1}
    elif case == "pool":
        op, inputs, attrs = "AveragePool", [("x", f32(1, 4, 11, 11))], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    elif case == "resize_linear":
        op, inputs, attrs = "Resize", [("x", f32(1, 3, 6, 6))], {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]}
    if case == "attention_ios18":
        g, feeds = attention_graph("both")
        deployment = "iOS18"
    else:
        g, feeds = build_graph(op, inputs, attrs, consts), dict(inputs)
    want = compiler.interpret(g, feeds)
    bundle = compile_coreml(g, out_dir, coreml_target=deployment, precision="fp16")
    from aotc.targets.coreml.mil_eval import MilPackage
    pkg = MilPackage(bundle / "model.mlpackage")
    assert "cast" in pkg.op_types  # fp32 in, fp16 inside, fp32 out
    for out in pkg.spec.description.output:
        assert out.type.multiArrayType.dataType == coreml_float32()
    got = evaluate(bundle, feeds)
    for name, ref in want.items():
        _fp16_close(got[name], ref, f"{case} {name}")


def coreml_float32():
    from coremltools.proto import FeatureTypes_pb2
    return FeatureTypes_pb2.ArrayFeatureType.FLOAT32


# -- int8 ----------------------------------------------------------------------------------------------
def _quantized_matmul_graph(requantize: bool, act="relu", residual=False):
    k, n = 48, 40
    g = compiler.Graph("qmatmul")
    x = g.add_input("x", (2, 8, k), DType.float32)
    xs, xz = g.add_const("xs", np.array(0.02, np.float32)), g.add_const("xz", np.array(128, np.uint8))
    q = g.add_node("QuantizeLinear", [x, xs, xz], name="quantize_x").outputs[0]
    w = g.add_const("w", R.integers(-127, 128, (k, n)).astype(np.int8))
    ws = g.add_const("ws", (R.random(n) * 0.01 + 0.001).astype(np.float32))
    ins = [q, xs, xz, w, ws, g.add_const("bias", f32(n))]
    if residual:
        ins.append(g.add_input("r", (2, 8, n), DType.float32))
    if requantize:
        ins += [None] * (7 - len(ins)) + [g.add_const("ys", np.array(0.05, np.float32)),
                                          g.add_const("yz", np.array(100, np.uint8))]
    y = g.add_node("QuantizedMatMul", ins, {"activation": act}, name="qmm").outputs[0]
    if requantize:
        y = g.add_node("DequantizeLinear", [y, ins[7], ins[8]], name="dequantize_y").outputs[0]
    g.outputs = [y]
    feeds = {"x": f32(2, 8, k), "r": f32(2, 8, n)}
    return g, {i.name: feeds[i.name] for i in g.inputs}


def _quantized_conv_graph(requantize: bool):
    g = compiler.Graph("qconv")
    x = g.add_input("x", (1, 8, 9, 9), DType.float32)
    xs, xz = g.add_const("xs", np.array(0.03, np.float32)), g.add_const("xz", np.array(120, np.uint8))
    q = g.add_node("QuantizeLinear", [x, xs, xz]).outputs[0]
    w = g.add_const("w", R.integers(-127, 128, (8, 1, 3, 3)).astype(np.int8))
    ws = g.add_const("ws", (R.random(8) * 0.01 + 0.001).astype(np.float32))
    ins = [q, xs, xz, w, ws, g.add_const("bias", f32(8)), None]
    if requantize:
        ins += [g.add_const("ys", np.array(0.04, np.float32)), g.add_const("yz", np.array(0, np.uint8))]
    attrs = {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2], "activation": "clip", "act_alpha": 0.0,
             "act_beta": 6.0}
    y = g.add_node("QuantizedConv", [i for i in ins if i is not None] if not requantize else ins, attrs).outputs[0]
    if requantize:
        y = g.add_node("DequantizeLinear", [y, ins[7], ins[8]]).outputs[0]
    g.outputs = [y]
    return g, {"x": f32(1, 8, 9, 9) * 2}


def _int8_close(got, want, what, steps=1.0, step=0.05):
    """The reference scales the exact int32 sum once; Core ML scales each operand, then sums: float rounding
    apart, and where a value lands on a rounding tie of a requantization, one quantization step."""
    err = np.abs(got - want)
    assert float(err.max()) <= steps * step + 1e-4, f"{what}: max error {err.max():.3g}"
    assert float(np.mean(err > 1e-4)) < 0.01, f"{what}: {np.mean(err > 1e-4):.2%} of values differ"


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
@pytest.mark.parametrize("requantize", [False, True])
def test_quantized_matmul(deployment, requantize, out_dir):
    for act, residual in (("relu", False), ("gelu", True), ("none", False)):
        g, feeds = _quantized_matmul_graph(requantize, act, residual)
        want = compiler.interpret(g, feeds)[g.outputs[0].name]
        bundle = compile_coreml(g, out_dir, coreml_target=deployment)
        _int8_close(evaluate(bundle, feeds)[g.outputs[0].name], want, f"{act} {residual} {deployment}")
        ops = _mil_ops(bundle)
        assert "constexpr_affine_dequantize" in ops
        assert ("quantize" in ops) == (deployment == "iOS17"), ops  # run-time activation quantization


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
@pytest.mark.parametrize("requantize", [False, True])
def test_quantized_conv(deployment, requantize, out_dir):
    g, feeds = _quantized_conv_graph(requantize)
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    bundle = compile_coreml(g, out_dir, coreml_target=deployment)
    _int8_close(evaluate(bundle, feeds)[g.outputs[0].name], want, deployment, step=0.04)


def test_int8_weights_are_stored_as_int8(out_dir):
    """The package's weight blob holds the int8 weights themselves (a quarter of the float bytes)."""
    from aotc.targets.coreml.mil_eval import MilPackage
    g, feeds = _quantized_matmul_graph(False)
    pkg = MilPackage(compile_coreml(g, out_dir) / "model.mlpackage")
    op = next(o for o in pkg.ops if o.type == "constexpr_affine_dequantize")
    data = pkg.value(op.attributes["quantized_data"])
    assert data.dtype == np.int8
    np.testing.assert_array_equal(data, g.initializers["w"].const.T)


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
def test_int8_embedding_table(deployment, out_dir):
    """--quantize int8's embedding: Gather of int8 rows, Cast, Mul by the gathered row scales; the table is
    stored as int8 in the package."""
    g = compiler.Graph("int8_embedding")
    ids = g.add_input("ids", (2, 7), DType.int64)
    table = g.add_const("table", R.integers(-127, 128, (50, 16)).astype(np.int8))
    scales = g.add_const("scales", (R.random((50, 1)) * 0.01).astype(np.float32))
    rows = g.add_node("Gather", [table, ids], {"axis": 0}).outputs[0]
    rows = g.add_node("Cast", [rows], {"to": "float32"}).outputs[0]
    s = g.add_node("Gather", [scales, ids], {"axis": 0}).outputs[0]
    g.outputs = [g.add_node("Mul", [rows, s]).outputs[0]]
    bundle = check_graph(g, {"ids": R.integers(-50, 50, (2, 7))}, out_dir, coreml_target=deployment)
    assert "constexpr_affine_dequantize" in _mil_ops(bundle)


def test_quantize_dequantize_per_tensor(out_dir):
    g = compiler.Graph("qdq")
    x = g.add_input("x", (3, 40), DType.float32)
    s, z = g.add_const("s", np.array(0.05, np.float32)), g.add_const("z", np.array(7, np.int8))
    q = g.add_node("QuantizeLinear", [x, s, z]).outputs[0]
    g.outputs = [q, g.add_node("DequantizeLinear", [q, s, z]).outputs[0]]
    x = f32(3, 40) * 4
    x[0, :4] = [0.025, -0.075, 100.0, -100.0]  # ties (half to even) and saturation
    for deployment in ("iOS16", "iOS17"):
        check_graph(g, {"x": x}, out_dir, coreml_target=deployment)


# -- compile-time errors, options, determinism, the loader -----------------------------------------------
def test_unmappable_nodes_are_all_named_and_nothing_is_written(tmp_path):
    import aotc
    from aotc.targets.coreml.lowering import UnsupportedOnCoreMLError
    g = compiler.Graph("needs_missing_ops")
    x = g.add_input("x", (1, 4, 6, 6), DType.float32)
    a = g.add_node("ToBlockedLayout", [x], {"block": 4}, name="to_blocked").outputs[0]
    b = g.add_node("FromBlockedLayout", [a], {"channels": 4}, name="from_blocked").outputs[0]
    c = g.add_node("MaxPool", [b], {"kernel_shape": [2, 2], "dilations": [2, 2]}, name="dilated_pool").outputs[0]
    d = g.add_node("GatherND", [c, g.add_const("i", np.zeros((1, 1), np.int64))], {"batch_dims": 1},
                   name="batched_gather").outputs[0]
    g.outputs = [d]
    out = tmp_path / "bundle"
    with pytest.raises(UnsupportedOnCoreMLError) as e:
        aotc.compile(g, out, target="coreml", passes="none")
    msg = str(e.value)
    for part in ("4 node(s)", "ToBlockedLayout ×1", "'to_blocked'", "FromBlockedLayout ×1", "'from_blocked'",
                 "MaxPool ×1: 'dilated_pool' (MIL pooling has no dilations)", "'batched_gather'",
                 "batch_dims from iOS17"):
        assert part in msg, (part, msg)
    assert isinstance(e.value, compiler.AotcError)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_every_registered_op_has_a_lowering_or_is_layout_internal():
    from aotc.compiler.ops import ops_targets_see, registered_ops
    from aotc.targets.coreml.rules import LOWERINGS
    cpu_only = {"BlockedConv", "ToBlockedLayout", "FromBlockedLayout"}  # the CPU targets' NCHWc layout
    fit_to_target = {"QuantizedAttention"}  # decomposed by the target pass before lowering
    no_kernel_yet = {"DynamicQuantizeLinear"}  # scales computed at run time: a reference kernel, no target kernel yet
    missing = [op for op in ops_targets_see()
               if op not in LOWERINGS and op not in cpu_only | fit_to_target | no_kernel_yet]
    assert not missing, f"registered ops without a Core ML lowering: {missing}"
    assert not set(LOWERINGS) - set(registered_ops())


@pytest.mark.parametrize("deployment,precision", [("iOS16", "fp16"), ("iOS17", "fp32"), ("iOS18", "fp16")])
def test_rebuilds_are_byte_identical(deployment, precision, tmp_path):
    """coremltools writes random UUIDs into Manifest.json and the date into the model: both normalized."""
    g, feeds = _quantized_matmul_graph(True)
    a = compile_coreml(g, tmp_path / "a", coreml_target=deployment, precision=precision)
    b = compile_coreml(g, tmp_path / "b", coreml_target=deployment, precision=precision)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    spec = (a / "model.mlpackage/Data/com.apple.CoreML/model.mlmodel").read_bytes()
    assert b"conversion_date" not in spec
    manifest = json.loads((a / "model.mlpackage/Manifest.json").read_text())
    assert len(manifest["itemInfoEntries"]) == 2 and manifest["rootModelIdentifier"] in manifest["itemInfoEntries"]


def test_package_reloads_with_coremltools_and_keeps_io(tmp_path):
    """coremltools reads the saved package back (spec and weights); names, shapes and spec versions kept."""
    import coremltools as ct
    g, feeds = attention_graph("add")
    for deployment, version in (("iOS16", 7), ("macOS14", 8), ("iOS18", 9)):
        bundle = compile_coreml(g, tmp_path, coreml_target=deployment)
        model = ct.models.MLModel(str(bundle / "model.mlpackage"), skip_model_load=True)
        spec = model.get_spec()
        assert spec.specificationVersion == version
        assert [(i.name, list(i.type.multiArrayType.shape)) for i in spec.description.input] == \
            [("x", [2, 16, 64]), ("add", [2, 1, 1, 16])]
        assert [o.name for o in spec.description.output] == [g.outputs[0].name.replace(":", "_")]
        assert spec.description.metadata.userDefined["com.github.apple.coremltools.version"] == ct.__version__


def test_int64_bool_inputs_and_outputs_cross_as_int32(out_dir):
    g = compiler.Graph("io_types")
    ids = g.add_input("ids", (2, 5), DType.int64)
    flag = g.add_input("flag", (2, 5), DType.bool)
    doubled = g.add_node("Add", [ids, ids], name="doubled").outputs[0]
    g.outputs = [doubled, g.add_node("Not", [flag], name="negated").outputs[0]]
    bundle = check_graph(g, {"ids": np.arange(10).reshape(2, 5) - 3, "flag": R.random((2, 5)) < 0.5}, out_dir)
    io = json.loads((bundle / "manifest.json").read_text())["coreml"]
    assert [(d["name"], d["dtype"], d["coreml_dtype"]) for d in io["inputs"]] == \
        [("ids", "int64", "int32"), ("flag", "bool", "int32")]


def test_options_and_defaults():
    from aotc.targets.base import UnknownTargetError, get_target
    t = get_target("coreml")
    assert (t.deployment.name, t.precision) == ("iOS16", "fp16")  # Core ML's default precision
    assert t.capabilities.level == "graph"
    t = get_target("coreml", coreml_target="macOS15", precision="fp32")
    assert (t.deployment.opset, t.precision) == (18, "fp32")
    with pytest.raises(UnknownTargetError, match="--coreml-target 'iOS15'"):
        get_target("coreml", coreml_target="iOS15")


def test_cli_help_lists_the_options():
    import subprocess
    r = subprocess.run([sys.executable, "-m", "aotc.cli", "targets"], capture_output=True, text=True)
    assert r.returncode == 0 and "coreml" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "aotc.cli", "compile", "--help"], capture_output=True, text=True,
                       env={**__import__("os").environ, "COLUMNS": "200"})
    assert "--coreml-target" in r.stdout and "--precision" in r.stdout and "fp16" in r.stdout


def test_cli_error_exit_code_2_names_the_nodes(tmp_path):
    """An ONNX model with an op the target cannot map: exit 2, one message, nothing written."""
    import subprocess

    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], strides=[2, 2],
                            name="pool_dilated")
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 13)]), path)
    r = subprocess.run([sys.executable, "-m", "aotc.cli", "compile", str(path), "-o", str(tmp_path / "out"),
                        "--target", "coreml", "--coreml-target", "iOS17"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "'pool_dilated'" in r.stderr and "MIL pooling has no dilations" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(ON_MACOS, reason="on macOS the loader runs Core ML")
def test_loader_off_macos_says_it_needs_macos(out_dir):
    import aotc
    from aotc.targets.base import CannotRunHereError
    bundle = compile_coreml(build_graph("Relu", [("x", f32(2, 3))]), out_dir)
    with pytest.raises(CannotRunHereError, match="needs macOS"):
        aotc.load(bundle).run({"x": f32(2, 3)})


def test_missing_coremltools_names_the_extra(monkeypatch):
    from aotc.targets.coreml.package import CoreMLToolsMissingError, import_coremltools
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(CoreMLToolsMissingError, match=r"\[coreml\] extra"):
        import_coremltools()


# -- the evaluator is a real check ------------------------------------------------------------------------
def test_evaluator_reads_weights_like_coremltools(out_dir):
    """Blob records read by mil_eval equal what coremltools' own blob reader returns."""
    from coremltools.libmilstoragepython import _BlobStorageReader
    from aotc.targets.coreml.mil_eval import MilPackage
    g = build_graph("MatMul", [("a", f32(3, 32))], consts=[("w", f32(32, 24))])
    for precision, read in (("fp32", "read_float_data"), ("fp16", "read_fp16_data")):
        pkg = MilPackage(compile_coreml(g, out_dir, precision=precision) / "model.mlpackage")
        reader = _BlobStorageReader(str(pkg.spec_path.parent / "weights" / "weight.bin"))
        blobs = [o.attributes["val"] for o in pkg.ops if o.type == "const" and o.attributes["val"].HasField(
            "blobFileValue")]
        assert blobs
        for v in blobs:
            mine = pkg.value(v).reshape(-1)
            theirs = np.asarray(getattr(reader, read)(v.blobFileValue.offset))
            np.testing.assert_array_equal(mine.view(np.uint16) if precision == "fp16" else mine, theirs)


def test_evaluator_notices_a_wrong_package(out_dir, tmp_path):
    """A weight changed in the saved package (not in the graph) makes the comparison fail."""
    import shutil
    g = build_graph("MatMul", [("a", f32(3, 32))], consts=[("w", f32(32, 24))])
    feeds = {"a": f32(3, 32)}
    bundle = compile_coreml(g, out_dir)
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    blob = broken / "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(blob.read_bytes())
    data[-4:] = np.float32(1e3).tobytes()
    blob.write_bytes(bytes(data))
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    np.testing.assert_allclose(evaluate(bundle, feeds)[g.outputs[0].name], want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(evaluate(broken, feeds)[g.outputs[0].name], want, rtol=1e-3, atol=1e-3)

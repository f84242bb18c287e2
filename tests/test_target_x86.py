"""The x86-avx512 target: every lowered op compiled into a bundle, run by the
thin runtime and compared with aotc's reference interpreter; the errors an op
without a lowering gives at compile time."""
from __future__ import annotations

import numpy as np
import pytest

from aotc import compiler
from x86_helpers import build_graph, check_op, compile_and_run, needs_avx512

pytestmark = needs_avx512

R = np.random.default_rng(1234)


def f32(*shape, lo=None):
    x = R.standard_normal(shape).astype(np.float32)
    return np.abs(x) + lo if lo is not None else x


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("x86-ops")


# -- elementwise -----------------------------------------------------------------------------------
UNARY = ["Neg", "Abs", "Relu", "Exp", "Tanh", "Erf", "Sigmoid", "Floor", "Ceil", "Sin", "Cos", "Sign",
         "Softplus", "HardSwish", "Identity", "Dropout"]


@pytest.mark.parametrize("op", UNARY)
def test_unary(op, out_dir):
    x = f32(3, 5, 37) * 3
    if op == "Exp":
        x = np.concatenate([x, np.array([[[-100.0, 80.0] + [0.0] * 35]], np.float32).repeat(5, 1)], 0)
    check_op(op, [("x", x)], out_dir, rtol=2e-6, atol=2e-6)


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


@pytest.mark.parametrize("e", [2.0, 3.0, 4.0, 0.5, -1.0, 1.0, 2.5])
def test_pow_by_constant_exponent(e, out_dir):
    """Pow by a constant scalar runs as multiplies (or sqrt, or a reciprocal); other exponents keep powf."""
    a = f32(3, 45) * 2
    if e in (0.5, 2.5):
        a = np.abs(a) + 0.1
    check_op("Pow", [("a", a)], out_dir, consts=[("e", np.array(e, np.float32))], rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub"])
def test_binary_int64(op, out_dir):
    a = R.integers(-50, 50, (4, 33)).astype(np.int64)
    b = R.integers(1, 7, (33,)).astype(np.int64) * np.where(R.random(33) < 0.5, -1, 1)
    check_op(op, [("a", a), ("b", b)], out_dir)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op, out_dir):
    check_op(op, [("a", R.random((5, 20)) < 0.5), ("b", R.random((20,)) < 0.5)], out_dir)


def test_not_where_isnan_isinf(out_dir):
    x = f32(4, 32)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    check_op("Not", [("c", R.random((3, 17)) < 0.5)], out_dir)
    check_op("IsNaN", [("x", x)], out_dir)
    check_op("IsInf", [("x", x)], out_dir, {"detect_negative": 0})
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
    ("Expand", {"shape": [2, 4, 6]}, (4, 1)), ("Tile", {"repeats": [2, 1, 3]}, (2, 3, 5)),
    ("Trilu", {"upper": 0, "k": 1}, (2, 6, 6)),
    ("Pad", {"pads": [0, 1, 2, 0, 2, 1], "value": np.array(1.5, np.float32)}, (2, 5, 6)),
    ("Pad", {"pads": [0, 2, 2, 0, 1, 3], "mode": "reflect"}, (2, 5, 6)),
    ("Pad", {"pads": [1, 0, 1, 2, 0, 3], "mode": "edge"}, (2, 5, 6)),
])
def test_data_movement(op, attrs, shape, out_dir):
    check_op(op, [("x", f32(*shape))], out_dir, attrs)


def test_gather_family(out_dir):
    table = f32(50, 24)
    g = compiler.Graph("gather_const_table")
    t = g.add_const("table", table)
    i = g.add_input("idx", (2, 3), compiler.DType.int64)
    g.outputs = list(g.add_node("Gather", [t, i], {"axis": 0}).outputs)
    feeds = {"idx": np.array([[0, 3, -1], [49, -50, 7]], np.int64)}
    np.testing.assert_array_equal(compile_and_run(g, feeds, out_dir)[g.outputs[0].name],
                                  compiler.interpret(g, feeds)[g.outputs[0].name])
    check_op("Gather", [("x", f32(3, 9, 4)), ("i", np.array([2, -1, 0, 8], np.int32))], out_dir, {"axis": 1})
    check_op("GatherElements", [("x", f32(4, 6)), ("i", R.integers(-6, 6, (4, 3)).astype(np.int64))], out_dir,
             {"axis": 1})
    check_op("GatherND", [("x", f32(3, 4, 5)), ("i", np.array([[1, 2], [0, -1]], np.int64))], out_dir)
    check_op("GatherND", [("x", f32(2, 4, 5)), ("i", np.array([[1], [3]], np.int64))], out_dir, {"batch_dims": 1})


def test_split_concat(out_dir):
    check_op("Split", [("x", f32(2, 10, 3))], out_dir, {"axis": 1, "split": [3, 7]}, num_outputs=2)
    check_op("Concat", [("a", f32(2, 3, 5)), ("b", f32(2, 1, 5)), ("c", f32(2, 4, 5))], out_dir, {"axis": 1})


# -- reductions and normalization ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 128), (4, 7), (3, 197), (2, 49), (2, 1500)])
def test_softmax(shape, out_dir):
    x = f32(*shape) * 4
    x[..., 0] = -3.4e38  # a masked position, as attention masks do
    check_op("Softmax", [("x", x)], out_dir, {"axis": -1}, rtol=1e-5, atol=1e-6)
    check_op("LogSoftmax", [("x", f32(*shape))], out_dir, {"axis": -1}, rtol=1e-5, atol=1e-5)
    check_op("Softmax", [("x", f32(*shape))], out_dir, {"axis": 0}, rtol=1e-5, atol=1e-6)
    check_op("LogSoftmax", [("x", f32(*shape))], out_dir, {"axis": 0}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,axis,bias", [((2, 16, 384), -1, True), ((3, 5, 6), 1, False), ((4, 20), -1, True),
                                             ((2, 5, 197), -1, True)])
def test_layernorm(shape, axis, bias, out_dir):
    norm = shape[axis % len(shape):]
    consts = [("scale", f32(*norm))] + ([("bias", f32(*norm))] if bias else [])
    check_op("LayerNormalization", [("x", f32(*shape) * 2 + 1)], out_dir, {"axis": axis, "epsilon": 1e-5},
             consts=consts, rtol=1e-5, atol=1e-5)


# Ragged rows (not a whole number of vectors): vector partials plus a scalar tail, combined by the same
# reducer; a NaN in either part must win for Max/Min as in the reference.
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean"])
@pytest.mark.parametrize("nan_at", [None, 5, 51])
def test_reduce_ragged_rows(op, nan_at, out_dir):
    x = f32(3, 53) * (0.3 if op == "ReduceProd" else 1.0) + (1.0 if op == "ReduceProd" else 0.0)
    if nan_at is not None:
        x[1, nan_at] = np.nan
    check_op(op, [("x", x)], out_dir, {"axes": [-1], "keepdims": 0}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare"])
def test_reduce_trailing(op, out_dir):
    check_op(op, [("x", f32(3, 4, 40))], out_dir, {"axes": [1, 2], "keepdims": 1}, rtol=1e-5, atol=1e-5)
    check_op(op, [("x", f32(3, 64))], out_dir, {"axes": [-1], "keepdims": 0}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op, out_dir):
    check_op(op, [("x", f32(2, 24, 7, 7))], out_dir, rtol=1e-5, atol=1e-6)


# -- GEMM family -----------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape,b_shape", [((1, 12, 384), (384, 64)), ((20, 33), (33, 40)), ((6, 64), (64, 1000))])
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


@pytest.mark.parametrize("m,n", [(1, 1000), (5, 40), (3, 72)])
@pytest.mark.parametrize("bias", [True, False])
def test_matmul_const_width_not_whole_vectors(m, n, bias, out_dir):
    """Widths that are not a multiple of 16 run on zero-padded weight panels; only real columns are stored."""
    consts = [("w", f32(64, n) * 0.2)] + ([("c", f32(n))] if bias else [])
    check_op("Gemm", [("a", f32(m, 64))], out_dir, {}, consts=consts, rtol=1e-5, atol=1e-5)


# Ragged widths (issue 17's zoo): GPT-2's odd 50,257-token vocabulary and PP-OCR's 6,625 classes ran on
# TVM's unscheduled loop; tiny odd widths pad to quarter vectors.
@pytest.mark.parametrize("m,k,n", [(3, 96, 50257), (40, 120, 6625), (1, 64, 3), (7, 16, 33), (2, 32, 21)])
def test_matmul_const_odd_width(m, k, n, out_dir):
    check_op("MatMul", [("a", f32(m, k))], out_dir, consts=[("w", f32(k, n) * 0.1)], rtol=1e-5, atol=1e-5)


# Row counts with no good divisor (ViT's 197 tokens, YOLOS's 677: primes) take full register tiles with a
# guarded last tile instead of one-row tiles.
@pytest.mark.parametrize("a_shape,b_shape,const_b", [((197, 96), (96, 80), True), ((1, 13, 64), (64, 48), True),
                                                     ((2, 37, 32), (2, 32, 64), False), ((11, 40), (40, 197), False)])
def test_matmul_rows_without_divisor(a_shape, b_shape, const_b, out_dir):
    if const_b:
        check_op("MatMul", [("a", f32(*a_shape))], out_dir, consts=[("w", f32(*b_shape) * 0.1)], rtol=1e-5, atol=1e-5)
    else:
        check_op("MatMul", [("a", f32(*a_shape)), ("b", f32(*b_shape))], out_dir, rtol=1e-5, atol=1e-5)


# Runtime B of a ragged width (attention scores over 197 or 1500 positions): B is padded at run time.
@pytest.mark.parametrize("a_shape,b_shape", [((1, 3, 20, 64), (1, 3, 64, 197)), ((2, 5, 24), (24, 1500)),
                                             ((2, 2, 9, 16), (2, 1, 16, 49))])
def test_matmul_batched_ragged_width(a_shape, b_shape, out_dir):
    check_op("MatMul", [("a", f32(*a_shape)), ("b", f32(*b_shape))], out_dir, rtol=1e-5, atol=1e-5)


def test_gemm_dynamic_b_ragged_width_transposed(out_dir):
    check_op("Gemm", [("a", f32(6, 16)), ("b", f32(197, 16))], out_dir, {"transB": 1}, rtol=1e-5, atol=1e-5)


def test_fused_matmul_dynamic_b_ragged_width(out_dir):
    g = compiler.Graph("fused_matmul_dyn_ragged")
    a = g.add_input("a", (2, 8, 16), compiler.DType.float32)
    b = g.add_input("b", (2, 16, 77), compiler.DType.float32)
    r = g.add_input("r", (2, 8, 77), compiler.DType.float32)
    g.outputs = list(g.add_node("FusedMatMul", [a, b, None, r], {"activation": "gelu",
                                                                 "residual_before_activation": 1}).outputs)
    feeds = {"a": f32(2, 8, 16), "b": f32(2, 16, 77), "r": f32(2, 8, 77)}
    got = compile_and_run(g, feeds, out_dir)[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-5, atol=1e-5)


def test_gemm_dynamic_b(out_dir):
    check_op("Gemm", [("a", f32(8, 16)), ("b", f32(32, 16))], out_dir, {"transB": 1}, rtol=1e-5, atol=1e-5)


# -- CNN family --------------------------------------------------------------------------------------
CONVS = [
    ("pointwise_wide", (1, 16, 16, 16), (32, 16, 1, 1), {}),
    ("pointwise_7x7", (1, 32, 7, 7), (64, 32, 1, 1), {}),
    ("depthwise_s1", (1, 8, 14, 14), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ("depthwise_s2_5x5", (1, 16, 15, 15), (16, 1, 5, 5), {"group": 16, "strides": [2, 2]}),
    ("stem_s2", (2, 3, 18, 18), (8, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("grouped_dilated", (1, 8, 12, 12), (12, 4, 3, 3), {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("same_upper", (1, 4, 9, 9), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONVS, ids=[c[0] for c in CONVS])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["nchwc", "nchw"])
def test_conv(name, x_shape, w_shape, attrs, bias, layout, out_dir):
    """Both convolution paths: the default NCHW16c kernels and the plain NCHW ones (which other targets
    and the convolutions the layout pass leaves alone use)."""
    import dataclasses
    from aotc.targets.cpu.target import X86_AVX512
    target = X86_AVX512 if layout == "nchwc" else dataclasses.replace(X86_AVX512, conv_block=0)
    consts = [("w", f32(*w_shape) * 0.3)] + ([("b", f32(w_shape[0]))] if bias else [])
    check_op("Conv", [("x", f32(*x_shape))], out_dir, attrs, consts=consts, rtol=1e-4, atol=1e-4, target=target)


def test_batchnorm(out_dir):
    c = 6
    check_op("BatchNormalization", [("x", f32(2, c, 5, 5))], out_dir, {"epsilon": 1e-3},
             consts=[("s", f32(c)), ("b", f32(c)), ("m", f32(c)), ("v", f32(c, lo=0.5))], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    # Strided/padded windows read stride phases of x with the padding filled in (lower_pool).
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ("AveragePool", {"kernel_shape": [2, 3], "strides": [3, 2], "ceil_mode": 1}),
])
def test_pool(op, attrs, out_dir):
    check_op(op, [("x", f32(1, 4, 11, 11))], out_dir, attrs, rtol=1e-5, atol=1e-5)


def test_maxpool_stem_shape_with_nan_and_negatives(out_dir):
    """ResNet's 3x3/2 max pool (padding -inf, not 0: every value negative must stay so) at a width that fills
    whole vectors, with a NaN that must win its windows as in the reference."""
    x = -np.abs(f32(1, 3, 32, 32)) - 1
    x[0, 1, 5, 7] = np.nan
    check_op("MaxPool", [("x", x)], out_dir, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
             rtol=1e-6, atol=1e-6)


# -- compile-time errors -------------------------------------------------------------------------------
def test_unlowerable_ops_are_all_named_and_leave_nothing(tmp_path):
    """Every registered op has a lowering now, so this uses nodes the lowerings refuse (float16 LRN and
    InstanceNormalization raise NoLoweringError): each is named, with the lowering's reason."""
    import aotc
    from aotc.targets.cpu.lowering import UnsupportedOnTargetError
    g = compiler.Graph("needs_missing_ops")
    x = g.add_input("x", (1, 4, 5, 5), compiler.DType.float16)
    a = g.add_node("LRN", [x], {"size": 3}, name="lrn_a").outputs[0]
    s = g.add_node("InstanceNormalization", [a, g.add_const("sc", np.ones(4, np.float16)),
                                             g.add_const("bi", np.zeros(4, np.float16))],
                   name="instnorm").outputs[0]
    b = g.add_node("LRN", [s], {"size": 3}, name="lrn_b").outputs[0]
    g.outputs = [b]
    out = tmp_path / "bundle"
    with pytest.raises(UnsupportedOnTargetError) as e:
        aotc.compile(g, out, target="x86-avx512", passes="none").path
    msg = str(e.value)
    for part in ("LRN ×2", "'lrn_a'", "'lrn_b'", "InstanceNormalization ×1", "'instnorm'",
                 "float16 LRN has no CPU kernel yet"):
        assert part in msg
    assert isinstance(e.value, compiler.AotcError)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_all_minilm_and_efficientnet_ops_have_lowerings():
    from aotc.targets.cpu.rules import lowered_ops
    have = set(lowered_ops())
    need = {"MatMul", "Add", "Mul", "Div", "Reshape", "Transpose", "LayerNormalization", "Softmax", "Erf", "Gelu",
            "Gather", "GatherND", "Where", "Cast", "And", "IsNaN", "Expand", "Flatten", "Conv", "BatchNormalization",
            "MaxPool", "AveragePool", "Relu", "Clip", "HardSwish", "Sigmoid", "Pad", "Concat", "GlobalAveragePool",
            "Gemm", "ReduceMean"}
    assert need <= have, sorted(need - have)


def test_every_registered_op_has_an_x86_lowering():
    """A new op registered in compiler.ops without an x86 lowering fails here, not in a user's compile."""
    from aotc.compiler.ops import ops_targets_see, registered_ops
    from aotc.targets.cpu.rules import lowered_ops
    have = set(lowered_ops())
    no_kernel_yet = {"DynamicQuantizeLinear"}  # scales computed at run time: a reference kernel, no target kernel yet
    missing = [op for op in ops_targets_see() if op not in have and op not in no_kernel_yet]
    assert not missing, f"registered ops without an x86 lowering: {missing}"
    assert not have - set(registered_ops()), sorted(have - set(registered_ops()))  # lowerings of unknown ops


# -- fused ops (what the default pass pipeline produces) --------------------------------------------------
@pytest.mark.parametrize("act,alpha,beta", [("none", None, None), ("gelu", None, None), ("clip", 0.0, 6.0),
                                            ("hardswish", None, None), ("silu", None, None), ("relu", None, None),
                                            ("gelu_tanh", None, None), ("sigmoid", None, None)])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_matmul(act, alpha, beta, residual, out_dir):
    attrs = {"activation": act, "act_alpha": alpha, "act_beta": beta, "residual_before_activation": 0}
    inputs = [("a", f32(2, 16, 48))] + ([("r", f32(2, 16, 64))] if residual else [])
    consts = [("w", f32(48, 64) * 0.2), ("b", f32(64))]
    g = compiler.Graph("fused_matmul")
    vals = {n: g.add_input(n, a.shape, compiler.DType.float32) for n, a in inputs}
    c = {n: g.add_const(n, a) for n, a in consts}
    node = g.add_node("FusedMatMul", [vals["a"], c["w"], c["b"]] + ([vals["r"]] if residual else []), attrs)
    g.outputs = list(node.outputs)
    feeds = dict(inputs)
    got = compile_and_run(g, feeds, out_dir)[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-5, atol=2e-5)


def test_fused_matmul_dynamic_b(out_dir):
    g = compiler.Graph("fused_matmul_dyn")
    a = g.add_input("a", (2, 3, 8, 16), compiler.DType.float32)
    b = g.add_input("b", (2, 3, 16, 32), compiler.DType.float32)
    r = g.add_input("r", (2, 3, 8, 32), compiler.DType.float32)
    g.outputs = list(g.add_node("FusedMatMul", [a, b, None, r], {"activation": "relu",
                                                                 "residual_before_activation": 1}).outputs)
    feeds = {"a": f32(2, 3, 8, 16), "b": f32(2, 3, 16, 32), "r": f32(2, 3, 8, 32)}
    got = compile_and_run(g, feeds, out_dir)[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONVS, ids=[c[0] for c in CONVS])
def test_fused_conv(name, x_shape, w_shape, attrs, out_dir):
    g = compiler.Graph("fused_conv")
    x = g.add_input("x", x_shape, compiler.DType.float32)
    w = g.add_const("w", f32(*w_shape) * 0.3)
    b = g.add_const("b", f32(w_shape[0]))
    conv = g.add_node("Conv", [x, w, b], attrs).outputs[0]
    r = g.add_input("r", conv.shape, compiler.DType.float32)
    fa = {**attrs, "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}
    g.outputs = list(g.add_node("FusedConv", [x, w, b, r], fa).outputs)
    g.nodes = [n for n in g.nodes if n.op_type == "FusedConv"]
    feeds = {"x": f32(*x_shape), "r": f32(*conv.shape)}
    got = compile_and_run(g, feeds, out_dir)[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("b_shape", [(2, 16, 384), (384,)])
def test_skip_layernorm(b_shape, out_dir):
    g = build_graph("SkipLayerNormalization", [("a", f32(2, 16, 384)), ("b", f32(*b_shape))], {"epsilon": 1e-5},
                    consts=[("scale", f32(384)), ("beta", f32(384))])
    feeds = {"a": f32(2, 16, 384), "b": f32(*b_shape)}
    got = compile_and_run(g, feeds, out_dir)
    for name, want in compiler.interpret(g, feeds).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masks", ["none", "add", "keep", "both"])
def test_attention(masks, out_dir):
    b, s, e, h, d = 2, 16, 64, 4, 16
    g = compiler.Graph("attention")
    x = g.add_input("x", (b, s, e), compiler.DType.float32)
    ws = [g.add_const(f"w{i}", f32(e, h * d) * 0.2) for i in range(3)]
    bs = [g.add_const(f"b{i}", f32(h * d)) for i in range(3)]
    add = g.add_input("add", (b, 1, 1, s), compiler.DType.float32) if masks in ("add", "both") else None
    keep = g.add_input("keep", (b, 1, s, s), compiler.DType.bool) if masks in ("keep", "both") else None
    node = g.add_node("Attention", [x, x, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], add, keep],
                      {"num_heads": h, "head_dim": d, "scale": d ** -0.5, "nan_to_zero": 1})
    g.outputs = list(node.outputs)
    feeds = {"x": f32(b, s, e)}
    if add is not None:
        feeds["add"] = np.where(R.random((b, 1, 1, s)) < 0.2, -1e4, 0).astype(np.float32)
    if keep is not None:
        k = R.random((b, 1, s, s)) < 0.8
        k[0, 0, 3] = False  # a fully masked row: NaN in the softmax, zeroed by nan_to_zero
        feeds["keep"] = k
    got = compile_and_run(g, feeds, out_dir)[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [
    {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]},
    {"mode": "nearest", "sizes": [1, 3, 7, 5], "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]},
    {"mode": "linear", "sizes": [1, 3, 4, 9], "coordinate_transformation_mode": "align_corners"},
    {"mode": "cubic", "scales": [1.0, 1.0, 2.0, 2.0]},
])
def test_resize(attrs, out_dir):
    check_op("Resize", [("x", f32(1, 3, 6, 6))], out_dir, attrs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2"])
@pytest.mark.parametrize("axes,keepdims", [([0], 1), ([0, 2], 0), ([1], 0)])
def test_reduce_any_axes(op, axes, keepdims, out_dir):
    check_op(op, [("x", f32(5, 6, 7))], out_dir, {"axes": axes, "keepdims": keepdims}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last", [(1, 1, 0), (0, 0, 1), (-1, 0, 0)])
def test_argreduce(op, axis, keepdims, last, out_dir):
    x = np.round(f32(4, 6, 5) * 2)  # ties, so first/last index matters
    check_op(op, [("x", x)], out_dir, {"axis": axis, "keepdims": keepdims, "select_last_index": last})


# Attention over a ragged number of keys (ViT's 197 tokens, Swin's 49-token windows): K^T is padded to
# whole vectors and only the real score columns are stored.
@pytest.mark.parametrize("sq,skv,self_attention", [(37, 37, True), (5, 50, False), (49, 49, True)])
def test_attention_ragged_keys(sq, skv, self_attention, out_dir):
    h, d = 2, 16
    e = h * d
    g = compiler.Graph(f"attention_{sq}x{skv}")
    xq = g.add_input("xq", (1, sq, e), compiler.DType.float32)
    xkv = xq if self_attention else g.add_input("xkv", (1, skv, e), compiler.DType.float32)
    w = [g.add_const(n, f32(e, e) * 0.2 if n.startswith("w") else f32(e)) for n in ("wq", "bq", "wk", "bk", "wv", "bv")]
    add = g.add_input("add_mask", (1, 1, sq, skv), compiler.DType.float32)
    att = g.add_node("Attention", [xq, xkv, *w, add, None],
                     {"num_heads": h, "head_dim": d, "scale": d ** -0.5, "mask_fill": float("-inf"), "nan_to_zero": 0})
    g.outputs = list(att.outputs)
    feeds = {v.name: f32(*v.shape) for v in g.inputs}
    got = compile_and_run(g, feeds, out_dir)[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-5, atol=1e-5)

"""Differential tests of the elementwise op family against onnxruntime.

Shapes, broadcasting partners and attributes are drawn from a seeded NumPy
RNG; each test runs over several seeds so a kernel is checked on many
layouts while every failure stays reproducible (the seed is in the test id).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper
from oracle import check_against_ort, check_single_op

from aotc.compiler.dtypes import DType

SEEDS = [0, 1, 2, 3]
BF16 = np.dtype(ml_dtypes.bfloat16)


# -- random shapes ---------------------------------------------------------------
def rand_shape(rng, rank=None, lo=1, hi=5) -> tuple[int, ...]:
    rank = int(rng.integers(0, 5)) if rank is None else rank
    return tuple(int(d) for d in rng.integers(lo, hi + 1, size=rank))


def broadcast_partner(rng, shape) -> tuple[int, ...]:
    """A shape that broadcasts with `shape`: a random suffix of it with some dims set to 1."""
    keep = int(rng.integers(0, len(shape) + 1))
    tail = list(shape[len(shape) - keep:])
    return tuple(1 if rng.random() < 0.4 else d for d in tail)


def broadcast_pair(rng):
    """Two shapes that broadcast (in either order), sometimes the bigger one second."""
    a = rand_shape(rng)
    b = broadcast_partner(rng, a)
    # Make the smaller operand's ones stretch the bigger one too, now and then.
    if a and rng.random() < 0.3:
        i = int(rng.integers(0, len(a)))
        a = a[:i] + (1,) + a[i + 1:]
        if len(b) == len(a):
            b = b[:i] + (int(rng.integers(2, 4)),) + b[i + 1:]
    return (a, b) if rng.random() < 0.5 else (b, a)


# np.asarray: a rank-0 draw is a NumPy scalar, which onnxruntime does not take as a feed.
def randn(rng, shape, dtype=np.float32, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale).astype(dtype)


def randint(rng, shape, dtype, lo=-20, hi=20):
    return np.asarray(rng.integers(lo, hi, size=shape)).astype(dtype)


def randbool(rng, shape):
    return np.asarray(rng.random(shape) < 0.5)


# -- unary math and activations --------------------------------------------------
def _positive(rng, shape, dtype):
    return np.asarray(np.abs(rng.standard_normal(shape)) + 0.1).astype(dtype)


UNARY = [
    # (op, attrs, input maker, opset)
    ("Neg", {}, randn, 13),
    ("Abs", {}, randn, 13),
    ("Exp", {}, randn, 13),
    ("Log", {}, _positive, 13),
    ("Sqrt", {}, _positive, 13),
    ("Reciprocal", {}, _positive, 13),
    ("Tanh", {}, randn, 13),
    ("Erf", {}, randn, 13),
    ("Sin", {}, randn, 11),
    ("Cos", {}, randn, 11),
    ("Floor", {}, lambda r, s, d: randn(r, s, d, scale=4), 13),
    ("Ceil", {}, lambda r, s, d: randn(r, s, d, scale=4), 13),
    ("Sign", {}, randn, 13),
    ("Relu", {}, randn, 14),
    ("Sigmoid", {}, lambda r, s, d: randn(r, s, d, scale=6), 13),
    ("LeakyRelu", {}, randn, 16),
    ("LeakyRelu", {"alpha": 0.3}, randn, 16),
    ("Elu", {}, randn, 11),
    ("Elu", {"alpha": 0.7}, randn, 11),
    ("Softplus", {}, lambda r, s, d: randn(r, s, d, scale=8), 11),
    ("HardSigmoid", {}, lambda r, s, d: randn(r, s, d, scale=4), 11),
    ("HardSigmoid", {"alpha": 0.1, "beta": 0.3}, lambda r, s, d: randn(r, s, d, scale=4), 11),
    ("HardSwish", {}, lambda r, s, d: randn(r, s, d, scale=5), 14),
    ("Gelu", {}, lambda r, s, d: randn(r, s, d, scale=3), 20),
    ("Gelu", {"approximate": "none"}, lambda r, s, d: randn(r, s, d, scale=3), 20),
    ("Gelu", {"approximate": "tanh"}, lambda r, s, d: randn(r, s, d, scale=3), 20),
    ("Identity", {}, randn, 16),
]


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("op,attrs,make,opset", UNARY, ids=lambda v: v if isinstance(v, str) else None)
def test_unary_float32(op, attrs, make, opset, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, rand_shape(rng), np.float32)
    check_single_op(op, [("x", x)], attrs, opset=opset)


# onnxruntime's CPU provider has float16 kernels for only some of these.
UNARY_F16 = ["Neg", "Abs", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Sqrt", "Exp", "Log", "Reciprocal",
             "Floor", "Ceil", "HardSigmoid", "Erf", "Gelu", "Identity"]


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("op", UNARY_F16)
def test_unary_float16(op, seed):
    spec = next(u for u in UNARY if u[0] == op)
    _, attrs, make, opset = spec
    rng = np.random.default_rng(seed)
    x = make(rng, rand_shape(rng, rank=3), np.float16)
    check_single_op(op, [("x", x)], attrs, opset=opset)


@pytest.mark.parametrize("op", ["Neg", "Abs", "Sign", "Relu", "Identity"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8])
def test_unary_integer(op, dtype):
    rng = np.random.default_rng(7)
    x = randint(rng, rand_shape(rng, rank=3), dtype)
    opset = {"Relu": 14}.get(op, 13)
    try:
        check_single_op(op, [("x", x)], opset=opset)
    except Exception as e:  # onnxruntime has no kernel for this dtype: nothing to compare against
        if "NOT_IMPLEMENTED" in str(e) or "Could not find an implementation" in str(e):
            pytest.skip(f"onnxruntime has no {op} kernel for {np.dtype(dtype)}")
        raise


def test_activations_at_edges():
    """Values right at the kinks (0, +-3 for HardSwish, the HardSigmoid clip points) and large magnitudes."""
    x = np.array([-1e4, -60.0, -6.0, -3.0, -2.5, -1.0, -0.0, 0.0, 1e-8, 1.0, 2.5, 3.0, 6.0, 60.0, 1e4], np.float32)
    for op, opset in [("Relu", 14), ("Sigmoid", 13), ("LeakyRelu", 16), ("Elu", 11), ("Softplus", 11),
                      ("HardSigmoid", 11), ("HardSwish", 14), ("Tanh", 13), ("Erf", 13)]:
        check_single_op(op, [("x", x)], opset=opset)
    for approx in ("none", "tanh"):
        check_single_op("Gelu", [("x", x)], {"approximate": approx}, opset=20)


def test_isnan_isinf():
    rng = np.random.default_rng(0)
    x = randn(rng, (4, 7))
    x.flat[[0, 5, 9]] = np.nan
    x.flat[[1, 11]] = np.inf
    x.flat[[3, 20]] = -np.inf
    # IsInf takes float16 only from opset 20 on.
    for dtype, opset in ((np.float32, 11), (np.float16, 20)):
        xd = x.astype(dtype)
        check_single_op("IsNaN", [("x", xd)], opset=max(opset, 13))
        for neg in (0, 1):
            for pos in (0, 1):
                check_single_op("IsInf", [("x", xd)], {"detect_negative": neg, "detect_positive": pos}, opset=opset)


# -- binary arithmetic with broadcasting -----------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arith_broadcast_float32(op, seed):
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(rng)
    a = randn(rng, sa)
    b = randn(rng, sb)
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    check_single_op(op, [("a", a), ("b", b)], opset=14)


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64])
def test_arith_broadcast_other_dtypes(op, dtype, seed):
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(rng)
    if np.dtype(dtype).kind == "f":
        a, b = randn(rng, sa, dtype), randn(rng, sb, dtype)
        if op == "Div":
            b = np.where(np.abs(b) < 0.1, 0.5, b).astype(dtype)
    else:
        a, b = randint(rng, sa, dtype, -50, 50), randint(rng, sb, dtype, -9, 10)
        if op == "Div":
            b = np.where(b == 0, 3, b).astype(dtype)
    check_single_op(op, [("a", a), ("b", b)], opset=14)


def test_integer_div_truncates_toward_zero():
    """ONNX (C++) integer division truncates; NumPy's floor division would give -4 for -7 / 2."""
    a = np.array([7, -7, 7, -7, 6, -6, 1, -1, 0, 2**31 - 1, -(2**31)], np.int32)
    b = np.array([2, 2, -2, -2, 4, 4, 3, 3, 5, 7, 7], np.int32)
    got = check_single_op("Div", [("a", a), ("b", b)], opset=14)
    np.testing.assert_array_equal(got["y0"][:4], [3, -3, -3, 3])
    for dtype in (np.int64, np.int8):
        rng = np.random.default_rng(3)
        aa = randint(rng, (50,), dtype, -100, 100)
        bb = randint(rng, (50,), dtype, -12, 12)
        bb[bb == 0] = -5
        try:
            check_single_op("Div", [("a", aa), ("b", bb)], opset=14)
        except Exception as e:
            if np.dtype(dtype) == np.int8 and ("NOT_IMPLEMENTED" in str(e) or "implementation" in str(e)):
                continue  # onnxruntime has no int8 Div kernel
            raise


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_pow_float_exponents(seed):
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(rng)
    a = np.asarray(_positive(rng, sa, np.float32) * 2)
    b = randn(rng, sb)
    check_single_op("Pow", [("a", a), ("b", b)], opset=15)
    # Negative bases with integral float exponents are well defined.
    a = randn(rng, sa)
    b = randint(rng, sb, np.float32, -3, 4)
    b = np.asarray(np.where(b < 0, 2.0, b)).astype(np.float32) if (np.abs(a) < 0.05).any() else b
    check_single_op("Pow", [("a", a), ("b", b)], opset=15)


def test_pow_mixed_and_integer_exponents():
    rng = np.random.default_rng(5)
    x = randn(rng, (3, 4))
    check_single_op("Pow", [("a", x), ("b", np.array(3, np.int64))], opset=15)
    check_single_op("Pow", [("a", x), ("b", np.array([2, 3, 0, 1], np.int32))], opset=15)
    check_single_op("Pow", [("a", x), ("b", np.array(2.0, np.float32))], opset=15)
    check_single_op("Pow", [("a", x.astype(np.float16)), ("b", np.array(2.0, np.float16))], opset=15)
    xi = randint(rng, (3, 4), np.int64, -5, 6)
    check_single_op("Pow", [("a", xi), ("b", np.array([0, 1, 2, 3], np.int64))], opset=15)
    check_single_op("Pow", [("a", xi.astype(np.int32)), ("b", np.array(3, np.int32))], opset=15)


def test_pow_integer_base_semantics():
    """Integer bases are raised in double precision and truncated: 4 ** 0.5 == 2, 3 ** 2.9 == 24, 4 ** -1 == 0."""
    a = np.array([4, 9, 2, 3, 4, -2, 1, -1, 7], np.int64)
    fexp = np.array([0.5, 0.5, 1.5, 2.9, -1.0, 2.0, -3.0, -3.0, 2.5], np.float32)
    for dtype in (np.int64, np.int32):
        got = check_single_op("Pow", [("a", a.astype(dtype)), ("b", fexp)], opset=15)
        np.testing.assert_array_equal(got["y0"][:4], [2, 3, 2, 24])
        check_single_op("Pow", [("a", a.astype(dtype)), ("b", fexp.astype(np.int64))], opset=15)


# -- comparisons and logic ---------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
def test_comparisons(op, dtype, seed):
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(rng)
    # Small integer-valued operands so Equal/LessOrEqual see plenty of ties.
    a = randint(rng, sa, dtype, -3, 3)
    b = randint(rng, sb, dtype, -3, 3)
    check_single_op(op, [("a", a), ("b", b)], opset=16)


def test_comparisons_bool_and_float16():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 4)) < 0.5, rng.random((4,)) < 0.5
    check_single_op("Equal", [("a", a), ("b", b)], opset=13)
    a16, b16 = randint(rng, (2, 3), np.float16, -2, 2), randint(rng, (3,), np.float16, -2, 2)
    for op in ("Equal", "Less", "Greater"):
        check_single_op(op, [("a", a16), ("b", b16)], opset=13)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic_broadcast(op, seed):
    rng = np.random.default_rng(seed)
    sa, sb = broadcast_pair(rng)
    check_single_op(op, [("a", randbool(rng, sa)), ("b", randbool(rng, sb))], opset=11)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_not(seed):
    rng = np.random.default_rng(seed)
    check_single_op("Not", [("x", randbool(rng, rand_shape(rng)))], opset=11)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16])
def test_where_broadcast(dtype, seed):
    rng = np.random.default_rng(seed)
    s = rand_shape(rng, rank=int(rng.integers(1, 5)))
    shapes = [broadcast_partner(rng, s) for _ in range(3)]
    shapes[int(rng.integers(0, 3))] = s  # one operand has the full shape (sometimes every one is smaller)
    c = randbool(rng, shapes[0])
    x = randint(rng, shapes[1], dtype)
    y = randint(rng, shapes[2], dtype)
    check_single_op("Where", [("c", c), ("x", x), ("y", y)], opset=16)


# -- variadic -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["Min", "Max", "Sum", "Mean"])
def test_variadic(op, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    full = rand_shape(rng, rank=int(rng.integers(1, 4)))
    shapes = [broadcast_partner(rng, full) for _ in range(n)]
    shapes[int(rng.integers(0, n))] = full
    inputs = [(f"x{i}", randn(rng, s)) for i, s in enumerate(shapes)]
    check_single_op(op, inputs, opset=13)


@pytest.mark.parametrize("op", ["Min", "Max"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16])
def test_variadic_other_dtypes(op, dtype):
    rng = np.random.default_rng(11)
    inputs = [("a", randint(rng, (3, 1, 4), dtype)), ("b", randint(rng, (5, 1), dtype)),
              ("c", randint(rng, (4,), dtype))]
    check_single_op(op, inputs, opset=13)


def test_sum_mean_float16():
    rng = np.random.default_rng(2)
    inputs = [("a", randn(rng, (2, 3), np.float16)), ("b", randn(rng, (3,), np.float16))]
    check_single_op("Sum", inputs, opset=13)
    check_single_op("Mean", inputs, opset=13)
    # onnxruntime accumulates half types in float32: no overflow to inf on the way, no lost small terms.
    big = [("a", np.array([60000, 2, 1], np.float16)), ("b", np.array([10000, 65504, 0.5], np.float16)),
           ("c", np.array([-20000, -65504, -1], np.float16))]
    check_single_op("Sum", big, opset=13)
    check_single_op("Mean", big, opset=13)


# -- Clip ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("opset", [11, 13])
def test_clip_inputs(opset, seed):
    """Since opset 11 min and max are optional inputs (constants here, attributes in aotc)."""
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng), scale=3)
    lo, hi = sorted(rng.standard_normal(2).astype(np.float32))
    check_single_op("Clip", [("x", x)], consts=[("min", np.array(lo, np.float32)), ("max", np.array(hi, np.float32))],
                    opset=opset)
    check_single_op("Clip", [("x", x)], consts=[("min", np.array(lo, np.float32))], opset=opset)
    check_single_op("Clip", [("x", x)], consts=[("min", None), ("max", np.array(hi, np.float32))], opset=opset)
    check_single_op("Clip", [("x", x)], opset=opset)


def test_clip_integer_and_float16():
    rng = np.random.default_rng(4)
    for dtype in (np.int32, np.int64, np.int8, np.uint8):
        x = randint(rng, (4, 5), dtype, 0 if dtype == np.uint8 else -100, 100)
        lo, hi = np.array(3 if dtype == np.uint8 else -7, dtype), np.array(40, dtype)
        check_single_op("Clip", [("x", x)], consts=[("min", lo), ("max", hi)], opset=13)
        check_single_op("Clip", [("x", x)], consts=[("min", None), ("max", hi)], opset=13)
    x16 = randn(rng, (3, 6), np.float16, scale=3)
    check_single_op("Clip", [("x", x16)], consts=[("min", np.array(-1.5, np.float16)),
                                                   ("max", np.array(0.7, np.float16))], opset=13)


def test_clip_bounds_as_one_element_tensors():
    """ONNX wants scalars, but exporters also write [1]-shaped bounds, which onnxruntime accepts."""
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    bounds = [("min", np.array([-1.0], np.float32)), ("max", np.array([2.0], np.float32))]
    check_single_op("Clip", [("x", x)], consts=bounds, opset=13)


def test_clip_min_above_max():
    """ONNX defines Clip as min(max(x, lo), hi): every element becomes hi when lo > hi."""
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    bounds = [("min", np.array(1.0, np.float32)), ("max", np.array(-1.0, np.float32))]
    check_single_op("Clip", [("x", x)], consts=bounds, opset=13)


# -- Cast ---------------------------------------------------------------------------
CAST_DTYPES = [np.float32, np.float16, BF16, np.int8, np.uint8, np.int32, np.int64, np.bool_]


def _cast_source(rng, src, dst):
    """Values that both dtypes represent without undefined behaviour (no negative floats into unsigned,
    nothing out of the integer target's range)."""
    src, dst = np.dtype(src), np.dtype(dst)
    lo, hi = -100, 100
    if src.kind == "u" or dst.kind == "u":
        lo, hi = 0, 200 if dst.kind == "u" and src.kind == "u" else 120
    if src == np.int8 or dst == np.int8:
        lo, hi = max(lo, -120), min(hi, 120)
    if src.kind == "b":
        return rng.random((3, 17)) < 0.5
    if src.kind == "f" or src == BF16:
        x = rng.uniform(lo, hi, size=(3, 17))
        x[0, :4] = [0.0, 0.5, -0.0 if lo < 0 else 2.5, 1.0]
        return x.astype(src)
    return rng.integers(lo, hi, size=(3, 17)).astype(src)


def cast_chain_model(src: np.dtype, steps: list[np.dtype]) -> onnx.ModelProto:
    """x: src -> Cast(steps[0]) -> Cast(steps[1]) ... ; every Cast's output is a model output.

    onnxruntime's Python API neither takes nor returns bfloat16 arrays, so bfloat16 is checked
    inside a chain: fed as float32 and cast to bfloat16 in the model, and read back through an
    exact Cast to float32 (every bfloat16 is a float32)."""
    nodes, outs, prev = [], [], "x"
    for i, dt in enumerate(steps):
        nodes.append(helper.make_node("Cast", [prev], [f"c{i}"], name=f"cast{i}", to=DType.from_numpy(dt).onnx))
        prev = f"c{i}"
        if np.dtype(dt) != BF16:
            outs.append(helper.make_tensor_value_info(prev, DType.from_numpy(dt).onnx, None))
    graph = helper.make_graph(nodes, "cast_chain",
                              [helper.make_tensor_value_info("x", DType.from_numpy(src).onnx, [3, 17])], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("dst", CAST_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("src", CAST_DTYPES, ids=lambda d: np.dtype(d).name)
def test_cast_all_pairs(src, dst):
    rng = np.random.default_rng(0)
    x = _cast_source(rng, src, dst)
    if BF16 in (np.dtype(src), np.dtype(dst)):
        feed = x.astype(np.float32) if np.dtype(src) == BF16 else x
        steps = ([BF16] if np.dtype(src) == BF16 else []) + [dst] + ([np.float32] if np.dtype(dst) == BF16 else [])
        check_against_ort(cast_chain_model(feed.dtype, steps), {"x": feed})
        return
    try:
        check_single_op("Cast", [("x", x)], {"to": DType.from_numpy(dst).onnx}, opset=13)
    except Exception as e:
        if "NOT_IMPLEMENTED" in str(e) or "Could not find an implementation" in str(e):
            pytest.skip(f"onnxruntime's CPU provider cannot cast {np.dtype(src).name} to {np.dtype(dst).name}")
        raise


def test_cast_float_to_int_truncates():
    x = np.array([-3.9, -3.5, -0.5, 0.5, 2.5, 3.5, 3.9, 126.7], np.float32)
    for dst in (np.int32, np.int64, np.int8):
        to = DType.from_numpy(dst).onnx
        got = check_single_op("Cast", [("x", x)], {"to": to}, opset=13)
        np.testing.assert_array_equal(got["y0"], [-3, -3, 0, 0, 2, 3, 3, 126])


def test_cast_float_rounding_to_half_types():
    """float32 -> float16/bfloat16 rounds to nearest even, including halfway cases and overflow to inf."""
    x = np.array([1.0 + 2**-11, 1.0 + 3 * 2**-11, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-9, 65504.0, 65520.0,
                  1e-8, -1e5, 3.0e38, np.inf, -np.inf], np.float32)
    x = np.resize(x, (3, 17)).astype(np.float32)
    # Exact comparison: rounding is specified bit for bit.
    check_against_ort(cast_chain_model(np.float32, [np.float16]), {"x": x}, tol=(0, 0))
    check_against_ort(cast_chain_model(np.float32, [BF16, np.float32]), {"x": x}, tol=(0, 0))


def test_castlike():
    rng = np.random.default_rng(0)
    x = randn(rng, (2, 5), scale=10)
    check_single_op("CastLike", [("x", x), ("like", np.zeros((1,), np.int32))], opset=15)
    check_single_op("CastLike", [("x", x), ("like", np.zeros((3, 3), np.float16))], opset=15)


# -- Identity / Dropout -------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.bool_])
def test_identity(dtype):
    rng = np.random.default_rng(0)
    x = (rng.random((2, 3, 4)) < 0.5) if dtype == np.bool_ else randint(rng, (2, 3, 4), dtype)
    check_single_op("Identity", [("x", x)], opset=16)


@pytest.mark.parametrize("opset", [11, 12, 13])
def test_dropout_inference(opset):
    rng = np.random.default_rng(opset)
    x = randn(rng, rand_shape(rng, rank=3))
    if opset < 12:
        check_single_op("Dropout", [("x", x)], {"ratio": 0.3}, opset=opset)
    else:
        check_single_op("Dropout", [("x", x)], opset=opset)
        check_single_op("Dropout", [("x", x)], consts=[("ratio", np.array(0.25, np.float32))], opset=opset)
        check_single_op("Dropout", [("x", x)], consts=[("ratio", np.array(0.25, np.float32)),
                                                        ("training_mode", np.array(False))], opset=opset)
        check_single_op("Dropout", [("x", x)], {"seed": 3}, consts=[("ratio", np.array(0.5, np.float32))],
                        opset=opset)


@pytest.mark.parametrize("fmod,dtype", [(0, np.int64), (0, np.int32), (1, np.int64), (1, np.float32)])
def test_mod_matches_onnxruntime(fmod, dtype):
    """Mod's two forms: fmod=0 takes the divisor's sign (Python's %), fmod=1 the dividend's (C's fmod); the
    reference interpreter and onnxruntime must agree on both (Swin exports integer Mod for window padding)."""
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        a, b = randn(rng, (4, 9)) * 10, randn(rng, (9,)) * 3
        b = np.where(np.abs(b) < 0.1, 1.5, b).astype(np.float32)
    else:
        a = randint(rng, (4, 9), dtype, -50, 50)
        b = randint(rng, (9,), dtype, -7, 8)
        b[b == 0] = 3
    got = check_single_op("Mod", [("a", a), ("b", b)], attrs={"fmod": fmod}, opset=13)
    want = np.fmod(a, b) if fmod else np.mod(a, b)
    np.testing.assert_allclose(got["y0"], want, rtol=1e-6)

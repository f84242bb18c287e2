"""Differential tests of the reductions, the normalizing ops (Softmax,
LogSoftmax, LayerNormalization) and the matrix products (MatMul, Gemm)
against onnxruntime, over seeded random shapes and attributes.

Reduce axes moved from an attribute to an input at opset 13 for ReduceSum and
at opset 18 for every other Reduce*; both forms are covered (the input form
as an initializer, which the importer turns into the `axes` attribute).
"""
from __future__ import annotations

import numpy as np
import pytest
from oracle import check_single_op

SEEDS = [0, 1, 2, 3]
REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"]


def rand_shape(rng, rank=None, lo=1, hi=5) -> tuple[int, ...]:
    rank = int(rng.integers(0, 5)) if rank is None else rank
    return tuple(int(d) for d in rng.integers(lo, hi + 1, size=rank))


def randn(rng, shape, dtype=np.float32, scale=1.0):
    # np.asarray: a rank-0 draw is a NumPy scalar, which onnxruntime does not take as a feed.
    return np.asarray(rng.standard_normal(shape) * scale).astype(dtype)


def axes_as_input(op: str, opset: int) -> bool:
    return opset >= (13 if op == "ReduceSum" else 18)


def reduce_case(op, x, axes, keepdims, opset, noop=None, tol=None):
    """One Reduce node; `axes` None = omitted, [] = an empty axes input."""
    attrs = {"keepdims": keepdims}
    consts = []
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    if axes_as_input(op, opset):
        if axes is not None:
            consts = [("axes", np.array(axes, np.int64))]
    elif axes is not None:
        attrs["axes"] = axes
    return check_single_op(op, [("x", x)], attrs, consts=consts, opset=opset, tol=tol)


def _input_for(op, rng, shape, dtype=np.float32):
    if op == "ReduceProd":  # values near 1 keep products of up to ~60 factors in a sane range
        return np.asarray(rng.uniform(0.7, 1.3, size=shape)).astype(dtype)
    return randn(rng, shape, dtype)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_random_axes(op, opset, seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 5)))
    x = _input_for(op, rng, shape)
    rank = len(shape)
    axes = rng.choice(rank, size=int(rng.integers(1, rank + 1)), replace=False)
    axes = [int(a) - rank if rng.random() < 0.5 else int(a) for a in axes]  # unsorted, some negative
    for keepdims in (0, 1):
        reduce_case(op, x, axes, keepdims, opset)
        reduce_case(op, x, None, keepdims, opset)  # no axes: reduce everything


@pytest.mark.parametrize("op,opset", [(op, opset) for op in REDUCE_OPS for opset in (13, 18)
                                       if axes_as_input(op, opset)])
def test_reduce_empty_axes_noop(op, opset):
    """An empty axes input reduces everything, unless noop_with_empty_axes makes the node reduce nothing
    (ReduceSumSquare still squares and ReduceL2 still takes |x|)."""
    rng = np.random.default_rng(0)
    x = _input_for(op, rng, (2, 3, 4))
    for noop in (0, 1):
        for keepdims in (0, 1):
            reduce_case(op, x, [], keepdims, opset, noop=noop)
            reduce_case(op, x, None, keepdims, opset, noop=noop)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_scalar_input(op):
    x = np.asarray(np.float32(1.75))
    for keepdims in (0, 1):
        reduce_case(op, x, None, keepdims, opset=18)
        reduce_case(op, x, [], keepdims, opset=18, noop=1)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_integer(op, dtype):
    rng = np.random.default_rng(5)
    lo, hi = (-3, 4) if op == "ReduceProd" else (-50, 50)
    shape = (2, 3, 2) if op == "ReduceProd" else (3, 4, 5)  # no overflow: 3 ** 12 fits in int32
    x = rng.integers(lo, hi, size=shape).astype(dtype)
    for axes in ([1], [-1, 0], None):
        for keepdims in (0, 1):
            reduce_case(op, x, axes, keepdims, opset=18)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"])
def test_reduce_float16(op):
    rng = np.random.default_rng(6)
    x = randn(rng, (4, 6, 8), np.float16)
    for axes in ([1], [-1, 0], None):
        reduce_case(op, x, axes, 1, opset=18)


# -- ArgMax / ArgMin ------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_reduce(op, seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 5)))
    # Few distinct values, so ties are common and select_last_index matters.
    x = rng.integers(-2, 3, size=shape).astype(np.float32)
    axis = int(rng.integers(-len(shape), len(shape)))
    for keepdims in (0, 1):
        for last in (0, 1):
            check_single_op(op, [("x", x)], {"axis": axis, "keepdims": keepdims, "select_last_index": last},
                            opset=13)
    check_single_op(op, [("x", x.astype(np.int64))], {"axis": axis}, opset=11)


# -- Softmax / LogSoftmax ---------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_every_axis(op, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng, rank=int(rng.integers(1, 5))), scale=4)
    for axis in range(-x.ndim, x.ndim):
        check_single_op(op, [("x", x)], {"axis": axis}, opset=13)
    check_single_op(op, [("x", x)], opset=13)  # default axis -1


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_legacy_opset11(op, seed):
    """Opset < 13 coerces the input to 2-D at `axis` (default 1) and normalizes over the whole flattened tail;
    the importer rewrites that into Flatten -> Softmax(-1) -> Reshape."""
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng, rank=int(rng.integers(1, 5))), scale=4)
    for axis in range(-x.ndim, x.ndim):
        check_single_op(op, [("x", x)], {"axis": axis}, opset=11)
    check_single_op(op, [("x", x)], opset=11)  # default axis 1 (not -1)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_float16_and_extremes(op):
    rng = np.random.default_rng(3)
    check_single_op(op, [("x", randn(rng, (3, 5, 7), np.float16, scale=3))], {"axis": 1}, opset=13)
    # Masked attention rows: some -inf entries (exp gives 0), and a fully masked row (NaN on both sides).
    x = np.array([[1e4, -1e4, 0.0, 3.0], [-1e30, -1e30, -1e30, -1e30], [88.0, 89.0, 90.0, -90.0],
                  [0.5, -np.inf, 2.0, -np.inf], [-np.inf] * 4], np.float32)
    with np.errstate(invalid="ignore"):
        check_single_op(op, [("x", x)], {"axis": -1}, opset=13)


# -- LayerNormalization ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_every_axis(with_bias, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng, rank=int(rng.integers(1, 5)), lo=2, hi=6), scale=3) + 1.5
    for axis in range(-x.ndim, x.ndim):
        norm_shape = x.shape[axis:]
        # scale/bias of the normalized shape, or a shape that broadcasts to it.
        sshape = norm_shape if rng.random() < 0.7 else norm_shape[-1:]
        inputs = [("x", x), ("scale", randn(rng, sshape))]
        if with_bias:
            inputs.append(("bias", randn(rng, sshape)))
        eps = float(rng.choice([1e-5, 1e-3, 0.1]))
        check_single_op("LayerNormalization", inputs, {"axis": axis, "epsilon": eps}, opset=17)


def test_layer_norm_default_axis_and_float16():
    rng = np.random.default_rng(9)
    x = randn(rng, (2, 5, 16))
    check_single_op("LayerNormalization", [("x", x), ("s", randn(rng, (16,))), ("b", randn(rng, (16,)))], opset=17)
    x16 = x.astype(np.float16)
    check_single_op("LayerNormalization", [("x", x16), ("s", randn(rng, (16,), np.float16)),
                                           ("b", randn(rng, (16,), np.float16))], opset=17)


# -- MatMul ------------------------------------------------------------------------------------
def _matmul_shapes(rng):
    m, k, n = (int(v) for v in rng.integers(1, 9, size=3))
    batch = rand_shape(rng, rank=int(rng.integers(0, 3)), hi=3)
    a_batch = tuple(1 if rng.random() < 0.3 else d for d in batch[int(rng.integers(0, len(batch) + 1)):])
    b_batch = tuple(1 if rng.random() < 0.3 else d for d in batch[int(rng.integers(0, len(batch) + 1)):])
    kind = rng.choice(["nd", "nd", "vec_a", "vec_b", "vec_both"])
    a = (k,) if kind in ("vec_a", "vec_both") else a_batch + (m, k)
    b = (k,) if kind in ("vec_b", "vec_both") else b_batch + (k, n)
    return a, b


@pytest.mark.parametrize("seed", range(10))
def test_matmul_shapes(seed):
    rng = np.random.default_rng(seed)
    sa, sb = _matmul_shapes(rng)
    check_single_op("MatMul", [("a", randn(rng, sa)), ("b", randn(rng, sb))], opset=13)


def test_matmul_fixed_cases():
    rng = np.random.default_rng(1)
    for sa, sb in [((5,), (5,)), ((5,), (2, 5, 3)), ((2, 3, 5), (5,)), ((4, 1, 3, 5), (2, 5, 6)),
                   ((3, 5), (4, 2, 5, 1)), ((1, 1, 7), (7, 1)), ((2, 32, 64), (64, 48))]:
        check_single_op("MatMul", [("a", randn(rng, sa)), ("b", randn(rng, sb))], opset=13)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16])
def test_matmul_other_dtypes(dtype):
    rng = np.random.default_rng(2)
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3))]:
        if np.dtype(dtype).kind == "i":
            a, b = rng.integers(-9, 9, size=sa).astype(dtype), rng.integers(-9, 9, size=sb).astype(dtype)
        else:
            a, b = randn(rng, sa, dtype), randn(rng, sb, dtype)
        check_single_op("MatMul", [("a", a), ("b", b)], opset=13)


# -- Gemm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("opset", [11, 13])
def test_gemm(opset, seed):
    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(1, 9, size=3))
    ta, tb = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    a = randn(rng, (k, m) if ta else (m, k))
    b = randn(rng, (n, k) if tb else (k, n))
    attrs = {"transA": ta, "transB": tb}
    if rng.random() < 0.7:
        attrs["alpha"] = float(rng.choice([0.5, -1.25, 2.0]))
    if rng.random() < 0.7:
        attrs["beta"] = float(rng.choice([0.0, 0.5, -3.0]))
    inputs = [("a", a), ("b", b)]
    for cshape in [(), (n,), (1, n), (m, 1), (m, n), (1, 1), None]:
        c = [("c", randn(rng, cshape))] if cshape is not None else []
        check_single_op("Gemm", inputs + c, attrs, opset=opset)


def test_gemm_bias_as_initializer():
    """Exporters write Linear layers as Gemm with B and C as initializers."""
    rng = np.random.default_rng(4)
    check_single_op("Gemm", [("a", randn(rng, (3, 8)))], {"transB": 1},
                    consts=[("w", randn(rng, (5, 8))), ("c", randn(rng, (5,)))], opset=13)

"""Differential tests of the data-movement ops against onnxruntime.

Every parameter ONNX passes as a constant input (Reshape's shape, Slice's
starts/ends/axes/steps, Squeeze/Unsqueeze axes, Split sizes, Expand's shape,
Tile's repeats, Trilu's k) is an initializer here, so the importer turns it
into an attribute; shapes and parameters come from a seeded RNG.
"""
from __future__ import annotations

import numpy as np
import pytest
from oracle import check_single_op

SEEDS = [0, 1, 2, 3, 4]
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def i64(*v):
    return np.array(v, np.int64)


def rand_shape(rng, rank=None, lo=1, hi=5) -> tuple[int, ...]:
    rank = int(rng.integers(0, 5)) if rank is None else rank
    return tuple(int(d) for d in rng.integers(lo, hi + 1, size=rank))


def randn(rng, shape, dtype=np.float32):
    # np.asarray: a rank-0 draw is a NumPy scalar, which onnxruntime does not take as a feed.
    return np.asarray(rng.standard_normal(shape)).astype(dtype)


# -- Reshape ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("opset", [13, 14])
def test_reshape_random(opset, seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 5)))
    x = randn(rng, shape)
    # A random regrouping of the same elements, then 0 (copy input dim) and -1 (infer) placed at random.
    target = list(rng.permutation(shape))
    if len(target) > 1 and rng.random() < 0.5:
        target = [target[0] * target[1]] + target[2:]
    target = [int(d) for d in target]
    for i in range(min(len(target), len(shape))):
        if target[i] == shape[i] and rng.random() < 0.4:
            target[i] = 0
    target[int(rng.integers(0, len(target)))] = -1
    check_single_op("Reshape", [("x", x)], consts=[("shape", i64(*target))], opset=opset)
    check_single_op("Reshape", [("x", x)], consts=[("shape", i64(-1))], opset=opset)
    if opset >= 14:
        plain = [int(d) for d in rng.permutation(shape)]
        check_single_op("Reshape", [("x", x)], {"allowzero": 1}, consts=[("shape", i64(*plain))], opset=opset)


def test_reshape_to_and_from_scalar():
    check_single_op("Reshape", [("x", np.array([2.5], np.float32))], consts=[("shape", np.zeros(0, np.int64))])
    check_single_op("Reshape", [("x", np.array(2.5, np.float32))], consts=[("shape", i64(1, 1, -1))])


# -- Transpose -------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_transpose_random_perm(seed):
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 6))
    x = randn(rng, rand_shape(rng, rank=rank))
    check_single_op("Transpose", [("x", x)], {"perm": [int(p) for p in rng.permutation(rank)]}, opset=13)
    check_single_op("Transpose", [("x", x)], opset=13)  # no perm: reverse the axes


def test_transpose_scalar_and_other_dtypes():
    check_single_op("Transpose", [("x", np.array(1.5, np.float32))], opset=13)
    rng = np.random.default_rng(0)
    for dtype in (np.int64, np.float16, np.bool_, np.int8):
        x = rng.integers(0, 2, (2, 3, 4)).astype(dtype)
        check_single_op("Transpose", [("x", x)], {"perm": [1, 2, 0]}, opset=13)


# -- Squeeze / Unsqueeze ---------------------------------------------------------
def _with_ones(rng, rank):
    shape = list(rand_shape(rng, rank=rank, lo=2, hi=4))
    ones = sorted(rng.choice(rank, size=int(rng.integers(1, rank + 1)), replace=False).tolist())
    for i in ones:
        shape[i] = 1
    return tuple(shape), ones


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze(opset, seed):
    """Axes are an attribute up to opset 12 and an input from 13 on."""
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 6))
    shape, ones = _with_ones(rng, rank)
    x = randn(rng, shape)
    pick = [a - rank if rng.random() < 0.5 else a for a in rng.permutation(ones)[:int(rng.integers(1, len(ones) + 1))]]
    pick = [int(a) for a in pick]
    if opset < 13:
        check_single_op("Squeeze", [("x", x)], {"axes": pick}, opset=opset)
    else:
        check_single_op("Squeeze", [("x", x)], consts=[("axes", i64(*pick))], opset=opset)
    check_single_op("Squeeze", [("x", x)], opset=opset)  # no axes: every 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze(opset, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng))
    out_rank = x.ndim + int(rng.integers(1, 4))
    axes = rng.choice(out_rank, size=out_rank - x.ndim, replace=False)
    axes = [int(a - out_rank) if rng.random() < 0.5 else int(a) for a in axes]  # unsorted, some negative
    if opset < 13:
        check_single_op("Unsqueeze", [("x", x)], {"axes": axes}, opset=opset)
    else:
        check_single_op("Unsqueeze", [("x", x)], consts=[("axes", i64(*axes))], opset=opset)


# -- Flatten ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_flatten_every_axis(seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng, rank=int(rng.integers(1, 5))))
    for axis in range(-x.ndim, x.ndim + 1):
        check_single_op("Flatten", [("x", x)], {"axis": axis}, opset=13)


# -- Concat ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_concat(seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 5)))
    axis = int(rng.integers(-len(shape), len(shape)))
    n = int(rng.integers(1, 5))
    inputs = []
    for i in range(n):
        s = list(shape)
        s[axis] = int(rng.integers(1, 4))
        inputs.append((f"x{i}", randn(rng, s)))
    check_single_op("Concat", inputs, {"axis": axis}, opset=13)


def test_concat_int_and_bool():
    rng = np.random.default_rng(0)
    check_single_op("Concat", [("a", rng.integers(0, 9, (2, 3))), ("b", rng.integers(0, 9, (2, 1)))], {"axis": -1})
    check_single_op("Concat", [("a", rng.random((1, 3)) < 0.5), ("b", rng.random((2, 3)) < 0.5)], {"axis": 0})


# -- Split -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_explicit_sizes(opset, seed):
    """Sizes: an attribute up to opset 12, an input from 13 on."""
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 4)), lo=2, hi=7)
    axis = int(rng.integers(-len(shape), len(shape)))
    n = shape[axis]
    cuts = sorted(rng.choice(np.arange(1, n), size=int(rng.integers(0, min(n - 1, 3) + 1)), replace=False).tolist())
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    x = randn(rng, shape)
    if opset < 13:
        check_single_op("Split", [("x", x)], {"axis": axis, "split": sizes}, num_outputs=len(sizes), opset=opset)
    else:
        check_single_op("Split", [("x", x)], {"axis": axis}, consts=[("split", i64(*sizes))],
                        num_outputs=len(sizes), opset=opset)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_split_even_by_output_count(seed, opset):
    """Before opset 18, a Split with no sizes splits evenly into as many parts as the node has outputs."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 5))
    shape = list(rand_shape(rng, rank=3))
    axis = int(rng.integers(-3, 3))
    shape[axis] = k * int(rng.integers(1, 4))
    check_single_op("Split", [("x", randn(rng, shape))], {"axis": axis}, num_outputs=k, opset=opset)


@pytest.mark.parametrize("n,k", [(6, 3), (7, 3), (7, 4), (5, 2), (10, 4), (4, 4), (1, 1)])
def test_split_num_outputs_opset18(n, k):
    """Opset 18's num_outputs: chunks of ceil(n / k), the last one smaller when n does not divide."""
    rng = np.random.default_rng(n * 10 + k)
    x = randn(rng, (2, n, 3))
    check_single_op("Split", [("x", x)], {"axis": 1, "num_outputs": k}, num_outputs=k, opset=18)
    check_single_op("Split", [("x", np.moveaxis(x, 1, -1).copy())], {"axis": -1, "num_outputs": k},
                    num_outputs=k, opset=18)


# -- Slice -----------------------------------------------------------------------
def _slice_params(rng, shape):
    """Random starts/ends/axes/steps, including negative and far-out-of-range bounds and negative steps."""
    rank = len(shape)
    axes = rng.choice(rank, size=int(rng.integers(1, rank + 1)), replace=False)
    starts, ends, steps, out_axes = [], [], [], []
    specials = [INT64_MAX, INT64_MIN, -1000, 1000]
    for a in axes:
        n = shape[a]
        step = int(rng.choice([1, 1, 2, 3, -1, -1, -2, -3]))
        s, e = (int(v) for v in rng.integers(-n - 2, n + 3, size=2))
        if rng.random() < 0.25:
            s = int(rng.choice(specials))
        if rng.random() < 0.25:
            e = int(rng.choice(specials))
        if step < 0 and e == INT64_MAX:
            # onnxruntime reads an end of INT64_MAX as "to the end in the step's direction" even for negative
            # steps; the ONNX spec (and onnx.reference) clamp it to n-1, which aotc follows: an empty slice.
            e = INT64_MIN
        starts.append(s)
        ends.append(e)
        steps.append(step)
        out_axes.append(int(a) - rank if rng.random() < 0.5 else int(a))
    return starts, ends, out_axes, steps


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("opset", [11, 13])
def test_slice_random(opset, seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 5)), lo=1, hi=7)
    x = randn(rng, shape)
    starts, ends, axes, steps = _slice_params(rng, shape)
    check_single_op("Slice", [("x", x)], consts=[("starts", i64(*starts)), ("ends", i64(*ends)),
                                                  ("axes", i64(*axes)), ("steps", i64(*steps))], opset=opset)
    # Without axes (the first len(starts) axes) and without steps (all 1).
    k = len(starts)
    check_single_op("Slice", [("x", x)], consts=[("starts", i64(*starts)), ("ends", i64(*ends))], opset=opset)
    check_single_op("Slice", [("x", x)], consts=[("starts", i64(*starts[:k])), ("ends", i64(*ends[:k])),
                                                  ("axes", i64(*axes))], opset=opset)
    check_single_op("Slice", [("x", x)], consts=[("starts", i64(*starts)), ("ends", i64(*ends)), ("axes", None),
                                                  ("steps", i64(*steps))], opset=opset)


def test_slice_reverse_whole_axis_and_empty_results():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    cases = [
        ((-1,), (INT64_MIN,), (2,), (-1,)),          # reverse the last axis
        ((INT64_MAX,), (-INT64_MAX,), (1,), (-1,)),  # reverse from "the end"
        ((3,), (1,), (2,), (1,)),                    # start > end with a positive step: empty
        ((0,), (3,), (2,), (-1,)),                   # start < end with a negative step: empty
        ((-100,), (100,), (0,), (1,)),               # clamped on both sides
        ((1, -1), (-1, 0), (1, 2), (1, -2)),
        ((-1000,), (-5,), (2,), (-1,)),              # start clamps to 0 (not -1, "the last"), end -1: [0]
        ((INT64_MIN,), (-INT64_MAX,), (1,), (-2,)),  # [0] again
    ]
    for s, e, a, st in cases:
        check_single_op("Slice", [("x", x)], consts=[("starts", i64(*s)), ("ends", i64(*e)), ("axes", i64(*a)),
                                                      ("steps", i64(*st))], opset=13)


# -- Gather family ---------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_gather(index_dtype, seed):
    rng = np.random.default_rng(seed)
    data = randn(rng, rand_shape(rng, rank=int(rng.integers(1, 5)), hi=6))
    axis = int(rng.integers(-data.ndim, data.ndim))
    n = data.shape[axis]
    idx_shape = rand_shape(rng, rank=int(rng.integers(0, 3)))
    idx = np.asarray(rng.integers(-n, n, size=idx_shape)).astype(index_dtype)  # negative indices count from the end
    check_single_op("Gather", [("data", data), ("idx", idx)], {"axis": axis}, opset=13)


def test_gather_scalar_index_and_int_data():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 100, (5, 4, 3)).astype(np.int64)
    check_single_op("Gather", [("data", data), ("idx", np.array(-2, np.int64))], {"axis": 1}, opset=13)
    check_single_op("Gather", [("data", data), ("idx", np.array([[0, -1], [4, 2]], np.int64))], {"axis": 0}, opset=11)


@pytest.mark.parametrize("seed", SEEDS)
def test_gather_elements(seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(1, 5)), hi=5)
    data = randn(rng, shape)
    axis = int(rng.integers(-len(shape), len(shape)))
    idx_shape = list(shape)
    idx_shape[axis] = int(rng.integers(1, 6))
    idx_shape = [int(rng.integers(1, d + 1)) if i != axis % len(shape) else d for i, d in enumerate(idx_shape)]
    n = shape[axis]
    idx = rng.integers(-n, n, size=idx_shape).astype(np.int64)
    check_single_op("GatherElements", [("data", data), ("idx", idx)], {"axis": axis}, opset=13)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch_dims", [0, 1, 2])
def test_gather_nd(batch_dims, seed):
    rng = np.random.default_rng(seed)
    rank = batch_dims + int(rng.integers(1, 4))
    shape = rand_shape(rng, rank=rank, lo=2, hi=4)
    depth = int(rng.integers(1, rank - batch_dims + 1))
    extra = rand_shape(rng, rank=int(rng.integers(0, 3)), hi=3)
    idx_shape = shape[:batch_dims] + extra + (depth,)
    bounds = np.array(shape[batch_dims:batch_dims + depth])
    idx = (rng.integers(0, 1 << 20, size=idx_shape) % bounds)
    idx = np.where(rng.random(idx_shape) < 0.3, idx - bounds, idx).astype(np.int64)  # some negative
    check_single_op("GatherND", [("data", randn(rng, shape)), ("idx", idx)], {"batch_dims": batch_dims}, opset=13)


def test_gather_nd_full_depth_gives_scalars():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    check_single_op("GatherND", [("data", data), ("idx", np.array([2, -1], np.int64))], opset=13)
    check_single_op("GatherND", [("data", data), ("idx", np.array([[2, -1], [0, 0]], np.int64))], opset=13)


# -- Expand / Tile / Trilu --------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_expand(seed):
    """Expand broadcasts both ways: the target may be smaller than the input, or have 1s where it is not."""
    rng = np.random.default_rng(seed)
    out = rand_shape(rng, rank=int(rng.integers(1, 5)))
    in_shape = tuple(1 if rng.random() < 0.5 else d for d in out[int(rng.integers(0, len(out) + 1)):])
    target = [1 if (rng.random() < 0.3 and i >= len(out) - len(in_shape)) else d for i, d in enumerate(out)]
    target = target[int(rng.integers(0, 2)) if rng.random() < 0.3 else 0:]
    check_single_op("Expand", [("x", randn(rng, in_shape))], consts=[("shape", i64(*target))], opset=13)


def test_expand_scalar_to_scalar():
    check_single_op("Expand", [("x", np.array(3.0, np.float32))], consts=[("shape", np.zeros(0, np.int64))], opset=13)
    check_single_op("Expand", [("x", np.array(3.0, np.float32))], consts=[("shape", i64(2, 1))], opset=13)


@pytest.mark.parametrize("seed", SEEDS)
def test_tile(seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, rand_shape(rng, rank=int(rng.integers(1, 5)), hi=3))
    reps = [int(r) for r in rng.integers(1, 4, size=x.ndim)]
    check_single_op("Tile", [("x", x)], consts=[("repeats", i64(*reps))], opset=13)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(upper, seed):
    rng = np.random.default_rng(seed)
    shape = rand_shape(rng, rank=int(rng.integers(0, 3))) + rand_shape(rng, rank=2, hi=6)
    x = randn(rng, shape)
    k = int(rng.integers(-7, 8))  # includes diagonals outside the matrix
    check_single_op("Trilu", [("x", x)], {"upper": upper}, consts=[("k", np.array(k, np.int64))], opset=14)
    check_single_op("Trilu", [("x", x)], {"upper": upper}, opset=14)


def test_trilu_k_as_one_element_tensor():
    x = np.ones((4, 5), np.float32)
    check_single_op("Trilu", [("x", x)], {"upper": 1}, consts=[("k", np.array([1], np.int64))], opset=14)


def test_trilu_int_and_bool():
    """Causal masks are often built as Trilu of an int or bool matrix of ones."""
    check_single_op("Trilu", [("x", np.ones((5, 5), np.int64))], {"upper": 0}, opset=14)
    check_single_op("Trilu", [("x", np.ones((4, 6), np.bool_))], {"upper": 1},
                    consts=[("k", np.array(1, np.int64))], opset=14)


# -- shape-computing ops (folded away at import) ----------------------------------
@pytest.mark.parametrize("start,end", [(None, None), (1, None), (-2, None), (0, -1), (1, 3), (-10, 10), (3, 1)])
def test_shape(start, end):
    x = np.zeros((2, 3, 4, 5), np.float32)
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    check_single_op("Shape", [("x", x)], attrs, opset=15)


def test_size():
    check_single_op("Size", [("x", np.zeros((2, 3, 4), np.float32))], opset=13)
    check_single_op("Size", [("x", np.zeros((), np.float32))], opset=13)


def test_constant_of_shape():
    from onnx import helper, TensorProto
    check_single_op("ConstantOfShape", [], consts=[("shape", i64(2, 3))], opset=13)
    for value in (helper.make_tensor("v", TensorProto.INT64, [1], [7]),
                  helper.make_tensor("v", TensorProto.FLOAT, [1], [-1.5]),
                  helper.make_tensor("v", TensorProto.BOOL, [1], [True])):
        check_single_op("ConstantOfShape", [], {"value": value}, consts=[("shape", i64(3, 1, 2))], opset=13)


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (0, 10, 1, np.int64), (10, 0, -3, np.int64), (2, 3, 5, np.int32), (5, 5, 1, np.int64),
    (0.0, 1.0, 0.25, np.float32), (1.5, -2.0, -0.7, np.float32),
])
def test_range(start, limit, delta, dtype):
    consts = [(n, np.array(v, dtype)) for n, v in (("start", start), ("limit", limit), ("delta", delta))]
    check_single_op("Range", [], consts=consts, opset=13)

"""Data movement -> MIL: every shape is static, so Reshape/Flatten/Squeeze/Unsqueeze are one `reshape` to the
output shape; Slice is `slice_by_index` with the bounds aotc's own slice rules resolve; Gather/GatherElements/
GatherND are `gather`/`gather_along_axis`/`gather_nd` with negative indices made positive first (MIL's gathers
take only in-range, non-negative indices since iOS17); Expand/Tile are `tile`; Trilu a `select` against a
constant mask; Shape/Size/ConstantOfShape/Range (static here) are constants."""
from __future__ import annotations

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ops import get_op
from aotc.compiler.ops.shape_ops import slice_index

from .lowering import LoweringContext, const, lowers


def _shape(v) -> np.ndarray:
    return np.array(v.shape, np.int32)


@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: LoweringContext, node):
    return ctx.mb.reshape(x=ctx.x(node.inputs[0]), shape=_shape(node.outputs[0]), name=ctx.name(node))


@lowers("Transpose")
def transpose(ctx, node):
    perm = get_op("Transpose").perm(node.inputs[0].rank, node.attrs)
    return ctx.mb.transpose(x=ctx.x(node.inputs[0]), perm=np.array(perm, np.int32), name=ctx.name(node))


@lowers("Concat")
def concat(ctx, node):
    xs = [ctx.x(v) for v in node.inputs]
    if len(xs) == 1:
        return ctx.mb.identity(x=xs[0], name=ctx.name(node))
    return ctx.mb.concat(values=xs, axis=np.int32(node.attrs["axis"]), name=ctx.name(node))


@lowers("Split")
def split(ctx, node):
    axis, sizes = get_op("Split").sizes(node.inputs[0].shape, node.attrs)
    if len(sizes) == 1:
        return [ctx.mb.identity(x=ctx.x(node.inputs[0]), name=ctx.name(node))]
    return list(ctx.mb.split(x=ctx.x(node.inputs[0]), split_sizes=np.array(sizes, np.int32), axis=np.int32(axis),
                             name=ctx.name(node)))


def _slice_check(node, deployment):
    if any(d == 0 for d in node.outputs[0].shape):
        return "an empty slice has no Core ML tensor"
    return None


@lowers("Slice", check=_slice_check)
def slice_(ctx, node):
    x = node.inputs[0]
    idx = slice_index(x.shape, node.attrs)
    begin, end, stride, end_mask = [], [], [], []
    for sl, d in zip(idx, x.shape):
        b, e, s = sl.indices(d)
        begin.append(b)
        stride.append(s)
        # a negative step running through element 0 has no end index (-1 would mean "the last"): end_mask
        end_mask.append(s < 0 and e < 0)
        end.append(0 if e < 0 else e)
    return ctx.mb.slice_by_index(x=ctx.x(x), begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                                 stride=np.array(stride, np.int32), end_mask=np.array(end_mask, bool),
                                 name=ctx.name(node))


def positive_indices(ctx, node, idx_value, extent, suffix="idx"):
    """Indices with negatives made positive: at compile time for constants, else idx + extent where idx < 0."""
    mb = ctx.mb
    if idx_value.const is not None:
        i = idx_value.const.astype(np.int64)
        return const(np.where(i < 0, i + np.asarray(extent), i))
    i = ctx.x(idx_value)
    shifted = mb.add(x=i, y=const(np.asarray(extent)), name=ctx.name(node, suffix + "_wrapped"))
    negative = mb.less(x=i, y=np.int32(0), name=ctx.name(node, suffix + "_negative"))
    return mb.select(cond=negative, a=shifted, b=i, name=ctx.name(node, suffix))


def bool_as_int(fn):
    """MIL's gathers take fp16/fp32/int32 data: bool data goes through int32 and back."""
    def lowering(ctx, node):
        if node.inputs[0].dtype.name != "bool":
            return fn(ctx, node, ctx.x(node.inputs[0]), ctx.name(node))
        x = ctx.mb.cast(x=ctx.x(node.inputs[0]), dtype="int32", name=ctx.name(node, "as_int"))
        y = fn(ctx, node, x, ctx.name(node, "int"))
        return ctx.mb.cast(x=y, dtype="bool", name=ctx.name(node))
    return lowering


def _int8_table(fn):
    """A Gather from an int8/uint8 constant (an embedding quantized by --quantize int8): the table is stored as
    8-bit integers (constexpr_affine_dequantize with scale 1) and the rows come out float-coded; the Cast and
    row-scale Mul after the Gather then work in float."""
    def lowering(ctx, node):
        data = node.inputs[0]
        if data.const is None or data.dtype not in (DType.uint8, DType.int8):
            return fn(ctx, node)
        from .lower_quant import int8_constant
        table = int8_constant(ctx, data.const, np.ones((), np.float32), None, 0, ctx.name(node, "table"))
        ctx.float_coded.add(node.outputs[0].name)
        return gather_rows(ctx, node, table, ctx.name(node))
    return lowering


@lowers("Gather")
@_int8_table
@bool_as_int
def gather(ctx, node, x, name):
    return gather_rows(ctx, node, x, name)


def gather_rows(ctx, node, x, name):
    data, idx = node.inputs
    axis = node.attrs["axis"] % data.rank
    i = positive_indices(ctx, node, idx, data.shape[axis])
    return ctx.mb.gather(x=x, indices=i, axis=np.int32(axis), name=name)


@lowers("GatherElements")
@bool_as_int
def gather_elements(ctx, node, x, name):
    data, idx = node.inputs
    axis = node.attrs["axis"] % data.rank
    if tuple(d for i, d in enumerate(idx.shape) if i != axis) != tuple(d for i, d in enumerate(data.shape) if i != axis):
        # off the gather axis indices may be shorter than data (ONNX): read the part they cover
        end = [data.shape[i] if i == axis else d for i, d in enumerate(idx.shape)]
        x = ctx.mb.slice_by_index(x=x, begin=np.zeros(data.rank, np.int32), end=np.array(end, np.int32),
                                  name=ctx.name(node, "covered"))
    i = positive_indices(ctx, node, idx, data.shape[axis])
    return ctx.mb.gather_along_axis(x=x, indices=i, axis=np.int32(axis), name=name)


def _gather_nd_check(node, deployment):
    if node.attrs["batch_dims"] and deployment.opset < 17:
        return "MIL's gather_nd takes batch_dims from iOS17"
    return None


@lowers("GatherND", check=_gather_nd_check)
@bool_as_int
def gather_nd(ctx, node, x, name):
    data, idx = node.inputs
    b, k = node.attrs["batch_dims"], idx.shape[-1]
    extent = np.array(data.shape[b:b + k], np.int64)
    i = positive_indices(ctx, node, idx, extent)
    kwargs = {"batch_dims": np.int32(b)} if b else {}
    return ctx.mb.gather_nd(x=x, indices=i, name=name, **kwargs)


@lowers("Expand")
def expand(ctx, node):
    x, out = node.inputs[0], node.outputs[0]
    v = ctx.x(x)
    if x.rank < out.rank:
        v = ctx.mb.reshape(x=v, shape=np.array((1,) * (out.rank - x.rank) + x.shape, np.int32),
                           name=ctx.name(node, "rank"))
    src = (1,) * (out.rank - x.rank) + x.shape
    reps = [o // s for o, s in zip(out.shape, src)]
    return ctx.mb.tile(x=v, reps=np.array(reps, np.int32), name=ctx.name(node))


@lowers("Tile")
def tile(ctx, node):
    return ctx.mb.tile(x=ctx.x(node.inputs[0]), reps=np.array(node.attrs["repeats"], np.int32), name=ctx.name(node))


@lowers("Trilu")
def trilu(ctx, node):
    x = node.inputs[0]
    m, n = x.shape[-2:]
    keep = np.ones((m, n), bool)
    keep = np.triu(keep, node.attrs["k"]) if node.attrs["upper"] else np.tril(keep, node.attrs["k"])
    zero = np.zeros((), np.float32 if x.dtype.is_float else np.int32)
    if x.dtype.name == "bool":
        zero = np.zeros((), bool)
    return ctx.mb.select(cond=keep, a=ctx.x(x), b=zero, name=ctx.name(node))


@lowers("Shape", "Size", "ConstantOfShape", "Range")
def static_value(ctx, node):
    """Shapes are static: these ops' results are known at compile time (the reference kernel computes them
    from placeholders of the inputs' shapes; Range's inputs are constants by definition here)."""
    op = get_op(node.op_type)
    ins = [v.const if v.const is not None else np.zeros(v.shape, v.dtype.numpy) for v in node.inputs]
    out = op.run(ins, node.attrs)[0]
    return ctx.mb.const(val=const(out), name=ctx.name(node))

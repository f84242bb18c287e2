"""Reductions and the normalizing ops built on them -> MIL: ReduceX is `reduce_x` (axes, keep_dims),
ArgMax/ArgMin `reduce_argmax/argmin` (last-index ties by reversing the axis), Softmax `softmax`, LogSoftmax
x - reduce_log_sum_exp(x), LayerNormalization/SkipLayerNormalization `layer_norm` over the trailing axes."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ops import get_op

from .lowering import LoweringContext, lowers

REDUCE = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
          "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod", "ReduceL2": "reduce_l2_norm",
          "ReduceSumSquare": "reduce_sum_square"}


def _reduce_check(node, deployment):
    if get_op(node.op_type).axes(node.inputs[0].rank, node.attrs) is None:
        return "noop_with_empty_axes with no axes has no MIL reduction"
    if not node.inputs[0].dtype.is_float and node.op_type in ("ReduceMean", "ReduceL2"):
        return f"MIL's {REDUCE[node.op_type]} of {node.inputs[0].dtype} differs from ONNX's"
    return None


@lowers(*REDUCE, check=_reduce_check)
def reduce(ctx: LoweringContext, node):
    axes = get_op(node.op_type).axes(node.inputs[0].rank, node.attrs)
    return getattr(ctx.mb, REDUCE[node.op_type])(x=ctx.x(node.inputs[0]), axes=np.array(axes, np.int32),
                                                 keep_dims=bool(node.attrs["keepdims"]), name=ctx.name(node))


@lowers("ArgMax", "ArgMin")
def arg_reduce(ctx, node):
    mb = ctx.mb
    x = node.inputs[0]
    axis = node.attrs["axis"] % x.rank
    v = ctx.x(x)
    if node.attrs["select_last_index"]:  # MIL returns the first of equal values: search the reversed axis
        v = mb.reverse(x=v, axes=np.array([axis], np.int32), name=ctx.name(node, "reversed"))
    fn = mb.reduce_argmax if node.op_type == "ArgMax" else mb.reduce_argmin
    last = not node.attrs["select_last_index"]
    idx = fn(x=v, axis=np.int32(axis), keep_dims=bool(node.attrs["keepdims"]),
             name=ctx.name(node) if last else ctx.name(node, "from_end"))
    if last:
        return idx
    return mb.sub(x=np.int32(x.shape[axis] - 1), y=idx, name=ctx.name(node))


@lowers("Softmax")
def softmax(ctx, node):
    return ctx.mb.softmax(x=ctx.x(node.inputs[0]), axis=np.int32(node.attrs["axis"]), name=ctx.name(node))


@lowers("LogSoftmax")
def log_softmax(ctx, node):
    mb = ctx.mb
    x = ctx.x(node.inputs[0])
    lse = mb.reduce_log_sum_exp(x=x, axes=np.array([node.attrs["axis"]], np.int32), keep_dims=True,
                                name=ctx.name(node, "logsumexp"))
    return mb.sub(x=x, y=lse, name=ctx.name(node))


def _norm_params_check(node, deployment):
    if any(v is not None and v.const is None for v in node.inputs[2 if node.op_type == "SkipLayerNormalization"
                                                                   else 1:]):
        return "MIL's layer_norm takes constant gamma and beta"
    return None


def layer_norm(ctx, x, rank: int, axis: int, gamma, beta, epsilon: float, name: str):
    """MIL layer_norm over axes [axis, rank); gamma/beta broadcast to the normalized shape at compile time."""
    axes = list(range(axis % rank, rank))
    return ctx.mb.layer_norm(x=x, axes=np.array(axes, np.int32), gamma=gamma, beta=beta,
                             epsilon=np.float32(epsilon), name=name)


def _norm_shape_const(v, shape):
    return None if v is None else np.ascontiguousarray(np.broadcast_to(v.const.astype(np.float32), shape))


@lowers("LayerNormalization", check=_norm_params_check)
def layernorm(ctx, node):
    x = node.inputs[0]
    axis = node.attrs["axis"] % x.rank
    shape = x.shape[axis:]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    return layer_norm(ctx, ctx.x(x), x.rank, axis, _norm_shape_const(node.inputs[1], shape),
                      _norm_shape_const(bias, shape), node.attrs["epsilon"], ctx.name(node))


@lowers("SkipLayerNormalization", check=_norm_params_check)
def skip_layernorm(ctx, node):
    a, b = node.inputs[0], node.inputs[1]
    s = ctx.mb.add(x=ctx.x(a), y=ctx.x(b), name=ctx.name(node, "sum"))
    shape = a.shape[-1:]
    bias = node.inputs[3] if len(node.inputs) > 3 else None
    y = layer_norm(ctx, s, a.rank, -1, _norm_shape_const(node.inputs[2], shape), _norm_shape_const(bias, shape),
                   node.attrs["epsilon"], ctx.name(node))
    return [y, s]

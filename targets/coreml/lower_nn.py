"""The CNN family -> MIL: Conv/FusedConv `conv` (auto_pad resolved to explicit pads with aotc's own window
geometry, so MIL's pad_type is always "custom") with the fused activation and residual after it;
ConvTranspose `conv_transpose`; BatchNormalization `batch_norm`; InstanceNormalization `instance_norm`; LRN
`local_response_norm`; MaxPool/AveragePool `max_pool`/`avg_pool`; the global pools reductions; Pad `pad`
(negative pads: a slice first); Resize as aotc's own separable interpolation: a `gather` per axis for
nearest, a `matmul` with the constant (out x in) weight matrix per axis for linear/cubic."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ops import get_op
from aotc.compiler.ops.nn import Pad, Resize, window_geometry

from .lower_elementwise import activation
from .lowering import LoweringContext, lowers


def _spatial_check(lo: int, hi: int, what: str):
    def check(node, deployment):
        r = node.inputs[0].rank - 2
        if not lo <= r <= hi:
            return f"MIL's {what} takes {lo}-{hi} spatial axes, not {r}"
        return None
    return check


def conv(ctx: LoweringContext, attrs, x_shape, w_shape, x, w, bias, name: str):
    """MIL conv with Conv attributes `attrs` (explicit pads from aotc's window geometry)."""
    kernel, out, strides, dils, pb, pe = get_op("Conv").geometry(x_shape, w_shape,
                                                                 {k: attrs[k] for k in ("kernel_shape", "strides",
                                                                  "dilations", "pads", "auto_pad")})
    pad = [p for pair in zip(pb, pe) for p in pair]
    kwargs = {"bias": bias} if bias is not None else {}
    return ctx.mb.conv(x=x, weight=w, strides=np.array(strides, np.int32), pad_type="custom",
                       pad=np.array(pad, np.int32), dilations=np.array(dils, np.int32),
                       groups=np.int32(attrs["group"]), name=name, **kwargs)


def epilogue(ctx, node, y, residual, name: str):
    """FusedMatMul/FusedConv's epilogue after the product: residual before or after the activation."""
    mb = ctx.mb
    a = node.attrs
    act = a["activation"]
    res = ctx.x(residual)
    if res is not None and a["residual_before_activation"]:
        y = mb.add(x=y, y=res, name=name if act == "none" else name + "_residual")
        res = None
    if act != "none":
        y = activation(ctx, y, act, a["act_alpha"], a["act_beta"], name if res is None else name + "_act")
    if res is not None:
        y = mb.add(x=y, y=res, name=name)
    return y


def _conv_check(node, deployment):
    return _spatial_check(1, 3, "conv")(node, deployment)


@lowers("Conv", "FusedConv", check=_conv_check)
def conv_op(ctx, node):
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    residual = node.inputs[3] if len(node.inputs) > 3 else None
    fused = node.op_type == "FusedConv" and (node.attrs["activation"] != "none" or residual is not None)
    y = conv(ctx, node.attrs, x.shape, w.shape, ctx.x(x), ctx.x(w), ctx.x(bias),
             ctx.name(node, "conv") if fused else ctx.name(node))
    return epilogue(ctx, node, y, residual, ctx.name(node)) if fused else y


def _conv_transpose_pads(node):
    kernel, out, strides, dils, pb = get_op("ConvTranspose").geometry(node.inputs[0].shape, node.inputs[1].shape,
                                                                      node.attrs)
    # MIL's output size is s*(d-1) + (k-1)*dil + 1 - pad_begin - pad_end; aotc's (ONNX's) adds output_padding,
    # i.e. pad_end = full - begin - out.
    full = [s * (d - 1) + (k - 1) * dl + 1 for s, d, k, dl in zip(strides, node.inputs[0].shape[2:], kernel, dils)]
    pe = [f - b - o for f, b, o in zip(full, pb, out)]
    return strides, dils, pb, pe


def _conv_transpose_check(node, deployment):
    why = _spatial_check(1, 3, "conv_transpose")(node, deployment)
    if why:
        return why
    if any(p < 0 for p in _conv_transpose_pads(node)[3]):
        return "an output_padding beyond the end padding has no MIL conv_transpose pad"
    return None


@lowers("ConvTranspose", check=_conv_transpose_check)
def conv_transpose(ctx, node):
    strides, dils, pb, pe = _conv_transpose_pads(node)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    kwargs = {"bias": ctx.x(bias)} if bias is not None else {}
    return ctx.mb.conv_transpose(x=ctx.x(node.inputs[0]), weight=ctx.x(node.inputs[1]), pad_type="custom",
                                 pad=np.array([p for pair in zip(pb, pe) for p in pair], np.int32),
                                 strides=np.array(strides, np.int32), dilations=np.array(dils, np.int32),
                                 groups=np.int32(node.attrs["group"]),
                                 output_shape=np.array(node.outputs[0].shape, np.int32), name=ctx.name(node),
                                 **kwargs)


def _const_params(first: int):
    def check(node, deployment):
        if any(v.const is None for v in node.inputs[first:]):
            return f"MIL's {node.op_type} parameters must be constants"
        return None
    return check


def _batchnorm_check(node, deployment):
    return _spatial_check(1, 3, "batch_norm")(node, deployment) or _const_params(1)(node, deployment)


@lowers("BatchNormalization", check=_batchnorm_check)
def batchnorm(ctx, node):
    x, scale, bias, mean, var = (ctx.x(v) for v in node.inputs)
    return ctx.mb.batch_norm(x=x, mean=mean, variance=var, gamma=scale, beta=bias,
                             epsilon=np.float32(node.attrs["epsilon"]), name=ctx.name(node))


def _instancenorm_check(node, deployment):
    return _spatial_check(1, 2, "instance_norm")(node, deployment) or _const_params(1)(node, deployment)


@lowers("InstanceNormalization", check=_instancenorm_check)
def instancenorm(ctx, node):
    x, scale, bias = (ctx.x(v) for v in node.inputs)
    return ctx.mb.instance_norm(x=x, gamma=scale, beta=bias, epsilon=np.float32(node.attrs["epsilon"]),
                                name=ctx.name(node))


@lowers("LRN", check=_spatial_check(1, 2, "local_response_norm"))
def lrn(ctx, node):
    a = node.attrs
    return ctx.mb.local_response_norm(x=ctx.x(node.inputs[0]), size=np.int32(a["size"]), alpha=np.float32(a["alpha"]),
                                      beta=np.float32(a["beta"]), k=np.float32(a["bias"]), name=ctx.name(node))


def _pool_pads(node):
    op = get_op(node.op_type)
    out, strides, dils, pb, pe = op.geometry(node.inputs[0].shape, node.attrs)
    # ceil_mode: widen the end padding until MIL's floor division gives aotc's output size (a window never
    # starts in the padding, aotc's geometry already made sure)
    k = node.attrs["kernel_shape"]
    pe = [max(e, (o - 1) * s + kk - d - b) for o, s, kk, d, b, e in zip(out, strides, k, node.inputs[0].shape[2:],
                                                                         pb, pe)]
    return strides, dils, pb, pe, out


def _pool_check(node, deployment):
    why = _spatial_check(1, 3, node.op_type)(node, deployment)
    if why:
        return why
    strides, dils, pb, pe, out = _pool_pads(node)
    if any(d != 1 for d in dils):
        return "MIL pooling has no dilations"
    if node.op_type == "AveragePool" and node.attrs["count_include_pad"] and node.attrs["ceil_mode"]:
        return "count_include_pad with ceil_mode counts padding MIL's avg_pool cannot tell apart"
    return None


@lowers("MaxPool", "AveragePool", check=_pool_check)
def pool(ctx, node):
    strides, dils, pb, pe, out = _pool_pads(node)
    kw = dict(x=ctx.x(node.inputs[0]), kernel_sizes=np.array(node.attrs["kernel_shape"], np.int32),
              strides=np.array(strides, np.int32), pad_type="custom",
              pad=np.array([p for pair in zip(pb, pe) for p in pair], np.int32), ceil_mode=False, name=ctx.name(node))
    if node.op_type == "MaxPool":
        return ctx.mb.max_pool(**kw)
    return ctx.mb.avg_pool(exclude_padding_from_average=not node.attrs["count_include_pad"], **kw)


@lowers("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx, node):
    axes = np.arange(2, node.inputs[0].rank, dtype=np.int32)
    fn = ctx.mb.reduce_mean if node.op_type == "GlobalAveragePool" else ctx.mb.reduce_max
    return fn(x=ctx.x(node.inputs[0]), axes=axes, keep_dims=True, name=ctx.name(node))


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def _pad_check(node, deployment):
    if node.attrs["mode"] not in PAD_MODES:
        return f"MIL's pad has no {node.attrs['mode']} mode"
    widths = Pad.widths(node.inputs[0].shape, node.attrs)
    grown = [i for i, (b, e) in enumerate(widths) if b > 0 or e > 0]
    if node.attrs["mode"] != "constant" and grown and grown[0] < node.inputs[0].rank - 2:
        return f"MIL pads in {node.attrs['mode']} mode only the last two axes"
    return None


@lowers("Pad", check=_pad_check)
def pad(ctx, node):
    mb = ctx.mb
    x = node.inputs[0]
    widths = Pad.widths(x.shape, node.attrs)
    v = ctx.x(x)
    if any(b < 0 or e < 0 for b, e in widths):  # negative pads crop
        begin = [max(-b, 0) for b, e in widths]
        end = [d - max(-e, 0) for d, (b, e) in zip(x.shape, widths)]
        v = mb.slice_by_index(x=v, begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                              name=ctx.name(node, "crop"))
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    padded = [i for i, (b, e) in enumerate(grow) if b or e]
    if not padded:
        return mb.identity(x=v, name=ctx.name(node))
    first = padded[0] if node.attrs["mode"] == "constant" else min(padded[0], x.rank - 2)
    pads = np.array([p for b, e in grow[first:] for p in (b, e)], np.int32)
    fill = node.attrs["value"]
    fill = 0.0 if fill is None or fill.size == 0 else float(fill.reshape(-1)[0])
    return mb.pad(x=v, pad=pads, mode=PAD_MODES[node.attrs["mode"]], constant_val=np.float32(fill),
                  name=ctx.name(node))


def _resize_check(node, deployment):
    a = node.attrs
    if a["coordinate_transformation_mode"] == "tf_crop_and_resize":
        return "tf_crop_and_resize has no Core ML lowering in aotc"
    if a["mode"] != "nearest" and not node.inputs[0].dtype.is_float:
        return "interpolation of integers"
    return None


@lowers("Resize", check=_resize_check)
def resize(ctx, node):
    """aotc's separable Resize: per resized axis a gather (nearest) or a matmul with the (out x in) weights;
    the coordinates and weights are the reference kernel's own (compiler.ops.nn.Resize)."""
    mb = ctx.mb
    x = node.inputs[0]
    a = node.attrs
    out, scale, roi = Resize.plan(x.shape, a)
    v = ctx.x(x)
    if out == x.shape:
        return mb.identity(x=v, name=ctx.name(node))
    axes = [i for i in range(x.rank) if scale[i] != 1]
    shape = list(x.shape)
    for n, axis in enumerate(axes):
        last = n == len(axes) - 1
        name = ctx.name(node) if last else ctx.name(node, f"axis{axis}")
        coords = Resize.source_coords(a["coordinate_transformation_mode"], x.shape[axis], out[axis], scale[axis],
                                      roi[axis])
        if a["mode"] == "nearest":
            idx = Resize.nearest_index(coords, a["nearest_mode"], x.shape[axis]).astype(np.int32)
            v = mb.gather(x=v, indices=idx, axis=np.int32(axis), name=name)
        else:
            w = Resize.weights(coords, a, x.shape[axis])  # (out, in)
            # move the axis last, multiply by wᵀ, move it back
            perm = [i for i in range(x.rank) if i != axis] + [axis]
            inv = list(np.argsort(perm))
            t = mb.transpose(x=v, perm=np.array(perm, np.int32), name=name + "_last")
            t = mb.matmul(x=t, y=np.ascontiguousarray(w.T), name=name + "_interp")
            v = mb.transpose(x=t, perm=np.array(inv, np.int32), name=name)
        shape[axis] = out[axis]
    return v

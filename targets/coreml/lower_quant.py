"""aotc's int8 ops -> MIL (docs/quantization.md has the integer semantics; deployment.py what each
deployment target gets).

Weights: QuantizedMatMul/QuantizedConv keep aotc's int8 weights and per-output-channel scales as
`constexpr_affine_dequantize` (iOS16+, zero point 0), which Core ML stores as int8 and expands when it loads
the model. Activations: QuantizeLinear/DequantizeLinear and the uint8 inputs of the int8 ops become MIL's
`quantize`/`dequantize` on iOS17+; on iOS16 the same arithmetic in float (round half to even, shift, clip;
shift back, scale), the uint8 values held in float tensors. Either way the float product after
dequantization equals aotc's exact int32 accumulation up to float rounding (the reference scales the integer
sum once; Core ML scales each operand, then sums).
QuantizedAttention is decomposed before lowering (fit_to_target: three QuantizedMatMul + the float core).
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ops.quant import QRANGE, float_bias

from .lower_nn import conv, epilogue
from .lowering import LoweringContext, lowers


def _per_tensor(v) -> bool:
    return v is not None and v.size == 1


def _qdq_check(node, deployment):
    x, scale = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    if scale.const is None or (zp is not None and zp.const is None):
        return "scale and zero point computed at run time"
    if x.const is None and not _per_tensor(scale):
        return "per-axis quantization of a run-time tensor"
    if node.op_type == "DequantizeLinear" and x.dtype == DType.int32 and x.const is None:
        return "int32 dequantization of a run-time tensor"
    return None


def _scalar(v, dtype=np.float32):
    return np.asarray(v.const, dtype).reshape(())


def dequantized(ctx: LoweringContext, node, x, scale, zp, name: str):
    """The float value of a per-tensor quantized run-time tensor `x`."""
    mb = ctx.mb
    zero = np.zeros((), x.dtype.numpy) if zp is None else np.asarray(zp.const).reshape(())
    if x.name in ctx.float_coded:
        shifted = mb.sub(x=ctx.x(x), y=np.float32(zero), name=name + "_shifted")
        return mb.mul(x=shifted, y=_scalar(scale), name=name)
    return mb.dequantize(input=ctx.x(x), scale=_scalar(scale), zero_point=zero, name=name)


def quantized(ctx: LoweringContext, y, out, scale, zp, name: str):
    """saturate(round_half_even(y / scale) + zp) for the aotc value `out` (uint8/int8, per tensor)."""
    mb = ctx.mb
    qdt = np.dtype(out.dtype.numpy)
    zero = np.asarray(zp.const if zp is not None else 0, qdt).reshape(())
    if ctx.deployment.runtime_quantize:
        return mb.quantize(input=y, scale=_scalar(scale), zero_point=zero, output_dtype=qdt.name, name=name)
    ctx.float_coded.add(out.name)
    lo, hi = QRANGE[qdt]
    r = mb.round(x=mb.real_div(x=y, y=_scalar(scale), name=name + "_scaled"), name=name + "_rounded")
    r = mb.add(x=r, y=np.float32(zero), name=name + "_shifted")
    return mb.clip(x=r, alpha=np.float32(lo), beta=np.float32(hi), name=name)


@lowers("QuantizeLinear", check=_qdq_check)
def quantize_linear(ctx, node):
    x, scale = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    return quantized(ctx, ctx.x(x), node.outputs[0], scale, zp, ctx.name(node))


@lowers("DequantizeLinear", check=_qdq_check)
def dequantize_linear(ctx, node):
    x, scale = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    if x.const is not None:  # a constant (a weight in a QDQ model): stored int8 where it is int8
        axis = node.attrs["axis"] % max(x.rank, 1)
        if x.dtype == DType.int32 or x.rank == 0:
            from aotc.compiler.ops.quant import dequantize
            return ctx.mb.const(val=dequantize(x.const, scale.const, None if zp is None else zp.const, axis),
                                name=ctx.name(node))
        return int8_constant(ctx, x.const, scale.const, None if zp is None else zp.const, axis, ctx.name(node))
    return dequantized(ctx, node, x, scale, zp, ctx.name(node))


def int8_constant(ctx, q: np.ndarray, scale: np.ndarray, zp, axis: int, name: str):
    """A constant stored as 8-bit integers and expanded to float when Core ML loads the model."""
    per_axis = scale.size > 1
    s = np.asarray(scale, np.float32).reshape(-1) if per_axis else np.asarray(scale, np.float32).reshape(())
    z = np.zeros((), q.dtype) if zp is None else np.asarray(zp, q.dtype)
    z = z.reshape(-1) if per_axis and z.size > 1 else z.reshape(())
    return ctx.mb.constexpr_affine_dequantize(quantized_data=np.ascontiguousarray(q), zero_point=z, scale=s,
                                              axis=np.int32(axis if per_axis else 0), name=name)


def _qop_check(node, deployment):
    if any(node.inputs[i].const is None for i in (1, 2, 3, 4)):
        return "weights, scales or zero points computed at run time"
    for i in (5, 7, 8):
        if len(node.inputs) > i and node.inputs[i] is not None and node.inputs[i].const is None:
            return "bias or output scale computed at run time"
    return None


def int8_op(product):
    """QuantizedMatMul/QuantizedConv: the activation dequantized, `product(ctx, node, x_float, bias, name)` with
    the int8 weights, then the epilogue (activation, residual) and the requantization when there is one."""
    def lowering(ctx, node):
        x, xs, xz = node.inputs[:3]
        bias = node.inputs[5] if len(node.inputs) > 5 and node.inputs[5] is not None else None
        residual = node.inputs[6] if len(node.inputs) > 6 else None
        ys = node.inputs[7] if len(node.inputs) > 7 else None
        fused = node.attrs["activation"] != "none" or residual is not None
        xf = dequantized(ctx, node, x, xs, xz, ctx.name(node, "x"))
        y = product(ctx, node, xf, None if bias is None else float_bias(node),
                    ctx.name(node, "product") if fused or ys is not None else ctx.name(node))
        if fused:
            y = epilogue(ctx, node, y, residual, ctx.name(node, "epilogue") if ys is not None else ctx.name(node))
        return y if ys is None else quantized(ctx, y, node.outputs[0], ys, node.inputs[8], ctx.name(node))
    return lowering


@lowers("QuantizedMatMul", check=_qop_check)
@int8_op
def quantized_matmul(ctx, node, xf, bias, name):
    mb = ctx.mb
    x, w, ws = node.inputs[0], node.inputs[3], node.inputs[4]
    wt = np.ascontiguousarray(w.const.T)  # MIL linear's weight is [out, in]: channels on axis 0
    weight = int8_constant(ctx, wt, np.broadcast_to(ws.const.reshape(-1), (w.shape[1],)), None, 0,
                           ctx.name(node, "weight"))
    if x.rank <= 3:  # MIL linear takes x of rank 1-3
        return mb.linear(x=xf, weight=weight, name=name, **({"bias": bias} if bias is not None else {}))
    y = mb.matmul(x=xf, y=weight, transpose_y=True, name=name if bias is None else name + "_matmul")
    return y if bias is None else mb.add(x=y, y=bias, name=name)


@lowers("QuantizedConv", check=_qop_check)
@int8_op
def quantized_conv(ctx, node, xf, bias, name):
    x, w, ws = node.inputs[0], node.inputs[3], node.inputs[4]
    weight = int8_constant(ctx, w.const, np.broadcast_to(ws.const.reshape(-1), (w.shape[0],)), None, 0,
                           ctx.name(node, "weight"))
    return conv(ctx, node.attrs, x.shape, w.shape, xf, weight, bias, name)

"""Quantized elementwise and pooling ops with onnxruntime's integer arithmetic: what a pre-quantized
model's `DQ, DQ -> Add -> Q` and `DQ -> GlobalAveragePool -> Q` units compute when onnxruntime runs them
as QLinearAdd and QLinearGlobalAveragePool (its default, optimized session), to the bit.

The ONNX definition of those units (dequantize, float op, quantize) and onnxruntime's kernels associate
the float arithmetic differently, so they disagree by one step wherever a value lies within an ulp of a
.5 tie; a deep network amplifies each such step. These ops fix the association to onnxruntime's
(MLAS's x86 kernels), so aotc's pre-quantized bundles equal onnxruntime's default session:

QuantizedAdd (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp), per-tensor grids, uint8 or int8:

    rA = float32(a_scale / y_scale), rB = float32(b_scale / y_scale)
    c0 = float32(y_zp) - (rA·a_zp + rB·b_zp)                                      (float32 steps)
    y  = saturate(round_half_even(fma(a, rA, fma(b, rB, c0))))                  a and b of one shape

(onnxruntime's kernel takes another association when one operand is a single element, c0 + b·rB as
separate steps that a compiler may contract; aotc leaves those Adds as DequantizeLinear/Add/QuantizeLinear.)

QuantizedGlobalAveragePool (x, x_scale, x_zp, y_scale, y_zp), x [N, C, spatial...]:

    y[n, c] = saturate(round_half_even(float32(Σ x[n, c, :] - x_zp·HW) · s) + y_zp),
    s = float32(x_scale / float32(y_scale · float32(HW)))

fma is one rounding of the exact a·r + c (the reference computes it exactly: fma32 below).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from .quant import QRANGE, QUANT_DTYPES, saturate_round
from .registry import OpDef, register


def fma32(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """float32(x·y + z) with one rounding, for x small integers (|x| < 2**29) and y, z float32: x·y and the
    sum are exact in float64 but for the sum's last bits, which round-to-odd keeps (TwoSum's error term)
    so that the final float32 rounding is the correct single one (53 >= 24 + 2 bits)."""
    p = x.astype(np.float64) * y.astype(np.float64)  # exact: at most 29 + 24 bits
    z = np.broadcast_to(z.astype(np.float64), p.shape)
    s = p + z
    bp = s - z
    err = (p - bp) + (z - (s - bp))
    even = (s.view(np.int64) & 1) == 0
    s = np.where((err != 0) & even, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def _grid(where: str, x, scale, zp):
    if x.dtype not in QUANT_DTYPES:
        raise ShapeError(f"{where}: quantized operands are uint8 or int8, got {x.type_str}.")
    for v, what in ((scale, "scale"), (zp, "zero point")):
        if v is None or v.size != 1:
            raise ShapeError(f"{where}: the {what} must be one value (per tensor).")
    if zp.dtype != x.dtype:
        raise ShapeError(f"{where}: zero point {zp.dtype} does not match its tensor's {x.dtype}.")


def _f32(v) -> np.float32:
    return np.float32(np.asarray(v, np.float32).reshape(()))


def add_constants(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp) -> tuple[np.float32, np.float32, np.float32]:
    """(rA, rB, c0) of QuantizedAdd, as MLAS's QLinearAdd computes them."""
    ra, rb = np.float32(_f32(a_scale) / _f32(y_scale)), np.float32(_f32(b_scale) / _f32(y_scale))
    za, zb, zc = (np.float32(int(np.asarray(z).reshape(()))) for z in (a_zp, b_zp, y_zp))
    return ra, rb, np.float32(zc - np.float32(np.float32(ra * za) + np.float32(rb * zb)))


@register
class QuantizedAdd(OpDef):
    """onnxruntime's QLinearAdd: two 8-bit tensors of one shape, on their own grids, summed onto a third
    (module docstring)."""
    name = "QuantizedAdd"
    onnx_op = False
    attrs = {}
    num_inputs = (8, 8)

    def infer(self, inputs, attrs):
        a, sa, za, b, sb, zb, sy, zy = inputs
        where = "QuantizedAdd"
        _grid(where, a, sa, za)
        _grid(where, b, sb, zb)
        if zy is None or zy.dtype not in QUANT_DTYPES or sy is None or sy.size != 1 or zy.size != 1:
            raise ShapeError(f"{where}: the output grid is one scale and one 8-bit zero point.")
        if a.shape != b.shape:
            raise ShapeError(f"{where}: operands {a.type_str} and {b.type_str} must have one shape.")
        return [(a.shape, zy.dtype)]

    def run(self, inputs, attrs):
        a, sa, za, b, sb, zb, sy, zy = inputs
        ra, rb, c0 = add_constants(sa, za, sb, zb, sy, zy)
        lo, hi = QRANGE[np.asarray(zy).dtype]
        v = fma32(a.astype(np.float32), ra, fma32(b.astype(np.float32), rb, c0))
        return [np.clip(np.rint(v), lo, hi).astype(np.asarray(zy).dtype)]

    def flops(self, inputs, outputs, attrs):
        return 2 * outputs[0].size


def pool_scale(x_scale, y_scale, image_size: int) -> np.float32:
    """s of QuantizedGlobalAveragePool, as MLAS computes it."""
    return np.float32(_f32(x_scale) / np.float32(_f32(y_scale) * np.float32(image_size)))


@register
class QuantizedGlobalAveragePool(OpDef):
    """onnxruntime's QLinearGlobalAveragePool (module docstring): the integer sum over the spatial axes,
    scaled once."""
    name = "QuantizedGlobalAveragePool"
    onnx_op = False
    attrs = {}
    num_inputs = (5, 5)

    def infer(self, inputs, attrs):
        x, sx, zx, sy, zy = inputs
        where = "QuantizedGlobalAveragePool"
        _grid(where, x, sx, zx)
        if zy is None or zy.dtype not in QUANT_DTYPES or sy is None or sy.size != 1 or zy.size != 1:
            raise ShapeError(f"{where}: the output grid is one scale and one 8-bit zero point.")
        if x.rank < 3:
            raise ShapeError(f"{where}: input must be [N, C, spatial...], got {x.type_str}.")
        if math.prod(x.shape[2:]) * 255 >= 2 ** 31:
            raise ShapeError(f"{where}: {math.prod(x.shape[2:])} pixels could overflow the int32 sum.")
        return [(tuple(x.shape[:2]) + (1,) * (x.rank - 2), zy.dtype)]

    def run(self, inputs, attrs):
        x, sx, zx, sy, zy = inputs
        hw = math.prod(x.shape[2:])
        axes = tuple(range(2, x.ndim))
        acc = x.astype(np.int64).sum(axis=axes, keepdims=True) - int(np.asarray(zx).reshape(())) * hw
        return [saturate_round(acc.astype(np.float32) * pool_scale(sx, sy, hw), zy)]

    def flops(self, inputs, outputs, attrs):
        return inputs[0].size

"""ONNX's QOperator-format ops, as onnxruntime's quantize_static (QOperator format) and quantize_dynamic
write them: QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, DynamicQuantizeLinear.

The reference kernels compute the ONNX definitions (integer accumulation exactly, in float64, then one
requantization in float32). passes/qoperator_to_qdq.py rewrites the first four into
DequantizeLinear -> Conv/MatMul -> QuantizeLinear, the form passes/fuse_quantized.py turns into aotc's int8
ops; DynamicQuantizeLinear (scales computed at run time) runs as itself (x86/arm64: targets/cpu/lower_dynamic_quant.py).
"""
from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .linalg import matmul_shape
from .nn import CONV_ATTRS
from .quant import QUANT_DTYPES, dequantize, quantize
from .registry import OpDef, get_op, register


def _conv_shape(x, w, attrs):
    from ..ir import Value
    xf, wf = Value("x", x.shape, DType.float32), Value("w", w.shape, DType.float32)
    return get_op("Conv").infer([xf, wf], attrs)[0][0]


def _need_quantized(where: str, *values) -> None:
    for v in values:
        if v is not None and v.dtype not in QUANT_DTYPES:
            raise ShapeError(f"{where}: quantized operands are uint8 or int8, got {v.type_str}.")


def _exact_int32(a: np.ndarray) -> np.ndarray:
    return np.rint(a).astype(np.int64).astype(np.int32)


def _zp(v, i):
    return v[i] if len(v) > i and v[i] is not None else None


@register
class QLinearConv(OpDef):
    """y = QuantizeLinear(Conv(DequantizeLinear(x), DequantizeLinear(w, per output channel)) + B·x_scale·w_scale)."""
    name = "QLinearConv"
    rewritten_by = "prepare_prequantized"  # passes/qoperator_to_qdq.py
    attrs = CONV_ATTRS
    num_inputs = (8, 9)

    def infer(self, inputs, attrs):
        x, w, yz = inputs[0], inputs[3], inputs[7]
        _need_quantized("QLinearConv", x, w, yz)
        return [(_conv_shape(x, w, attrs), yz.dtype)]

    def run(self, inputs, attrs):
        x, xs, xz, w, ws, wz, ys, yz = inputs[:8]
        bias = _zp(inputs, 8)
        xf = dequantize(x, xs, xz)
        wf = dequantize(w, ws, wz, axis=0)
        y = get_op("Conv").run([xf.astype(np.float64), wf.astype(np.float64)], attrs)[0]
        if bias is not None:
            b = bias.astype(np.float64) * np.float32(xs.reshape(-1)[0]) * np.asarray(ws, np.float32).reshape(-1)
            y = y + b.reshape(1, -1, *([1] * (y.ndim - 2)))
        return [quantize(y.astype(np.float32), ys, yz, yz.dtype)]


@register
class QLinearMatMul(OpDef):
    """y = QuantizeLinear(DequantizeLinear(a) @ DequantizeLinear(b, per column when b's scale is 1-D))."""
    name = "QLinearMatMul"
    rewritten_by = "prepare_prequantized"  # passes/qoperator_to_qdq.py
    num_inputs = (8, 8)

    def infer(self, inputs, attrs):
        a, b, yz = inputs[0], inputs[3], inputs[7]
        _need_quantized("QLinearMatMul", a, b, yz)
        return [(matmul_shape(a, b, where="QLinearMatMul"), yz.dtype)]

    def run(self, inputs, attrs):
        a, as_, az, b, bs, bz, ys, yz = inputs
        af = dequantize(a, as_, az)
        bf = dequantize(b, bs, bz, axis=b.ndim - 1)
        y = np.matmul(af.astype(np.float64), bf.astype(np.float64))
        return [quantize(y.astype(np.float32), ys, yz, yz.dtype)]


@register
class MatMulInteger(OpDef):
    """int32 y = (a - a_zero_point) @ (b - b_zero_point), exactly."""
    name = "MatMulInteger"
    rewritten_by = "prepare_prequantized"  # passes/qoperator_to_qdq.py
    num_inputs = (2, 4)

    def infer(self, inputs, attrs):
        _need_quantized("MatMulInteger", inputs[0], inputs[1])
        return [(matmul_shape(inputs[0], inputs[1], where="MatMulInteger"), DType.int32)]

    def run(self, inputs, attrs):
        a, b = inputs[0], inputs[1]
        az, bz = _zp(inputs, 2), _zp(inputs, 3)
        ac = a.astype(np.float64) - (0 if az is None else az.astype(np.float64))
        bc = b.astype(np.float64) - (0 if bz is None else bz.astype(np.float64).reshape(-1))
        return [_exact_int32(np.matmul(ac, bc))]


@register
class ConvInteger(OpDef):
    """int32 y = Conv(x - x_zero_point, w - w_zero_point), exactly (padding with the zero point)."""
    name = "ConvInteger"
    rewritten_by = "prepare_prequantized"  # passes/qoperator_to_qdq.py
    attrs = CONV_ATTRS
    num_inputs = (2, 4)

    def infer(self, inputs, attrs):
        _need_quantized("ConvInteger", inputs[0], inputs[1])
        return [(_conv_shape(inputs[0], inputs[1], attrs), DType.int32)]

    def run(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        xz, wz = _zp(inputs, 2), _zp(inputs, 3)
        xc = x.astype(np.float64) - (0 if xz is None else xz.astype(np.float64))
        wzb = 0 if wz is None else wz.astype(np.float64).reshape(-1, *([1] * (w.ndim - 1)))
        return [_exact_int32(get_op("Conv").run([xc, w.astype(np.float64) - wzb], attrs)[0])]


@register
class DynamicQuantizeLinear(OpDef):
    """uint8 y, scale, zero point from x's range (widened to include 0) at run time, as ONNX defines it."""
    name = "DynamicQuantizeLinear"
    num_inputs = (1, 1)
    num_outputs = 3

    def infer(self, inputs, attrs):
        if inputs[0].dtype != DType.float32:
            raise ShapeError(f"DynamicQuantizeLinear needs float32, got {inputs[0].type_str}.")
        return [(inputs[0].shape, DType.uint8), ((), DType.float32), ((), DType.uint8)]

    def run(self, inputs, attrs):
        # In float32, as onnxruntime computes it; an all-zero x gets scale 1 (ONNX's formula would divide 0 by 0).
        x = inputs[0].astype(np.float32)
        lo, hi = np.minimum(x.min(initial=0.0), np.float32(0)), np.maximum(x.max(initial=0.0), np.float32(0))
        scale = np.float32(1.0) if hi == lo else np.float32(hi - lo) / np.float32(255.0)
        with np.errstate(invalid="ignore"):
            zp = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255)).astype(np.uint8)
        y = quantize(x, scale, zp, np.uint8)
        return [y, np.array(scale, np.float32), np.array(zp, np.uint8)]

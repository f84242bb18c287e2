"""INT8 quantization ops: ONNX's QuantizeLinear / DequantizeLinear, and aotc's
int8 compute ops QuantizedMatMul, QuantizedConv and QuantizedAttention.

Integer semantics (what every target must reproduce; see docs/quantization.md)
-----------------------------------------------------------------------------
Activations are uint8 with a per-tensor scale and zero point (u8 is what x86
VNNI's `vpdpbusd` multiplies: u8 activations x s8 weights); weights are int8,
symmetric (zero point 0, values in [-127, 127]), one scale per output channel.

    acc[.., n] = Σ_k (int32(x[.., k]) - int32(x_zp)) * int32(w[k, n])        exact, int32
    y[.., n]   = float32(acc) * s[n] + bias[n]      s[n] = float32(x_scale) * float32(w_scale[n]) (float32 product)
    y          = epilogue(y)                        FusedMatMul's: residual before/after the activation
    out        = y                                  (float epilogue), or, when y_scale is given,
    out        = saturate(round_half_even(y / y_scale) + y_zp)      (requantizing epilogue = QuantizeLinear)

float32(acc) is int32 -> float32 rounding to nearest-even (exact below 2**24).

Integer requantization (`requantization="integer"`: a pre-quantized model's own
QLinearConv/QGemm, or its DQ -> Conv/MatMul -> Q unit with an int32 bias, run as
onnxruntime's kernels run it, so the two agree to the bit):

    out = saturate(round_half_even(float32(acc + bias_i32[n]) * m[n]) + y_zp)
    m[n] = float32(float32(x_scale * w_scale[n]) / y_scale)

with no float intermediate: the bias is int32 at scale x_scale*w_scale[n], and
there is no activation or residual (a Relu/Clip the output range already clips
is dropped by the fusion, as onnxruntime drops it).
A target is free to compute acc as Σ x*w - x_zp * Σ_k w[k, n] (the column sums
are constants) and to fold s and bias into its own epilogue; the float32 steps
above are the reference, and a requantized output may differ by one step where
a target's float rounding (e.g. FMA) lands the other side of a .5 tie.
Conv pads with the real value 0, i.e. with x_zp in the uint8 domain.

The reference kernels compute acc with float64 BLAS: every product and partial
sum is an integer below 2**53, so the result is exact (and fast enough to run
whole models in the interpreter); `_check_accumulator` bounds K so acc fits int32.
"""
from __future__ import annotations

import math

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .fused import EPILOGUE_ATTRS, Attention, _check_activation, apply_epilogue
from .linalg import matmul_shape
from .nn import CONV_ATTRS
from .registry import FLOAT, INT, STRING, Attr, OpDef, broadcast_shapes, get_op, norm_axis, register

QUANT_DTYPES = (DType.uint8, DType.int8)
QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


# -- the elementary conversions, shared by every kernel below -----------------
def _axis_shape(scale: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Per-axis parameters reshaped to broadcast along `axis` of a rank-`rank` tensor."""
    if scale.ndim == 0 or scale.size == 1 and rank == 0:
        return scale.reshape(())
    shape = [1] * rank
    shape[axis] = scale.size
    return scale.reshape(shape)


def quantize(x: np.ndarray, scale, zero_point, qdtype, axis: int | None = None) -> np.ndarray:
    """y = saturate(round_half_even(x / scale) + zero_point), in float32 as ONNX specifies."""
    qdtype = np.dtype(qdtype)
    scale = np.asarray(scale, np.float32)
    zp = np.asarray(zero_point if zero_point is not None else 0)
    if axis is not None and scale.ndim == 1 and scale.size > 1:
        scale, zp = _axis_shape(scale, x.ndim, axis), _axis_shape(zp, x.ndim, axis)
    else:
        scale, zp = scale.reshape(()) if scale.size == 1 else scale, zp.reshape(()) if zp.size == 1 else zp
    lo, hi = QRANGE[qdtype]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x.astype(np.float32) / scale) + zp.astype(np.float32)
    return np.clip(q, lo, hi).astype(qdtype)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """y = float32(q - zero_point) * scale."""
    scale = np.asarray(scale, np.float32)
    zp = np.asarray(zero_point if zero_point is not None else 0)
    if axis is not None and scale.ndim == 1 and scale.size > 1:
        scale, zp = _axis_shape(scale, q.ndim, axis), _axis_shape(zp, q.ndim, axis)
    else:
        scale, zp = scale.reshape(()) if scale.size == 1 else scale, zp.reshape(()) if zp.size == 1 else zp
    return ((q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale).astype(np.float32)


def _check_qparams(where: str, q_dtype: DType, scale, zp, per_axis_len: int | None = None):
    if scale is None or scale.dtype != DType.float32:
        raise ShapeError(f"{where}: the scale must be float32, got {scale.type_str if scale else 'none'}.")
    if per_axis_len is None and scale.size != 1:
        raise ShapeError(f"{where}: expected a per-tensor (1-element) scale, got {scale.type_str}.")
    if per_axis_len is not None and scale.size not in (1, per_axis_len):
        raise ShapeError(f"{where}: the scale {scale.type_str} needs 1 or {per_axis_len} elements.")
    if zp is not None:
        if zp.dtype != q_dtype:
            raise ShapeError(f"{where}: the zero point is {zp.dtype}, the quantized tensor {q_dtype}.")
        if zp.size != scale.size:
            raise ShapeError(f"{where}: zero point {zp.type_str} and scale {scale.type_str} differ in size.")


def keeps_quantized_weight(op_type: str, inputs) -> bool:
    """DequantizeLinear of an 8-bit constant (a pre-quantized model's weight) is not constant-folded (by the
    importer or fold_constants): passes/fuse_quantized.py reads the int8 values and their scales from it, and
    passes/prequantized.py folds what no int8 op took. int32 inputs (biases) still fold."""
    return op_type == "DequantizeLinear" and bool(inputs) and inputs[0] is not None and \
        inputs[0].dtype in QUANT_DTYPES


# -- ONNX QuantizeLinear / DequantizeLinear ------------------------------------
QDQ_ATTRS = {"axis": Attr(INT, 1), "saturate": Attr(INT, 1), "block_size": Attr(INT, 0)}


@register
class QuantizeLinear(OpDef):
    """ONNX QuantizeLinear (opset 13-21, integer outputs): y = saturate(round_half_even(x / y_scale) + y_zero_point).
    Per-tensor (scalar scale) or per-axis (1-D scale along `axis`); the output dtype is the zero point's
    (uint8 when it is omitted). Blocked quantization (block_size > 0) is not supported."""
    name = "QuantizeLinear"
    attrs = QDQ_ATTRS
    num_inputs = (2, 3)

    def infer(self, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 else None
        if attrs["block_size"]:
            raise ShapeError("QuantizeLinear: blocked quantization (block_size > 0) is not supported.")
        if not x.dtype.is_float:
            raise ShapeError(f"QuantizeLinear needs a floating-point input, got {x.dtype}.")
        qdt = zp.dtype if zp is not None else DType.uint8
        if qdt not in QUANT_DTYPES:
            raise ShapeError(f"QuantizeLinear: aotc quantizes to uint8 or int8, not {qdt}.")
        axis = norm_axis(attrs["axis"], x.rank, "QuantizeLinear") if scale.rank == 1 and scale.size > 1 else None
        _check_qparams("QuantizeLinear", qdt, scale, zp, x.shape[axis] if axis is not None else None)
        return [(x.shape, qdt)]

    def run(self, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 else None
        qdt = zp.dtype if zp is not None else np.dtype(np.uint8)
        return [quantize(x, scale, zp, qdt, attrs["axis"] % max(x.ndim, 1))]

    def flops(self, inputs, outputs, attrs):
        return 2 * outputs[0].size


@register
class DequantizeLinear(OpDef):
    """ONNX DequantizeLinear: y = float32(x - x_zero_point) * x_scale, per-tensor or per-axis.
    int32 inputs (biases) take no zero point, as in ONNX."""
    name = "DequantizeLinear"
    attrs = QDQ_ATTRS
    num_inputs = (2, 3)

    def infer(self, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 else None
        if attrs["block_size"]:
            raise ShapeError("DequantizeLinear: blocked quantization (block_size > 0) is not supported.")
        if x.dtype not in QUANT_DTYPES + (DType.int32,):
            raise ShapeError(f"DequantizeLinear needs an int8, uint8 or int32 input, got {x.dtype}.")
        if x.dtype == DType.int32 and zp is not None and not (zp.const is not None and not np.any(zp.const)):
            raise ShapeError("DequantizeLinear: an int32 input takes no (or a zero) zero point.")
        axis = norm_axis(attrs["axis"], x.rank, "DequantizeLinear") if scale.rank == 1 and scale.size > 1 else None
        _check_qparams("DequantizeLinear", x.dtype, scale, zp, x.shape[axis] if axis is not None else None)
        return [(x.shape, DType.float32)]

    def run(self, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        zp = inputs[2] if len(inputs) > 2 else None
        return [dequantize(x, scale, zp, attrs["axis"] % max(x.ndim, 1))]

    def flops(self, inputs, outputs, attrs):
        return 2 * outputs[0].size


# -- int8 compute ops ------------------------------------------------------------
def _check_accumulator(k: int, where: str):
    """255 * 128 * K must fit int32, or the exact sum could overflow the accumulator."""
    if 255 * 128 * k >= 2 ** 31:
        raise ShapeError(f"{where}: reduction length {k} could overflow the int32 accumulator (max 65793).")


def _check_activation_q(where: str, x, scale, zp):
    if x.dtype not in QUANT_DTYPES:
        raise ShapeError(f"{where}: the activation must be uint8 or int8, got {x.dtype}.")
    _check_qparams(where, x.dtype, scale, zp)
    if zp is None:
        raise ShapeError(f"{where}: the activation's zero point is required.")


def _check_weight_q(where: str, w, w_scale, n_out: int):
    if w.dtype != DType.int8:
        raise ShapeError(f"{where}: weights must be int8, got {w.type_str}.")
    if w_scale is None or w_scale.dtype != DType.float32 or w_scale.size not in (1, n_out) or w_scale.rank > 1:
        raise ShapeError(f"{where}: the weight scale must be float32 with 1 or {n_out} (output channel) elements.")


def _output_q(where: str, inputs, first: int):
    """(y_scale, y_zero_point) Values, both or neither; decides the output dtype."""
    ys = inputs[first] if len(inputs) > first else None
    yz = inputs[first + 1] if len(inputs) > first + 1 else None
    if (ys is None) != (yz is None):
        raise ShapeError(f"{where}: give both y_scale and y_zero_point (a requantized output) or neither.")
    if ys is None:
        return DType.float32
    if yz.dtype not in QUANT_DTYPES:
        raise ShapeError(f"{where}: the output zero point must be uint8 or int8, got {yz.dtype}.")
    _check_qparams(where, yz.dtype, ys, yz)
    return yz.dtype


def combined_scale(x_scale: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """s[n] = float32(x_scale) * float32(w_scale[n]), one float32 rounding."""
    return (np.float32(np.asarray(x_scale, np.float32).reshape(())) * np.asarray(w_scale, np.float32).reshape(-1)
            ).astype(np.float32)


def exact_int_matmul(xc: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ_k xc[.., k] * w[k, n] for integer operands, exactly (float64 BLAS: all values below 2**53), as int32."""
    return np.matmul(xc.astype(np.float64), w.astype(np.float64)).astype(np.int32)


def float_epilogue(acc: np.ndarray, scale: np.ndarray, channel_axis: int, bias, residual, attrs) -> np.ndarray:
    """float32(acc) * s[channel] + bias[channel], then activation and residual as FusedMatMul's epilogue."""
    shape = [1] * acc.ndim
    shape[channel_axis] = scale.size
    y = acc.astype(np.float32) * scale.reshape(shape)
    if bias is not None:
        y = y + bias.astype(np.float32).reshape(shape)
    return apply_epilogue(y.astype(np.float32), None, residual, attrs).astype(np.float32)


def finish(y: np.ndarray, y_scale, y_zp) -> np.ndarray:
    return y if y_scale is None else quantize(y, y_scale, y_zp, y_zp.dtype)


def _opt(inputs, i):
    return inputs[i] if len(inputs) > i else None


REQUANT_ATTRS = {"requantization": Attr(STRING, "float")}


def _check_requantization(where: str, inputs, attrs, n_out: int):
    """The bias dtype and epilogue each requantization mode allows."""
    mode, bias = attrs["requantization"], _opt(inputs, 5)
    if mode == "float":
        if bias is not None and (bias.dtype != DType.float32 or bias.shape != (n_out,)):
            raise ShapeError(f"{where}: bias must be float32 [{n_out}], got {bias.type_str}.")
        return
    if mode != "integer":
        raise ShapeError(f"{where}: requantization must be 'float' or 'integer', got {mode!r}.")
    if _opt(inputs, 7) is None:
        raise ShapeError(f"{where}: integer requantization needs y_scale and y_zero_point.")
    if _opt(inputs, 6) is not None or attrs["activation"] != "none":
        raise ShapeError(f"{where}: integer requantization has no residual or activation.")
    if bias is not None and (bias.dtype != DType.int32 or bias.shape != (n_out,)):
        raise ShapeError(f"{where}: an integer-requantized bias must be int32 [{n_out}], got {bias.type_str}.")


def requant_multiplier(x_scale, w_scale, y_scale, n: int) -> np.ndarray:
    """m[n] = float32(float32(x_scale * w_scale[n]) / y_scale), onnxruntime's QLinearConv/QGemm output scale."""
    s = combined_scale(x_scale, np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (n,)))
    return (s / np.float32(np.asarray(y_scale, np.float32).reshape(()))).astype(np.float32)


def saturate_round(v: np.ndarray, zp) -> np.ndarray:
    """saturate(round_half_even(v) + zp) into zp's dtype, v float32."""
    zp = np.asarray(zp)
    lo, hi = QRANGE[zp.dtype]
    return np.clip(np.rint(v) + zp.reshape(()).astype(np.float32), lo, hi).astype(zp.dtype)


def float_bias(node) -> np.ndarray | None:
    """A QuantizedMatMul/QuantizedConv node's constant bias as float32, whichever its requantization (an int32
    bias is at the accumulator's scale x_scale·w_scale[n]): for kernels that add it in float."""
    bias = _opt(node.inputs, 5)
    if bias is None:
        return None
    if node.attrs["requantization"] != "integer":
        return bias.const.astype(np.float32)
    s = combined_scale(node.inputs[1].const, np.broadcast_to(node.inputs[4].const.reshape(-1).astype(np.float32),
                                                             (bias.size,)))
    return (bias.const.astype(np.float32) * s).astype(np.float32)


def integer_requantize(acc: np.ndarray, channel_axis: int, inputs, n: int) -> np.ndarray:
    """The integer requantization above, acc int32 with the channel on `channel_axis`."""
    shape = [1] * acc.ndim
    shape[channel_axis] = n
    bias = _opt(inputs, 5)
    total = acc if bias is None else acc + bias.astype(np.int32).reshape(shape)
    m = requant_multiplier(inputs[1], inputs[4], inputs[7], n)
    return saturate_round(total.astype(np.float32) * m.reshape(shape), inputs[8])


@register
class QuantizedMatMul(OpDef):
    """int8 GEMM with int32 accumulation and FusedMatMul's epilogue (see the module docstring).

    Inputs: x (u8/s8 [..., K]), x_scale, x_zero_point, w (s8 [K, N], zero point 0), w_scale ([N] or [1]),
    bias? (f32 [N]; int32 with requantization="integer"), residual? (f32, the output's shape), y_scale?,
    y_zero_point? (both: a requantized u8/s8 output; neither: float32)."""
    name = "QuantizedMatMul"
    onnx_op = False
    attrs = {**EPILOGUE_ATTRS, **REQUANT_ATTRS}
    num_inputs = (5, 9)

    def infer(self, inputs, attrs):
        _check_activation(attrs)
        x, xs, xz, w, ws = inputs[:5]
        res = _opt(inputs, 6)
        where = "QuantizedMatMul"
        _check_activation_q(where, x, xs, xz)
        if w.rank != 2:
            raise ShapeError(f"{where}: weights must be 2-D [K, N], got {w.type_str}.")
        _check_weight_q(where, w, ws, w.shape[1])
        shape = matmul_shape(x, w, where=where)
        _check_accumulator(w.shape[0], where)
        _check_requantization(where, inputs, attrs, w.shape[1])
        if res is not None and (res.dtype != DType.float32 or
                                broadcast_shapes(shape, res.shape, where=where) != shape):
            raise ShapeError(f"{where}: residual {res.type_str} must be float32 and not grow the output {list(shape)}.")
        return [(shape, _output_q(where, inputs, 7))]

    def run(self, inputs, attrs):
        x, xs, xz, w, ws = inputs[:5]
        acc = exact_int_matmul(x.astype(np.int32) - np.int32(xz.reshape(())), w)
        if attrs["requantization"] == "integer":
            return [integer_requantize(acc, acc.ndim - 1, inputs, w.shape[1])]
        y = float_epilogue(acc, combined_scale(xs, np.broadcast_to(ws.reshape(-1), (w.shape[1],))), acc.ndim - 1,
                           _opt(inputs, 5), _opt(inputs, 6), attrs)
        return [finish(y, _opt(inputs, 7), _opt(inputs, 8))]

    def flops(self, inputs, outputs, attrs):
        return 2 * outputs[0].size * inputs[3].shape[0]


@register
class QuantizedConv(OpDef):
    """int8 convolution with int32 accumulation and FusedConv's epilogue, Conv's attributes.

    Inputs: x (u8/s8 [N, C, ...]), x_scale, x_zero_point, w (s8 [M, C/group, *kernel]), w_scale ([M] or [1]),
    bias? (f32 [M]; int32 with requantization="integer"), residual? (f32, the output's shape), y_scale?,
    y_zero_point?. Padding is the real value 0 (x_zero_point in the quantized domain), so padded taps add
    nothing to the accumulator."""
    name = "QuantizedConv"
    onnx_op = False
    attrs = {**CONV_ATTRS, **EPILOGUE_ATTRS, **REQUANT_ATTRS}
    num_inputs = (5, 9)

    @staticmethod
    def conv_attrs(attrs):
        return {k: attrs[k] for k in CONV_ATTRS}

    def infer(self, inputs, attrs):
        _check_activation(attrs)
        x, xs, xz, w, ws = inputs[:5]
        res = _opt(inputs, 6)
        where = "QuantizedConv"
        _check_activation_q(where, x, xs, xz)
        _check_weight_q(where, w, ws, w.shape[0])
        # Conv's own shape rules, on float stand-ins of the operands.
        from ..ir import Value
        xf, wf = Value("x", x.shape, DType.float32), Value("w", w.shape, DType.float32)
        (shape, _), = get_op("Conv").infer([xf, wf], self.conv_attrs(attrs))
        _check_accumulator(math.prod(w.shape[1:]), where)
        _check_requantization(where, inputs, attrs, w.shape[0])
        if res is not None and (res.dtype != DType.float32 or res.shape != shape):
            raise ShapeError(f"{where}: residual {res.type_str} must be float32 of the output's shape {list(shape)}.")
        return [(shape, _output_q(where, inputs, 7))]

    def run(self, inputs, attrs):
        x, xs, xz, w, ws = inputs[:5]
        xc = (x.astype(np.int32) - np.int32(xz.reshape(()))).astype(np.float64)
        # Conv's reference kernel on float64 integers is an exact integer convolution (zero padding).
        acc = get_op("Conv").run([xc, w.astype(np.float64)], self.conv_attrs(attrs))[0].astype(np.int32)
        if attrs["requantization"] == "integer":
            return [integer_requantize(acc, 1, inputs, w.shape[0])]
        y = float_epilogue(acc, combined_scale(xs, np.broadcast_to(ws.reshape(-1), (w.shape[0],))), 1,
                           _opt(inputs, 5), _opt(inputs, 6), attrs)
        return [finish(y, _opt(inputs, 7), _opt(inputs, 8))]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size * 2 * math.prod(inputs[3].shape[1:])


@register
class QuantizedAttention(OpDef):
    """Attention whose Q/K/V projections are int8 GEMMs (QuantizedMatMul semantics, float epilogue with
    the bias); scores, Softmax and the weighted sum of V stay float32, exactly as in Attention.

    Inputs (17): x_q, x_q_scale, x_q_zero_point, x_kv, x_kv_scale, x_kv_zero_point,
    Wq, Wq_scale, bq?, Wk, Wk_scale, bk?, Wv, Wv_scale, bv?, add_mask?, keep_mask?.
    For self-attention x_q and x_kv are the same value, so a target runs one [E, 3·H·D] GEMM."""
    name = "QuantizedAttention"
    onnx_op = False
    attrs = {"num_heads": Attr(INT), "head_dim": Attr(INT), "scale": Attr(FLOAT),
             "mask_fill": Attr(FLOAT, float("-inf")), "nan_to_zero": Attr(INT, 0)}
    num_inputs = (17, 17)

    def infer(self, inputs, attrs):
        xq, xqs, xqz, xkv, xkvs, xkvz = inputs[:6]
        h, d = attrs["num_heads"], attrs["head_dim"]
        where = "QuantizedAttention"
        _check_activation_q(where, xq, xqs, xqz)
        _check_activation_q(where, xkv, xkvs, xkvz)
        if xq.rank != 3 or xkv.rank != 3 or xq.shape[0] != xkv.shape[0]:
            raise ShapeError(f"{where}: inputs must be [B,S,E], got {xq.type_str} and {xkv.type_str}.")
        for i, what in ((6, "q"), (9, "k"), (12, "v")):
            w, ws, b = inputs[i:i + 3]
            e = xq.shape[2] if what == "q" else xkv.shape[2]
            if w.shape != (e, h * d):
                raise ShapeError(f"{where}: W{what} {w.type_str} is not [E, num_heads*head_dim = {h * d}].")
            _check_weight_q(where, w, ws, h * d)
            _check_accumulator(e, where)
            if b is not None and (b.shape != (h * d,) or b.dtype != DType.float32):
                raise ShapeError(f"{where}: b{what} {b.type_str} is not float32 [{h * d}].")
        scores = (xq.shape[0], h, xq.shape[1], xkv.shape[1])
        for m, what in ((inputs[15], "additive mask"), (inputs[16], "boolean mask")):
            if m is not None and broadcast_shapes(scores, m.shape, where=f"{where} {what}") != scores:
                raise ShapeError(f"{where}: {what} {m.type_str} does not broadcast to {list(scores)}.")
        return [((xq.shape[0], xq.shape[1], h * d), DType.float32)]

    @staticmethod
    def project(x, xs, xz, w, ws, b, h, d):
        acc = exact_int_matmul(x.astype(np.int32) - np.int32(xz.reshape(())), w)
        y = float_epilogue(acc, combined_scale(xs, np.broadcast_to(ws.reshape(-1), (w.shape[1],))), 2, b, None,
                           {"activation": "none", "residual_before_activation": 0})
        return y.reshape(x.shape[0], x.shape[1], h, d).transpose(0, 2, 1, 3)

    def run(self, inputs, attrs):
        xq, xqs, xqz, xkv, xkvs, xkvz = inputs[:6]
        add_mask, keep_mask = inputs[15], inputs[16]
        h, d = attrs["num_heads"], attrs["head_dim"]
        q = self.project(xq, xqs, xqz, *inputs[6:9], h, d)
        k = self.project(xkv, xkvs, xkvz, *inputs[9:12], h, d)
        v = self.project(xkv, xkvs, xkvz, *inputs[12:15], h, d)
        return [Attention.core(q, k, v, add_mask, keep_mask, attrs, np.float32)]

    def flops(self, inputs, outputs, attrs):
        return get_op("Attention").flops(inputs[0:1] + inputs[3:4], outputs, attrs)

"""onnxruntime's com.microsoft QOperator ops: what `quantize_static(quant_format=QOperator)` writes for the
ops ONNX itself has no QLinear form of (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat, QGemm).

Each is defined by what it computes: DequantizeLinear of its 8-bit operands -> the float op ->
QuantizeLinear onto its output grid (QGemm: a float output when it has no y_scale). The reference kernels
run exactly that; passes/qoperator_to_qdq.py rewrites the nodes into the same DQ -> op -> Q form (from the
QSPECS table below), which the int8 fusion and the targets' float kernels already handle, so no target
lowers these ops. onnxruntime's own kernels compute the same values with a different float association
(e.g. QLinearAdd as a·(sa/sc) + b·(sb/sc) + const), which can move a result by one step at a .5 tie; the
default pipeline's fuse_prequantized then turns QLinearAdd's and QLinearGlobalAveragePool's DQ -> op -> Q back
into QuantizedAdd / QuantizedGlobalAveragePool (compiler/ops/qlinear.py), which use onnxruntime's association.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .nn import AveragePool
from .quant import QUANT_DTYPES, dequantize, quantize
from .registry import FLOAT, INT, Attr, OpDef, get_op, register

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class QSpec:
    """How a com.microsoft op reads: the float op it quantizes, its quantized operands as (tensor, scale,
    zero point) input positions, and where its output's (scale, zero point) are. Attributes pass through to
    the float op (all but the pools' channels_last)."""
    float_op: str
    operands: tuple[tuple[int, int, int], ...]
    output: tuple[int, int]


QSPECS = {
    "QLinearAdd": QSpec("Add", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearMul": QSpec("Mul", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearSigmoid": QSpec("Sigmoid", ((0, 1, 2),), (3, 4)),
    "QLinearLeakyRelu": QSpec("LeakyRelu", ((0, 1, 2),), (3, 4)),
    "QLinearGlobalAveragePool": QSpec("GlobalAveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearAveragePool": QSpec("AveragePool", ((0, 1, 2),), (3, 4)),
}
CHANNELS_LAST = {"channels_last": Attr(INT, 0)}  # the pools' NHWC variant (not supported)


def _at(inputs, i):
    return inputs[i] if i < len(inputs) else None


def float_attrs(op_type: str, attrs: dict) -> dict:
    """The attributes the float op takes (the pools' channels_last is not one)."""
    return {k: v for k, v in attrs.items() if k != "channels_last"}


def _check_operand(where: str, x, scale, zp) -> None:
    if x is None or x.dtype not in QUANT_DTYPES:
        raise ShapeError(f"{where}: quantized operands are uint8 or int8, got {x.type_str if x else 'none'}.")
    _check_grid(where, scale, zp, x.dtype)


def _check_grid(where: str, scale, zp, dtype=None) -> None:
    """A per-tensor float32 scale and an 8-bit zero point (of `dtype` when given)."""
    if scale is None or scale.size != 1 or scale.dtype != DType.float32 or (zp is not None and (
            zp.size != 1 or zp.dtype not in QUANT_DTYPES or (dtype is not None and zp.dtype != dtype))):
        raise ShapeError(f"{where}: each quantized tensor needs a per-tensor float32 scale and an 8-bit zero point "
                         "(of the tensor's dtype).")


def _out_dtype(inputs, spec_out, first_operand) -> DType:
    yz = _at(inputs, spec_out[1])
    return yz.dtype if yz is not None else first_operand.dtype


class _QLinearElementwise(OpDef):
    """DequantizeLinear(operands) -> float op -> QuantizeLinear(y_scale, y_zero_point)."""
    rewritten_by = "prepare_prequantized"  # passes/qoperator_to_qdq.py
    domain = MS_DOMAIN

    @property
    def spec(self) -> QSpec:
        return QSPECS[self.name]

    def infer(self, inputs, attrs):
        spec, where = self.spec, self.name
        if attrs.get("channels_last"):
            raise ShapeError(f"{where} with channels_last=1 (NHWC) is not supported; quantize the model in NCHW.")
        for x, s, z in spec.operands:
            _check_operand(where, inputs[x], inputs[s], _at(inputs, z))
        _check_grid(where, inputs[spec.output[0]], _at(inputs, spec.output[1]))
        from ..ir import Value
        floats = [Value(f"in{i}", inputs[x].shape, DType.float32) for i, (x, _, _) in enumerate(spec.operands)]
        op = get_op(spec.float_op)
        shape = op.infer(floats, op.normalize_attrs(float_attrs(self.name, attrs), where))[0][0]
        return [(shape, _out_dtype(inputs, spec.output, inputs[spec.operands[0][0]]))]

    def run(self, inputs, attrs):
        spec = self.spec
        floats = [dequantize(inputs[x], inputs[s], _at(inputs, z)) for x, s, z in spec.operands]
        op = get_op(spec.float_op)
        y = op.run(floats, op.normalize_attrs(float_attrs(self.name, attrs)))[0]
        yz = _at(inputs, spec.output[1])
        qdt = yz.dtype if yz is not None else inputs[spec.operands[0][0]].dtype
        return [quantize(y.astype(np.float32), inputs[spec.output[0]], yz, qdt)]


def _elementwise(name: str, num_inputs: tuple[int, int], attrs: dict | None = None):
    register(type(name, (_QLinearElementwise,), {"name": name, "num_inputs": num_inputs, "attrs": attrs or {},
                                                  "optional_inputs": frozenset({2, 5}),
                                                  "__doc__": f"com.microsoft {name}: "
                                                             f"Q({QSPECS[name].float_op}(DQ(operands)))."}))


_elementwise("QLinearAdd", (7, 8))
_elementwise("QLinearMul", (7, 8))
_elementwise("QLinearSigmoid", (4, 5))
_elementwise("QLinearLeakyRelu", (4, 5), {"alpha": Attr(FLOAT, 0.01)})
_elementwise("QLinearGlobalAveragePool", (5, 5), CHANNELS_LAST)
_elementwise("QLinearAveragePool", (4, 5), {**AveragePool.attrs, **CHANNELS_LAST})


@register
class QLinearConcat(OpDef):
    """com.microsoft QLinearConcat(y_scale, y_zero_point, (x, x_scale, x_zero_point)...): each input
    dequantized, concatenated along `axis`, quantized onto the output grid."""
    name = "QLinearConcat"
    domain = MS_DOMAIN
    rewritten_by = "prepare_prequantized"
    attrs = {"axis": Attr(INT)}
    num_inputs = (5, 2 + 3 * 1024)

    def infer(self, inputs, attrs):
        if (len(inputs) - 2) % 3:
            raise ShapeError("QLinearConcat takes y_scale, y_zero_point, then (tensor, scale, zero point) triples.")
        from ..ir import Value
        _check_grid("QLinearConcat", inputs[0], inputs[1])
        if inputs[1] is None:
            raise ShapeError("QLinearConcat: the output zero point (input 1) is required.")
        for i in range(2, len(inputs), 3):
            _check_operand("QLinearConcat", inputs[i], inputs[i + 1], inputs[i + 2])
        floats = [Value(f"in{i}", inputs[i].shape, DType.float32) for i in range(2, len(inputs), 3)]
        shape = get_op("Concat").infer(floats, attrs)[0][0]
        return [(shape, inputs[1].dtype)]

    def run(self, inputs, attrs):
        floats = [dequantize(inputs[i], inputs[i + 1], inputs[i + 2]) for i in range(2, len(inputs), 3)]
        y = get_op("Concat").run(floats, attrs)[0]
        return [quantize(y, inputs[0], inputs[1], inputs[1].dtype)]


@register
class QGemm(OpDef):
    """com.microsoft QGemm(A, a_scale, a_zp, B, b_scale, b_zp, C?, y_scale?, y_zp?):
    Y = alpha · DQ(A)ᵀ? @ DQ(B)ᵀ? + C · alpha · a_scale · b_scale (C int32, zero point 0, per output column
    when b_scale is), quantized onto (y_scale, y_zp) when they are given, float32 otherwise."""
    name = "QGemm"
    domain = MS_DOMAIN
    rewritten_by = "prepare_prequantized"
    attrs = {"alpha": Attr(FLOAT, 1.0), "transA": Attr(INT, 0), "transB": Attr(INT, 0)}
    num_inputs = (6, 9)
    optional_inputs = frozenset({6})

    def infer(self, inputs, attrs):
        a, b = inputs[0], inputs[3]
        _check_operand("QGemm", a, inputs[1], inputs[2])
        if b is None or b.dtype not in QUANT_DTYPES or b.rank != 2 or a.rank != 2:
            raise ShapeError("QGemm: A and B must be 2-D uint8/int8 tensors.")
        k = a.shape[0] if attrs["transA"] else a.shape[1]
        kb, n = (b.shape[1], b.shape[0]) if attrs["transB"] else b.shape
        if k != kb:
            raise ShapeError(f"QGemm: A {a.type_str} and B {b.type_str} do not multiply (transA={attrs['transA']}, "
                             f"transB={attrs['transB']}).")
        bz = inputs[5]
        if inputs[4] is None or inputs[4].size not in (1, n) or inputs[4].dtype != DType.float32 or \
                (bz is not None and (bz.size != inputs[4].size or bz.dtype != b.dtype)):
            raise ShapeError(f"QGemm: b_scale needs 1 or {n} (output column) float32 elements, and b_zero_point as "
                             "many of B's dtype.")
        c = _at(inputs, 6)
        if c is not None and c.dtype != DType.int32:
            raise ShapeError(f"QGemm: C must be int32 (quantized with scale alpha·a_scale·b_scale), got {c.type_str}.")
        ys, yz = _at(inputs, 7), _at(inputs, 8)
        if ys is not None:
            _check_grid("QGemm", ys, yz)
        elif yz is not None:
            raise ShapeError("QGemm: y_zero_point without y_scale.")
        m = a.shape[1] if attrs["transA"] else a.shape[0]
        return [((m, n), DType.float32 if ys is None else yz.dtype if yz is not None else DType.uint8)]

    @staticmethod
    def b_axis(attrs) -> int:
        """The axis of B that holds the output columns (a per-column b_scale runs along it)."""
        return 0 if attrs["transB"] else 1

    @staticmethod
    def bias(c: np.ndarray, a_scale, b_scale, alpha: float) -> np.ndarray:
        """C as float: C · alpha · a_scale · b_scale[n], in float32 as onnxruntime's quantizer scaled it."""
        s = np.float32(alpha) * np.float32(np.asarray(a_scale).reshape(-1)[0]) * \
            np.asarray(b_scale, np.float32).reshape(-1)
        return (c.astype(np.float64) * s.astype(np.float64)).astype(np.float32)

    def run(self, inputs, attrs):
        a = dequantize(inputs[0], inputs[1], inputs[2])
        b = dequantize(inputs[3], inputs[4], inputs[5], axis=self.b_axis(attrs))
        a = a.T if attrs["transA"] else a
        b = b.T if attrs["transB"] else b
        y = np.float32(attrs["alpha"]) * np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
        c = _at(inputs, 6)
        if c is not None:
            y = y + self.bias(c, inputs[1], inputs[4], attrs["alpha"])
        ys, yz = _at(inputs, 7), _at(inputs, 8)
        if ys is None:
            return [y.astype(np.float32)]
        return [quantize(y.astype(np.float32), ys, yz, yz.dtype if yz is not None else np.uint8)]

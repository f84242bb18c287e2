"""Matrix products: MatMul (NumPy semantics, batched) and Gemm."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .registry import FLOAT, INT, Attr, OpDef, as_out, broadcast_shapes, register


def matmul_shape(a, b, where="MatMul") -> tuple[int, ...]:
    if a.rank == 0 or b.rank == 0:
        raise ShapeError(f"{where}: inputs must have rank >= 1, got {a.type_str} and {b.type_str}.")
    ash = (1,) + a.shape if a.rank == 1 else a.shape
    bsh = b.shape + (1,) if b.rank == 1 else b.shape
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"{where}: inner dimensions differ: {a.type_str} @ {b.type_str}.")
    batch = broadcast_shapes(ash[:-2], bsh[:-2], where=where)
    out = batch + (ash[-2], bsh[-1])
    if a.rank == 1:
        out = out[:-2] + out[-1:]
    if b.rank == 1:
        out = out[:-1]
    return out


def _accumulate(a, b):
    """float16/bfloat16 products accumulate in float32."""
    if a.dtype.kind == "f" and a.dtype.itemsize < 4 or a.dtype.name == "bfloat16":
        return np.matmul(a.astype(np.float32), b.astype(np.float32))
    return np.matmul(a, b)


@register
class MatMul(OpDef):
    name = "MatMul"
    num_inputs = (2, 2)

    def infer(self, inputs, attrs):
        a, b = inputs
        if a.dtype != b.dtype:
            raise ShapeError(f"MatMul needs inputs of one dtype, got {a.dtype} and {b.dtype}.")
        return [(matmul_shape(a, b), a.dtype)]

    def run(self, inputs, attrs):
        a, b = inputs
        return [as_out(_accumulate(a, b), a.dtype)]

    def flops(self, inputs, outputs, attrs):
        k = inputs[0].shape[-1]
        return 2 * outputs[0].size * k


@register
class Gemm(OpDef):
    """Y = alpha * op(A) @ op(B) + beta * C, A and B 2-D."""
    name = "Gemm"
    attrs = {"alpha": Attr(FLOAT, 1.0), "beta": Attr(FLOAT, 1.0), "transA": Attr(INT, 0), "transB": Attr(INT, 0)}
    num_inputs = (2, 3)

    def infer(self, inputs, attrs):
        a, b = inputs[0], inputs[1]
        if a.rank != 2 or b.rank != 2:
            raise ShapeError(f"Gemm needs 2-D A and B, got {a.type_str} and {b.type_str}.")
        m, k = a.shape[::-1] if attrs["transA"] else a.shape
        k2, n = b.shape[::-1] if attrs["transB"] else b.shape
        if k != k2:
            raise ShapeError(f"Gemm: inner dimensions differ ({k} vs {k2}).")
        c = inputs[2] if len(inputs) > 2 else None
        if c is not None:
            broadcast_shapes(c.shape, (m, n), where="Gemm bias")
        return [((m, n), a.dtype)]

    def run(self, inputs, attrs):
        a, b = inputs[0], inputs[1]
        a = a.T if attrs["transA"] else a
        b = b.T if attrs["transB"] else b
        y = attrs["alpha"] * _accumulate(a, b)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + attrs["beta"] * inputs[2].astype(y.dtype)
        return [as_out(y, inputs[0].dtype)]

    def flops(self, inputs, outputs, attrs):
        a = inputs[0]
        k = a.shape[0] if attrs["transA"] else a.shape[1]
        return 2 * outputs[0].size * k

"""Kernels that read a DequantizeLinear's 8-bit input and dequantize it while loading.

A pre-quantized model's per-tensor DequantizeLinear whose float result a kernel reads element by element
(the Adds of onnxruntime's QDQ residuals, the residual input of a SkipLayerNormalization) need not run as a
kernel of its own: the reader loads the 8-bit tensor and computes float32(q - zero_point) * scale itself, the
arithmetic of the DequantizeLinear kernel. The DequantizeLinear's step is then dead and dropped
(lowering.drop_dead_steps) unless something else still reads its float result (a graph output, a pooling),
so the model makes one kernel call fewer and writes and reads no float32 copy of the tensor.

The readers: every injective kernel (lower_elementwise.injective_call: elementwise ops, QuantizeLinear, and
the index maps of shape and layout ops), SkipLayerNormalization, and the residual of the conv/matmul epilogues
(the int8 GEMM of x86 and arm64, QuantizedConv, the float Epilogue of FusedMatMul/FusedConv).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Value

from .lowering import LoweringContext

EIGHT_BIT = (DType.uint8, DType.int8)


@dataclass(frozen=True)
class Dequantized:
    """A float value that is DequantizeLinear(source, scale, zero_point), per tensor. Compares and prints by its
    arithmetic only (kernel keys hold it; the layers of a model share one kernel)."""
    source: Value = field(repr=False, compare=False)
    scale: float = 1.0
    zero_point: int = 0

    @property
    def dtype(self) -> str:
        """The TIR dtype a kernel loads."""
        return "uint8" if self.source.dtype == DType.uint8 else "int8"

    def expr(self, q, fence: bool = True):
        """The float32 value of one loaded element of `source` (the DequantizeLinear kernel's arithmetic).

        TVM lets LLVM contract a multiply and an add into one FMA; a reader's sum would then skip the product's
        rounding and differ (by an ulp, by a step at a .5 tie after requantizing) from the DequantizeLinear
        kernel followed by the reader, and from the reference. `fence` (an LLVM intrinsic: CPU code only) keeps
        the product rounded; the DequantizeLinear kernel itself, which only stores it, needs none."""
        from tvm import tirx as T
        v = T.Cast("int32", q) - T.const(self.zero_point, "int32")
        x = T.Cast("float32", v) * T.const(self.scale, "float32")
        return T.call_llvm_pure_intrin("float32", "llvm.arithmetic.fence", x) if fence else x

    @property
    def key(self) -> str:
        return f"dq(s={self.scale!r},z={self.zero_point})"


def dequantized(v: Value | None) -> Dequantized | None:
    """What `v` dequantizes, when its producer is a per-tensor DequantizeLinear of an 8-bit tensor with constant
    scale and zero point (the form its own CPU kernel lowers); None otherwise."""
    dq = v.producer if v is not None else None
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q, s = dq.inputs[0], dq.inputs[1]
    z = dq.inputs[2] if len(dq.inputs) > 2 else None
    if q.dtype not in EIGHT_BIT or s.const is None or s.size != 1 or dq.outputs[0].dtype != DType.float32:
        return None
    if z is not None and (z.const is None or z.size != 1):
        return None
    return Dequantized(q, float(np.float32(s.const.reshape(()))), int(z.const.reshape(())) if z is not None else 0)


def read_through(values: Sequence[Value], ctx: LoweringContext) -> tuple[list[Value], list[Dequantized | None]]:
    """The tensors a kernel reads for `values` (a dequantized value's 8-bit source instead of it), and for each
    how to turn a loaded element into the value's (None: as loaded). Only in LLVM CPU code (the fence is an
    LLVM intrinsic; CUDA's kernels read the DequantizeLinear's float result)."""
    if ctx.target.capabilities.vector_lanes_f32 <= 0:
        return list(values), [None] * len(values)
    dqs = [dequantized(v) if v is not None else None for v in values]
    return [d.source if d is not None else v for v, d in zip(values, dqs)], dqs


class _DequantizingTensor:
    """A placeholder of 8-bit source elements whose element reads give the dequantized float (for index maps of a
    lowering's own: injective_call's `raw`, epilogue residuals, SkipLayerNormalization's inputs)."""

    def __init__(self, t, dq: Dequantized):
        self._t, self._dq = t, dq

    def __getitem__(self, idx):
        return self._dq.expr(self._t[idx])

    def __getattr__(self, name):
        return getattr(self._t, name)


def dequantizing(t, dq: Dequantized | None):
    """`t` itself, or `t` seen through `dq` (its element reads dequantize)."""
    return t if dq is None else _DequantizingTensor(t, dq)


def read_key(dqs: Sequence[Dequantized | None]) -> str:
    """The part of a kernel key that says which operands it dequantizes while reading."""
    return ",".join(d.key if d is not None else "-" for d in dqs) if any(dqs) else ""

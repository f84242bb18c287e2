"""Epilogues of fused contractions (FusedMatMul, FusedConv, Gemm's bias):
bias, residual and activation applied to the accumulator tile while it is
still in registers, so the output is written once."""
from __future__ import annotations

from dataclasses import dataclass

from aotc.compiler.ir import Value

from .lower_elementwise import ferf, fsigmoid, ftanh
from .dequantize_reads import Dequantized, dequantizing, read_through
from .lowering import LoweringContext, NoLoweringError, Operand, operand
from .nan_math import at_least, at_most, clamp

ACTIVATIONS = ("none", "relu", "clip", "sigmoid", "hardsigmoid", "hardswish", "silu", "gelu", "gelu_tanh", "tanh",
               "leakyrelu")


@dataclass
class Epilogue:
    bias: Value | None = None          # broadcast along the output's last (column/channel) index
    residual: Value | None = None      # same element count as the output
    activation: str = "none"
    alpha: float | None = None
    beta: float | None = None
    residual_before: bool = False
    residual_dq: Dequantized | None = None  # the residual is this 8-bit tensor's dequantization, read as 8 bits

    @staticmethod
    def from_attrs(attrs: dict, bias=None, residual=None, ctx: LoweringContext | None = None) -> "Epilogue":
        """The epilogue of a fused node; with `ctx`, a residual the model dequantizes is read through
        (dequantize_reads.py)."""
        if attrs["activation"] not in ACTIVATIONS:
            raise NoLoweringError(f"epilogue activation {attrs['activation']!r}")
        rdq = None
        if residual is not None and ctx is not None:
            (residual,), (rdq,) = read_through([residual], ctx)
        return Epilogue(bias, residual, attrs["activation"], attrs["act_alpha"], attrs["act_beta"],
                        bool(attrs["residual_before_activation"]), rdq)

    @property
    def trivial(self) -> bool:
        return self.bias is None and self.residual is None and self.activation == "none"

    def key(self) -> str:
        return (f"epi(b={self.bias is not None},r={self.residual is not None},{self.activation},{self.alpha},"
                f"{self.beta},{self.residual_before},{self.residual_dq})")

    def operands(self, bias_len: int, out_shape) -> list[Operand]:
        ops = []
        if self.bias is not None:
            if self.bias.size != bias_len:
                raise NoLoweringError("an epilogue bias that is not one value per output column")
            ops.append(operand(self.bias, (bias_len,)))
        if self.residual is not None:
            ops.append(operand(self.residual, tuple(out_shape)))
        return ops

    def placeholders(self, bias_len: int, out_shape) -> list:
        from tvm import te
        ts = []
        if self.bias is not None:
            ts.append(te.placeholder((bias_len,), "float32", name="ep_bias"))
        if self.residual is not None:
            ts.append(te.placeholder(tuple(out_shape), self.residual_dq.dtype if self.residual_dq else "float32",
                                     name="ep_residual"))
        return ts

    def apply(self, v, tensors: list, bias_idx, out_idx):
        it = iter(tensors)
        if self.bias is not None:
            v = v + next(it)[bias_idx]
        res = dequantizing(next(it), self.residual_dq)[tuple(out_idx)] if self.residual is not None else None
        if res is not None and self.residual_before:
            v = v + res
        v = activation(self.activation, v, self.alpha, self.beta)
        if res is not None and not self.residual_before:
            v = v + res
        return v


def activation(kind: str, x, alpha=None, beta=None):
    import math
    from tvm import tirx as T
    f = lambda c: T.const(c, "float32")  # noqa: E731
    if kind == "none":
        return x
    if kind == "relu":
        return at_least(x, f(0.0))
    if kind == "clip":
        if alpha is not None:
            x = at_least(x, f(alpha))
        return at_most(x, f(beta)) if beta is not None else x
    if kind == "sigmoid":
        return fsigmoid(x)
    if kind == "hardsigmoid":
        return clamp(x * f(0.2 if alpha is None else alpha) + f(0.5 if beta is None else beta), f(0.0), f(1.0))
    if kind == "hardswish":
        return x * clamp(x / f(6.0) + f(0.5), f(0.0), f(1.0))
    if kind == "silu":
        return x * fsigmoid(x)
    if kind == "gelu":
        return f(0.5) * x * (f(1.0) + ferf(x * f(1 / math.sqrt(2))))
    if kind == "gelu_tanh":
        return f(0.5) * x * (f(1.0) + ftanh(f(math.sqrt(2 / math.pi)) * (x + f(0.044715) * x * x * x)))
    if kind == "tanh":
        return ftanh(x)
    if kind == "leakyrelu":
        return T.Select(x >= f(0.0), x, x * f(0.01 if alpha is None else alpha))
    raise NoLoweringError(f"epilogue activation {kind!r}")

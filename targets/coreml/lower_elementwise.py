"""Elementwise ops -> MIL: unary math and activations, binary arithmetic/comparison/logic (MIL broadcasts
like NumPy), Where (MIL's `select`), Cast, Clip, the variadic Min/Max/Sum/Mean, IsNaN/IsInf; and the
activation epilogues of the fused ops (`activation`), shared with lower_linalg and lower_nn."""
from __future__ import annotations

import numpy as np

from aotc.compiler.dtypes import DType

from .lowering import LoweringContext, lowers

UNARY = {"Abs": "abs", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Tanh": "tanh", "Erf": "erf", "Sin": "sin",
         "Cos": "cos", "Floor": "floor", "Ceil": "ceil", "Sign": "sign", "Relu": "relu", "Sigmoid": "sigmoid",
         "Softplus": "softplus", "Identity": "identity", "Dropout": "identity"}
BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Pow": "pow", "Equal": "equal", "Less": "less",
          "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
          "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor"}


def _float_only(node, deployment):
    x = node.inputs[0]
    if not x.dtype.is_float and node.op_type not in ("Identity", "Dropout", "Abs", "Relu", "Sign", "Neg"):
        return f"MIL's {UNARY.get(node.op_type, node.op_type)} takes float tensors, not {x.dtype}"
    return None


@lowers(*UNARY, check=_float_only)
def unary(ctx: LoweringContext, node):
    x = ctx.x(node.inputs[0])
    if node.op_type == "Relu" and not node.inputs[0].dtype.is_float:  # MIL relu is float-only
        return ctx.mb.maximum(x=x, y=np.int32(0), name=ctx.name(node))
    return getattr(ctx.mb, UNARY[node.op_type])(x=x, name=ctx.name(node))


@lowers("Neg")
def neg(ctx, node):
    return ctx.mb.mul(x=ctx.x(node.inputs[0]), y=ctx.scalar(-1, node.inputs[0]), name=ctx.name(node))


@lowers("Reciprocal", check=_float_only)
def reciprocal(ctx, node):
    # not MIL's `inverse`: it computes 1 / (x + epsilon) with epsilon 1e-4 by default
    return ctx.mb.real_div(x=np.float32(1), y=ctx.x(node.inputs[0]), name=ctx.name(node))


@lowers("LeakyRelu", "Elu", "HardSigmoid", "HardSwish", "Gelu", check=_float_only)
def unary_with_attrs(ctx, node):
    a = node.attrs
    kind = {"LeakyRelu": "leakyrelu", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Elu": "elu"}.get(
        node.op_type, "gelu_tanh" if a.get("approximate") == "tanh" else "gelu")
    return activation(ctx, ctx.x(node.inputs[0]), kind, a.get("alpha"), a.get("beta"), ctx.name(node))


def activation(ctx: LoweringContext, x, kind: str, alpha, beta, name: str):
    """An epilogue activation (compiler.ops.fused.ACTIVATIONS) or a unary activation op, in MIL."""
    mb = ctx.mb
    if kind == "none":
        return x
    simple = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "silu": "silu"}
    if kind in simple:
        return getattr(mb, simple[kind])(x=x, name=name)
    if kind == "gelu":
        return mb.gelu(x=x, mode="EXACT", name=name)
    if kind == "gelu_tanh":
        return mb.gelu(x=x, mode="TANH_APPROXIMATION", name=name)
    if kind == "leakyrelu":
        return mb.leaky_relu(x=x, alpha=np.float32(0.01 if alpha is None else alpha), name=name)
    if kind == "elu":
        return mb.elu(x=x, alpha=np.float32(1.0 if alpha is None else alpha), name=name)
    if kind == "hardsigmoid":
        return mb.sigmoid_hard(x=x, alpha=np.float32(0.2 if alpha is None else alpha),
                               beta=np.float32(0.5 if beta is None else beta), name=name)
    if kind == "hardswish":  # MIL has no hard_swish: x * hardsigmoid(x; 1/6, 1/2), as coremltools' torch frontend
        gate = mb.sigmoid_hard(x=x, alpha=np.float32(1 / 6), beta=np.float32(0.5), name=name + "_gate")
        return mb.mul(x=x, y=gate, name=name)
    if kind == "clip":
        return clip(ctx, x, alpha, beta, np.float32, name)
    raise AssertionError(kind)


def clip(ctx, x, lo, hi, np_type, name):
    """MIL `clip` needs both bounds; one missing bound is a single maximum/minimum instead."""
    mb = ctx.mb
    if lo is not None and hi is not None and np_type is np.float32:
        return mb.clip(x=x, alpha=np_type(lo), beta=np_type(hi), name=name)
    if lo is not None:
        x = mb.maximum(x=x, y=np_type(lo), name=name if hi is None else name + "_min")
    if hi is not None:
        x = mb.minimum(x=x, y=np_type(hi), name=name)
    return x if (lo is not None or hi is not None) else mb.identity(x=x, name=name)


@lowers("Clip")
def clip_op(ctx, node):
    x = node.inputs[0]
    np_type = np.float32 if x.dtype.is_float else np.int32
    lo, hi = node.attrs["min"], node.attrs["max"]
    if not x.dtype.is_float:
        lo = None if lo is None else int(np.ceil(lo))
        hi = None if hi is None else int(np.floor(hi))
    return clip(ctx, ctx.x(x), lo, hi, np_type, ctx.name(node))


def _binary_check(node, deployment):
    a = node.inputs[0]
    if node.op_type == "Pow" and not a.dtype.is_float:
        return "MIL's pow takes float tensors"
    if node.op_type == "Pow" and node.inputs[1].dtype != a.dtype:
        return "MIL's pow needs one dtype for base and exponent"
    return None


@lowers(*BINARY, check=_binary_check)
def binary(ctx, node):
    a, b = (ctx.x(v) for v in node.inputs)
    return getattr(ctx.mb, BINARY[node.op_type])(x=a, y=b, name=ctx.name(node))


@lowers("Div")
def div(ctx, node):
    mb = ctx.mb
    a, b = (ctx.x(v) for v in node.inputs)
    if node.inputs[0].dtype.is_float:
        return mb.real_div(x=a, y=b, name=ctx.name(node))
    # ONNX integer Div truncates toward zero; MIL's floor_div floors. Dividing in float and casting back
    # truncates (MIL casts float -> int toward zero) and is exact for |a| < 2**24.
    fa = mb.cast(x=a, dtype="fp32", name=ctx.name(node, "a"))
    fb = mb.cast(x=b, dtype="fp32", name=ctx.name(node, "b"))
    q = mb.real_div(x=fa, y=fb, name=ctx.name(node, "q"))
    return mb.cast(x=q, dtype="int32", name=ctx.name(node))


@lowers("Mod")
def mod(ctx, node):
    """fmod=0 (integers): MIL's floor `mod`, the divisor's sign, as ONNX says. fmod=1: C's fmod,
    a - b*trunc(a/b) with trunc as sign*floor(abs) (MIL has no trunc); integers go through float32 as Div
    does (exact for |a| < 2**24)."""
    mb = ctx.mb
    a, b = (ctx.x(v) for v in node.inputs)
    if not node.attrs["fmod"]:
        return mb.mod(x=a, y=b, name=ctx.name(node))
    is_int = not node.inputs[0].dtype.is_float
    if is_int:
        a = mb.cast(x=a, dtype="fp32", name=ctx.name(node, "a"))
        b = mb.cast(x=b, dtype="fp32", name=ctx.name(node, "b"))
    q = mb.real_div(x=a, y=b, name=ctx.name(node, "q"))
    t = mb.mul(x=mb.sign(x=q, name=ctx.name(node, "sign")),
               y=mb.floor(x=mb.abs(x=q, name=ctx.name(node, "abs")), name=ctx.name(node, "floor")),
               name=ctx.name(node, "trunc"))
    r = mb.sub(x=a, y=mb.mul(x=b, y=t, name=ctx.name(node, "bt")), name=ctx.name(node, "r" if is_int else ""))
    return mb.cast(x=r, dtype="int32", name=ctx.name(node)) if is_int else r


@lowers("Not")
def logical_not(ctx, node):
    return ctx.mb.logical_not(x=ctx.x(node.inputs[0]), name=ctx.name(node))


@lowers("Min", "Max", "Sum", "Mean")
def variadic(ctx, node):
    mb = ctx.mb
    fn = {"Min": mb.minimum, "Max": mb.maximum, "Sum": mb.add, "Mean": mb.add}[node.op_type]
    out = ctx.x(node.inputs[0])
    for i, v in enumerate(node.inputs[1:]):
        last = i == len(node.inputs) - 2 and node.op_type != "Mean"
        out = fn(x=out, y=ctx.x(v), name=ctx.name(node, "" if last else f"step{i}"))
    if node.op_type == "Mean":
        out = mb.mul(x=out, y=np.float32(1.0 / len(node.inputs)), name=ctx.name(node))
    elif len(node.inputs) == 1:
        out = mb.identity(x=out, name=ctx.name(node))
    return out


@lowers("Where")
def where(ctx, node):
    c, a, b = (ctx.x(v) for v in node.inputs)
    return ctx.mb.select(cond=c, a=a, b=b, name=ctx.name(node))


@lowers("IsNaN")
def isnan(ctx, node):
    x = ctx.x(node.inputs[0])
    return ctx.mb.not_equal(x=x, y=x, name=ctx.name(node))


@lowers("IsInf")
def isinf(ctx, node):
    mb = ctx.mb
    x = ctx.x(node.inputs[0])
    tests = []
    if node.attrs["detect_positive"]:
        tests.append(mb.equal(x=x, y=np.float32(np.inf), name=ctx.name(node, "pos")))
    if node.attrs["detect_negative"]:
        tests.append(mb.equal(x=x, y=np.float32(-np.inf), name=ctx.name(node, "neg")))
    if not tests:  # detects nothing: always False (x == x and x != x)
        same = mb.equal(x=x, y=x, name=ctx.name(node, "same"))
        return mb.logical_and(x=same, y=mb.not_equal(x=x, y=x, name=ctx.name(node, "nan")), name=ctx.name(node))
    return tests[0] if len(tests) == 1 else mb.logical_or(x=tests[0], y=tests[1], name=ctx.name(node))


CASTS = {DType.float32: "fp32", DType.float16: "fp16", DType.int32: "int32", DType.int64: "int32", DType.bool: "bool"}


def _cast_check(node, deployment):
    src, to = node.inputs[0].dtype, DType(node.attrs["to"])
    if to not in CASTS or src not in CASTS and src not in (DType.uint8, DType.int8):
        return f"aotc casts in Core ML from {', '.join(sorted({str(d) for d in CASTS}))}, uint8 or int8 to the first five"
    return None


@lowers("Cast", check=_cast_check)
def cast(ctx, node):
    mb = ctx.mb
    x, src, to = ctx.x(node.inputs[0]), node.inputs[0].dtype, DType(node.attrs["to"])
    # an 8-bit value is a float tensor holding integers (float-coded) or, on iOS17+, a real uint8/int8 tensor
    have = "fp32" if node.inputs[0].name in ctx.float_coded else CASTS.get(src, src.value)
    if have == CASTS[to]:
        return mb.identity(x=x, name=ctx.name(node))
    return mb.cast(x=x, dtype=CASTS[to], name=ctx.name(node))

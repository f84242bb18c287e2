"""Elementwise ops (unary math, broadcasting binary ops, Where, Cast, Clip,
the activations) as one vectorized injective kernel per node."""
from __future__ import annotations

import math
from typing import Callable, Sequence

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node, Value

from .dequantize_reads import dequantizing, read_key, read_through
from .lowering import Call, LoweringContext, NoLoweringError, attrs_key, lowers, operand, sig
from .schedules import prim_func, schedule_injective
from .nan_math import at_least, at_most, clamp, nan_max, nan_min

TVM_DTYPE = {DType.float32: "float32", DType.int32: "int32", DType.int64: "int64", DType.int8: "int8",
             DType.uint8: "uint8", DType.bool: "bool", DType.float16: "float16"}


def tvm_dtype(d: DType) -> str:
    try:
        return TVM_DTYPE[d]
    except KeyError:
        raise NoLoweringError(f"dtype {d} has no CPU kernels yet") from None


def dtype_of(e) -> str:
    """The TIR dtype string of an expression (this TVM exposes it via .ty)."""
    if hasattr(e, "ty"):
        return str(e.ty.dtype)
    return str(e.dtype)  # a TensorSlice (an element of a te tensor)


def bcast_index(in_shape: Sequence[int], out_idx: Sequence) -> tuple:
    """Index into a tensor of `in_shape` broadcast (NumPy rules) to the output index."""
    off = len(out_idx) - len(in_shape)
    return tuple(0 if d == 1 else out_idx[off + i] for i, d in enumerate(in_shape))


def load(t, shape, idx):
    return t[bcast_index(shape, idx)] if shape else t()


def injective_call(node: Node, ctx: LoweringContext, inputs: Sequence[Value], out: Value,
                   fcompute: Callable | None, extra_key: str = "", in_shapes: Sequence | None = None,
                   raw: Callable | None = None, out_shape: Sequence[int] | None = None) -> Call:
    """A kernel computing `out[idx] = fcompute(loads, idx)` where `loads[i](idx)`
    reads input i broadcast to the output index; or, with `raw`,
    `out[idx] = raw(tensors, idx)` for index maps of the lowering's own.
    An input that a per-tensor DequantizeLinear makes is read from its 8-bit
    source and dequantized in the load (dequantize_reads.py), so that
    DequantizeLinear needs no kernel of its own."""
    shapes = [tuple(s) for s in (in_shapes or [v.shape for v in inputs])]
    out_shape = tuple(out.shape if out_shape is None else out_shape)
    inputs, dqs = read_through(inputs, ctx)
    if raw is None:
        # Elementwise maps do not care about axes: merge neighbours that broadcast alike, so the
        # innermost axis is long and splits into whole vectors ([1,144,56,56] -> [451584]).
        out_shape, shapes = collapse_broadcast(out_shape, shapes)
    ops = [operand(v, s) for v, s in zip(inputs, shapes)]
    ops.append(operand(out, out_shape))
    key = f"{node.op_type}|{attrs_key(node)}|{extra_key}|{read_key(dqs)}|{sig(*ops)}"
    lanes = ctx.lanes

    def build():
        from tvm import te
        phs = [te.placeholder(o.shape, tvm_dtype(o.dtype), name=f"in{i}") for i, o in enumerate(ops[:-1])]
        loaders = [(lambda t, s, d: (lambda idx: load(t, s, idx) if d is None else d.expr(load(t, s, idx))))(
            t, o.shape, d) for t, o, d in zip(phs, ops[:-1], dqs)]
        if raw is not None:
            tensors = [dequantizing(t, d) for t, d in zip(phs, dqs)]
            res = te.compute(out_shape, lambda *idx: raw(tensors, idx), name="out")
        else:
            res = te.compute(out_shape, lambda *idx: fcompute(loaders, idx), name="out")
        lanes_here = lanes if out.dtype.itemsize == 4 else max(lanes * 4 // max(out.dtype.itemsize, 1), 1)
        lanes_here = min(lanes_here, 64)
        return prim_func(phs + [res], lambda sch: schedule_injective(sch, "out", out_shape or (1,), lanes_here))

    return Call(key, build, ops, node, flops=out.size)


def collapse_broadcast(out_shape, in_shapes):
    """The fewest axes that express the same broadcasting elementwise map."""
    r = len(out_shape)
    aligned = [(1,) * (r - len(s)) + tuple(s) for s in in_shapes]
    axes = [a for a in range(r) if out_shape[a] != 1]
    if not axes:
        return (1,), [(1,) for _ in in_shapes]
    groups: list[list[int]] = [[axes[0]]]
    for a in axes[1:]:
        prev = groups[-1][-1]
        if all((s[a] == 1) == (s[prev] == 1) for s in aligned):
            groups[-1].append(a)
        else:
            groups.append([a])
    new_out = tuple(math.prod(out_shape[a] for a in g) for g in groups)
    new_in = [tuple(math.prod(s[a] for a in g) for g in groups) for s in aligned]
    return new_out, new_in


# -- float math ----------------------------------------------------------------
def fexp(x):
    """exp as a vectorizable polynomial (LLVM would call scalar expf per element):
    exp(x) = 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], Cephes' expf coefficients (~1 ulp)."""
    from tvm import tirx as T
    f32 = "float32"
    x0 = x
    x = T.max(T.min(x, T.const(88.3762626647949, f32)), T.const(-87.3365447504, f32))
    n = T.floor(x * T.const(1.44269504088896341, f32) + T.const(0.5, f32))
    r = x - n * T.const(0.693359375, f32) + n * T.const(2.12194440e-4, f32)
    p = T.const(1.9875691500e-4, f32)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + T.const(c, f32)
    p = p * r * r + r + T.const(1.0, f32)
    ni = T.Cast("int32", n)
    scale = T.reinterpret(f32, T.shift_left(ni + T.const(127, "int32"), T.const(23, "int32")))
    # Below the smallest normal result exp is 0, as in libm. Returning 2^-126 instead would feed denormals
    # downstream (masked softmax probabilities), and arithmetic on denormals is ~100x slower on x86.
    # The clamp above turned NaN into a number: give NaN back (one blend, not a NaN-aware clamp).
    return T.Select(x0 < T.const(-87.3365447504, f32), T.const(0.0, f32), T.Select(T.isnan(x0), x0, p * scale))


def ferf(x):
    """erf as a rational polynomial on [-4, 4] (Eigen's generic_fast_erf_float, a few ulp); LLVM would
    call scalar erff per element."""
    from tvm import tirx as T
    f32 = "float32"
    x = T.max(T.min(x, T.const(4.0, f32)), T.const(-4.0, f32))
    x2 = x * x
    p = x2 * T.const(-2.72614225801306e-10, f32) + T.const(2.77068142495902e-08, f32)
    for c in (-2.10102402082508e-06, -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02):
        p = x2 * p + T.const(c, f32)
    p = x * p
    q = x2 * T.const(-1.45660718464996e-05, f32) + T.const(-2.13374055278905e-04, f32)
    for c in (-1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02):
        q = x2 * q + T.const(c, f32)
    return p / q


def ftanh(x):
    from tvm import tirx as T
    # tanh(x) = 1 - 2/(exp(2x)+1); exact enough in float32 away from 0, and near 0 use x - x^3/3 + 2x^5/15.
    f32 = "float32"
    ax = T.abs(x)
    e = fexp(T.const(2.0, f32) * ax)
    big = T.const(1.0, f32) - T.const(2.0, f32) / (e + T.const(1.0, f32))
    x2 = x * x
    small = ax * (T.const(1.0, f32) + x2 * (T.const(-1.0 / 3, f32) + x2 * (T.const(2.0 / 15, f32)
                                                                          + x2 * T.const(-17.0 / 315, f32))))
    t = T.Select(ax < T.const(0.0625, f32), small, big)
    return T.Select(x < T.const(0.0, f32), -t, t)


def fsigmoid(x):
    from tvm import tirx as T
    f32 = "float32"
    # exp of a non-positive argument only, so nothing overflows.
    e = fexp(-T.abs(x))
    pos = T.const(1.0, f32) / (T.const(1.0, f32) + e)
    return T.Select(x >= T.const(0.0, f32), pos, e / (T.const(1.0, f32) + e))


def _c(v, dtype):
    from tvm import tirx as T
    return T.const(v, dtype)


def unary_expr(op: str, x, dt: str, attrs: dict):
    from tvm import tirx as T
    f = lambda v: _c(v, dt)  # noqa: E731
    if op == "Neg":
        return -x
    if op == "Abs":
        return T.abs(x)
    if op == "Relu":
        return at_least(x, f(0))
    if dt != "float32":
        raise NoLoweringError(f"{op} of {dt} has no CPU kernel yet")
    if op == "Exp":
        return fexp(x)
    if op == "Log":
        return T.log(x)
    if op == "Sqrt":
        return T.sqrt(x)
    if op == "Reciprocal":
        return f(1.0) / x
    if op == "Tanh":
        return ftanh(x)
    if op == "Erf":
        return ferf(x)
    if op == "Sigmoid":
        return fsigmoid(x)
    if op == "Floor":
        return T.floor(x)
    if op == "Ceil":
        return T.ceil(x)
    if op == "Sin":
        return T.sin(x)
    if op == "Cos":
        return T.cos(x)
    if op == "Sign":
        return T.Select(x > f(0), f(1), T.Select(x < f(0), f(-1), f(0)))
    if op == "LeakyRelu":
        return T.Select(x >= f(0), x, x * f(attrs["alpha"]))
    if op == "Elu":
        return T.Select(x > f(0), x, f(attrs["alpha"]) * (fexp(at_most(x, f(0))) - f(1)))
    if op == "Softplus":
        return at_least(x, f(0)) + T.log(f(1) + fexp(-T.abs(x)))
    if op == "HardSigmoid":
        return clamp(x * f(attrs["alpha"]) + f(attrs["beta"]), f(0), f(1))
    if op == "HardSwish":
        return x * clamp(x / f(6.0) + f(0.5), f(0), f(1))
    if op == "Gelu":
        if attrs["approximate"] == "tanh":
            return f(0.5) * x * (f(1) + ftanh(f(math.sqrt(2 / math.pi)) * (x + f(0.044715) * x * x * x)))
        return f(0.5) * x * (f(1) + ferf(x * f(1 / math.sqrt(2))))
    raise NoLoweringError(f"no CPU kernel for {op}")


UNARY = ("Neg", "Abs", "Relu", "Exp", "Log", "Sqrt", "Reciprocal", "Tanh", "Erf",
         "Sigmoid", "Floor", "Ceil", "Sin", "Cos", "Sign", "LeakyRelu", "Elu", "Softplus", "HardSigmoid",
         "HardSwish", "Gelu")


@lowers(*UNARY)
def lower_unary(node: Node, ctx: LoweringContext):
    x, y = node.inputs[0], node.outputs[0]
    dt = tvm_dtype(x.dtype)
    if dt != "float32" and node.op_type not in ("Neg", "Abs", "Relu"):
        raise NoLoweringError(f"{node.op_type} of {dt} has no CPU kernel yet")
    return [injective_call(node, ctx, [x], y, lambda ld, i: unary_expr(node.op_type, ld[0](i), dt, node.attrs))]


@lowers("Clip")
def lower_clip(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    x, y = node.inputs[0], node.outputs[0]
    dt = tvm_dtype(x.dtype)
    lo, hi = node.attrs["min"], node.attrs["max"]
    if x.dtype.is_int:
        import numpy as np
        info = np.iinfo(x.dtype.numpy)
        lo = None if lo is None else int(max(np.ceil(lo), info.min))
        hi = None if hi is None else int(min(np.floor(hi), info.max))

    def f(ld, i):
        v = ld[0](i)
        if lo is not None:
            v = at_least(v, T.const(lo, dt))
        if hi is not None:
            v = at_most(v, T.const(hi, dt))
        return v
    return [injective_call(node, ctx, [x], y, f)]


@lowers("Cast")
def lower_cast(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    x, y = node.inputs[0], node.outputs[0]
    src, dst = tvm_dtype(x.dtype), tvm_dtype(y.dtype)

    def f(ld, i):
        v = ld[0](i)
        if dst == "bool":
            return v != T.const(0, src) if src != "bool" else v
        if src == "bool":
            return T.Select(v, T.const(1, dst), T.const(0, dst))
        if src == "float32" and y.dtype.is_int:
            return T.Cast(dst, T.trunc(v))
        return T.Cast(dst, v)
    return [injective_call(node, ctx, [x], y, f)]


@lowers("Not")
def lower_not(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    return [injective_call(node, ctx, [node.inputs[0]], node.outputs[0], lambda ld, i: T.Not(ld[0](i)))]


@lowers("IsNaN", "IsInf")
def lower_isnan(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    x = node.inputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"{node.op_type} of {x.dtype} has no CPU kernel yet")
    inf = T.const(float("inf"), "float32")
    if node.op_type == "IsNaN":
        f = lambda ld, i: T.isnan(ld[0](i))  # noqa: E731
    else:
        pos, neg = node.attrs["detect_positive"], node.attrs["detect_negative"]

        def f(ld, i):
            v = ld[0](i)
            conds = ([v == inf] if pos else []) + ([v == -inf] if neg else [])
            if not conds:
                return T.const(False, "bool")
            return conds[0] if len(conds) == 1 else T.Or(conds[0], conds[1])
    return [injective_call(node, ctx, [x], node.outputs[0], f)]


def binary_expr(op: str, a, b, dt: str):
    from tvm import tirx as T
    if op == "Add":
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    if op == "Div":
        return T.truncdiv(a, b) if dt.startswith(("int", "uint")) else a / b
    if op == "Pow":
        if dt != "float32":
            raise NoLoweringError(f"Pow of {dt} has no CPU kernel yet")
        return T.pow(a, b)
    if op == "Equal":
        # TVM compares bools with a float compare (an LLVM verifier error): build it from logic ops.
        return T.Not(_xor(a, b)) if dt == "bool" else a == b
    if op == "Less":
        return a < b
    if op == "Greater":
        return a > b
    if op == "LessOrEqual":
        return a <= b
    if op == "GreaterOrEqual":
        return a >= b
    if op == "And":
        return T.And(a, b)
    if op == "Or":
        return T.Or(a, b)
    if op == "Xor":
        return _xor(a, b)
    if op == "Mod":  # (the fmod=1 form; lower_mod handles the integer fmod=0 form)
        if dt.startswith(("int", "uint")):
            return T.truncmod(a, b)
        # LLVM codegen has no frem lowering here; a - b*trunc(a/b) is C's fmod up to the quotient's rounding.
        return a - b * T.trunc(a / b)
    if op in ("Min", "Max", "Sum", "Mean"):
        return {"Min": nan_min, "Max": nan_max}.get(op, lambda p, q: p + q)(a, b)
    raise NoLoweringError(f"no CPU kernel for {op}")


def _xor(a, b):
    from tvm import tirx as T
    return T.Or(T.And(a, T.Not(b)), T.And(T.Not(a), b))


BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
          "And", "Or", "Xor")


def _pow_by_constant(e: float):
    """x ** e as multiplies (or a square root) for the exponents models use; None for others. Exact for
    integer exponents as powf is to within an ulp or so (the tests compare at 1e-5)."""
    from tvm import tirx as T
    return {1.0: lambda x: x, 2.0: lambda x: x * x, 3.0: lambda x: x * x * x, 4.0: lambda x: (x * x) * (x * x),
            0.5: T.sqrt, -1.0: lambda x: T.const(1.0, "float32") / x}.get(e)


@lowers(*BINARY)
def lower_binary(node: Node, ctx: LoweringContext):
    a, b = node.inputs
    dt = tvm_dtype(a.dtype)
    if node.op_type == "Pow" and (a.dtype != DType.float32 or b.dtype != DType.float32):
        raise NoLoweringError("Pow has CPU kernels for float32 only")
    if node.op_type == "Pow" and b.const is not None and b.size == 1:
        small = _pow_by_constant(float(b.const.reshape(-1)[0]))
        if small is not None:  # T5's RMSNorm squares with Pow(x, 2): a call to powf per element ran at 4% of roofline
            return [injective_call(node, ctx, [a], node.outputs[0], lambda ld, i: small(ld[0](i)),
                                   extra_key=f"pow_const={float(b.const.reshape(-1)[0])!r}")]
    return [injective_call(node, ctx, [a, b], node.outputs[0],
                           lambda ld, i: binary_expr(node.op_type, ld[0](i), ld[1](i), dt))]


@lowers("Mod")
def lower_mod(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    a, b = node.inputs
    dt = tvm_dtype(a.dtype)
    if node.attrs["fmod"]:
        f = lambda ld, i: binary_expr("Mod", ld[0](i), ld[1](i), dt)  # noqa: E731
    else:
        f = lambda ld, i: T.floormod(ld[0](i), ld[1](i))  # noqa: E731  (the divisor's sign)
    return [injective_call(node, ctx, [a, b], node.outputs[0], f, extra_key=f"fmod={node.attrs['fmod']}")]


@lowers("Min", "Max", "Sum", "Mean")
def lower_variadic(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    ins = list(node.inputs)
    dt = tvm_dtype(ins[0].dtype)
    if node.op_type == "Mean" and dt != "float32":
        raise NoLoweringError("Mean has CPU kernels for float32 only")

    def f(ld, i):
        acc = ld[0](i)
        for j in range(1, len(ins)):
            acc = binary_expr(node.op_type, acc, ld[j](i), dt)
        if node.op_type == "Mean":
            acc = acc / T.const(float(len(ins)), dt)
        return acc
    return [injective_call(node, ctx, ins, node.outputs[0], f)]


@lowers("Where")
def lower_where(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    c, x, y = node.inputs
    tvm_dtype(x.dtype)
    return [injective_call(node, ctx, [c, x, y], node.outputs[0],
                           lambda ld, i: T.Select(ld[0](i), ld[1](i), ld[2](i)))]

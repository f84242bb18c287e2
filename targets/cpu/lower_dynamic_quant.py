"""DynamicQuantizeLinear on the CPU targets: uint8 y, y_scale, y_zero_point from x's range at run time
(compiler/ops/qoperator.py has the definition, as onnxruntime computes it in float32).

Two kernels: the range (one min/max pass over x as [rows, length] rows with vector partials, then the
scalar scale and zero point), and the quantization of every element with that scale and zero point read
at run time (the same clamp-round-shift as the constant-scale QuantizeLinear, with x / y_scale divided, as
onnxruntime's MLAS kernel does)."""
from __future__ import annotations

from compiler.dtypes import DType
from compiler.ir import Node

from .lower_reduce import row_reduce, te_reducer
from .lowering import Call, LoweringContext, NoLoweringError, lowers, operand, sig
from .schedules import PARALLEL_MIN_ELEMENTS, prim_func


def _range_shape(n: int) -> tuple[int, int]:
    """x seen as [rows, length] for the min/max pass: whole vectors per row when n allows it."""
    length = n
    for cand in (4096, 1024, 256, 64, 16):
        if n % cand == 0 and n > cand:
            length = cand
            break
    return n // length, length


@lowers("DynamicQuantizeLinear")
def lower_dynamic_quantize_linear(node: Node, ctx: LoweringContext):
    x = node.inputs[0]
    y, scale, zp = node.outputs
    if x.dtype != DType.float32:
        raise NoLoweringError(f"DynamicQuantizeLinear of {x.dtype} has no CPU kernel")
    n, lanes = max(x.size, 1), ctx.lanes
    rows, length = _range_shape(n)

    def build_range():
        from tvm import te
        from tvm import tirx as T
        f32, zero = "float32", T.const(0.0, "float32")
        X = te.placeholder((rows, length), f32, name="x")
        mx, mx_st = row_reduce(X, rows, length, "max", lanes, "mx")  # NaN-propagating, as the reference
        mn, mn_st = row_reduce(X, rows, length, "min", lanes, "mn")
        r, r2 = te.reduce_axis((0, rows), name="r"), te.reduce_axis((0, rows), name="r2")
        hi = te.compute((1,), lambda i: te_reducer("max")(mx[r], axis=r), name="hi")
        lo = te.compute((1,), lambda i: te_reducer("min")(mn[r2], axis=r2), name="lo")

        def scale_of(i):  # (max(hi, 0) - min(lo, 0)) / 255, or 1 for an all-zero x (onnxruntime's choice)
            top, bot = T.max(hi[i], zero), T.min(lo[i], zero)
            return T.Select(top == bot, T.const(1.0, f32), (top - bot) / T.const(255.0, f32))
        S = te.compute((1,), scale_of, name="scale")

        def zp_of(i):  # round_half_even(clamp(0 - min(lo, 0) / scale, 0, 255))
            z = T.max(T.min(zero - T.min(lo[i], zero) / S[i], T.const(255.0, f32)), zero)
            return T.Cast("uint8", T.Cast("int32", T.call_llvm_pure_intrin(f32, "llvm.nearbyint", z)))
        Z = te.compute((1,), zp_of, name="zp")

        def schedule(sch):
            for name in mx_st + mn_st:
                if name.endswith("_part"):  # vector partial min/max along each row
                    b = sch.get_sblock(name)
                    _, v, k = sch.get_loops(b)
                    sch.reorder(k, v)
                    sch.vectorize(v)
                    sch.vectorize(sch.get_loops(sch.decompose_reduction(b, k))[-1])
        return prim_func([X, S, Z], schedule)

    ops = [operand(x, (rows, length)), operand(scale, (1,)), operand(zp, (1,))]
    range_call = Call(f"dynamic_quantize_range|{sig(*ops)}", build_range, ops, node, num_outputs=2, flops=2 * n)

    def build_quantize():
        from tvm import te
        from tvm import tirx as T
        f32 = "float32"
        X = te.placeholder((n,), f32, name="x")
        S = te.placeholder((1,), f32, name="scale")
        Z = te.placeholder((1,), "uint8", name="zp")

        def q(i):  # clamp to the integer bounds, round half to even, shift (as quantize_expr, scale at run time)
            zpf = T.Cast(f32, Z[0])
            v = T.max(T.min(X[i] / S[0], T.const(255.0, f32) - zpf), T.const(0.0, f32) - zpf)
            v = T.call_llvm_pure_intrin(f32, "llvm.nearbyint", v)
            return T.Cast("uint8", T.Cast("int32", v) + T.Cast("int32", Z[0]))
        Y = te.compute((n,), q, name="y")

        def schedule(sch):
            (loop,) = sch.get_loops(sch.get_sblock("y"))
            if n % lanes == 0:
                outer, inner = sch.split(loop, [None, lanes])
                sch.vectorize(inner)
                if n >= PARALLEL_MIN_ELEMENTS:
                    sch.parallel(outer)
        return prim_func([X, S, Z, Y], schedule)

    qops = [operand(x, (n,)), operand(scale, (1,)), operand(zp, (1,)), operand(y, (n,))]
    quant_call = Call(f"dynamic_quantize_apply|{sig(*qops)}", build_quantize, qops, node, flops=3 * n)
    return [range_call, quant_call]

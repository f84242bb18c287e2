"""QuantizedAdd and QuantizedGlobalAveragePool on the CPU: onnxruntime's QLinearAdd and
QLinearGlobalAveragePool arithmetic (compiler/ops/qlinear.py), to the bit.

QuantizedAdd is one vectorized map from the two 8-bit tensors to the 8-bit output. Its two fused
multiply-adds are llvm.fma calls, not a*b + c left to LLVM: the arithmetic is defined with one rounding
each, and the kernel must not depend on whether LLVM contracts. QuantizedGlobalAveragePool sums each
channel's pixels in int32 and scales the sum once."""
from __future__ import annotations

import math

from aotc.compiler.ir import Node
from aotc.compiler.ops.qlinear import add_constants, pool_scale

from .int8_common import quantize_expr, scalar_const
from .lower_elementwise import injective_call, tvm_dtype
from .lowering import Call, LoweringContext, NoLoweringError, lowers, operand, sig
from .schedules import PARALLEL_MIN_ELEMENTS, prim_func


def _fma(a, b, c):
    from tvm import tirx as T
    return T.call_llvm_pure_intrin("float32", "llvm.fma", a, b, c)


def _needs_llvm_cpu(node: Node, ctx: LoweringContext) -> None:
    if ctx.target.capabilities.vector_lanes_f32 <= 0:
        raise NoLoweringError(f"{node.op_type} has CPU (LLVM) kernels only; the target pass runs it in float")


def _round_saturate(v, qdtype: str):
    """saturate(round_half_even(v)) for v that already holds the zero point."""
    return quantize_expr(v, 1.0, 0, qdtype)


@lowers("QuantizedAdd")
def lower_quantized_add(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    _needs_llvm_cpu(node, ctx)
    a, sa, za, b, sb, zb, sy, zy = node.inputs
    out = node.outputs[0]
    consts = [scalar_const(v, what, node) for v, what in ((sa, "a_scale"), (za, "a_zero_point"), (sb, "b_scale"),
                                                           (zb, "b_zero_point"), (sy, "y_scale"), (zy, "y_zero_point"))]
    ra, rb, c0 = (float(v) for v in add_constants(*consts))
    qdt = tvm_dtype(out.dtype)

    def f(ld, i):
        af, bf = T.Cast("float32", ld[0](i)), T.Cast("float32", ld[1](i))
        v = _fma(af, T.const(ra, "float32"), _fma(bf, T.const(rb, "float32"), T.const(c0, "float32")))
        return _round_saturate(v, qdt)
    return [injective_call(node, ctx, [a, b], out, f, extra_key=f"ra={ra!r},rb={rb!r},c0={c0!r}")]


@lowers("QuantizedGlobalAveragePool")
def lower_quantized_global_average_pool(node: Node, ctx: LoweringContext):
    _needs_llvm_cpu(node, ctx)
    x, sx, zx, sy, zy = node.inputs
    out = node.outputs[0]
    rows, hw = math.prod(x.shape[:2]), math.prod(x.shape[2:])
    scale = float(pool_scale(scalar_const(sx, "x_scale", node), scalar_const(sy, "y_scale", node), hw))
    zx_, zy_ = int(scalar_const(zx, "x_zero_point", node)), int(scalar_const(zy, "y_zero_point", node))
    ops = [operand(x, (rows, hw)), operand(out, (rows,))]
    key = f"qglobal_avg_pool|{scale!r}|{zx_}|{zy_}|{sig(*ops)}"
    src, qdt = tvm_dtype(x.dtype), tvm_dtype(out.dtype)

    def build():
        from tvm import te
        from tvm import tirx as T
        X = te.placeholder((rows, hw), src, name="X")
        r = te.reduce_axis((0, hw), name="r")
        acc = te.compute((rows,), lambda c: te.sum(X[c, r].astype("int32"), axis=r), name="acc")
        Y = te.compute((rows,), lambda c: quantize_expr(
            T.Cast("float32", acc[c] - T.const(zx_ * hw, "int32")) * T.const(scale, "float32"), 1.0, zy_, qdt),
            name="Y")

        def sched(sch):
            if rows * hw >= PARALLEL_MIN_ELEMENTS:
                sch.parallel(sch.get_loops(sch.get_sblock("Y"))[0])
            sch.compute_at(sch.get_sblock("acc"), sch.get_loops(sch.get_sblock("Y"))[0])
        return prim_func([X, Y], sched)
    return [Call(key, build, ops, node, flops=rows * hw)]


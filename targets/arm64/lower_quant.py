"""QuantizedMatMul on arm64-neon: an int8 x int8 GEMM whose inner step is
`sdot` (armv8.2-a+dotprod) when the target has dotprod, and plain NEON on
armv8.0 otherwise (weights packed in NR-column panels, one NR-byte row per k
sign-extended and multiply-added into int32 lanes).

The weight [K, N] is packed at compile time into Bp[N/4, K/4, 4, 4]: one
16-byte block holds 4 columns x 4 rows, so one `sdot` multiplies 4 int8
activations (one 32-bit word, broadcast) by the block and adds four 4-term
sums into the four int32 lanes of one accumulator. sdot is signed x signed:
uint8 activations are first shifted to int8 (x - 128, one cheap injective
kernel), and the shift joins the zero point in the compile-time column sums:
Σ (x - zx)·w = Σ (x - 128)·w - (zx - 128)·Σ_k w[k, n]. The float epilogue
(scales, bias, activation, residual, requantization) is the x86 kernel's
(targets/cpu/int8_common.py), run on each MR x 4·P register tile. Registered as arm64's "int8_gemm"
rule, which overrides the generic (VNNI) one for QuantizedMatMul and QuantizedAttention."""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node
from aotc.targets.cpu.dot_intrin import register_broadcast_dot
from aotc.targets.cpu.lower_elementwise import injective_call
from aotc.targets.cpu.int8_common import has_float_bias, int8_gemm_compute, int8_gemm_operands, scalar_const
from aotc.targets.cpu.lowering import Call, LoweringContext, NoLoweringError, lowers, sig
from aotc.targets.cpu.schedules import PARALLEL_MIN_ELEMENTS, prim_func

SDOT_N, SDOT_K = 4, 4  # one sdot: 4 int32 lanes, 4 byte products each
MR_CHOICES = (4, 6, 8, 3, 2, 1)


def pack_sdot(w: np.ndarray) -> np.ndarray:
    """int8 [K, N] -> [N/4, K/4, 4, 4]: for each 4-column panel and 4-row group, a 16-byte block."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k // SDOT_K, SDOT_K, n // SDOT_N, SDOT_N).transpose(2, 0, 3, 1))


def pick_panels(n: int) -> int:
    """4-column panels per register tile: 4 (16 columns) when they fit."""
    for p in (4, 2):
        if n % (p * SDOT_N) == 0:
            return p
    return 1


def pick_mr(m: int, panels: int) -> int:
    """MR x panels int32x4 accumulators within NEON's 32 registers (leaving room for B blocks and A words)."""
    for c in MR_CHOICES:
        if m % c == 0 and c * panels <= 24:
            return c
    return 1


@lowers("int8_gemm", platform="arm64")
def arm_int8_gemm_steps(node: Node, ctx: LoweringContext, x, xs, xz, w, ws, bias, res, ys, yz, out, attrs) -> list:
    """out[M, N] = epilogue(Σ_k (x - x_zp)·w) with x u8/s8 [.., K] seen as [M, K], w s8 [K, N] constant
    (the arguments of targets/cpu/lower_quant.vnni_gemm_call)."""
    from tvm import tirx as T
    if x.dtype not in (DType.uint8, DType.int8) or w.dtype != DType.int8:
        raise NoLoweringError(f"{node.op_type} of {x.dtype} x {w.dtype} has no arm64 kernel (int8 weights, "
                              "uint8/int8 activations)")
    if w.const is None or ws.const is None or (bias is not None and bias.const is None):
        raise NoLoweringError(f"{node.op_type} needs constant weights, scales and bias on the CPU")
    k, n = w.shape
    if k % SDOT_K or n % SDOT_N:
        raise NoLoweringError(f"{node.op_type} with K={k}, N={n} has no arm64 kernel yet (needs K % 4 == 0, "
                              "N % 4 == 0)")
    if res is not None and math.prod(res.shape) != math.prod(out.shape):
        raise NoLoweringError("a broadcast residual has no CPU int8 kernel yet")
    dotprod = ctx.target.capabilities.int8_dot == "sdot"
    shift = 128 if x.dtype == DType.uint8 else 0
    xscale, xzp = float(np.float32(scalar_const(xs, "x_scale", node))), int(scalar_const(xz, "x_zero_point", node))
    m = math.prod(x.shape) // k
    steps = []
    a = x
    if shift:  # uint8 -> int8 by x - 128 (signed bytes for sdot/smull); once per activation, which the
        # Q, K and V projections share
        shifted = ctx.scratch("arm64_int8_activations")
        if x.name not in shifted:
            shifted[x.name] = ctx.temp(x.name, x.shape, DType.int8)
            steps.append(injective_call(node, ctx, [x], shifted[x.name], lambda ld, i: T.Cast(
                "int8", T.Cast("int32", ld[0](i)) - T.const(128, "int32")), extra_key="u8_to_s8"))
        a = shifted[x.name]
    key = f"{w.name}|{xscale!r}|{xzp - shift}"
    if dotprod:
        bp = ctx.derived_const(f"{w.name}.sdot", lambda: pack_sdot(w.const))
        b_index = lambda B, j, kk: B[j // SDOT_N, kk // SDOT_K, j % SDOT_N, kk % SDOT_K]  # noqa: E731
    else:  # column panels [N/NR, K, NR]: one contiguous NR-byte row of B per k, widened and multiply-added
        nr = next(c for c in (16, 8, 4) if n % c == 0)
        bp = ctx.derived_const(f"{w.name}.i8p{nr}", lambda: np.ascontiguousarray(
            w.const.reshape(k, n // nr, nr).transpose(1, 0, 2)))
        b_index = lambda B, j, kk: B[j // nr, kk, j % nr]  # noqa: E731
    colsum = ctx.derived_const(f"{key}.zp_colsum_s8",
                               lambda: ((xzp - shift) * w.const.astype(np.int64).sum(0)).astype(np.int32))
    ops, requant, epi = int8_gemm_operands(node, ctx, a, bp, colsum, key, xscale, ws, bias, res, ys, yz, out,
                                           attrs, m, k, n)
    call_key = f"qmatmul_arm|sdot={dotprod}|{sorted(epi.items())}|rq={requant}|{sig(*ops)}"

    def build():
        args, C = int8_gemm_compute(m, k, n, n, "int8", bp.shape, b_index, has_float_bias(bias, attrs),
                                    res is not None, epi, requant)
        if dotprod:
            return prim_func(args + [C], lambda sch: schedule_sdot_gemm(sch, m, n, k))
        return prim_func(args + [C], lambda sch: schedule_widening_gemm(sch, m, n, nr))

    steps.append(Call(call_key, build, ops, node, flops=2 * m * n * k))
    return steps


def _register_local_sdot_intrin() -> str:
    """TVM's dot_4x4_i8i8s32_sdot with the accumulator in a local (register) tile."""
    return register_broadcast_dot("aotc_dot_4x4_i8_sdot_local_acc", 4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8")


def schedule_sdot_gemm(sch, m: int, n: int, k: int) -> None:
    """An MR x (4·P) tile of int32 accumulators over all of K; per 4 k's, P 16-byte weight blocks and MR
    broadcast activation words feed MR·P sdot. The epilogue runs on the tile right after; (column block,
    row tile) pairs run in parallel."""
    panels = pick_panels(n)
    mr = pick_mr(m, panels)
    blk = sch.get_sblock("acc")
    lm, ln, lk = sch.get_loops(blk)
    mo, mi = sch.split(lm, [None, mr])
    no, nj, ni = sch.split(ln, [None, panels, SDOT_N])
    ko, ki = sch.split(lk, [None, SDOT_K])
    sch.reorder(no, mo, ko, mi, nj, ni, ki)
    _tile_epilogue(sch, blk, no, mo, m, n)
    init = sch.decompose_reduction(blk, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ni, _register_local_sdot_intrin())
    sch.unroll(nj)
    sch.unroll(mi)


def schedule_widening_gemm(sch, m: int, n: int, nr: int) -> None:
    """armv8.0 (no dotprod): an MR x NR int32 tile; per k, one NR-byte weight row is sign-extended and
    multiply-added (smlal) with MR broadcast activations."""
    mr = next((c for c in (4, 5, 3, 2) if m % c == 0 and c * nr <= 80), 1)
    blk = sch.get_sblock("acc")
    lm, ln, lk = sch.get_loops(blk)
    mo, mi = sch.split(lm, [None, mr])
    no, ni = sch.split(ln, [None, nr])
    sch.reorder(no, mo, lk, mi, ni)
    _tile_epilogue(sch, blk, no, mo, m, n)
    sch.vectorize(ni)
    sch.unroll(mi)
    init = sch.decompose_reduction(blk, lk)
    sch.vectorize(sch.get_loops(init)[-1])


def _tile_epilogue(sch, blk, no, mo, m: int, n: int):
    """Accumulators in a local tile, the epilogue right after the tile's reduction, tiles in parallel."""
    outer = sch.fuse(no, mo)
    sch.set_scope(blk, 0, "local")
    ep = sch.get_sblock("C")
    sch.reverse_compute_at(ep, outer)
    sch.vectorize(sch.get_loops(ep)[-1])
    if m * n >= PARALLEL_MIN_ELEMENTS // 4:
        sch.parallel(outer)
    return outer

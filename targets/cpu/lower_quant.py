"""INT8 kernels: QuantizeLinear, DequantizeLinear and QuantizedMatMul (see
compiler/ops/quant.py for the integer semantics every kernel reproduces).

QuantizedMatMul is an AVX-512 VNNI GEMM: the int8 weight [K, N] is packed at
compile time into Bp[N/16, K/4, 16, 4], so one `vpdpbusd` multiplies four
uint8 activations (broadcast) by a 64-byte block of 16 columns x 4 rows and
adds the 16 int32 sums into one zmm accumulator (TVM's `dot_16x4_vnni`
tensor intrinsic). The activation zero point never enters the loop:
Σ (x - zx)·w = Σ x·w - zx·Σ_k w[k, n], the column sums a compile-time
constant. The epilogue (combined scale, bias, activation, residual,
requantization) runs on each MR x 16 tile while it is in registers."""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node

from .dequantize_reads import Dequantized
from .lower_elementwise import binary_expr, injective_call, tvm_dtype
from .dot_intrin import register_broadcast_dot
from .int8_common import (has_float_bias, int8_gemm_compute, int8_gemm_operands, quantize_expr, quantize_params,
                          scalar_const, tiles_per_block)
from .lower_fused import Columns, absorbed_quantizer, attention_core_steps
from .lowering import Call, LoweringContext, NoLoweringError, lowers, sig
from .schedules import PARALLEL_MIN_ELEMENTS, prim_func

VNNI_N, VNNI_K = 16, 4  # one vpdpbusd: 16 int32 lanes, 4 byte products each

# Elementwise float ops a QuantizeLinear computes in its own kernel when it is their only reader: onnxruntime's
# QDQ residual DQ(a), DQ(b) -> Add -> Q becomes one kernel from 8-bit inputs to 8-bit output (its QLinearAdd).
QUANTIZE_ABSORBS = ("Add", "Sub", "Mul", "Div")


@lowers("QuantizeLinear")
def lower_quantize_linear(node: Node, ctx: LoweringContext):
    x, out = node.inputs[0], node.outputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"QuantizeLinear of {x.dtype} has no CPU kernel yet")
    scale, z, qdt = quantize_params(node)
    if x.producer is not None and absorbed_quantizer(x.producer, ctx) is node:
        return []  # the producer's kernel writes the quantized output (lower_fused.absorbed_quantizer)
    vector_round = ctx.target.capabilities.vector_lanes_f32 > 0  # CPU vector code (LLVM), not CUDA's
    key = f"s={scale!r},z={z},vr={vector_round}"
    p = x.producer
    if p is not None and p.op_type in QUANTIZE_ABSORBS and ctx.only_reader(x, node) \
            and all(v.dtype == DType.float32 for v in p.inputs) and tuple(x.shape) == tuple(out.shape):
        # The float op's result is never stored: quantized in registers, with QuantizeLinear's rounding.
        return [injective_call(node, ctx, p.inputs, out, lambda ld, i: quantize_expr(
            binary_expr(p.op_type, ld[0](i), ld[1](i), "float32"), scale, z, qdt, vector_round=vector_round),
            extra_key=f"{key},of={p.op_type}")]
    return [injective_call(node, ctx, [x], out, lambda ld, i: quantize_expr(ld[0](i), scale, z, qdt,
                                                                           vector_round=vector_round),
                           extra_key=key)]


@lowers("DequantizeLinear")
def lower_dequantize_linear(node: Node, ctx: LoweringContext):
    q, s = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    if s.size != 1:
        raise NoLoweringError("per-axis DequantizeLinear has no CPU kernel yet (fused int8 ops do not need it)")
    scale = float(np.float32(scalar_const(s, "the scale", node)))
    z = int(scalar_const(zp, "the zero point", node)) if zp is not None else 0
    src = tvm_dtype(q.dtype)
    dq = Dequantized(q, scale, z)
    return [injective_call(node, ctx, [q], out, lambda ld, i: dq.expr(ld[0](i), fence=False),
                           extra_key=f"s={scale!r},z={z},{src}")]


def pack_vnni(w: np.ndarray) -> np.ndarray:
    """int8 [K, N] (N a multiple of 16) -> [N/16, K/4, 16, 4]: for each 16-column panel and 4-row group, a 64-byte block."""
    k, n = w.shape
    return np.ascontiguousarray(w.reshape(k // VNNI_K, VNNI_K, n // VNNI_N, VNNI_N).transpose(2, 0, 3, 1))


@lowers("QuantizedMatMul")
def lower_quantized_matmul(node: Node, ctx: LoweringContext):
    x, xs, xz, w, ws = node.inputs[:5]
    bias = node.inputs[5] if len(node.inputs) > 5 else None
    res = node.inputs[6] if len(node.inputs) > 6 else None
    ys = node.inputs[7] if len(node.inputs) > 7 else None
    yz = node.inputs[8] if len(node.inputs) > 8 else None
    return int8_gemm_steps(node, ctx, x, xs, xz, w, ws, bias, res, ys, yz, node.outputs[0], node.attrs)


def int8_gemm_steps(node: Node, ctx: LoweringContext, *args) -> list:
    """The target's int8 GEMM (vnni_gemm_call's arguments): its "int8_gemm" rule (VNNI here, sdot / plain
    NEON on arm64, see targets/arm64/lower_quant.py)."""
    return ctx.rule("int8_gemm")(node, ctx, *args)


@lowers("int8_gemm")
def vnni_gemm_steps(node: Node, ctx: LoweringContext, *args) -> list:
    return [vnni_gemm_call(node, ctx, *args)]


def vnni_gemm_call(node: Node, ctx: LoweringContext, x, xs, xz, w, ws, bias, res, ys, yz, out, attrs) -> Call:
    """out[M, N] = epilogue(Σ_k (x - x_zp)·w) with x u8 [.., K] seen as [M, K], w s8 [K, N] constant."""
    if ctx.target.capabilities.int8_dot != "vpdpbusd":
        raise NoLoweringError(f"{node.op_type} needs AVX-512 VNNI (vpdpbusd), which the {ctx.target.name} target "
                              "lacks")
    if x.dtype != DType.uint8:
        raise NoLoweringError(f"{node.op_type} with int8 activations has no VNNI kernel (vpdpbusd takes u8 x s8)")
    if w.const is None or ws.const is None or (bias is not None and bias.const is None):
        raise NoLoweringError(f"{node.op_type} needs constant weights, scales and bias on the CPU")
    k, n = w.shape
    if k % VNNI_K:
        raise NoLoweringError(f"{node.op_type} with K={k} has no VNNI kernel yet (needs K % 4 == 0)")
    # N is padded to whole 16-column panels with zero weights (a classifier's 1000 classes); the padding
    # columns are computed in registers and never stored.
    npad = -(-n // VNNI_N) * VNNI_N
    m = math.prod(x.shape) // k
    if res is not None and math.prod(res.shape) != m * n:
        raise NoLoweringError("a broadcast residual has no CPU int8 kernel yet")
    xscale, xzp = float(np.float32(scalar_const(xs, "x_scale", node))), int(scalar_const(xz, "x_zero_point", node))
    key = f"{w.name}|{xscale!r}|{xzp}"
    bp = ctx.derived_const(f"{w.name}.vnni", lambda: pack_vnni(np.pad(w.const, ((0, 0), (0, npad - n)))))
    colsum = ctx.derived_const(f"{key}.zp_colsum", lambda: (xzp * w.const.astype(np.int64).sum(0)).astype(np.int32))
    ops, requant, epi = int8_gemm_operands(node, ctx, x, bp, colsum, key, xscale, ws, bias, res, ys, yz, out,
                                           attrs, m, k, n)
    call_key = f"qmatmul_vnni|{sorted(epi.items())}|rq={requant}|{sig(*ops)}"
    mr, panels = pick_tile(m, npad)

    def build():
        args, C = int8_gemm_compute(m, k, n, npad, "uint8", bp.shape,
                                    lambda B, j, kk: B[j // VNNI_N, kk // VNNI_K, j % VNNI_N, kk % VNNI_K],
                                    has_float_bias(bias, attrs), res is not None, epi, requant, reciprocal=True)
        return prim_func(args + [C], lambda sch: schedule_vnni_gemm(sch, m, npad, k, mr, panels))

    return Call(call_key, build, ops, node, flops=2 * m * n * k)


@lowers("QuantizedAttention")
def lower_quantized_attention(node: Node, ctx: LoweringContext):
    """The int8 projections (float out with the bias) into temporaries, then the Attention lowering's float
    core (scores, softmax, context). Self-attention (one x, one scale and zero point) runs one GEMM against
    [Wq|Wk|Wv] and the core reads q, k and v as column ranges of its result: x is read once and two launches
    per layer go away."""
    ins = node.inputs
    out = node.outputs[0]
    h, d = node.attrs["num_heads"], node.attrs["head_dim"]
    hd = h * d
    bsz, sq = ins[0].shape[0], ins[0].shape[1]
    skv = ins[3].shape[1]
    plain = {"activation": "none"}
    steps = []
    self_attention = ins[3] is ins[0] and all(
        a is b or (a.const is not None and b.const is not None and np.array_equal(a.const, b.const))
        for a, b in ((ins[4], ins[1]), (ins[5], ins[2])))
    if self_attention and all(ins[i].const is not None for i in (6, 7, 9, 10, 12, 13)):
        wsl = [(ins[i], ins[i + 1], ins[i + 2]) for i in (6, 9, 12)]
        tag = "|".join(w.name for w, _, _ in wsl)
        w = ctx.derived_const(f"{tag}.qkv", lambda: np.concatenate([w_.const for w_, _, _ in wsl], axis=1))
        ws = ctx.derived_const(f"{tag}.qkv_scale", lambda: np.concatenate(
            [np.broadcast_to(s_.const.reshape(-1).astype(np.float32), (hd,)) for _, s_, _ in wsl]))
        bias = None
        if any(b_ is not None for _, _, b_ in wsl):
            # a missing bias is zeros: y + 0.0 is y
            bias = ctx.derived_const(f"{tag}.qkv_bias", lambda: np.concatenate(
                [b_.const.astype(np.float32) if b_ is not None else np.zeros(hd, np.float32) for _, _, b_ in wsl]))
        qkv = ctx.temp(f"{out.name}.qkv", (bsz * sq, 3 * hd), DType.float32)
        steps.extend(int8_gemm_steps(node, ctx, ins[0], ins[1], ins[2], w, ws, bias, None, None, None, qkv, plain))
        q, k, v = (Columns(qkv, i * hd, hd) for i in range(3))
        return steps + attention_core_steps(node, ctx, q, k, v, ins[15], ins[16])

    def project(x_slots, w_slots, seq, tag):
        t = ctx.temp(f"{out.name}.{tag}", (bsz * seq, hd), DType.float32)
        w_, ws_, b_ = (ins[i] for i in w_slots)
        steps.extend(int8_gemm_steps(node, ctx, *(ins[i] for i in x_slots), w_, ws_, b_, None, None, None, t, plain))
        return t
    q = project((0, 1, 2), (6, 7, 8), sq, "q")
    k = project((3, 4, 5), (9, 10, 11), skv, "k")
    v = project((3, 4, 5), (12, 13, 14), skv, "v")
    return steps + attention_core_steps(node, ctx, q, k, v, ins[15], ins[16])


def _register_local_vnni_intrin() -> str:
    """TVM's dot_16x4_vnni with the accumulator in a local (register) tile instead of global memory."""
    return register_broadcast_dot("aotc_dot_16x4_vnni_local_acc", 16, "uint8", "llvm.x86.avx512.vpdpbusd.512")


# (rows, 16-column panels) of the register tile, best first: up to 24 zmm accumulators (the rest of the 32
# hold the weight blocks and a broadcast), at least 8 to hide vpdpbusd's latency, few loads per vpdpbusd.
TILE_CHOICES = ((6, 4), (4, 4), (5, 4), (3, 4), (8, 2), (12, 2), (7, 2), (6, 2), (2, 4), (4, 2), (14, 1), (12, 1),
                (8, 1), (10, 1), (9, 1), (3, 2), (2, 2), (1, 4), (7, 1), (6, 1), (5, 1), (4, 1), (3, 1), (1, 2),
                (2, 1), (1, 1))


def pick_tile(m: int, n: int) -> tuple[int, int]:
    """(MR rows, P panels of 16 columns) of the register tile, both dividing the problem (n a multiple of 16)."""
    return next((r, p) for r, p in TILE_CHOICES if m % r == 0 and n % (p * VNNI_N) == 0)


def schedule_vnni_gemm(sch, m: int, n: int, k: int, mr: int, panels: int) -> None:
    """An MR x (16·P) tile of int32 accumulators (P zmm per row) over all of K: per 4 k's, P 64-byte weight
    blocks and MR broadcast activation words feed MR·P vpdpbusd. A block of row tiles shares one accumulator
    buffer (see tiles_per_block) and the epilogue runs over it right after; (column block, row block) pairs
    run in parallel."""
    VNNI_DOT_16x4_INTRIN = _register_local_vnni_intrin()
    blk = sch.get_sblock("acc")
    lm, ln, lk = sch.get_loops(blk)
    per_block = tiles_per_block(m // mr, mr * panels * VNNI_N * 4)
    mb, mt, mi = sch.split(lm, [None, per_block, mr])
    no, nj, ni = sch.split(ln, [None, panels, VNNI_N])
    ko, ki = sch.split(lk, [None, VNNI_K])
    sch.reorder(no, mb, mt, ko, mi, nj, ni, ki)
    outer = sch.fuse(no, mb)
    sch.set_scope(blk, 0, "local")
    ep = sch.get_sblock("C")
    sch.reverse_compute_at(ep, outer)
    sch.vectorize(sch.split(sch.get_loops(ep)[-1], [None, VNNI_N])[-1])
    if m * n >= PARALLEL_MIN_ELEMENTS // 4:
        sch.parallel(outer)
    init = sch.decompose_reduction(blk, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ni, VNNI_DOT_16x4_INTRIN)
    sch.unroll(nj)
    sch.unroll(mi)



"""Lowerings of the fusion passes' ops that are not a single contraction
with an epilogue: SkipLayerNormalization (one row kernel with two outputs)
and Attention (projections with bias epilogues, the score contraction with
scale and masks in its epilogue, a row softmax and the context contraction,
a handful of kernels over temporaries instead of a dozen generic ones)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node

from .dequantize_reads import dequantizing, read_key, read_through
from .epilogue import Epilogue
from .int8_common import quantize_expr, quantize_params
from .lower_elementwise import bcast_index, dtype_of, injective_call
from .lower_attention_core import core_tile, fused_core_call, fused_shape
from .lower_gemm import packed_gemm_call, padded_rows, pick_mr, pick_nr
from .lower_reduce import placeholders, row_reduce, schedule_rows, softmax_builder
from .lowering import Call, LoweringContext, NoLoweringError, in_bounds, lowers, operand, sig
from .schedules import prim_func, schedule_contraction, schedule_injective


def absorbed_quantizer(node: Node, ctx: LoweringContext) -> Node | None:
    """The QuantizeLinear whose output `node`'s kernel writes instead of its own first output: a
    SkipLayerNormalization whose normalized output only that per-tensor QuantizeLinear reads (a pre-quantized
    transformer quantizes it for the next MatMul and reads its residual back through DequantizeLinear), in LLVM
    CPU code. QuantizeLinear's lowering then makes no kernel."""
    if node.op_type != "SkipLayerNormalization" or ctx.target.capabilities.vector_lanes_f32 <= 0:
        return None
    y = node.outputs[0]
    readers = ctx.readers(y)
    if len(readers) != 1 or readers[0] is None or readers[0].op_type != "QuantizeLinear":
        return None
    q = readers[0]
    s, z = q.inputs[1], q.inputs[2] if len(q.inputs) > 2 else None
    if s.const is None or s.size != 1 or (z is not None and (z.const is None or z.size != 1)):
        return None
    return q


@lowers("SkipLayerNormalization")
def lower_skip_layernorm(node: Node, ctx: LoweringContext):
    a, b, scale = node.inputs[:3]
    beta = node.inputs[3] if len(node.inputs) > 3 else None
    y, s_out = node.outputs
    if a.dtype != DType.float32:
        raise NoLoweringError(f"{a.dtype} has no CPU kernel yet")
    length = a.shape[-1]
    rows = a.size // length
    if b.size not in (a.size, length) or scale.size != length or (beta is not None and beta.size != length):
        raise NoLoweringError("operands that broadcast other than along rows")
    lanes, eps = ctx.lanes, node.attrs["epsilon"]
    b_shape = (rows, length) if b.size == a.size else (1, length)
    # a residual the model dequantizes (its quantized LayerNorm output) is read as 8 bits
    (a, b), dqs = read_through([a, b], ctx)
    # and the normalized output only its QuantizeLinear reads is written quantized (QuantizeLinear's rounding)
    quantizer = absorbed_quantizer(node, ctx)
    requant = quantize_params(quantizer) if quantizer is not None else None
    if quantizer is not None:
        y = quantizer.outputs[0]
    ops = [operand(a, (rows, length)), operand(b, b_shape), operand(scale, (length,))]
    ops += [operand(beta, (length,))] if beta is not None else []
    ops += [operand(y, (rows, length)), operand(s_out, (rows, length))]
    key = f"skip_layernorm|eps={eps}|{read_key(dqs)}|rq={requant}|{sig(*ops)}"

    def build():
        from tvm import te
        from tvm import tirx as T
        phs = placeholders(ops[:-1])
        at, bt, sc = dequantizing(phs[0], dqs[0]), dequantizing(phs[1], dqs[1]), phs[2]
        bi = phs[3] if beta is not None else None
        f32 = "float32"
        S = te.compute((rows, length), lambda r, l: at[r, l] + bt[r if b_shape[0] > 1 else 0, l], name="S")
        inv_n = T.const(1.0 / length, f32)
        s, s_st = row_reduce(S, rows, length, "sum", lanes, "s")
        mean = te.compute((rows,), lambda r: s[r] * inv_n, name="mean")
        q, q_st = row_reduce(S, rows, length, "sum", lanes, "q", fn=lambda r, l: (S[r, l] - mean[r]) * (S[r, l] - mean[r]))
        rstd = te.compute((rows,), lambda r: T.const(1.0, f32) / T.sqrt(q[r] * inv_n + T.const(eps, f32)), name="rstd")

        def f(r, l):
            v = (S[r, l] - mean[r]) * rstd[r] * sc[l]
            v = v + bi[l] if bi is not None else v
            return quantize_expr(v, *requant) if requant is not None else v
        out = te.compute((rows, length), f, name="out")
        stages = s_st + ["mean"] + q_st + ["rstd"]

        def sched(sch):
            # S is an output (the residual stream), so it cannot move under the row loop: its own loop nest.
            schedule_injective(sch, "S", (rows, length), lanes)
            schedule_rows(sch, "out", stages, rows, length, lanes)
        return prim_func(phs + [out, S], sched)
    return [Call(key, build, ops, node, num_outputs=2, flops=9 * a.size)]


def _contraction_call(node, key, ops, batch, m, n, k, lanes, compute, flops):
    """A custom batched contraction: `compute(tensors, padded m) -> (acc, out or None)` (`out` stores the real
    rows of an `acc` computed over whole row tiles, see padded_rows), scheduled register-tiled."""
    nr = pick_nr(n, lanes)
    mr = pick_mr(m, nr or 1, lanes) if nr else 1
    mp = padded_rows(m, mr)

    def build():
        from tvm import te
        phs = [te.placeholder(o.shape, "float32", name=f"in{i}") for i, o in enumerate(ops[:-1])]
        acc, out = compute(phs, mp)
        block, ep = ("acc", "out") if out is not None else ("acc", None)
        res = out if out is not None else acc
        sched = (lambda sch: schedule_contraction(sch, block, mp, n, k, lanes, mr, nr, batch_loops=batch,  # noqa
                                                  epilogue=ep)) if nr else None
        return prim_func(phs + [res], sched)
    return Call(key, build, ops, node, flops=flops)


@lowers("Attention")
def lower_attention(node: Node, ctx: LoweringContext):
    xq, xkv, wq, bq, wk, bk, wv, bv, add_mask, keep_mask = node.inputs
    out = node.outputs[0]
    h, d = node.attrs["num_heads"], node.attrs["head_dim"]
    if xq.dtype != DType.float32 or any(w.const is None for w in (wq, wk, wv)):
        raise NoLoweringError("only float32 attention with constant projection weights has a CPU kernel yet")
    for bias in (bq, bk, bv):
        if bias is not None and bias.const is None:
            raise NoLoweringError("non-constant projection biases")
    bsz, sq, e = xq.shape
    skv = xkv.shape[1]
    hd = h * d
    steps = []
    name = out.name

    if xq is xkv:
        # Self-attention: one GEMM against [Wq | Wk | Wv] (N = 3·H·D) writes q, k and v side by side; the
        # core reads them as column ranges. One launch instead of three, and x is read once.
        ws, bs = (wq, wk, wv), (bq, bk, bv)
        key = "+".join(w.name for w in ws)
        bias = ctx.derived_const(f"{key}.qkv_bias", lambda: np.concatenate(
            [np.zeros(hd, np.float32) if b_ is None else b_.const.astype(np.float32).reshape(-1) for b_ in bs]))
        qkv = ctx.temp(f"{name}.qkv", (bsz * sq, 3 * hd), DType.float32)
        steps.append(packed_gemm_call(node, ctx, xq, xq.shape, f"{key}.qkv",
                                      lambda: np.concatenate([w.const.astype(np.float32) for w in ws], axis=1),
                                      e, 3 * hd, qkv, Epilogue(bias=bias)))
        q, k, v = (Columns(qkv, i * hd, hd) for i in range(3))
    else:
        def project(x, w, bias, tag, s):
            t = ctx.temp(f"{name}.{tag}", (bsz * s, hd), DType.float32)
            steps.append(packed_gemm_call(node, ctx, x, x.shape, w.name, lambda: w.const.astype(np.float32),
                                          x.shape[2], hd, t, Epilogue(bias=bias)))
            return t
        q = project(xq, wq, bq, "q", sq)
        k = project(xkv, wk, bk, "k", skv)
        v = project(xkv, wv, bv, "v", skv)
    return steps + attention_core_steps(node, ctx, q, k, v, add_mask, keep_mask)


@dataclass(frozen=True)
class Columns:
    """Columns [offset, offset + width) of a 2-D value [rows, total] (q, k or v inside a fused QKV result)."""
    value: object
    offset: int
    width: int

    @staticmethod
    def of(v) -> "Columns":
        return v if isinstance(v, Columns) else Columns(v, 0, v.shape[1])

    @property
    def total(self) -> int:
        return self.value.shape[1]


def attention_core_steps(node: Node, ctx: LoweringContext, q, k, v, add_mask, keep_mask) -> list:
    """Scores, softmax and context of an attention node (Attention, QuantizedAttention) from its projected
    q [B*Sq, H*D], k and v [B*Skv, H*D] (float32 temporaries, or `Columns` of one), into the node's output
    [B, Sq, H*D]."""
    from tvm import te
    from tvm import tirx as T
    out = node.outputs[0]
    at = node.attrs
    h, d, scale = at["num_heads"], at["head_dim"], at["scale"]
    bsz, sq = out.shape[0], out.shape[1]
    q, k, v = Columns.of(q), Columns.of(k), Columns.of(v)
    skv = k.value.shape[0] // bsz
    lanes = ctx.lanes
    steps = []
    name = out.name
    # K^T per head, so the score contraction reads unit-stride rows of K; padded with zero columns to whole
    # vectors when the key length is ragged (ViT's 197 tokens: otherwise no vector tile fits and the scores
    # ran unscheduled), the padding scores computed in registers and never stored.
    skvp = -(-skv // lanes) * lanes if skv % lanes and skv > 2 * lanes else skv
    fused = fused_shape(sq, d, skvp, lanes)
    if skv > 2 * lanes and fused is not None:
        # The fused core's score tile is MR rows x NR keys over the short head dimension: NR of two vectors
        # (keys padded to a multiple of 2 vectors, ~2% more score work) gives it twice the independent FMA
        # chains of one (YOLOS's 677 keys as 43 vectors: 6 chains, latency-bound). Whole vectors either way,
        # so the fused shape stays.
        skvp = -(-skv // (2 * lanes)) * 2 * lanes

    # The fused core reads K^T in panels of its score tile's NR keys, [B, H, Skvp/NR, D, NR]: each tile's
    # D x NR panel contiguous instead of D rows a whole key length apart.
    kt_nr = core_tile(d, skvp, lanes)[1] if fused is not None else 0

    full_panels = skv // kt_nr if kt_nr else 0  # panels with no padding key

    def kt_at(t, o):
        jj = o[2] * kt_nr + o[4] if kt_nr else o[3]
        r = o[3] if kt_nr else o[2]
        col = k.offset + o[1] * d + r
        padded = T.Select(in_bounds(jj < skv), t[0][o[0], T.min(jj, skv - 1), col], T.const(0.0, "float32"))
        if skvp == skv:
            return t[0][o[0], jj, col]
        if not full_panels:
            return padded
        # as ToBlockedLayout's last block: whole panels read a strided ramp (the per-key clamp made every
        # panel's load a gather, 2.6x slower), only the last one the clamped select
        dt = dtype_of(jj)
        whole = t[0][o[0], T.min(o[2], T.const(full_panels - 1, dt)) * T.const(kt_nr, dt) + o[4], col]
        return T.if_then_else(in_bounds(o[2] < T.const(full_panels, dt)), whole, padded)
    kt_shape = (bsz, h, skvp // kt_nr, d, kt_nr) if kt_nr else (bsz, h, d, skvp)
    kt = ctx.temp(f"{name}.kt", kt_shape, DType.float32)
    call = injective_call(node, ctx, [k.value], kt, None, raw=kt_at, in_shapes=[(bsz, skv, k.total)])
    call.key = f"attn_kt|{k.offset}|{skv}|{sig(*call.operands)}"
    steps.append(call)

    masks = [(m_, kind) for m_, kind in ((keep_mask, "keep"), (add_mask, "add")) if m_ is not None]
    if any(m_.dtype != (DType.bool if kind == "keep" else DType.float32) for m_, kind in masks):
        raise NoLoweringError("masks of unexpected dtypes")
    if fused is not None:
        ctx4 = ctx.temp(f"{name}.ctx", (bsz, h) + fused, DType.float32)
        dp = fused[1]
        # V per head, [B, H, Skv, Dp]: the context loop then streams one head's rows back to back instead of
        # 256 bytes every H*D*3 floats (with K^T's panels, Whisper's core 17.2 -> 16.0 ms per layer, BERT's
        # attention 2.03 -> 1.91 ms, one core).
        v = Columns.of(_per_head_padded(node, ctx, v, bsz, skv, h, d, dp, steps))
        steps.append(fused_core_call(node, q, kt, v, masks, ctx4, sq, skv, skvp, lanes))
        return steps + [_head_merge(node, ctx, ctx4, out)]

    scores = ctx.temp(f"{name}.scores", (bsz, h, sq, skv), DType.float32)
    ops = [operand(q.value, (bsz, sq, q.total)), operand(kt)] + [operand(m_) for m_, _ in masks] + [operand(scores)]
    sshape = (bsz, h, sq, skv)
    fill = at["mask_fill"]

    nr_s = pick_nr(skvp, lanes)
    mr_s = pick_mr(sq, nr_s or 1, lanes) if nr_s else 1
    sqp = padded_rows(sq, mr_s)

    def scores_compute(phs):
        qt, ktt = phs[0], phs[1]
        mts = phs[2:]
        r = te.reduce_axis((0, d), name="k")
        acc = te.compute((bsz, h, sqp, skvp), lambda b_, h_, i, j: te.sum(
            qt[b_, T.min(i, sq - 1), q.offset + h_ * d + r] * ktt[b_, h_, r, j], axis=r), name="acc")

        def epi(b_, h_, i, j):
            val = acc[b_, h_, i, j] * T.const(scale, "float32")
            for (m_, kind), mt in zip(masks, mts):
                mv = mt[bcast_index(m_.shape, (b_, h_, i, j))]
                if kind == "keep":
                    val = T.Select(mv, val, T.const(fill, "float32"))
                else:
                    val = val + mv
            return val
        return acc, te.compute(sshape, epi, name="out")

    def scores_build():
        from tvm import te as _te
        phs = [_te.placeholder(o.shape, "bool" if o.dtype == DType.bool else "float32", name=f"in{i}")
               for i, o in enumerate(ops[:-1])]
        acc, res = scores_compute(phs)
        sched = (lambda sch: schedule_contraction(sch, "acc", sqp, skvp, d, lanes, mr_s, nr_s,  # noqa: E731
                                                  batch_loops=2, epilogue="out")) if nr_s else None
        return prim_func(phs + [res], sched)
    steps.append(Call(f"attn_scores|h={h},d={d},s={scale},fill={fill},{[k_ for _, k_ in masks]}|q@{q.offset}|"
                      f"{sig(*ops)}",
                      scores_build, ops, node, flops=2 * bsz * h * sq * skv * d))

    probs = ctx.temp(f"{name}.probs", sshape, DType.float32)
    rows = bsz * h * sq
    sm = softmax_builder(rows, skv, lanes, nan_to_zero=bool(at["nan_to_zero"]))
    sm_ops = [operand(scores, (rows, skv)), operand(probs, (rows, skv))]
    steps.append(Call(f"attn_softmax|nz={at['nan_to_zero']}|{sig(*sm_ops)}", lambda: sm(sm_ops), sm_ops, node,
                      flops=5 * rows * skv))

    ctx4 = ctx.temp(f"{name}.ctx", (bsz, h, sq, d), DType.float32)
    c_ops = [operand(probs), operand(v.value, (bsz, skv, v.total)), operand(ctx4)]

    def ctx_compute(phs, sqp):
        pt, vt = phs
        r = te.reduce_axis((0, skv), name="k")
        acc = te.compute((bsz, h, sqp, d), lambda b_, h_, i, j: te.sum(
            pt[b_, h_, T.min(i, sq - 1), r] * vt[b_, r, v.offset + h_ * d + j], axis=r), name="acc")
        if sqp == sq:
            return acc, None
        return acc, te.compute((bsz, h, sq, d), lambda *o: acc[o], name="out")
    steps.append(_contraction_call(node, f"attn_ctx|h={h},d={d}|v@{v.offset}|{sig(*c_ops)}", c_ops, 2, sq, d, skv,
                                   lanes, ctx_compute, 2 * bsz * h * sq * skv * d))

    return steps + [_head_merge(node, ctx, ctx4, out)]


def _per_head_padded(node: Node, ctx: LoweringContext, v, bsz: int, skv: int, h: int, d: int, dp: int, steps: list):
    """[B, H, Skv, Dp] = V's heads, each contiguous, with zero columns up to Dp (whole vectors) when the head
    dimension is ragged; appends its copy kernel."""
    from tvm import tirx as T
    vp = ctx.temp(f"{node.outputs[0].name}.v_padded", (bsz, h, skv, dp), DType.float32)

    def f(t, o):
        jd = o[3]
        val = t[0][o[0], o[2], v.offset + o[1] * d + T.min(jd, d - 1)]
        return T.Select(in_bounds(jd < d), val, T.const(0.0, "float32"))
    call = injective_call(node, ctx, [v.value], vp, None, raw=f, in_shapes=[(bsz, skv, v.total)])
    call.key = f"attn_v_padded|{v.offset}|{d}|{sig(*call.operands)}"
    steps.append(call)
    return vp


def _head_merge(node: Node, ctx: LoweringContext, ctx4, out):
    """out [B, Sq, H*D] from the per-head context [B, H, Sq or more, D or more] (rows past Sq and columns past D
    are padding)."""
    bsz, h = ctx4.shape[:2]
    sq, d = out.shape[1], out.shape[2] // h
    call = injective_call(node, ctx, [ctx4], out, None, raw=lambda t, o: t[0][o[0], o[2], o[1], o[3]],
                          out_shape=(bsz, sq, h, d))
    call.key = f"attn_merge|{sig(*call.operands)}"
    return call

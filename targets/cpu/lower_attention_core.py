"""Attention's core (scores, softmax, context) as one kernel, flash-attention style: per task, a tile of
MR query rows of one head computes its scores row block [MR, Skv] into a small buffer (register-tiled
MR x NR over the head dimension, scale and masks applied as it is stored), takes the row max, exponentiates
in place, sums, and multiplies the unnormalized probabilities by V with an MR x D register tile; the
division by the row sums comes last. The [B, H, Sq, Skv] score and probability tensors never exist: on
Whisper's 1500 positions they were 54 MB per layer, written and read four times by three kernels."""
from __future__ import annotations

from aotc.compiler.dtypes import DType

from .lower_elementwise import bcast_index, fexp
from .lowering import Call, operand, sig
from .schedules import cpu_schedules, prim_func

# Accumulator vectors of the context tile (MR rows x D/lanes vectors) and of the score tile (MR x NR/lanes).
MAX_ACC = 24


def core_tile(d: int, skvp: int, lanes: int) -> tuple[int, int] | None:
    """(MR, NR) for a head dimension d and padded key count, or None when no vector tile fits."""
    if d % lanes or skvp % lanes or skvp < 2 * lanes:
        return None  # (a row of one vector: the unfused kernels serve it; it is no cost anyway)
    dv = d // lanes
    mr = max((m for m in (8, 6, 4, 3, 2) if m * dv <= MAX_ACC), default=0)
    if not mr or not cpu_schedules():
        return None  # one query row per tile (NEON's 4 lanes for d=64) would be latency-bound
    nr = 2 * lanes if skvp % (2 * lanes) == 0 and mr * 2 <= MAX_ACC else lanes
    return mr, nr


def fused_rows(sq: int, d: int, skvp: int, lanes: int) -> int | None:
    """The query rows the fused core computes (whole MR-row tiles; the padding rows re-read the last query and
    are never stored by the head merge), or None when it does not apply."""
    tile = core_tile(d, skvp, lanes)
    return None if tile is None else -(-sq // tile[0]) * tile[0]


def fused_core_call(node, q, kt, v, masks, ctx4, sq: int, skv: int, skvp: int, lanes: int):
    """The Call computing ctx4 [B, H, Sqp, D] (Sq rounded up to whole MR-row tiles, see fused_rows) from q (Columns of [B*Sq, *]), kt [B, H, D, Skvp] (zero past
    Skv), v (Columns of [B*Skv, *]) and masks [(value, "keep"|"add")], or None when no tile fits."""
    at = node.attrs
    h, d, scale, fill, nan_to_zero = at["num_heads"], at["head_dim"], at["scale"], at["mask_fill"], at["nan_to_zero"]
    bsz = ctx4.shape[0]
    tile = core_tile(d, skvp, lanes)
    if tile is None:
        return None
    mr, nr = tile
    sqp = ctx4.shape[2]
    assert sqp % mr == 0 and sqp >= sq
    ops = [operand(q.value, (bsz, sq, q.total)), operand(kt), operand(v.value, (bsz, skv, v.total))]
    ops += [operand(m_) for m_, _ in masks] + [operand(ctx4)]
    key = (f"attn_core|h={h},d={d},s={scale},fill={fill},nz={nan_to_zero},{[k for _, k in masks]}|"
           f"q@{q.offset},v@{v.offset}|{sig(*ops)}")

    def build():
        from tvm import te
        from tvm import tirx as T
        f32 = "float32"
        phs = [te.placeholder(o.shape, "bool" if o.dtype == DType.bool else f32, name=f"in{i}")
               for i, o in enumerate(ops[:-1])]
        Q, KT, V, mts = phs[0], phs[1], phs[2], phs[3:]
        r = te.reduce_axis((0, d), name="r")
        S = te.compute((bsz, h, sqp, skvp), lambda b, hh, i, j: te.sum(
            Q[b, T.min(i, sq - 1), q.offset + hh * d + r] * KT[b, hh, r, j], axis=r), name="S")
        neg_inf = T.const(float("-inf"), f32)

        def scored(b, hh, i, j):
            val = S[b, hh, i, j] * T.const(scale, f32)
            at_idx = (b, hh, T.min(i, sq - 1), T.min(j, skv - 1))
            for (m_, kind), mt in zip(masks, mts):
                mv = mt[bcast_index(m_.shape, at_idx)]
                val = T.Select(mv, val, T.const(fill, f32)) if kind == "keep" else val + mv
            return val if skvp == skv else T.Select(j < skv, val, neg_inf)
        Z = te.compute((bsz, h, sqp, skvp), scored, name="Z")
        whole = skvp // lanes
        k1 = te.reduce_axis((0, whole), name="k1")
        mxp = te.compute((bsz, h, sqp, lanes), lambda b, hh, i, l: te.max(Z[b, hh, i, k1 * lanes + l], axis=k1),
                         name="mxp")
        l1 = te.reduce_axis((0, lanes), name="l1")
        mx = te.compute((bsz, h, sqp), lambda b, hh, i: te.max(mxp[b, hh, i, l1], axis=l1), name="mx")
        E = te.compute((bsz, h, sqp, skvp), lambda b, hh, i, j: fexp(Z[b, hh, i, j] - mx[b, hh, i]), name="E")
        k2 = te.reduce_axis((0, whole), name="k2")
        smp = te.compute((bsz, h, sqp, lanes), lambda b, hh, i, l: te.sum(E[b, hh, i, k2 * lanes + l], axis=k2),
                         name="smp")
        l2 = te.reduce_axis((0, lanes), name="l2")
        sm = te.compute((bsz, h, sqp), lambda b, hh, i: te.sum(smp[b, hh, i, l2], axis=l2), name="sm")
        rj = te.reduce_axis((0, skv), name="rj")
        C = te.compute((bsz, h, sqp, d), lambda b, hh, i, jd: te.sum(
            E[b, hh, i, rj] * V[b, rj, v.offset + hh * d + jd], axis=rj), name="C")

        def normalized(b, hh, i, jd):
            val = C[b, hh, i, jd] * (T.const(1.0, f32) / sm[b, hh, i])
            return T.Select(T.isnan(val), T.const(0.0, f32), val) if nan_to_zero else val
        out = te.compute((bsz, h, sqp, d), normalized, name="out")

        def schedule(sch):
            o = sch.get_sblock("out")
            b_, hh_, i_, jd_ = sch.get_loops(o)
            io, ii = sch.split(i_, [None, mr])
            tile_loop = sch.fuse(b_, hh_, io)
            sch.vectorize(jd_)
            for name in ("C", "sm", "smp", "E", "mx", "mxp", "Z", "S"):
                sch.compute_at(sch.get_sblock(name), tile_loop)
            sch.parallel(tile_loop)
            # scores: an MR x NR register tile over the head dimension, stored (scaled, masked) into Z's row block
            zb = sch.get_sblock("Z")
            zi, zj = sch.get_loops(zb)[-2:]
            zjo, zji = sch.split(zj, [None, nr])
            sch.reorder(zjo, zi, zji)
            sb = sch.get_sblock("S")
            sch.compute_at(sb, zjo)
            sch.set_scope(sb, 0, "local")
            si, sj, sr = sch.get_loops(sb)[-3:]
            sch.reorder(sr, si, sj)
            sch.unroll(si)
            sch.vectorize(sj)
            sch.vectorize(zji)
            init = sch.decompose_reduction(sb, sr)
            sch.vectorize(sch.get_loops(init)[-1])
            # row max and row sum: vector partials
            for part in ("mxp", "smp"):
                pb = sch.get_sblock(part)
                pi, pl, pk = sch.get_loops(pb)[-3:]
                sch.reorder(pi, pk, pl)
                sch.vectorize(pl)
                init = sch.decompose_reduction(pb, pk)
                sch.vectorize(sch.get_loops(init)[-1])
            eb = sch.get_sblock("E")
            ej = sch.get_loops(eb)[-1]
            _, eji = sch.split(ej, [None, lanes])
            sch.vectorize(eji)
            # context: an MR x D register tile over the keys
            cb = sch.get_sblock("C")
            sch.set_scope(cb, 0, "local")
            ci, cjd, crj = sch.get_loops(cb)[-3:]
            sch.reorder(crj, ci, cjd)
            sch.unroll(ci)
            sch.vectorize(cjd)
            init = sch.decompose_reduction(cb, crj)
            sch.vectorize(sch.get_loops(init)[-1])
        return prim_func(phs + [out], schedule)

    return Call(key, build, ops, node, flops=4 * bsz * h * sq * skv * d + 5 * bsz * h * sq * skv)

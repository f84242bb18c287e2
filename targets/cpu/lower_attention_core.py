"""Attention's core (scores, softmax, context) as one kernel, flash-attention style: per task, a tile of
MR query rows of one head computes its scores row block [MR, Skv] into a small buffer (register-tiled
MR x NR over the head dimension, scale and masks applied as it is stored), takes the row max, exponentiates
in place, sums, and multiplies the unnormalized probabilities by V with an MR x D register tile; the
division by the row sums comes last. The [B, H, Sq, Skv] score and probability tensors never exist: on
Whisper's 1500 positions they were 54 MB per layer, written and read four times by three kernels."""
from __future__ import annotations

from aotc.compiler.dtypes import DType

from .lower_elementwise import bcast_index, fexp
from .lowering import Call, in_bounds, operand, sig
from .schedules import cpu_schedules, prim_func

# Accumulator vectors of the context tile (MR rows x D/lanes vectors) and of the score tile (MR x NR/lanes).
MAX_ACC = 24


def core_tile(d: int, skvp: int, lanes: int) -> tuple[int, int] | None:
    """(MR, NR) for a head dimension d and padded key count, or None when no vector tile fits. A head
    dimension that is not whole vectors (MobileViT's 36, 48, 60) is computed padded to whole vectors."""
    if skvp % lanes:
        return None
    dv = -(-d // lanes)
    mr = max((m for m in (8, 6, 4, 3, 2) if m * dv <= MAX_ACC), default=0)
    if not mr or not cpu_schedules():
        return None  # one query row per tile (NEON's 4 lanes for d=64) would be latency-bound
    nr = 2 * lanes if skvp % (2 * lanes) == 0 and mr * 2 <= MAX_ACC else lanes
    return mr, nr


def fused_shape(sq: int, d: int, skvp: int, lanes: int) -> tuple[int, int] | None:
    """(query rows, head columns) of the per-head context the fused core computes: whole MR-row tiles and
    whole vectors (the padding rows re-read the last query, the padding columns the last column of V; the
    head merge never reads either), or None when it does not apply."""
    tile = core_tile(d, skvp, lanes)
    return None if tile is None else (-(-sq // tile[0]) * tile[0], -(-d // lanes) * lanes)


def fused_core_call(node, q, kt, v, masks, ctx4, sq: int, skv: int, skvp: int, lanes: int):
    """The Call computing ctx4 [B, H, Sqp, Dp] (see fused_shape) from q (Columns of [B*Sq, *]), kt in panels of
    the score tile's NR keys [B, H, Skvp/NR, D, NR] (zero past Skv), v (Columns of a per-head copy
    [B, H, Skv, Dp], zero past D) and masks [(value, "keep"|"add")], or None when no tile fits. Both copies are
    lower_fused's: each tile's K^T panel and each head's V rows are contiguous, and a ragged head dimension
    is whole vectors (a clamped column index made every load a gather)."""
    at = node.attrs
    h, d, scale, fill, nan_to_zero = at["num_heads"], at["head_dim"], at["scale"], at["mask_fill"], at["nan_to_zero"]
    bsz = ctx4.shape[0]
    tile = core_tile(d, skvp, lanes)
    if tile is None:
        return None
    mr, nr = tile
    sqp, dp = ctx4.shape[2], ctx4.shape[3]
    assert sqp % mr == 0 and sqp >= sq and dp % lanes == 0 and dp >= d
    assert kt.shape == (bsz, h, skvp // nr, d, nr) and v.value.shape == (bsz, h, skv, dp)
    ops = [operand(q.value, (bsz, sq, q.total)), operand(kt), operand(v.value)]
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
            Q[b, T.min(i, sq - 1), q.offset + hh * d + r] * KT[b, hh, j // nr, r, j % nr], axis=r), name="S")
        neg_inf = T.const(float("-inf"), f32)

        def scored(b, hh, i, j):
            val = S[b, hh, i, j] * T.const(scale, f32)
            at_idx = (b, hh, T.min(i, sq - 1), T.min(j, skv - 1))
            for (m_, kind), mt in zip(masks, mts):
                mv = mt[bcast_index(m_.shape, at_idx)]
                val = T.Select(mv, val, T.const(fill, f32)) if kind == "keep" else val + mv
            return val if skvp == skv else T.Select(in_bounds(j < skv), val, neg_inf)
        Z = te.compute((bsz, h, sqp, skvp), scored, name="Z")
        def row_reduce(src, red, name):
            """[B, H, Sqp] = red over the keys: vector partials, then across the lanes (one stage when the
            row is a single vector)."""
            whole = skvp // lanes
            if whole == 1:
                j = te.reduce_axis((0, skvp), name=f"{name}_j")
                return te.compute((bsz, h, sqp), lambda b, hh, i: red(src[b, hh, i, j], axis=j), name=name)
            k = te.reduce_axis((0, whole), name=f"{name}_k")
            part = te.compute((bsz, h, sqp, lanes), lambda b, hh, i, l: red(src[b, hh, i, k * lanes + l], axis=k),
                              name=f"{name}p")
            ll = te.reduce_axis((0, lanes), name=f"{name}_l")
            return te.compute((bsz, h, sqp), lambda b, hh, i: red(part[b, hh, i, ll], axis=ll), name=name)
        mx = row_reduce(Z, te.max, "mx")
        E = te.compute((bsz, h, sqp, skvp), lambda b, hh, i, j: fexp(Z[b, hh, i, j] - mx[b, hh, i]), name="E")
        sm = row_reduce(E, te.sum, "sm")
        rj = te.reduce_axis((0, skv), name="rj")
        C = te.compute((bsz, h, sqp, dp), lambda b, hh, i, jd: te.sum(
            E[b, hh, i, rj] * V[b, hh, rj, jd], axis=rj), name="C")

        def normalized(b, hh, i, jd):
            val = C[b, hh, i, jd] * (T.const(1.0, f32) / sm[b, hh, i])
            return T.Select(T.isnan(val), T.const(0.0, f32), val) if nan_to_zero else val
        out = te.compute((bsz, h, sqp, dp), normalized, name="out")

        def schedule(sch):
            o = sch.get_sblock("out")
            b_, hh_, i_, jd_ = sch.get_loops(o)
            io, ii = sch.split(i_, [None, mr])
            tile_loop = sch.fuse(b_, hh_, io)
            # (loops over D in whole vectors: a 48-wide vector loop was legalized lane by lane, 15x slower)
            sch.vectorize(sch.split(jd_, [None, lanes])[1])
            partials = ("smp", "mxp") if skvp > lanes else ()
            for name in ("C", "sm") + partials[:1] + ("E", "mx") + partials[1:] + ("Z", "S"):
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
            for part in partials:
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
            cjo, cji = sch.split(cjd, [None, lanes])
            sch.reorder(crj, ci, cjo, cji)
            sch.unroll(ci)
            sch.unroll(cjo)
            sch.vectorize(cji)
            init = sch.decompose_reduction(cb, crj)
            sch.vectorize(sch.get_loops(init)[-1])
        return prim_func(phs + [out], schedule)

    return Call(key, build, ops, node, flops=4 * bsz * h * sq * skv * d + 5 * bsz * h * sq * skv)

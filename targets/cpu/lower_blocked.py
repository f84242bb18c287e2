"""Kernels for the channel-blocked layout (compiler/ops/layout.py): the two
layout conversions and BlockedConv.

With c = the vector width channels per block, every BlockedConv kernel keeps
a register tile of output vectors (pixels x output-channel blocks) over its
reduction and writes whole vectors:

- pointwise (1x1, stride 1, no padding): a GEMM over pixels; per input channel
  the tile broadcasts one input value per pixel and loads one weight vector per
  output block (weights pre-packed [M/c, C, c]);
- depthwise: per tap, one vector load of c channels at the tap's pixel and one
  weight vector: strides need no phase-split copy;
- general (ungrouped kxk, strided, or the first convolution reading NCHW):
  a tile of output columns x output blocks over (input channel, kh, kw).

Padding is applied while reading (a select on a clamped index; the condition
is the same for every lane of a vector), so no padded copy is made."""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node
from aotc.compiler.ops.layout import blocks
from aotc.compiler.ops.nn import Conv

from .conv_tiles import (MAX_ACC, finish_tile, padded_read, pick, pointwise_acc, pointwise_func, pointwise_tile,
                         zero_padded_copy)
from .epilogue import Epilogue
from .lower_elementwise import dtype_of, injective_call
from .lower_winograd import winograd_steps, winograd_tile
from .lowering import Call, LoweringContext, NoLoweringError, in_bounds, lowers, operand, sig
from .nan_math import nan_flag, nan_where_flagged
from .schedules import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_FLOPS, prim_func

# Output columns of a depthwise tile, the first that divides the output width.
DEPTHWISE_TILE_WIDTHS = (14, 8, 7, 12, 6, 10, 5, 4, 3, 2)


@lowers("ToBlockedLayout")
def lower_to_blocked(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    x, y = node.inputs[0], node.outputs[0]
    b = node.attrs["block"]
    c = x.shape[1]

    full = c // b  # channel blocks with no padding channel

    def f(t, o):
        n, cb, h, w, ci = o
        ch = cb * b + ci
        if c % b == 0:
            return t[0][n, ch, h, w]
        # The padding lanes of the last block read a clamped channel (a select evaluates both values), but a
        # per-lane clamp makes every block's load a gather (+50% on PP-OCRv4 det's 24-channel one): the full
        # blocks take their own branch, an if_then_else that runs only the branch it picks, whose load stays a
        # strided ramp (its block index clamped as a whole, kept by in_bounds for the bounds check).
        dt = dtype_of(cb)
        whole = t[0][n, T.min(cb, T.const(max(full - 1, 0), dt)) * T.const(b, dt) + ci, h, w]
        last = T.Select(in_bounds(ch < c), t[0][n, T.min(ch, c - 1), h, w], T.const(0.0, "float32"))
        return T.if_then_else(in_bounds(cb < T.const(full, dt)), whole, last) if full else last
    return [injective_call(node, ctx, [x], y, None, raw=f)]


@lowers("FromBlockedLayout")
def lower_from_blocked(node: Node, ctx: LoweringContext):
    x, y = node.inputs[0], node.outputs[0]
    b = x.shape[4]

    def f(t, o):
        n, ch, h, w = o
        return t[0][n, ch // b, h, w, ch % b]
    return [injective_call(node, ctx, [x], y, None, raw=f)]


def pack_weight(w: np.ndarray, block: int, cp: int, depthwise: bool, m_blocks: int = 0) -> np.ndarray:
    """[M, C/g, kh, kw] -> [Mb, Cp, kh, kw, c] (depthwise: [Mb, kh, kw, c]); padding channels get zeros.
    `m_blocks` pads to more output blocks than M needs (a tile of whole block groups)."""
    m, _, kh, kw = w.shape
    mp = max(blocks(m, block), m_blocks) * block
    if depthwise:
        wp = np.zeros((mp, kh, kw), np.float32)
        wp[:m] = w[:, 0]
        return np.ascontiguousarray(wp.reshape(mp // block, block, kh, kw).transpose(0, 2, 3, 1))
    wp = np.zeros((mp, cp, kh, kw), np.float32)
    wp[:m, :w.shape[1]] = w
    return np.ascontiguousarray(wp.reshape(mp // block, block, cp, kh, kw).transpose(0, 2, 3, 4, 1))


def pack_bias(bias: np.ndarray | None, m: int, block: int) -> np.ndarray:
    """[M] (or none) -> [Mb, c], zeros in padding channels."""
    bp = np.zeros((blocks(m, block) * block,), np.float32)
    if bias is not None:
        bp[:m] = bias
    return bp.reshape(-1, block)


@lowers("BlockedConv")
def lower_blocked_conv(node: Node, ctx: LoweringContext):
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    res = node.inputs[3] if len(node.inputs) > 3 else None
    y = node.outputs[0]
    at = node.attrs
    b = at["block"]
    if b != ctx.lanes:
        raise NoLoweringError(f"a block of {b} channels on a target with {ctx.lanes}-lane vectors")
    g = at["group"]
    depthwise = g > 1
    blocked_in = x.rank == 5
    cp = x.shape[1] * b if blocked_in else x.shape[1]
    spatial = x.shape[2:4]
    cattrs = {k: at[k] for k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}
    kernel, out, strides, dils, pb, _ = Conv.geometry((x.shape[0], w.shape[1] * g) + tuple(spatial), w.shape,
                                                      cattrs)
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dils
    nb, mb, oh, ow, _ = y.shape
    h, wd = spatial
    pointwise = (not depthwise and blocked_in and kh == kw == 1 and strides == [1, 1] and not any(pb)
                 and oh == h and ow == wd)
    direct = not pointwise and not depthwise
    p = oh * ow
    if pointwise:
        mr, nb_tile = pointwise_tile(p, mb)
    elif direct:
        mr, nb_tile = direct_tile(ow, mb)
    else:
        mr, nb_tile = 0, 1
    mbp = -(-mb // nb_tile) * nb_tile  # output blocks the kernel computes (the last group may be padding)
    bv = ctx.derived_const(f"{bias.name if bias is not None else 'zero' + str(w.shape[0])}.blocked{b}",
                           lambda: pack_bias(None if bias is None else bias.const.astype(np.float32), w.shape[0], b))
    epi = Epilogue.from_attrs(at, None, res)
    m = winograd_tile(x.shape, y.shape, kernel, strides, dils) if direct and blocked_in else 0
    if m:
        return winograd_steps(node, ctx, x, w, bv, epi, y, m, pb, node.op.flops(node.inputs, node.outputs, at))
    if pointwise:
        # In the order the tile reads them: [group of NB output blocks, input channel, NB, c], so each task
        # streams one contiguous panel (weights arrive from memory every inference; separate per-block
        # streams left the prefetchers behind: 1.5 MB of 1152->320 weights cost ~80 us more cold than hot).
        wp = ctx.derived_const(f"{w.name}.pointwise{b}.{cp}.{mbp}x{nb_tile}", lambda: np.ascontiguousarray(
            pack_weight(w.const.astype(np.float32), b, cp, depthwise, mbp)[:, :, 0, 0, :]
            .reshape(mbp // nb_tile, nb_tile, cp, b).transpose(0, 2, 1, 3)))
    elif direct and blocked_in:
        # [Mb, Cb, kh, kw, c_in, c_out]: the order the tile reads them, input channels innermost per tap.
        wp = ctx.derived_const(f"{w.name}.direct{b}.{cp}.{mbp}", lambda: np.ascontiguousarray(
            pack_weight(w.const.astype(np.float32), b, cp, depthwise, mbp)
            .reshape(mbp, cp // b, b, kh, kw, b).transpose(0, 1, 3, 4, 2, 5)))
    else:
        wp = ctx.derived_const(f"{w.name}.blocked{b}.{cp}.{mbp}", lambda: pack_weight(
            w.const.astype(np.float32), b, cp, depthwise, mbp))
    kind = f"pointwise{mr}x{nb_tile}" if pointwise else f"direct{mr}x{nb_tile}" if direct else "depthwise"
    steps = []
    # The input window the convolution reads: rows/columns from -pb up to this extent.
    hp, wp_ = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    guarded = bool(pb[0] or pb[1] or hp > h or wp_ > wd)
    if guarded and (direct or depthwise and _depthwise_pads_input(kh * kw, strides, ow)):
        # A full convolution reads every input pixel kh*kw times per output block as a broadcast scalar: a
        # bounds select on each of those reads cost more than the FMAs (3x3 64->64 on 56x56 at 35% of peak).
        # One copy of the input with its zero border (a few % of the convolution's time) makes every read
        # unconditional.
        x = zero_padded_copy(node, ctx, x, pb, (hp, wp_), steps)
        h, wd, pb, guarded = hp, wp_, [0, 0], False
    if pointwise:
        x_op, y_shape = operand(x, (nb, x.shape[1], p, b)), (nb, mb, p, b)
    else:
        x_op, y_shape = operand(x), y.shape
    ops = [x_op, operand(wp), operand(bv)] + epi.operands(0, y_shape) + [operand(y, y_shape)]
    flops = node.op.flops(node.inputs, node.outputs, at)
    key = (f"blockedconv|{kind}|{kernel},{strides},{dils},{pb}|{epi.key()}|{sig(*ops)}")

    def build():
        from tvm import te
        from tvm import tirx as T
        X = te.placeholder(x_op.shape, "float32", name="X")
        W = te.placeholder(wp.shape, "float32", name="W")
        BT = te.placeholder(bv.shape, "float32", name="bias")
        ep_t = epi.placeholders(0, y_shape)
        zero = T.const(0.0, "float32")

        def read(n, c_outer, c_inner, i, j):
            """X at input pixel (i, j) (may be in the padding), channel block/lane or NCHW channel."""
            tail = (c_inner,) if blocked_in else ()
            if not guarded:
                return X[(n, c_outer, i, j) + tail]
            return padded_read(X, (n, c_outer), i, j, tail, h, wd, zero)

        if pointwise:
            acc = pointwise_acc(X, W, nb, mbp, p, mr, nb_tile, lambda n, mo: mo // nb_tile)
        elif depthwise:
            rh = te.reduce_axis((0, kh), "rh")
            rw = te.reduce_axis((0, kw), "rw")
            acc = te.compute(y_shape, lambda n, co, i, j, ci: te.sum(
                read(n, co, ci, i * sh + rh * dh - pb[0], j * sw + rw * dw - pb[1]) * W[co, rh, rw, ci],
                axis=[rh, rw]), name="acc")
        else:
            rh = te.reduce_axis((0, kh), "rh")
            rw = te.reduce_axis((0, kw), "rw")
            acc_shape = (nb, mbp, oh, ow, b)
            if blocked_in:
                rco = te.reduce_axis((0, x.shape[1]), "rco")
                rci = te.reduce_axis((0, b), "rci")
                acc = te.compute(acc_shape, lambda n, mo, i, j, mi: te.sum(
                    read(n, rco, rci, i * sh + rh * dh - pb[0], j * sw + rw * dw - pb[1])
                    * W[mo, rco, rh, rw, rci, mi], axis=[rco, rh, rw, rci]), name="acc")
            else:
                rc = te.reduce_axis((0, cp), "rc")
                acc = te.compute(acc_shape, lambda n, mo, i, j, mi: te.sum(
                    read(n, rc, None, i * sh + rh * dh - pb[0], j * sw + rw * dw - pb[1])
                    * W[mo, rc, rh, rw, mi], axis=[rc, rh, rw]), name="acc")
        Y = te.compute(y_shape, lambda *o: epi.apply(acc[o] + BT[o[1], o[-1]], ep_t, None, o), name="Y")
        args = [X, W, BT] + ep_t + [Y]
        # Long reductions make a small output worth splitting (1152 -> 192 channels on a 7x7 map).
        big = math.prod(y_shape) >= PARALLEL_MIN_ELEMENTS or flops >= PARALLEL_MIN_FLOPS
        if pointwise:
            return pointwise_func(args, p, mr, nb_tile, big, x.shape[1], mbp // nb_tile)
        if direct:
            kb = direct_k_blocks(oh * ow, x.shape[1] if blocked_in else 0, kh * kw, strides, nb_tile, b)
            return prim_func(args, lambda sch: _schedule_direct(sch, mr, nb_tile, big, kb))
        return prim_func(args, lambda sch: _schedule_depthwise(sch, y_shape, big))

    return steps + [Call(key, build, ops, node, flops=flops)]


def _depthwise_pads_input(taps: int, strides, ow: int) -> bool:
    """Whether a depthwise convolution reads a zero-bordered copy of its input rather than selecting at the
    border on every read. The copy costs about as much as a 3x3 depthwise convolution itself, so it pays
    only for wide windows: 7x7 on 96 channels of 56x56 went from 503 to 193 us with the copy (ConvNeXt), 5x5
    on 15x15 and 30x30 maps (tiles of 5 and 6 columns) from 98 to 48 and 93 to 76 us, while 5x5 on 28x28
    and 14x14 maps (14-column tiles) and strided ones were as fast or faster selecting (one core)."""
    return list(strides) == [1, 1] and (taps >= 49 or (taps >= 25 and depthwise_tile_width(ow) < 7))


def direct_tile(ow: int, mb: int) -> tuple[int, int]:
    """(output columns, output blocks) of a full convolution's register tile. Per input channel and tap the
    tile broadcasts TW input values (embedded-broadcast FMA operands, no register) and loads NB weight
    vectors, so NB + TW*NB registers; more output blocks per tile means fewer broadcasts per FMA. The
    number of output blocks is padded up to a multiple of NB when that costs at most a quarter of the work."""
    best = None
    for nb in (4, 3, 2, 1):
        padded = -(-mb // nb) * nb
        if (padded - mb) * 4 > padded:
            continue
        tw = pick(ow, [t for t in (14, 8, 7, 12, 6, 10, 5, 4, 3, 2) if t * nb + nb <= MAX_ACC + 2])
        score = (tw * nb, -(padded - mb))
        if best is None or score > best[0]:
            best = (score, tw, nb)
    return best[1], best[2]


def direct_k_blocks(pixels: int, cin_blocks: int, taps: int, strides, nb: int, block: int) -> int:
    """Input channel blocks per reduction step of a full convolution on a tiny map, or 0 for the plain
    schedule. On a 7x7 map (ResNet's last stage) the plain tile loop re-reads an output block group's whole
    weight panel (512 -> 512 channels 3x3: 880 KB, about L2) once per output row; blocking the input
    channels so one block's panel (<= 32 KB) stays in L1 across the rows, the accumulators kept in a small
    buffer between blocks, took that convolution from 67% to 73% of peak (one core). On 14x14 maps and
    strided ones it was slower: those keep the plain schedule."""
    panel = taps * block * nb * block * 4  # bytes of weights per input channel block and output block group
    if not cin_blocks or pixels > 64 or list(strides) != [1, 1] or cin_blocks * panel <= 256 * 1024:
        return 0
    return max((k for k in range(1, cin_blocks + 1) if cin_blocks % k == 0 and k * panel <= 32 * 1024),
               default=1)


def _schedule_direct(sch, tw: int, nb: int, big: bool, kb: int = 0) -> None:
    """Tile: TW output columns x NB output blocks of one output row, over the reduction (a full convolution's
    (input block, kh, kw, input lane): per tap the TW input pixels' addresses are fixed while the 16 lanes of
    their channel block stream by; a depthwise one's (kh, kw)). With `kb` (direct_k_blocks), the input
    blocks in groups of KB outside the rows."""
    blk = sch.get_sblock("acc")
    n, mo, i, j, mi, *reds = sch.get_loops(blk)
    moo, moi = sch.split(mo, [None, nb])
    jo, ji = sch.split(j, [None, tw])
    if kb:
        rko, rki = sch.split(reds[0], [None, kb])
        sch.reorder(n, moo, rko, i, jo, rki, *reds[1:], ji, moi, mi)
    else:
        sch.reorder(n, moo, i, jo, *reds, ji, moi, mi)
    sch.unroll(ji)
    sch.unroll(moi)
    sch.vectorize(mi)
    if kb:  # the accumulators of the group's rows in a buffer between input block steps
        outer = sch.fuse(n, moo)
        finish_tile(sch, blk, outer, big, outer, rko, registers=False)
    else:
        outer = sch.fuse(n, moo, i)
        finish_tile(sch, blk, jo, big, outer, reds[0])


def depthwise_tile_width(ow: int) -> int:
    """Output columns of a depthwise tile: the first of DEPTHWISE_TILE_WIDTHS that divides the output width."""
    return pick(ow, [t for t in DEPTHWISE_TILE_WIDTHS if t <= MAX_ACC])


def _schedule_depthwise(sch, y_shape, big: bool) -> None:
    """Tile: TW output columns of one output row and one channel block."""
    _schedule_direct(sch, depthwise_tile_width(y_shape[3]), 1, big)


@lowers("BlockedMaxPool")
def lower_blocked_max_pool(node: Node, ctx: LoweringContext):
    """Per output pixel, one vector load per tap of the pixel's c channels; taps in the padding (or past the
    end in ceil mode) read -inf through a select whose condition is the same for every lane. NaN propagates
    as in MaxPool's definition through a second, plain max over NaN flags: a NaN-propagating max as the
    reduction's combiner made the kernel 80x slower (ResNet's stem pool 4 ms against 53 us)."""
    x, y = node.inputs[0], node.outputs[0]
    at = node.attrs
    b = at["block"]
    if b != ctx.lanes or x.dtype != DType.float32:
        raise NoLoweringError(f"a block of {b} {x.dtype} channels on a target with {ctx.lanes}-lane vectors")
    n, cb, h, wd, _ = x.shape
    from aotc.compiler.ops import get_op
    pool_attrs = {k: v for k, v in at.items() if k != "block"}
    _, strides, dils, pb, _ = get_op("MaxPool").geometry((n, cb * b, h, wd), pool_attrs)
    kh, kw = at["kernel_shape"]
    sh, sw = strides
    dh, dw = dils
    ops = [operand(x), operand(y)]
    key = f"blocked_max_pool|{at['kernel_shape']},{strides},{dils},{pb}|{sig(*ops)}"
    big = y.size >= PARALLEL_MIN_ELEMENTS
    ow = y.shape[3]
    tw = pick(ow, (14, 8, 7, 12, 6, 10, 5, 4, 3, 2))

    def build():
        from tvm import te
        from tvm import tirx as T
        f32 = "float32"
        X = te.placeholder(x.shape, f32, name="X")

        def window_max(name, f, outside):
            rh = te.reduce_axis((0, kh), f"{name}_rh")
            rw = te.reduce_axis((0, kw), f"{name}_rw")
            return te.compute(y.shape, lambda nn, c, i, j, lane: te.max(padded_read(
                X, (nn, c), i * sh + rh * dh - pb[0], j * sw + rw * dw - pb[1], (lane,), h, wd,
                T.const(outside, f32), f), axis=[rh, rw]), name=name)
        mx = window_max("mx", lambda v: v, float("-inf"))
        nan = window_max("nan", nan_flag, 0.0)
        Y = te.compute(y.shape, lambda *o: nan_where_flagged(nan[o], mx[o]), name="Y")

        def schedule(sch):
            yb = sch.get_sblock("Y")
            nn, c, i, j, lane = sch.get_loops(yb)
            jo, ji = sch.split(j, [None, tw])
            outer = sch.fuse(nn, c, i)
            sch.vectorize(lane)
            for name in ("nan", "mx"):
                blk = sch.get_sblock(name)
                sch.compute_at(blk, jo)
                sch.set_scope(blk, 0, "local")
            if big:
                sch.parallel(outer)
            for name in ("nan", "mx"):
                blk = sch.get_sblock(name)
                bj, bl, brh, brw = sch.get_loops(blk)[-4:]
                sch.reorder(brh, brw, bj, bl)
                sch.unroll(bj)
                sch.vectorize(bl)
                init = sch.decompose_reduction(blk, brh)
                sch.vectorize(sch.get_loops(init)[-1])
        return prim_func([X, Y], schedule)

    return [Call(key, build, ops, node, flops=node.op.flops(node.inputs, node.outputs, at))]

"""The CNN family on NCHW tensors: Conv (pointwise as a GEMM over pixels,
depthwise and general as direct convolution with a register tile of output
channels or rows x a vector of output columns), BatchNormalization as a
per-channel multiply-add with folded constants, and the pools.

Conv padding is materialized by a Pad kernel into a temporary first, so the
convolution's inner loop has no bounds checks."""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node
from aotc.compiler.ops.nn import Conv, window_geometry

from .epilogue import Epilogue
from .lower_elementwise import dtype_of, injective_call, tvm_dtype
from .lowering import Call, LoweringContext, NoLoweringError, attrs_key, in_bounds, lowers, operand, sig
from .nan_math import nan_flag, nan_where_flagged
from .schedules import (PARALLEL_MIN_ELEMENTS, epilogue_at, pick_vec, prim_func, schedule_contraction,
                        schedule_injective)


def folded_pad(x):
    """A zero spatial Pad in front of a convolution is read through (its own kernel becomes dead)."""
    from aotc.compiler.ops.nn import Pad
    return Pad.zero_spatial_source(x)


def phase_split_call(node: Node, ctx: LoweringContext, x, pads_begin, pads_end, strides, extra_rows: int = 0,
                     fill=0.0):
    """A temporary Xs[n, c, ph, pw, h2, w2] = Xpad[n, c, sh*h2 + ph, sw*w2 + pw] (padding = `fill`, in x's
    dtype: 0.0, or the zero point of a uint8 activation): a strided convolution then reads unit-stride rows
    (plain vector loads instead of gathers)."""
    from tvm import tirx as T
    sh, sw = strides
    hp, wp = (d + b + e for d, b, e in zip(x.shape[2:], pads_begin, pads_end))
    h2, w2 = -(-hp // sh), -(-wp // sw)
    shape = x.shape[:2] + (sh, sw, h2 + extra_rows, w2)
    tmp = ctx.temp(node.outputs[0].name + ".phases", shape, x.dtype)
    h, w = x.shape[2:]

    def f(t, o):
        nn, cc, ph, pw, i, j = o
        dt = dtype_of(i)
        hi = i * T.const(sh, dt) + ph - T.const(pads_begin[0], dt)
        wi = j * T.const(sw, dt) + pw - T.const(pads_begin[1], dt)
        cond = in_bounds(hi >= T.const(0, dt), hi < T.const(h, dt), wi >= T.const(0, dt), wi < T.const(w, dt))
        src = (nn, cc, T.min(T.max(hi, T.const(0, dt)), T.const(h - 1, dt)),
               T.min(T.max(wi, T.const(0, dt)), T.const(w - 1, dt)))
        return T.Select(cond, t[0][src], T.const(fill, tvm_dtype(x.dtype)))
    call = injective_call(node, ctx, [x], tmp, None, raw=f)
    call.key = f"conv_phases|{fill}|{pads_begin}|{pads_end}|{strides}|{extra_rows}|{sig(*call.operands)}"
    return call, tmp


def schedule_direct_conv(sch, block: str, out_shape, lanes: int, tile_channels: int, tile_rows: int,
                         vec: int, epilogue: str | None = None) -> None:
    """Loops [n, m, oh, ow, reductions...]: a tile of `tile_channels` output channels (or
    `tile_rows` output rows) x `vec` output columns stays in registers over the reduction."""
    n, m, oh, ow = out_shape
    blk = sch.get_sblock(block)
    loops = list(sch.get_loops(blk))
    ln, lm, lh, lw = loops[:4]
    red = loops[4:]
    mo, mi = sch.split(lm, [None, tile_channels])
    ho, hi = sch.split(lh, [None, tile_rows])
    wo, wi = sch.split(lw, [None, vec])
    sch.reorder(ln, mo, ho, wo, *red, mi, hi, wi)
    sch.unroll(mi)
    sch.unroll(hi)
    if vec > 1:
        sch.vectorize(wi)
    outer = sch.fuse(ln, mo, ho)
    if epilogue is not None:
        epilogue_at(sch, blk, epilogue, wo, vec > 1)
    if n * m * oh * ow >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)
    if red:
        init = sch.decompose_reduction(blk, red[0])
        if vec > 1:
            sch.vectorize(sch.get_loops(init)[-1])


def _finish(v, bt, ch, epi, ep_t, idx):
    """The conv's own bias, then the fused epilogue (residual, activation)."""
    if bt is not None:
        v = v + bt[ch]
    return epi.apply(v, ep_t, None, idx) if epi is not None else v


def _epi_ops(epi, out_shape):
    return epi.operands(0, out_shape) if epi is not None else []


def _epi_ts(epi, out_shape):
    return epi.placeholders(0, out_shape) if epi is not None else []


@lowers("FusedConv")
def lower_fused_conv(node: Node, ctx: LoweringContext):
    res = node.inputs[3] if len(node.inputs) > 3 else None
    epi = Epilogue.from_attrs(node.attrs, None, res, ctx)
    return lower_conv(node, ctx, None if epi.trivial else epi)


@lowers("Conv")
def lower_conv(node: Node, ctx: LoweringContext, epi: Epilogue | None = None):
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"{x.dtype} Conv has no CPU kernel yet")
    if x.rank != 4:
        raise NoLoweringError("only 2-D convolution has a CPU kernel yet")
    if w.const is None:
        raise NoLoweringError("a non-constant Conv weight has no CPU kernel yet")
    if b is not None and b.const is None:
        raise NoLoweringError("a non-constant Conv bias has no CPU kernel yet")
    cattrs = {k: node.attrs[k] for k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}
    kernel, out, strides, dils, pb, pe = Conv.geometry(x.shape, w.shape, cattrs)
    g = node.attrs["group"]
    nb, c, h, wd = x.shape
    m = w.shape[0]
    cg, mg = c // g, m // g
    kh, kw = kernel
    oh, ow = out
    lanes = ctx.lanes
    steps = []
    folded = folded_pad(x) if node.attrs["auto_pad"] == "NOTSET" else None
    if folded is not None:
        x, pb0, pe0 = folded
        pb = [a + b for a, b in zip(pb, pb0)]
        pe = [a + b for a, b in zip(pe, pe0)]
        h, wd = x.shape[2:]
    # Only padding a window reads needs materializing (with strides, end padding may go unread).
    pe = [max(0, min(e, (o - 1) * s + (k - 1) * d + 1 - (n_ + p))) for e, o, s, k, d, n_, p in
          zip(pe, out, strides, kernel, dils, (h, wd), pb)]
    bias = b
    # Pointwise, unit stride, ungrouped, unpadded: a GEMM W[M, C] @ X[C, H*W] per image.
    if kh == kw == 1 and strides == [1, 1] and g == 1 and not any(pb) and not any(pe):
        steps.append(pointwise_call(node, ctx, x, w, bias, y, epi))
        return steps
    sh, sw = strides
    if cg == 1 and mg == 1 and ow % (ctx.lanes // 2) != 0:
        # Narrow maps (28, 14, 7 columns) do not fill vectors along a row: flatten the rows instead.
        steps.extend(flat_depthwise_call(node, ctx, x, w, bias, y, pb, pe, strides, dils, epi))
        return steps
    if any(pb) or any(pe) or sh > 1 or sw > 1:
        call, src = phase_split_call(node, ctx, x, pb, pe, strides)
        steps.append(call)
        src_shape = src.shape
    else:
        src, src_shape = x, x.shape[:2] + (1, 1) + x.shape[2:]
    depthwise = cg == 1 and mg == 1
    dh, dw = dils
    ops = [operand(src, src_shape), operand(w)] + ([operand(bias)] if bias is not None else []) + \
        _epi_ops(epi, y.shape) + [operand(y)]
    vec = pick_vec(ow, lanes)
    if depthwise:
        # Enough independent accumulators (channels x rows) to cover the FMA latency.
        regs = -(-vec // lanes)
        tile_r = next(t for t in (4, 2, 1) if oh % t == 0 and t * regs <= 8)
        tile_c = next(t for t in (4, 2, 1) if m % t == 0 and t * tile_r * regs <= 12)
    else:
        regs = max(-(-vec // lanes), 1)
        tile_c, tile_r = next(t for t in (8, 6, 4, 3, 2, 1) if mg % t == 0 and t * regs <= 16), 1
    key = f"conv|{sorted(cattrs.items())}|{epi.key() if epi else ''}|{sig(*ops)}"

    def build():
        from tvm import te
        X = te.placeholder(src_shape, "float32", name="X")
        W = te.placeholder(w.shape, "float32", name="W")
        args = [X, W]
        bt = None
        if bias is not None:
            bt = te.placeholder(bias.shape, "float32", name="bias")
            args.append(bt)
        rh = te.reduce_axis((0, kh), name="rh")
        rw = te.reduce_axis((0, kw), name="rw")
        def tap(nn, ci, i, j):
            # Input row sh*i + dh*rh lives in phase (dh*rh) % sh at row i + (dh*rh) // sh.
            return X[nn, ci, (rh * dh) % sh, (rw * dw) % sw, i + (rh * dh) // sh, j + (rw * dw) // sw]
        if depthwise:
            def f(nn, mm, i, j):
                return te.sum(tap(nn, mm, i, j) * W[mm, 0, rh, rw], axis=[rh, rw])
        else:
            rc = te.reduce_axis((0, cg), name="rc")

            def f(nn, mm, i, j):
                ci = (mm // mg) * cg + rc if g > 1 else rc
                return te.sum(tap(nn, ci, i, j) * W[mm, rc, rh, rw], axis=[rc, rh, rw])
        ep_t = _epi_ts(epi, y.shape)
        args += ep_t
        if bt is None and epi is None:
            Y = te.compute((nb, m, oh, ow), f, name="Y")
            block, ep = "Y", None
        else:
            acc = te.compute((nb, m, oh, ow), f, name="acc")
            Y = te.compute((nb, m, oh, ow), lambda nn, mm, i, j: _finish(acc[nn, mm, i, j], bt, mm, epi, ep_t,
                                                                         (nn, mm, i, j)), name="Y")
            block, ep = "acc", "Y"
        return prim_func(args + [Y], lambda sch: schedule_direct_conv(sch, block, (nb, m, oh, ow), lanes, tile_c,
                                                                      tile_r, vec, epilogue=ep))

    steps.append(Call(key, build, ops, node, flops=2 * y.size * cg * kh * kw))
    return steps


def flat_depthwise_call(node, ctx, x, w, bias, y, pb, pe, strides, dils, epi=None) -> Call:
    """Depthwise convolution over flattened rows. With the input phase-split and padded to W2 columns, output
    pixel (i, j) reads Xs[.., i + a, j + b] = Xflat[i*W2 + j + a*W2 + b]: computing every flat position
    p = i*W2 + j (the W2 - OW extra columns per row are thrown away) makes each tap one contiguous vector
    load at a constant offset, for any map width. Zero rows after the input keep the last vectors in bounds."""
    nb, c = x.shape[:2]
    kh, kw = w.shape[2:]
    sh, sw = strides
    dh, dw = dils
    oh, ow = y.shape[2:]
    lanes = ctx.lanes
    hp, wp = (d + b + e for d, b, e in zip(x.shape[2:], pb, pe))
    h2, w2 = -(-hp // sh), -(-wp // sw)
    tile = 4 * lanes if oh * w2 >= 8 * lanes else lanes
    ppad = -(-(oh * w2) // tile) * tile
    max_off = ((kh - 1) * dh // sh) * w2 + (kw - 1) * dw // sw
    extra_rows = max(0, -(-(ppad + max_off - h2 * w2) // w2))
    steps_call, src = phase_split_call(node, ctx, x, pb, pe, strides, extra_rows)
    flat = (h2 + extra_rows) * w2
    tile_c = next(t for t in (4, 2, 1) if c % t == 0 and t * (tile // lanes) <= 8)
    ops = [operand(src, (nb, c, sh * sw, flat)), operand(w, (c, kh * kw))] + \
        ([operand(bias)] if bias is not None else []) + _epi_ops(epi, y.shape) + [operand(y)]
    key = f"dwflat|{kh},{kw},{sh},{sw},{dh},{dw}|{epi.key() if epi else ''}|{sig(*ops)}"

    def build():
        from tvm import te
        X = te.placeholder((nb, c, sh * sw, flat), "float32", name="X")
        W = te.placeholder((c, kh * kw), "float32", name="W")
        args = [X, W]
        bt = None
        if bias is not None:
            bt = te.placeholder((c,), "float32", name="bias")
            args.append(bt)
        rh = te.reduce_axis((0, kh), name="rh")
        rw = te.reduce_axis((0, kw), name="rw")
        acc = te.compute((nb, c, ppad), lambda n, cc, q: te.sum(
            X[n, cc, ((rh * dh) % sh) * sw + (rw * dw) % sw, q + ((rh * dh) // sh) * w2 + (rw * dw) // sw]
            * W[cc, rh * kw + rw], axis=[rh, rw]), name="acc")
        ep_t = _epi_ts(epi, y.shape)
        args += ep_t
        Y = te.compute((nb, c, oh, ow), lambda n, cc, i, j: _finish(acc[n, cc, i * w2 + j], bt, cc, epi, ep_t,
                                                                   (n, cc, i, j)), name="Y")

        def sched(sch):
            blk = sch.get_sblock("acc")
            ln, lc, lq, lrh, lrw = sch.get_loops(blk)
            co, ci = sch.split(lc, [None, tile_c])
            qo, qt, qv = sch.split(lq, [None, tile // lanes, lanes])
            sch.reorder(ln, co, qo, lrh, lrw, ci, qt, qv)
            sch.unroll(ci)
            sch.unroll(qt)
            sch.vectorize(qv)
            outer = sch.fuse(ln, co)
            # The accumulators go to a scratch buffer (flat rows), copied out by a second loop nest: TVM
            # cannot place the copy inside the channel loop (it cannot invert i * W2 + j).
            big = nb * c * oh * ow >= PARALLEL_MIN_ELEMENTS
            if big:
                sch.parallel(outer)
            init = sch.decompose_reduction(blk, lrh)
            sch.vectorize(sch.get_loops(init)[-1])
            ep = sch.get_sblock("Y")
            el = sch.get_loops(ep)
            f = sch.fuse(el[0], el[1])
            if big:
                sch.parallel(f)
        return prim_func(args + [Y], sched)

    call = Call(key, build, ops, node, flops=2 * y.size * kh * kw)
    return _Pair(steps_call, call)


class _Pair(list):
    """Two steps a lowering appends together."""

    def __init__(self, a, b):
        super().__init__([a, b])


def pointwise_call(node: Node, ctx: LoweringContext, x, w, bias, y, epi=None) -> Call:
    """Y[n, m, p] = sum_c W[m, c] X[n, c, p] (+ bias[m]) as a register-tiled GEMM. When the pixel count
    is a multiple of the vector width, vectors run along pixels (rows of W broadcast); otherwise (14x14,
    7x7 maps) along output channels, with W pre-packed as column panels and pixels as the tile's rows."""
    nb, c = x.shape[:2]
    m = w.shape[0]
    p = math.prod(x.shape[2:])
    lanes = ctx.lanes
    along_pixels = p % lanes == 0 or m % lanes != 0
    if along_pixels:
        nr = pick_vec(p, lanes)
        regs = max(-(-nr // lanes), 1)
        mr = next(t for t in (8, 6, 4, 3, 2, 1) if m % t == 0 and t * regs <= 16)
        wv = w
        w_shape = (m, c)
    else:
        nr = 2 * lanes if m % (2 * lanes) == 0 else lanes
        mr = next(t for t in (8, 7, 6, 4, 3, 2, 1) if p % t == 0 and t * (nr // lanes) <= 16)
        wv = ctx.derived_const(f"{w.name}.pw_packed{nr}",
                               lambda: w.const.reshape(m // nr, nr, c).transpose(0, 2, 1).astype(np.float32))
        w_shape = wv.shape
    ops = [operand(x, (nb, c, p)), operand(wv, w_shape)] + ([operand(bias)] if bias is not None else [])
    ops += _epi_ops(epi, (nb, m, p))
    ops.append(operand(y, (nb, m, p)))
    key = f"pointwise|{along_pixels}|{epi.key() if epi else ''}|{sig(*ops)}"

    def build():
        from tvm import te
        X = te.placeholder((nb, c, p), "float32", name="X")
        W = te.placeholder(w_shape, "float32", name="W")
        args = [X, W]
        bt = None
        if bias is not None:
            bt = te.placeholder((m,), "float32", name="bias")
            args.append(bt)
        rc = te.reduce_axis((0, c), name="rc")
        ep_t = _epi_ts(epi, (nb, m, p))
        args += ep_t
        if along_pixels:
            if bt is not None or epi is not None:
                acc = te.compute((nb, m, p), lambda n, i, j: te.sum(W[i, rc] * X[n, rc, j], axis=rc), name="acc")
                Y = te.compute((nb, m, p), lambda n, i, j: _finish(acc[n, i, j], bt, i, epi, ep_t, (n, i, j)),
                               name="Y")
                block, ep = "acc", "Y"
            else:
                Y = te.compute((nb, m, p), lambda n, i, j: te.sum(W[i, rc] * X[n, rc, j], axis=rc), name="Y")
                block, ep = "Y", None
            return prim_func(args + [Y], lambda sch: schedule_contraction(sch, block, m, p, c, lanes, mr, nr,
                                                                          kc=None, batch_loops=1, epilogue=ep,
                                                                          rows_outer=True))
        acc = te.compute((nb, p, m), lambda n, j, i: te.sum(X[n, rc, j] * W[i // nr, rc, i % nr], axis=rc),
                         name="acc")
        Y = te.compute((nb, m, p), lambda n, i, j: _finish(acc[n, j, i], bt, i, epi, ep_t, (n, i, j)), name="Y")
        return prim_func(args + [Y], lambda sch: schedule_contraction(sch, "acc", p, m, c, lanes, mr, nr,
                                                                      batch_loops=1, epilogue="Y"))
    return Call(key, build, ops, node, flops=2 * y.size * c)


@lowers("BatchNormalization")
def lower_batchnorm(node: Node, ctx: LoweringContext):
    x, scale, bias, mean, var = node.inputs
    if x.dtype != DType.float32 or any(v.const is None for v in (scale, bias, mean, var)):
        raise NoLoweringError("only float32 with constant statistics has a CPU kernel yet")
    eps = node.attrs["epsilon"]
    shape = (x.shape[1],) + (1,) * (x.rank - 2)
    k = (scale.const.astype(np.float32) / np.sqrt(var.const.astype(np.float32) + np.float32(eps)))
    kv = ctx.derived_const(f"{node.name}.bn_scale", lambda: k.reshape(shape))
    bv = ctx.derived_const(f"{node.name}.bn_shift",
                           lambda: (bias.const.astype(np.float32) - mean.const.astype(np.float32) * k).reshape(shape))
    return [injective_call(node, ctx, [x, kv, bv], node.outputs[0], lambda ld, i: ld[0](i) * ld[1](i) + ld[2](i))]


@lowers("MaxPool", "AveragePool")
def lower_pool(node: Node, ctx: LoweringContext):
    x, y = node.inputs[0], node.outputs[0]
    if x.dtype != DType.float32 or x.rank != 4:
        raise NoLoweringError("only float32 2-D pooling has a CPU kernel yet")
    if node.attrs.get("storage_order"):
        raise NoLoweringError("storage_order=1")
    kernel = node.attrs["kernel_shape"]
    out, strides, dils, pb, pe = window_geometry(node.op_type, x.shape[2:], kernel, node.attrs,
                                                 bool(node.attrs["ceil_mode"]))
    is_max = node.op_type == "MaxPool"
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    h, w = x.shape[2:]
    lanes = ctx.lanes
    nb, c, oh, ow = y.shape
    steps = []
    # A strided or padded window (ResNet's 3x3/2 max pool after the stem) read straight from x is a gather
    # per lane and a bounds select per tap (measured 1.4% of roofline, 11% of ResNet-50). As for convolutions,
    # first split x into stride phases with the padding filled in (-inf for max, 0 for the average, whose
    # divisors are counted apart), so every tap is a unit-stride vector load.
    phased = any(pb) or any(pe) or strides[0] > 1 or strides[1] > 1
    if phased:
        # Enough end padding for every window read (ceil_mode's last window may reach past it).
        pe_all = [max(e, (o - 1) * s_ + (k - 1) * d + 1 - (n_ + b)) for e, o, s_, k, d, n_, b in
                  zip(pe, (oh, ow), strides, kernel, dils, (h, w), pb)]
        call, src = phase_split_call(node, ctx, x, pb, pe_all, strides, fill=float("-inf") if is_max else 0.0)
        steps.append(call)
        src_shape = src.shape
    else:
        src, src_shape = x, x.shape[:2] + (1, 1) + x.shape[2:]
    ops = [operand(src, src_shape), operand(y)]
    key = f"{node.op_type}|{attrs_key(node)}|phases|{sig(*ops)}"

    def count(i, sp, s, d, b, e, k):
        lo = i * s - b
        taps = [lo + t * d for t in range(k)]
        if include_pad:
            return sum(1 for t in taps if -b <= t < sp + e)
        return sum(1 for t in taps if 0 <= t < sp)

    # Divisors per output position are compile-time constants (a separable product per axis).
    cnt_h = [count(i, h, strides[0], dils[0], pb[0], pe[0], kernel[0]) for i in range(oh)]
    cnt_w = [count(j, w, strides[1], dils[1], pb[1], pe[1], kernel[1]) for j in range(ow)]
    inv = None
    if not is_max:
        inv = ctx.derived_const(f"{node.name}.pool_inv",
                                lambda: (1.0 / np.maximum(np.outer(cnt_h, cnt_w), 1)).astype(np.float32))
        ops.insert(1, operand(inv))

    def build():
        from tvm import te
        X = te.placeholder(src_shape, "float32", name="X")
        rh = te.reduce_axis((0, kernel[0]), name="rh")
        rw = te.reduce_axis((0, kernel[1]), name="rw")
        sh, sw = strides

        def tap(nn, cc, i, j):
            # Input row sh*i + dh*rh (padding included) lives in phase (dh*rh) % sh at row i + (dh*rh) // sh.
            return X[nn, cc, (rh * dils[0]) % sh, (rw * dils[1]) % sw, i + (rh * dils[0]) // sh,
                     j + (rw * dils[1]) // sw]
        if is_max:
            # A plain max, and NaN (MaxPool propagates it) from a second plain max over NaN flags (nan_math).
            M = te.compute(y.shape, lambda *o: te.max(tap(*o), axis=[rh, rw]), name="M")
            fh = te.reduce_axis((0, kernel[0]), name="fh")
            fw = te.reduce_axis((0, kernel[1]), name="fw")

            def flag(nn, cc, i, j):
                v = X[nn, cc, (fh * dils[0]) % sh, (fw * dils[1]) % sw, i + (fh * dils[0]) // sh,
                      j + (fw * dils[1]) // sw]
                return nan_flag(v)
            F = te.compute(y.shape, lambda *o: te.max(flag(*o), axis=[fh, fw]), name="F")
            Y = te.compute(y.shape, lambda *o: nan_where_flagged(F[o], M[o]), name="Y")
            vec = pick_vec(ow, lanes)

            def sched_max(sch):
                # three loop nests: the flags, the max (vec output columns of one row per step), then Y (a
                # block reading two producers cannot move under one of them)
                fb = sch.get_sblock("F")
                ln, lm, lh, lw, r1, r2 = sch.get_loops(fb)
                wo, wi = sch.split(lw, [None, vec])
                sch.reorder(ln, lm, lh, wo, r1, r2, wi)
                f_outer = sch.fuse(ln, lm, lh)
                if vec > 1:
                    sch.vectorize(wi)
                if y.size >= PARALLEL_MIN_ELEMENTS:
                    sch.parallel(f_outer)
                init = sch.decompose_reduction(fb, r1)
                if vec > 1:
                    sch.vectorize(sch.get_loops(init)[-1])
                schedule_direct_conv(sch, "M", y.shape, lanes, 1, 1, vec)
                schedule_injective(sch, "Y", y.shape, lanes)
            return prim_func([X, Y], sched_max)
        INV = te.placeholder((oh, ow), "float32", name="inv")
        S = te.compute(y.shape, lambda *o: te.sum(tap(*o), axis=[rh, rw]), name="S")
        Y = te.compute(y.shape, lambda nn, cc, i, j: S[nn, cc, i, j] * INV[i, j], name="Y")

        def sched(sch):
            sch.compute_inline(sch.get_sblock("S")) if False else None
            schedule_direct_conv(sch, "S", y.shape, lanes, 1, 1, pick_vec(ow, lanes))
        return prim_func([X, INV, Y], sched)

    return steps + [Call(key, build, ops, node, flops=y.size * kernel[0] * kernel[1])]


@lowers("Resize")
def lower_resize(node: Node, ctx: LoweringContext):
    """Separable resampling of the spatial axes (2 and 3) of NCHW or of channel-blocked NCHWc (the channel
    lanes last, copied as one vector per pixel): per output row/column, the input taps and their weights are
    compile-time tables (from the reference op's own coordinate and weight rules)."""
    from aotc.compiler.ops.nn import Resize
    x, y = node.inputs[0], node.outputs[0]
    at = node.attrs
    if x.dtype != DType.float32 or x.rank not in (4, 5):
        raise NoLoweringError("only float32 4-D (or channel-blocked 5-D) Resize has a CPU kernel yet")
    out_shape, scale, roi = Resize.plan(x.shape, at)
    ctm = at["coordinate_transformation_mode"]
    if (tuple(out_shape[:2]) != tuple(x.shape[:2]) or tuple(out_shape[4:]) != tuple(x.shape[4:])
            or ctm == "tf_crop_and_resize"):
        raise NoLoweringError("resizing batch/channel axes or tf_crop_and_resize")
    tables = []
    for axis in (2, 3):
        li, lo = x.shape[axis], out_shape[axis]
        coords = Resize.source_coords(ctm, li, lo, scale[axis], roi[axis])
        if at["mode"] == "nearest":
            idx = Resize.nearest_index(coords, at["nearest_mode"], li).reshape(lo, 1)
            wts = np.ones((lo, 1), np.float32)
        else:
            w = Resize.weights(coords, at, li)
            taps = max(int((w != 0).sum(axis=1).max()), 1)
            idx = np.zeros((lo, taps), np.int64)
            wts = np.zeros((lo, taps), np.float32)
            for o in range(lo):
                nz = np.nonzero(w[o])[0]
                idx[o, :len(nz)] = nz
                wts[o, :len(nz)] = w[o, nz]
        tables.append((idx.astype(np.int32), wts))
    (ih, wh), (iw, ww) = tables
    consts = [ctx.derived_const(f"{node.name}.resize_{n}", lambda a=a: a) for n, a in
              (("ih", ih), ("wh", wh), ("iw", iw), ("ww", ww))]
    ops = [operand(x)] + [operand(c) for c in consts] + [operand(y)]
    key = f"resize|{at['mode']}|{sig(*ops)}"
    th, tw = ih.shape[1], iw.shape[1]
    lanes = ctx.lanes

    def build():
        from tvm import te
        X = te.placeholder(x.shape, "float32", name="X")
        IH = te.placeholder(ih.shape, "int32", name="ih")
        WH = te.placeholder(wh.shape, "float32", name="wh")
        IW = te.placeholder(iw.shape, "int32", name="iw")
        WW = te.placeholder(ww.shape, "float32", name="ww")

        def f(n, c, i, j, *lane):
            total = None
            for a in range(th):
                for b in range(tw):
                    v = X[(n, c, IH[i, a], IW[j, b]) + lane]
                    if at["mode"] != "nearest":
                        v = v * WH[i, a] * WW[j, b]
                    total = v if total is None else total + v
            return total
        Y = te.compute(tuple(out_shape), f, name="out")
        return prim_func([X, IH, WH, IW, WW, Y], lambda sch: schedule_injective(sch, "out", tuple(out_shape), lanes))
    return [Call(key, build, ops, node, flops=2 * th * tw * y.size)]

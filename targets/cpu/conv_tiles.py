"""Register-tile pieces the blocked convolution kernels share (lower_blocked.py, lower_winograd.py): the
pointwise convolution as a GEMM over pixels (its tiles, schedules and weight prefetch; Winograd runs its
per-point GEMMs on it), the zero-bordered copy of a padded input, and finishing a tile (epilogue in
registers, parallel outer loop, vector inits)."""
from __future__ import annotations

from aotc.compiler.ir import Node

from .lower_elementwise import injective_call
from .lowering import LoweringContext, in_bounds, sig
from .prefetch import with_pointwise_prefetch
from .schedules import cpu_schedules, prim_func

# Accumulator vectors a tile may hold (of 32 zmm registers: the rest hold broadcasts and weights).
MAX_ACC = 28


def pick(n: int, choices) -> int:
    return next((t for t in choices if n % t == 0), 1)


def finish_tile(sch, blk, at_loop, big, outer, red_first, registers: bool = True):
    """Epilogue on the tile while it is in registers (or, `registers=False`, in a buffer that outlives the
    tile), the outer loop in parallel, vector inits."""
    if registers:
        sch.set_scope(blk, 0, "local")
    ep = sch.get_sblock("Y")
    sch.reverse_compute_at(ep, at_loop)
    sch.vectorize(sch.get_loops(ep)[-1])
    if big:
        sch.parallel(outer)
    init = sch.decompose_reduction(blk, red_first)
    sch.vectorize(sch.get_loops(init)[-1])


def pointwise_tile(p: int, mb: int) -> tuple[int, int]:
    """(pixels, output blocks) of a pointwise register tile: 21-28 accumulators, so per input channel the
    tile's NB weight vectors and MR broadcasts feed MR x NB FMAs (7 x 4 spills: 28 accumulators + 4
    weights + a broadcast exceed the 32 registers; measured 2x slower). 7 and 14 divide the usual CNN maps
    (7, 14, 28, 56, 112). The number of output blocks is padded up to a multiple of NB when that costs at
    most a quarter of the work (the padding block's results are never stored); the tile with the least
    padding wins (672 -> 112 channels on 14x14: 7 blocks as 4 x 2 rather than 3 x 3, 244 -> ~175 us with two
    threads). Otherwise these tiles' single-core times on EfficientNet-Lite0 differ by less than the noise.
    A map that none of these divides (15x15, 30x30) computes its pixels rounded up to whole tiles
    (pointwise_pixels) rather than taking a 3- or 6-accumulator tile: 384 -> 384 channels on 15x15 ran at
    42% of peak as 3 x 1."""
    tiles = ((8, 3), (7, 3), (14, 2), (8, 2), (7, 2))
    fits = []
    for mr, nb in tiles:
        padded = -(-mb // nb) * nb
        if p % mr == 0 and (padded - mb) * 4 <= padded:
            fits.append((padded - mb, mr, nb))
    if fits:  # the least padding, then the order above
        _, mr, nb = min(fits, key=lambda f: f[0])
        return mr, nb
    # No tile divides the map: the least padded work (pixels and blocks), then the order above.
    padded_fits = []
    for i, (mr, nb) in enumerate(tiles):
        work = pointwise_pixels(p, mr) * -(-mb // nb) * nb
        if (work - p * mb) * 8 <= work:
            padded_fits.append((work, i, mr, nb))
    if padded_fits:
        _, _, mr, nb = min(padded_fits)
        return mr, nb
    return pick(p, (8, 6, 4, 3, 2)), 1


def pointwise_pixels(p: int, mr: int) -> int:
    """Pixels a pointwise tile loop computes: p rounded up to whole MR-pixel tiles, the padding pixels reading
    the last real one again and never stored (as lower_gemm.padded_rows)."""
    return -(-p // mr) * mr


def pointwise_k_blocks(p: int, cin_blocks: int) -> int:
    """Input channel blocks per step of the K-blocked pointwise schedule (_schedule_pointwise_kblocked), or 0
    for the plain one: long reductions on small maps."""
    kb = pick(cin_blocks, (8, 6, 5, 4))
    return kb if p < 1024 and cin_blocks >= 16 and kb > 1 else 0


def pointwise_acc(X, W, batch: int, mbp: int, p: int, mr: int, nb: int, panel):
    """The accumulator stage of a pointwise convolution, a GEMM per batch item: acc[n, mo, q, mi] = sum over
    input channels of X[n, ci // c, q, ci % c] * W[panel(n, mo), ci, mo % NB, mi], X blocked [batch, Cb, P, c]
    and W packed per group of NB output blocks ([panels, C, NB, c]); `mbp` output blocks and the pixels
    rounded up to whole MR-pixel tiles (pointwise_pixels)."""
    from tvm import te
    from tvm import tirx as T
    b = X.shape[-1]
    rco = te.reduce_axis((0, X.shape[1]), "rco")
    rci = te.reduce_axis((0, b), "rci")
    pp = pointwise_pixels(p, mr)
    pixel = (lambda q: q) if pp == p else (lambda q: T.min(q, p - 1))
    return te.compute((batch, mbp, pp, b), lambda n, mo, q, mi: te.sum(
        X[n, rco, pixel(q), rci] * W[panel(n, mo), rco * b + rci, mo % nb, mi], axis=[rco, rci]), name="acc")


def pointwise_func(args, p: int, mr: int, nb: int, big: bool, cin_blocks: int, panels: int, kb: int | None = None):
    """The scheduled PrimFunc of a pointwise convolution whose stages are pointwise_acc's `acc` and an
    elementwise `Y` of it; `panels` weight panels, walked in order by the outer loop of the K-blocked schedule
    (which then prefetches the next one). `kb` overrides pointwise_k_blocks."""
    kb = pointwise_k_blocks(p, cin_blocks) if kb is None else kb
    func = prim_func(args, lambda sch: _schedule_pointwise(sch, p, mr, nb, big, kb))
    if kb and cpu_schedules():
        b = int(args[0].shape[-1])
        func = with_pointwise_prefetch(func, "W", panels, cin_blocks * b, nb, cin_blocks // kb,
                                       pointwise_pixels(p, mr) // mr)
    return func


def _schedule_pointwise(sch, p: int, mr: int, nb: int, big: bool, kb: int = 0) -> None:
    """Tile: MR pixels x NB output blocks. On big maps (few channels) pixels are the outer loop, so a tile's
    input pixels are read once for all output blocks; on small maps output blocks are outer, so a block's
    weight panel stays in cache across the pixels."""
    blk = sch.get_sblock("acc")
    n, mo, q, mi, *reds = sch.get_loops(blk)
    moo, moi = sch.split(mo, [None, nb])
    qo, qi = sch.split(q, [None, mr])
    if kb:
        _schedule_pointwise_kblocked(sch, blk, n, moo, moi, qo, qi, mi, reds, kb, big)
        return
    if p >= 1024:
        sch.reorder(n, qo, moo, *reds, qi, moi, mi)
        outer = sch.fuse(n, qo, moo)
    else:
        sch.reorder(n, moo, qo, *reds, qi, moi, mi)
        outer = sch.fuse(n, moo, qo)
    sch.unroll(qi)
    sch.unroll(moi)
    sch.vectorize(mi)
    finish_tile(sch, blk, outer, big, outer, reds[0])


def _schedule_pointwise_kblocked(sch, blk, n, moo, moi, qo, qi, mi, reds, kb: int, big: bool) -> None:
    """Long reductions on small maps (1152 -> 192 channels on 7x7): the input channels in blocks of KB*c,
    each block's weight panel (KB*c x NB*c floats, 24 KB) and input slice staying in L1 across the map's
    pixel tiles; the accumulators of an output block group live in a small buffer between channel blocks
    (loaded and stored once per block) instead of streaming the whole weight panel from L2 per tile.
    Measured 5-10% faster on EfficientNet-Lite0's 480..1152-channel projections, one or two threads."""
    rco, rci = reds
    rko, rki = sch.split(rco, [None, kb])
    sch.reorder(n, moo, rko, qo, rki, rci, qi, moi, mi)
    outer = sch.fuse(n, moo)
    sch.unroll(qi)
    sch.unroll(moi)
    sch.vectorize(mi)
    finish_tile(sch, blk, outer, big, outer, rko, registers=False)


def zero_padded_copy(node: Node, ctx: LoweringContext, x, pb, extent, steps: list):
    """A temporary holding x's pixels shifted by the leading pads `pb` inside a zero border, `extent` rows x
    columns (what the convolution's windows cover); appends its copy kernel to `steps`."""
    from tvm import tirx as T
    h, wd = x.shape[2], x.shape[3]
    shape = x.shape[:2] + tuple(extent) + x.shape[4:]
    xp = ctx.temp(f"{node.outputs[0].name}.padded_input", shape, x.dtype)

    def f(t, o):
        return padded_read(t[0], o[:2], o[2] - pb[0], o[3] - pb[1], o[4:], h, wd, T.const(0.0, "float32"))
    call = injective_call(node, ctx, [x], xp, None, raw=f)
    call.key = f"conv_zero_pad|{list(pb)}|{sig(*call.operands)}"
    steps.append(call)
    return xp


def padded_read(t, lead, i, j, tail, h: int, w: int, fill, f=None):
    """t[lead + (i, j) + tail] at a pixel that may lie in the padding: the clamped pixel's value (through `f`)
    where (i, j) is inside the h x w map, `fill` outside. One select whose condition is the same for every lane
    of a channel vector."""
    from tvm import tirx as T
    inside = in_bounds(i >= 0, i < h, j >= 0, j < w)  # keeps the clamp below (see in_bounds)
    v = t[tuple(lead) + (T.min(T.max(i, 0), h - 1), T.min(T.max(j, 0), w - 1)) + tuple(tail)]
    return T.Select(inside, f(v) if f is not None else v, fill)

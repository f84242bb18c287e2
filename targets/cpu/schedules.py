"""aotc's CPU schedule rules, applied to TE-built PrimFuncs with
`tvm.s_tir.Schedule`. Untuned TVM code is two orders of magnitude slower
than a BLAS on GEMMs, so every kernel family gets an explicit rule here:

- injective (elementwise, broadcast, data movement): vectorize the innermost
  axis by the target's lanes, fuse the rest, parallelize when big enough;
- GEMM-like contractions: a register tile of MR rows x NR columns (NR a
  multiple of the vector width) accumulated over the reduction, cache-blocked
  along K, outer tiles in parallel;
- row reductions (Softmax, LayerNormalization): one row per iteration,
  vector partial sums along the last axis.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Sequence

# Below this many output elements a kernel runs on one thread: waking the
# pool costs more than it saves.
PARALLEL_MIN_ELEMENTS = 1 << 14
# A kernel with this much work runs in parallel whatever its output size (~20 us on one core): long
# reductions into small outputs (a 1280 -> 1000 classifier, 1152 -> 192 channels on a 7x7 map).
PARALLEL_MIN_FLOPS = 2_000_000


# Set (by `compute_only`) while a GPU target builds kernels from these lowerings: the lowerings' TE compute
# definitions are the CPU family's and the GPU's alike, their CPU schedules (vector lanes, parallel loops,
# VNNI tensorization) are not, so prim_func then returns the unscheduled PrimFunc for the GPU's own rules.
_COMPUTE_ONLY = contextvars.ContextVar("aotc_compute_only", default=False)


@contextlib.contextmanager
def compute_only():
    """Within the block, prim_func ignores its CPU schedule (see _COMPUTE_ONLY)."""
    token = _COMPUTE_ONLY.set(True)
    try:
        yield
    finally:
        _COMPUTE_ONLY.reset(token)


def cpu_schedules() -> bool:
    """Whether the kernels being built get these CPU schedules (False while a GPU target reuses the
    lowerings' computes): a lowering whose compute only pays under its CPU schedule (one kernel doing what
    several would) picks the plain form otherwise."""
    return not _COMPUTE_ONLY.get()


def prim_func(args: Sequence, schedule: Callable | None = None):
    """TE tensors -> a scheduled PrimFunc (parameters in `args` order)."""
    import tvm
    from tvm import te
    func = te.create_prim_func(list(args))
    if schedule is None or _COMPUTE_ONLY.get():
        return func
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    schedule(sch)
    return sch.mod["main"]


def block_names(sch) -> list[str]:
    """Names of the top-level blocks of the function, in program order."""
    root = sch.get_sblock("root")
    return [sch.get(b).name_hint for b in sch.get_child_blocks(root)]


def inline_all_but(sch, keep: set[str]) -> None:
    for name in block_names(sch):
        if name not in keep:
            sch.compute_inline(sch.get_sblock(name))


def schedule_injective(sch, block: str, shape: Sequence[int], lanes: int,
                       parallel_min: int = PARALLEL_MIN_ELEMENTS) -> None:
    """Vectorize the innermost axis (when it divides into vectors), fuse the
    outer axes and run them in parallel when the output is big."""
    blk = sch.get_sblock(block)
    loops = list(sch.get_loops(blk))
    if not loops:
        return
    total = math.prod(shape)
    vec = None
    if shape[-1] % lanes == 0:
        outer, vec = sch.split(loops[-1], [None, lanes])
        loops = loops[:-1] + [outer]
    elif len(loops) > 1:
        # Rows that do not divide into vectors stay plain inner loops (LLVM may still vectorize them); fusing
        # them into the outer index would cost a div/mod per element (measured 9x slower on a Pad to
        # [96, 113, 113]), and vectorizing that fused index adds gathers.
        loops = loops[:-1]
    if vec is not None and len(loops) > 2 and int(sch.get(loops[-1]).extent) == 1:
        # One vector per row position (a channel-blocked tensor's lanes): fusing the row into the outer index
        # cost a div/mod per vector (a conv's zero-bordered input copy ran at ~45 GB/s within L2); the
        # row stays an inner loop.
        loops = loops[:-2]
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if total >= parallel_min:
        sch.parallel(fused)
    if vec is not None:
        sch.vectorize(vec)


def pick_vec(n: int, lanes: int) -> int:
    """A vector tile along a row of n: the widest of 2, 1, 1/2, 1/4 vectors that divides n, else 1. Odd
    widths (28 = 16+8+4) looked attractive, but LLVM legalizes them with per-lane inserts through the
    stack in hot loops (measured 4x slower)."""
    for c in (2 * lanes, lanes, lanes // 2, lanes // 4):
        if c >= 1 and n % c == 0:
            return c
    return 1


def pick_tile(n: int, choices: Sequence[int]) -> int:
    for c in choices:
        if n % c == 0:
            return c
    return 1


def schedule_contraction(sch, block: str, m: int, n: int, k: int, lanes: int, mr: int, nr: int,
                         kc: int | None = None, batch_loops: int = 0, parallel: bool = True,
                         epilogue: str | None = None, rows_outer: bool = False, split_k: int = 0) -> None:
    """Register-tiled contraction for a block whose loops are
    [batch..., m, n, k...] (k may be several reduction loops, fused here).

    MR x NR accumulators stay in vector registers over a K block of `kc`
    (the NR-wide column panel of B for that block stays in L1 across all
    row tiles); tiles of (batch, columns) run in parallel. With an
    `epilogue` block (e.g. + bias), the accumulators live in a local tile
    that the epilogue reads once the whole reduction is done (no K blocking)."""
    blk = sch.get_sblock(block)
    loops = list(sch.get_loops(blk))
    b_loops = loops[:batch_loops]
    lm, ln = loops[batch_loops], loops[batch_loops + 1]
    red = loops[batch_loops + 2:]
    lk = sch.fuse(*red) if len(red) > 1 else red[0]
    mo, mi = sch.split(lm, [None, mr])
    no, ni = sch.split(ln, [None, nr])
    # With an epilogue the accumulators stay in registers over all of K, tile by tile (callers pad M to whole
    # row tiles, lower_gemm.padded_rows, so no tile is guarded); without one, K is blocked so B's panel stays
    # in L1 across the row tiles.
    block_k = kc and k > kc and k % kc == 0 and epilogue is None
    if block_k:
        ko, ki = sch.split(lk, [None, kc])
        sch.reorder(*b_loops, no, ko, mo, ki, mi, ni)
        init_at = ko
    elif rows_outer:
        # Row tiles outermost: each tile row's output is written as one sequential stream (many rows far
        # apart in memory at once thrash the TLB), and the small A rows stay in L1 while B streams.
        ko = None
        sch.reorder(*b_loops, mo, no, lk, mi, ni)
        init_at = lk
    elif split_k:
        # Reduction steps in groups of split_k, so that a statement per group (a prefetch) can sit outside
        # the innermost loop, whose accumulators LLVM then still keeps in registers.
        ko = None
        lko, lki = sch.split(lk, [None, split_k])
        sch.reorder(*b_loops, no, mo, lko, lki, mi, ni)
        init_at = lko
    else:
        ko = None
        sch.reorder(*b_loops, no, mo, lk, mi, ni)
        init_at = lk
    sch.unroll(mi)
    vectorize = nr > 1 and n % nr == 0
    if vectorize:
        sch.vectorize(ni)
    if rows_outer and ko is None:
        outer = sch.fuse(*b_loops, mo, no)
    else:
        outer = sch.fuse(*b_loops, no) if b_loops else no
        if ko is None:
            outer = sch.fuse(outer, mo)
    if epilogue is not None:
        epilogue_at(sch, blk, epilogue, outer, vectorize)
    if parallel and (m * n >= PARALLEL_MIN_ELEMENTS // 4 or 2 * m * n * k >= PARALLEL_MIN_FLOPS):
        sch.parallel(outer)
    init = sch.decompose_reduction(blk, init_at)
    il = sch.get_loops(init)
    if vectorize:
        sch.vectorize(il[-1])


def epilogue_at(sch, blk, epilogue: str, loop, vectorize: bool) -> None:
    """Compute the epilogue block right after the tile's reduction, reading a local accumulator tile."""
    sch.set_scope(blk, 0, "local")
    ep = sch.get_sblock(epilogue)
    sch.reverse_compute_at(ep, loop)
    inner = sch.get_loops(ep)[-1]
    extent = int(sch.get(inner).extent)
    # Odd widths (a transposing epilogue's 7 pixels) would be legalized lane by lane: unroll those instead.
    if vectorize and extent >= 4 and extent & (extent - 1) == 0:
        sch.vectorize(inner)
    elif extent <= 16:
        sch.unroll(inner)

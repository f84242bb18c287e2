"""Winograd convolution F(m x m, 3 x 3) on the channel-blocked layout.

A 3x3 stride-1 convolution computes each m x m tile of outputs from an
(m+2) x (m+2) tile of inputs. Winograd's minimal filtering (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2015) transforms both to
(m+2)^2 points where the convolution is an elementwise product; summed over
input channels, that is one GEMM per point:

    V[k]  = B^T d B     per input tile and channel           (input transform)
    M[k]  = V[k] @ U[k] tiles x Cin times Cin x Cout          (GEMM per point)
    Y     = A^T M A     per output tile and channel, + bias, epilogue
    U[k]  = G g G^T     per filter, at compile time

F(2, 3) does 16/36 of the direct convolution's multiplications, F(4, 3) 36/144.
The GEMMs are the pointwise convolution's kernel (conv_tiles.pointwise_acc,
its tiles, K blocking and weight prefetch), with one weight panel set per point.
The transforms are explicit sums of the non-zero matrix entries, one vector of
c channels at a time; their tile and point loops are unrolled so every
coefficient is a constant.

Which convolutions take it (winograd_tile) was measured, not derived: see there."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from aotc.compiler.ir import Node

from .conv_tiles import pointwise_acc, pointwise_func, pointwise_tile, zero_padded_copy
from .lowering import Call, LoweringContext, in_bounds, operand, sig
from .schedules import PARALLEL_MIN_ELEMENTS, prim_func

_F = Fraction
# (B^T, G, A^T) of F(m, 3) for the interpolation points of Lavin & Gray: 0, -1, 1, inf (m = 2) and
# 0, 1, -1, 2, -2, inf (m = 4). Exact fractions; the weight transform runs in float64.
MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [_F(1, 2), _F(1, 2), _F(1, 2)], [_F(1, 2), _F(-1, 2), _F(1, 2)], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[_F(1, 4), 0, 0], [_F(-1, 6), _F(-1, 6), _F(-1, 6)], [_F(-1, 6), _F(1, 6), _F(-1, 6)],
         [_F(1, 24), _F(1, 12), _F(1, 6)], [_F(1, 24), _F(-1, 12), _F(1, 6)], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m, 3) as float64 arrays."""
    return tuple(np.array([[float(v) for v in row] for row in mat]) for mat in MATRICES[m])


def transform_weight(w: np.ndarray, m: int) -> np.ndarray:
    """[Cout, Cin, 3, 3] -> U [(m+2)^2, Cout, Cin]: G g G^T per filter, in float64, then float32."""
    _, g, _ = matrices(m)
    u = np.einsum("ar,oirs,bs->aboi", g, w.astype(np.float64), g)
    a = m + 2
    return u.reshape(a * a, w.shape[0], w.shape[1]).astype(np.float32)


def _row_sum(coef: np.ndarray, row, term):
    """sum over t of coef[row, t] * term(t) for a symbolic `row`: a chain of selects on the row, each branch a
    sum of only its non-zero terms (unrolled loops make the row a constant, so one branch remains and no
    multiplication by 0 or 1 is left)."""
    from tvm import tirx as T
    expr = None
    for r in reversed(range(coef.shape[0])):
        total = None
        for t in range(coef.shape[1]):
            c = coef[r, t]
            if c == 0:
                continue
            v = term(t)
            if c == -1:
                total = -v if total is None else total - v
                continue
            v = v if c == 1 else v * T.const(float(c), "float32")
            total = v if total is None else total + v
        branch = total if total is not None else T.const(0.0, "float32")
        # in_bounds: given `row == r` the simplifier rewrites the other branches' reads (k % 6 -> k under
        # k // 6 == 0), out of their buffer wherever a loop is not unrolled; opaque, it folds once row is constant
        expr = branch if expr is None else T.Select(in_bounds(row == r), branch, expr)
    return expr


def transform_flops(coef: np.ndarray) -> int:
    """Floating-point operations of one separable two-sided transform (C X C^T, rows then columns) of one
    (m+2)^2 tile (each non-zero entry costs an add and, unless it is +-1, a multiply)."""
    per_row = int((coef != 0).sum() + ((coef != 0) & (np.abs(coef) != 1)).sum())
    return per_row * (coef.shape[1] + coef.shape[0])


def _tile_stage_in_registers(sch, name: str, loop, depth: int) -> None:
    """The first half of a separable transform computed per tile inside `loop` (the `depth`-th loop), in a
    local buffer (registers once its loops are unrolled), its lanes one vector."""
    blk = sch.get_sblock(name)
    sch.compute_at(blk, loop)
    sch.set_scope(blk, 0, "local")
    *loops, lanes = sch.get_loops(blk)[depth:]
    for lp in loops:
        sch.unroll(lp)
    sch.vectorize(lanes)


def winograd_steps(node: Node, ctx: LoweringContext, x, w, bias_packed, epi, y, m: int, pads,
                   conv_flops: int) -> list:
    """The calls of a Winograd F(m, 3) convolution of blocked x ([N, Cb, H, W, c]) into blocked y: the zero-
    bordered input copy, the input transform, the GEMMs and the output transform. Each call counts the FLOPs it executes (the profile's roofline); the model's total keeps the convolution's
    `conv_flops`, so GFLOP/s figures compare with other engines'."""
    b = ctx.lanes
    nb, cb_in = x.shape[:2]
    _, mb, oh, ow, _ = y.shape
    alpha = m + 2
    points = alpha * alpha
    th, tw = -(-oh // m), -(-ow // m)
    tiles = nb * th * tw
    bt, _, at = matrices(m)
    # The bordered input: every tile's window lies inside, so the transform reads without bounds checks.
    steps = []
    xp = zero_padded_copy(node, ctx, x, pads, (th * m + 2, tw * m + 2), steps)
    cp, cout = cb_in * b, w.shape[0]
    mr, nb_tile = pointwise_tile(tiles, mb)
    mbp = -(-mb // nb_tile) * nb_tile
    groups = mbp // nb_tile

    def pack():
        u = transform_weight(w.const.astype(np.float32), m)  # [points, Cout, Cin]
        up = np.zeros((points, mbp * b, cp), np.float32)
        up[:, :cout, :u.shape[2]] = u
        # Per point, as the pointwise kernel reads them: [group of NB output blocks, input channel, NB, c].
        return up.reshape(points, groups, nb_tile, b, cp).transpose(0, 1, 4, 2, 3).reshape(points * groups, cp,
                                                                                             nb_tile, b)
    u = ctx.derived_const(f"{w.name}.winograd{m}.{b}.{cp}.{mbp}x{nb_tile}", pack)
    name = y.name
    v = ctx.temp(f"{name}.winograd_input", (points, cb_in, tiles, b), x.dtype)
    mt = ctx.temp(f"{name}.winograd_product", (points, mb, tiles, b), x.dtype)

    def input_transform():
        from tvm import te

        X = te.placeholder(xp.shape, "float32", name="X")

        def tile(p):
            return p // (th * tw), p // tw % th, p % tw
        # Rows of each tile (B^T d along its columns), then B^T of those along its rows.
        rows = te.compute((alpha, alpha, cb_in, tiles, b), lambda a, nu, cb, p, l: _row_sum(
            bt, nu, lambda c: X[tile(p)[0], cb, tile(p)[1] * m + a, tile(p)[2] * m + c, l]), name="rows")
        V = te.compute(v.shape, lambda k, cb, p, l: _row_sum(
            bt, k // alpha, lambda a: rows[a, k % alpha, cb, p, l]), name="V")

        def schedule(sch):
            blk = sch.get_sblock("V")
            k, cb, p, l = sch.get_loops(blk)
            sch.reorder(cb, p, k, l)
            sch.unroll(k)
            sch.vectorize(l)
            _tile_stage_in_registers(sch, "rows", p, 2)
            if math.prod(v.shape) >= PARALLEL_MIN_ELEMENTS:
                sch.parallel(sch.fuse(cb, p))
        return prim_func([X, V], schedule)

    def gemm():
        from tvm import te
        X = te.placeholder(v.shape, "float32", name="X")
        W = te.placeholder(u.shape, "float32", name="W")
        acc = pointwise_acc(X, W, points, mbp, tiles, mr, nb_tile, lambda k, mo: k * groups + mo // nb_tile)
        Y = te.compute(mt.shape, lambda *o: acc[o], name="Y")
        # Not K-blocked: with a whole-K register tile, 256 -> 256 channels on 14x14 (F(2, 3), 49 tiles) took
        # 2.4 instead of 2.9 ms for ResNet-50's five, weight prefetch and all (one core).
        return pointwise_func([X, W, Y], tiles, mr, nb_tile, True, cb_in, points * groups, kb=0)

    y_shape = y.shape
    ep_ops = epi.operands(0, y_shape)

    def output_transform():
        from tvm import te
        M = te.placeholder(mt.shape, "float32", name="M")
        BT = te.placeholder(bias_packed.shape, "float32", name="bias")
        ep_t = epi.placeholders(0, y_shape)
        # A^T along each product tile's rows, then along its columns.
        cols = te.compute((nb, mb, th, tw, alpha, m, b), lambda n, co, ty, tx, a, j, l: _row_sum(
            at, j, lambda c: M[a * alpha + c, co, (n * th + ty) * tw + tx, l]), name="cols")

        def f(n, co, i, j, l):
            s = _row_sum(at, i % m, lambda a: cols[n, co, i // m, j // m, a, j % m, l])
            return epi.apply(s + BT[co, l], ep_t, None, (n, co, i, j, l))
        Y = te.compute(y_shape, f, name="Y")

        def schedule(sch):
            blk = sch.get_sblock("Y")
            n, co, i, j, l = sch.get_loops(blk)
            io, ii = sch.split(i, [None, m])
            jo, ji = sch.split(j, [None, m])
            sch.reorder(n, co, io, jo, ii, ji, l)
            sch.unroll(ii)
            sch.unroll(ji)
            sch.vectorize(l)
            _tile_stage_in_registers(sch, "cols", jo, 4)
            if math.prod(y_shape) >= PARALLEL_MIN_ELEMENTS:
                sch.parallel(sch.fuse(n, co, io))
        return prim_func([M, BT] + ep_t + [Y], schedule)

    in_ops = [operand(xp), operand(v)]
    gemm_ops = [operand(v), operand(u), operand(mt)]
    out_ops = [operand(mt), operand(bias_packed)] + ep_ops + [operand(y)]
    return steps + [
        Call(f"winograd_input|{m}|{sig(*in_ops)}", input_transform, in_ops, node,
             flops=transform_flops(bt) * tiles * cp, label="winograd_input", model_flops=0),
        Call(f"winograd_gemm|{m}|{mr}x{nb_tile}|{sig(*gemm_ops)}", gemm, gemm_ops, node,
             flops=2 * points * tiles * cp * cout, label="winograd_gemm", model_flops=conv_flops),
        Call(f"winograd_output|{m}|{epi.key()}|{sig(*out_ops)}", output_transform, out_ops, node,
             flops=transform_flops(at) * tiles * mb * b, label="winograd_output", model_flops=0),
    ]


# The cost model winograd_tile compares, in FLOP-equivalents of one core (constants, so a bundle does not
# depend on the machine that compiled it). Calibrated on ResNet-50's 3x3 convolutions (one core, weights
# arriving from memory as in a batch-1 model):
# - the direct kernel runs at ~90% of the FMA peak, the Winograd GEMMs at ~80% (fewer rows per tile);
DIRECT_EFFICIENCY = 0.9
GEMM_EFFICIENCY = 0.8
# - a core streams one byte of (cold) weights in the time of ~16 FLOPs, so a GEMM with few rows waits on
#   its weights: F(4, 3)'s 36 weight panels make 256 -> 256 channels on 14x14 (16 tiles) slower than
#   F(2, 3)'s 16, and F(2, 3) on 512 -> 512 channels on 7x7 slower than the direct kernel (1.3 vs 1.2 ms);
WEIGHT_BYTE_FLOPS = 16
# - the transformed input and products are written once and read once, from cache (~3 FLOPs a byte).
TEMP_BYTE_FLOPS = 3


def winograd_cost(m: int, tiles: int, cin: int, cout: int) -> float:
    """FLOP-equivalent time of F(m, 3) over `tiles` tiles, channels padded to whole blocks."""
    points = (m + 2) ** 2
    gemm = 2 * points * tiles * cin * cout / GEMM_EFFICIENCY
    weights = 4 * points * cin * cout * WEIGHT_BYTE_FLOPS
    temps = 4 * points * tiles * (cin + cout) * 2 * TEMP_BYTE_FLOPS
    return max(gemm, weights) + temps


def winograd_tile(x_shape, y_shape, kernel, strides, dilations) -> int:
    """m of the Winograd F(m, 3) a blocked convolution (x, y [N, Cb, H, W, c]) runs as, or 0 for the direct
    kernel: 3x3, stride 1, no dilation, where the cost model says it is cheaper. Measured on one core against
    the direct kernel: 64 -> 64 channels on 56x56 821 -> 316 us (F(4, 3)), 128 -> 128 on 28x28 866 -> 280 us,
    256 -> 256 on 14x14 920 -> 630 us (F(2, 3)); ResNet-50 34 -> 29 ms."""
    if list(kernel) != [3, 3] or list(strides) != [1, 1] or list(dilations) != [1, 1]:
        return 0
    n, cin, cout = x_shape[0], x_shape[1] * x_shape[4], y_shape[1] * y_shape[4]
    oh, ow = y_shape[2], y_shape[3]
    best, best_cost = 0, max(2 * n * oh * ow * 9 * cin * cout / DIRECT_EFFICIENCY,
                             4 * 9 * cin * cout * WEIGHT_BYTE_FLOPS)
    for m in (2, 4):
        cost = winograd_cost(m, n * -(-oh // m) * -(-ow // m), cin, cout)
        if cost < best_cost:
            best, best_cost = m, cost
    return best

"""The GEMM family: MatMul (batched, broadcasting) and Gemm.

A constant right-hand side (a weight) is packed at compile time into
column panels Bp[N/NR, K, NR], so the micro-kernel's NR-wide row of B for
each k is one contiguous vector load, and the A operand is viewed as
[M, K] with every leading axis folded into M. Gemm's alpha is folded into
the packed weight and its bias becomes the accumulator's initial value."""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node

from .epilogue import Epilogue
from .lower_elementwise import bcast_index, injective_call, tvm_dtype
from .lowering import Call, LoweringContext, NoLoweringError, in_bounds, lowers, operand, sig
from .prefetch import with_panel_prefetch
from .schedules import cpu_schedules, pick_vec, prim_func, schedule_contraction

MR_CHOICES = (8, 6, 4, 3, 2, 1)
KC = 128
PF_K = 16


def pick_nr(n: int, lanes: int) -> int:
    c = pick_vec(n, lanes)
    return c if c > 1 else 0


def packed_width(n: int, lanes: int) -> tuple[int, int]:
    """(NR, padded N) of a packed weight. A width that is not a whole number of vectors (a 1000-class
    classifier, GPT-2's 50,257-token vocabulary) would get half or quarter vectors, or none at all for an odd
    width (TVM's untuned loop: ~1.7 GFLOP/s): pad the packed weight with zero columns instead, to whole
    vectors when it is wider than two of them and to quarter vectors below; the padding columns are
    computed in registers and never stored. A wide ragged width (more than 8 vectors) pads to pairs of
    vectors, so the tile holds 2 x MR accumulators rather than MR (GPT-2's 64x768x50257 head: 30.1 -> 22.6 ms
    on one core; at most 31 padding columns)."""
    if n % lanes and n > 8 * lanes:
        return 2 * lanes, -(-n // (2 * lanes)) * 2 * lanes
    if n % lanes and n > 2 * lanes:
        return lanes, -(-n // lanes) * lanes
    nr = pick_nr(n, lanes)
    if nr:
        return nr, n
    quarter = max(lanes // 4, 1)
    npad = -(-n // quarter) * quarter
    return pick_nr(npad, lanes), npad


def pick_mr(m: int, nr: int, lanes: int) -> int:
    """Rows per register tile: the most that fit 16 accumulators. A row count whose best divisor is less
    than half of that (ViT's 197 tokens and YOLOS's 677 are primes: 1-row tiles, latency-bound at a third of
    the speed) takes full tiles instead; the contraction then computes padded_rows(m, mr) rows."""
    regs = max(-(-nr // lanes), 1)
    fits = [c for c in MR_CHOICES if c * regs <= 16 and c <= m]
    exact = next((c for c in fits if m % c == 0), 1)
    if fits and fits[0] >= 2 * exact:
        return fits[0]
    return exact


def padded_rows(m: int, mr: int) -> int:
    """Rows a register-tiled contraction computes: M rounded up to whole MR-row tiles. The padding rows read
    the last real row again (a clamped index, hoisted out of the reduction) and are never stored, so every
    tile keeps its accumulators in registers with no per-row guard. TVM's guarded last tile (a predicate on
    every FMA of every tile, once the row loop is split unevenly) ran at half speed: 677x192x768 with bias
    and ReLU 1.44 ms against 0.75 ms for 672 rows."""
    return -(-m // mr) * mr


def prefetches_panels(m: int, k: int, panels: int, mr: int) -> bool:
    """Whether a packed GEMM prefetches its next weight panel (targets/cpu/prefetch.py): when a panel is
    reused by at least two row tiles (so there is time to fetch the next one) and K splits into whole
    groups of PF_K steps."""
    return panels >= 2 and padded_rows(m, mr) // mr >= 2 and k % PF_K == 0


def pack_b(b: np.ndarray, nr: int) -> np.ndarray:
    """[K, N] -> [N/NR, K, NR]."""
    k, n = b.shape
    return np.ascontiguousarray(b.reshape(k, n // nr, nr).transpose(1, 0, 2))


def packed_gemm_call(node: Node, ctx: LoweringContext, a, a_shape, b_data_key: str, b_make, k: int, n: int,
                     out, epi: Epilogue | None = None) -> Call:
    """out[M, N] = epilogue(A[M, K] @ B) with B a compile-time constant."""
    lanes = ctx.lanes
    m = math.prod(a_shape) // k
    nr, npad = packed_width(n, lanes)
    mr = pick_mr(m, nr, lanes)
    mp = padded_rows(m, mr)
    epi = epi if epi is not None and not epi.trivial else None
    prefetch = prefetches_panels(m, k, npad // nr, mr)
    if (npad != n or mp != m or prefetch) and epi is None:
        # an identity epilogue: the block that stores only the real rows and columns (and the register-tiled
        # schedule, which the panel prefetch is written for)
        epi = Epilogue()
    bp = ctx.derived_const(f"{b_data_key}.packed{nr}x{npad}", lambda: pack_b(_pad_columns(b_make(), npad), nr))
    ops = [operand(a, (m, k)), operand(bp)] + (epi.operands(n, (m, n)) if epi else [])
    ops.append(operand(out, (m, n)))
    key = f"packed_gemm|{npad}|{epi.key() if epi else ''}|{sig(*ops)}"

    def build():
        from tvm import te
        from tvm import tirx as T
        A = te.placeholder((m, k), "float32", name="A")
        B = te.placeholder(bp.shape, "float32", name="Bp")
        kk = te.reduce_axis((0, k), name="k")
        args = [A, B]
        if epi is not None:
            ep_t = epi.placeholders(n, (m, n))
            args += ep_t
            row = (lambda i: i) if mp == m else (lambda i: T.min(i, m - 1))
            acc = te.compute((mp, npad), lambda i, j: te.sum(A[row(i), kk] * B[j // nr, kk, j % nr], axis=kk),
                             name="acc")
            C = te.compute((m, n), lambda i, j: epi.apply(acc[i, j], ep_t, (j,), (i, j)), name="C")
            block, ep = "acc", "C"
        else:
            C = te.compute((m, n), lambda i, j: te.sum(A[i, kk] * B[j // nr, kk, j % nr], axis=kk), name="C")
            block, ep = "C", None
        pf = prefetch and cpu_schedules()
        func = prim_func(args + [C], lambda sch: schedule_contraction(sch, block, mp, npad, k, lanes, mr, nr,
                                                                      kc=KC, epilogue=ep, split_k=PF_K if pf else 0))
        return with_panel_prefetch(func, "Bp", npad // nr, k, nr, mp // mr, k_step=PF_K) if pf else func

    return Call(key, build, ops, node, flops=2 * m * n * k)


def _pad_columns(b: np.ndarray, npad: int) -> np.ndarray:
    return b if b.shape[1] == npad else np.concatenate([b, np.zeros((b.shape[0], npad - b.shape[1]), b.dtype)], 1)


def batched_matmul_call(node: Node, ctx: LoweringContext, a, b, out, trans_a: bool = False,
                        trans_b: bool = False, epi: Epilogue | None = None) -> list[Call]:
    """out[batch..., M, N] = epilogue(A[batch..., M, K] @ B[batch..., K, N]), batch axes broadcasting."""
    lanes = ctx.lanes
    ash, bsh, osh = a.shape, b.shape, out.shape
    m, n = osh[-2], osh[-1]
    k = ash[-2] if trans_a else ash[-1]
    batch = osh[:-2]
    steps = []
    epi = epi if epi is not None and not epi.trivial else None
    npad = n
    if n % lanes and n > 2 * lanes:
        # A ragged width (attention over 197 or 1500 positions): an odd one would get no schedule at all,
        # an even one quarter vectors. B is computed at run time, so pad it then: one copy of B into
        # [batch..., K, whole vectors] (also undoing a transposed B, so the contraction reads unit-stride rows),
        # then the padded contraction in registers with only the real columns stored, as for packed weights.
        npad = -(-n // lanes) * lanes
        b, bsh = _pad_b_call(node, ctx, b, k, n, npad, trans_b, steps), bsh[:-2] + (k, npad)
        trans_b = False
        epi = epi or Epilogue()
    nr = pick_nr(npad, lanes) or (n if n <= 2 * lanes else 0)
    mr = pick_mr(m, nr or 1, lanes) if nr else 1
    mp = padded_rows(m, mr)
    if mp != m:
        epi = epi or Epilogue()
    ops = [operand(a), operand(b)] + (epi.operands(n, osh) if epi else []) + [operand(out)]
    key = f"matmul|ta={trans_a},tb={trans_b},n={npad}|{epi.key() if epi else ''}|{sig(*ops)}"

    def build():
        from tvm import te
        from tvm import tirx as T
        A = te.placeholder(ash, tvm_dtype(a.dtype), name="A")
        B = te.placeholder(bsh, tvm_dtype(b.dtype), name="B")
        kk = te.reduce_axis((0, k), name="k")

        def f(*idx):
            bi = idx[:-2]
            i, j = idx[-2], idx[-1]
            i = i if mp == m else T.min(i, m - 1)
            ai = bcast_index(ash[:-2], bi) + ((kk, i) if trans_a else (i, kk))
            bj = bcast_index(bsh[:-2], bi) + ((j, kk) if trans_b else (kk, j))
            return te.sum(A[ai] * B[bj], axis=kk)
        args = [A, B]
        if epi is not None:
            ep_t = epi.placeholders(n, osh)
            args += ep_t
            acc = te.compute(osh[:-2] + (mp, npad), f, name="acc")
            C = te.compute(osh, lambda *idx: epi.apply(acc[idx], ep_t, (idx[-1],), idx), name="C")
            block, ep = "acc", "C"
        else:
            C = te.compute(osh, f, name="C")
            block, ep = "C", None
        if nr:
            sched = lambda sch: schedule_contraction(sch, block, mp, npad, k, lanes, mr, nr,  # noqa: E731
                                                     batch_loops=len(batch), epilogue=ep)
        else:
            sched = None
        return prim_func(args + [C], sched)

    return steps + [Call(key, build, ops, node, flops=2 * out.size * k)]


def _pad_b_call(node: Node, ctx: LoweringContext, b, k: int, n: int, npad: int, trans_b: bool, steps: list):
    """A temporary Bp[batch..., K, npad] = B (or B^T), zero past column n; appends its copy kernel."""
    from tvm import tirx as T
    bp = ctx.temp(f"{node.outputs[0].name}.b_padded", b.shape[:-2] + (k, npad), b.dtype)

    def f(t, o):
        kk, j = o[-2], o[-1]
        jc = T.min(j, n - 1)
        return T.Select(in_bounds(j < n), t[0][tuple(o[:-2]) + ((jc, kk) if trans_b else (kk, jc))],
                        T.const(0.0, tvm_dtype(b.dtype)))
    call = injective_call(node, ctx, [b], bp, None, raw=f)
    call.key = f"matmul_pad_b|tb={trans_b},n={n}|{sig(*call.operands)}"
    steps.append(call)
    return bp


@lowers("MatMul")
def lower_matmul(node: Node, ctx: LoweringContext):
    a, b = node.inputs
    out = node.outputs[0]
    if a.dtype != DType.float32:
        raise NoLoweringError(f"{a.dtype} MatMul has no CPU kernel yet")
    if a.rank < 2 or b.rank < 2:
        raise NoLoweringError("MatMul of a 1-D operand has no CPU kernel yet")
    k, n = b.shape[-2], b.shape[-1]
    if b.const is not None and math.prod(b.shape[:-2]) == 1:
        w = b
        return [packed_gemm_call(node, ctx, a, a.shape, w.name, lambda: w.const.reshape(k, n).astype(np.float32),
                                 k, n, out)]
    return batched_matmul_call(node, ctx, a, b, out)


@lowers("Gemm")
def lower_gemm(node: Node, ctx: LoweringContext):
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    at = node.attrs
    if a.dtype != DType.float32:
        raise NoLoweringError(f"{a.dtype} Gemm has no CPU kernel yet")
    m, n = out.shape
    k = a.shape[0] if at["transA"] else a.shape[1]
    alpha, beta = at["alpha"], at["beta"]
    per_column = c is None or (c.const is not None and c.const.size in (1, n)
                               and not (c.const.ndim == 2 and c.const.shape[0] != 1))
    if b.const is not None and not at["transA"] and per_column:
        w = b
        make_b = lambda: (alpha * (w.const.T if at["transB"] else w.const)).astype(np.float32)  # noqa: E731
        bias = None
        if c is not None:
            bias = ctx.derived_const(f"{c.name}.bias{n}x{beta}",
                                     lambda: (beta * np.broadcast_to(c.const.reshape(-1), (n,))).astype(np.float32))
        key = f"{w.name}.a{alpha}.t{at['transB']}"
        return [packed_gemm_call(node, ctx, a, a.shape, key, make_b, k, n, out, Epilogue(bias=bias))]
    if c is not None or alpha != 1.0:
        # Any other form (a run-time B with alpha or C, a run-time C, a C that is not one value per column):
        # A·B into a temporary, then alpha·t + beta·C in one elementwise kernel, C broadcast as ONNX allows.
        from tvm import tirx as T
        if c is not None and c.dtype != DType.float32:
            raise NoLoweringError(f"a {c.dtype} Gemm C has no CPU kernel yet")
        tmp = ctx.temp(out.name, out.shape, DType.float32)
        steps = batched_matmul_call(node, ctx, a, b, tmp, bool(at["transA"]), bool(at["transB"]))

        def scale_and_add(ld, i):
            y = ld[0](i) * T.const(float(alpha), "float32") if alpha != 1.0 else ld[0](i)
            return y + ld[1](i) * T.const(float(beta), "float32") if c is not None else y
        return steps + [injective_call(node, ctx, [tmp] + ([c] if c is not None else []), out, scale_and_add,
                                       extra_key=f"alpha={alpha!r},beta={beta!r}")]
    return batched_matmul_call(node, ctx, a, b, out, bool(at["transA"]), bool(at["transB"]))


@lowers("FusedMatMul")
def lower_fused_matmul(node: Node, ctx: LoweringContext):
    a, b = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    res = node.inputs[3] if len(node.inputs) > 3 else None
    out = node.outputs[0]
    if a.dtype != DType.float32 or a.rank < 2 or b.rank < 2:
        raise NoLoweringError("only float32 FusedMatMul of rank >= 2 operands has a CPU kernel yet")
    n = out.shape[-1]
    if bias is not None and bias.size != n:
        raise NoLoweringError("a FusedMatMul bias that is not one value per output column")
    if res is not None and res.shape != out.shape:
        raise NoLoweringError("a FusedMatMul residual that broadcasts")
    epi = Epilogue.from_attrs(node.attrs, bias, res, ctx)
    k = b.shape[-2]
    if b.const is not None and math.prod(b.shape[:-2]) == 1 and out.shape[:-1] == a.shape[:-1]:
        w = b
        return [packed_gemm_call(node, ctx, a, a.shape, w.name, lambda: w.const.reshape(k, n).astype(np.float32),
                                 k, n, out, epi)]
    return batched_matmul_call(node, ctx, a, b, out, epi=epi)

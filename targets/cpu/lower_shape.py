"""Data-movement ops. Reshape and friends are aliases (no kernel, no copy);
the others are injective kernels whose index maps do the work. Every
computed index is clamped into range, so a vector lane that a Select
discards can never read outside its buffer."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Node
from aotc.compiler.ops.shape_ops import Split, Transpose, slice_index

from .lower_elementwise import dtype_of, injective_call, tvm_dtype
from .lowering import Alias, LoweringContext, NoLoweringError, in_bounds, lowers


def clamp(i, n: int):
    from tvm import tirx as T
    dt = dtype_of(i)
    c = T.min(T.max(i, T.const(0, dt)), T.const(n - 1, dt))
    return T.Cast("int32", c) if dt != "int32" else c


@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def lower_alias(node: Node, ctx: LoweringContext):
    return [Alias(node.inputs[0], node.outputs[0], node)]


@lowers("Transpose")
def lower_transpose(node: Node, ctx: LoweringContext):
    x, y = node.inputs[0], node.outputs[0]
    tvm_dtype(x.dtype)
    perm = Transpose.perm(x.rank, node.attrs)
    return [_raw_call(node, ctx, [x], y, lambda t, idx: t[0][tuple(_inv(perm, idx))])]


def _inv(perm, idx):
    src = [None] * len(perm)
    for i, p in enumerate(perm):
        src[p] = idx[i]
    return src


def _raw_call(node: Node, ctx: LoweringContext, inputs, out, fcompute, extra_key: str = ""):
    """An injective kernel whose compute reads its inputs with arbitrary indices."""
    return injective_call(node, ctx, inputs, out, None, extra_key, raw=fcompute)


@lowers("Gather")
def lower_gather(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    data, idx = node.inputs
    y = node.outputs[0]
    tvm_dtype(data.dtype)
    axis = node.attrs["axis"] % data.rank
    n = data.shape[axis]
    ir = idx.rank

    def f(t, o):
        i = t[1][tuple(o[axis:axis + ir])] if ir else t[1][()]
        i = T.Select(i < T.const(0, dtype_of(i)), i + T.const(n, dtype_of(i)), i)
        src = tuple(o[:axis]) + (clamp(i, n),) + tuple(o[axis + ir:])
        return t[0][src]
    return [_raw_call(node, ctx, [data, idx], y, f)]


@lowers("GatherElements")
def lower_gather_elements(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    data, idx = node.inputs
    axis = node.attrs["axis"] % data.rank
    n = data.shape[axis]
    tvm_dtype(data.dtype)

    def f(t, o):
        i = t[1][tuple(o)]
        i = T.Select(i < T.const(0, dtype_of(i)), i + T.const(n, dtype_of(i)), i)
        return t[0][tuple(clamp(i, n) if a == axis else o[a] for a in range(data.rank))]
    return [_raw_call(node, ctx, [data, idx], node.outputs[0], f)]


@lowers("GatherND")
def lower_gather_nd(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    data, idx = node.inputs
    y = node.outputs[0]
    tvm_dtype(data.dtype)
    b, k = node.attrs["batch_dims"], idx.shape[-1]
    lead = idx.rank - 1  # output axes that come from the index tensor

    def f(t, o):
        src = list(o[:b])
        for j in range(k):
            n = data.shape[b + j]
            i = t[1][tuple(o[:lead]) + (j,)]
            i = T.Select(i < T.const(0, dtype_of(i)), i + T.const(n, dtype_of(i)), i)
            src.append(clamp(i, n))
        src += list(o[lead:])
        return t[0][tuple(src)]
    return [_raw_call(node, ctx, [data, idx], y, f)]


@lowers("Slice")
def lower_slice(node: Node, ctx: LoweringContext):
    x, y = node.inputs[0], node.outputs[0]
    tvm_dtype(x.dtype)
    sl = [s.indices(d) for s, d in zip(slice_index(x.shape, node.attrs), x.shape)]

    def f(t, o):
        return t[0][tuple(start + step * i if (start, step) != (0, 1) else i
                          for (start, _, step), i in zip(sl, o))]
    return [_raw_call(node, ctx, [x], y, f)]


@lowers("Split")
def lower_split(node: Node, ctx: LoweringContext):
    x = node.inputs[0]
    tvm_dtype(x.dtype)
    axis, sizes = Split.sizes(x.shape, node.attrs)
    calls, start = [], 0
    for out, size in zip(node.outputs, sizes):
        def f(t, o, start=start):
            return t[0][tuple(i + start if a == axis else i for a, i in enumerate(o))]
        calls.append(_raw_call(node, ctx, [x], out, f, extra_key=f"start={start}"))
        start += size
    return calls


@lowers("Concat")
def lower_concat(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    ins = list(node.inputs)
    tvm_dtype(ins[0].dtype)
    axis = node.attrs["axis"] % ins[0].rank
    offsets = np.cumsum([0] + [v.shape[axis] for v in ins]).tolist()

    def f(t, o):
        i = o[axis]
        expr = None
        for j in reversed(range(len(ins))):
            local = clamp(i - T.const(offsets[j], dtype_of(i)), ins[j].shape[axis])
            val = t[j][tuple(local if a == axis else x for a, x in enumerate(o))]
            # the select reads both inputs at every index: in_bounds keeps their clamps through simplification
            expr = val if expr is None else T.Select(in_bounds(i < T.const(offsets[j + 1], dtype_of(i))), val, expr)
        return expr
    return [_raw_call(node, ctx, ins, node.outputs[0], f)]


@lowers("Expand")
def lower_expand(node: Node, ctx: LoweringContext):
    tvm_dtype(node.inputs[0].dtype)
    return [injective_call(node, ctx, [node.inputs[0]], node.outputs[0], lambda ld, i: ld[0](i))]


@lowers("Tile")
def lower_tile(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    x = node.inputs[0]
    tvm_dtype(x.dtype)
    return [_raw_call(node, ctx, [x], node.outputs[0],
                      lambda t, o: t[0][tuple(T.floormod(i, d) if d > 1 else 0 for i, d in zip(o, x.shape))])]


@lowers("Trilu")
def lower_trilu(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    x = node.inputs[0]
    dt = tvm_dtype(x.dtype)
    k, upper = node.attrs["k"], node.attrs["upper"]

    def f(t, o):
        r, c = o[-2], o[-1]
        keep = (c - r >= k) if upper else (c - r <= k)
        return T.Select(keep, t[0][tuple(o)], T.const(0, dt))
    return [_raw_call(node, ctx, [x], node.outputs[0], f)]


def _pad_source(i, n: int, b: int, mode: str):
    """Input index for output index i of an axis padded by b in front (edge/reflect/wrap)."""
    from tvm import tirx as T
    j = i - T.const(b, dtype_of(i))
    if mode == "edge":
        return clamp(j, n)
    if mode == "wrap":
        return T.floormod(j, n)
    # reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
    period = max(2 * (n - 1), 1)
    m = T.floormod(j, period)
    return clamp(T.Select(m >= n, T.const(period, dtype_of(i)) - m, m), n)


@lowers("Pad")
def lower_pad(node: Node, ctx: LoweringContext):
    from tvm import tirx as T
    from aotc.compiler.ops.nn import Pad
    x, y = node.inputs[0], node.outputs[0]
    dt = tvm_dtype(x.dtype)
    widths = Pad.widths(x.shape, node.attrs)
    mode = node.attrs["mode"]
    v = node.attrs["value"]
    fill = 0 if v is None or v.size == 0 else v.reshape(-1)[0].item()
    if mode != "constant" and any(b < 0 or e < 0 for b, e in widths):
        raise NoLoweringError("negative pads with a non-constant mode")

    def f(t, o):
        if mode == "constant":
            src, inside = [], []
            for i, n, (b, _) in zip(o, x.shape, widths):
                j = i - T.const(b, dtype_of(i)) if b else i
                src.append(clamp(j, n))
                if b > 0:
                    inside.append(j >= T.const(0, dtype_of(i)))
                if y.shape[len(src) - 1] > n + min(b, 0):
                    inside.append(j < T.const(n, dtype_of(i)))
            val = t[0][tuple(src)]
            if not inside:
                return val
            return T.Select(in_bounds(*inside), val, T.const(fill, dt))
        return t[0][tuple(_pad_source(i, n, b, mode) for i, n, (b, _) in zip(o, x.shape, widths))]
    return [_raw_call(node, ctx, [x], y, f)]

"""Matrix products and attention -> MIL.

MatMul is `matmul`; a product with a constant 2-D right operand is `linear` (MIL's weight is [out, in], so the
constant is transposed at compile time), which is what Core ML's compiler maps to its fully-connected kernels
and what int8 weights attach to. FusedMatMul adds its epilogue (bias in `linear`, activation, residual);
Gemm is matmul with its transposes, alpha and beta. Attention projects Q, K, V with `linear`, splits the
heads, and then, on iOS18 and later, runs one `scaled_dot_product_attention` (scores pre-scaled so MIL's fixed
1/sqrt(D) gives aotc's `scale`; both masks folded into one additive mask); before iOS18 the same as
matmul -> softmax -> matmul.
"""
from __future__ import annotations

import math

import numpy as np

from .lower_nn import epilogue
from .lowering import LoweringContext, lowers


def dense(ctx: LoweringContext, x, w_value, bias, name: str):
    """x @ W (+ bias) for a constant W [K, N]: MIL `linear` with weight Wᵀ [N, K]."""
    w = np.ascontiguousarray(ctx.x(w_value).T)
    kwargs = {"bias": bias} if bias is not None else {}
    return ctx.mb.linear(x=x, weight=w, name=name, **kwargs)


def _linear_fits(node) -> bool:
    b = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    return (b.const is not None and b.rank == 2 and 2 <= node.inputs[0].rank <= 3  # MIL linear: x of rank 1-3
            and (bias is None or (bias.const is not None and bias.size == b.shape[1] and bias.rank <= 1)))


@lowers("MatMul")
def matmul(ctx, node):
    a, b = node.inputs
    if _linear_fits(node):
        return dense(ctx, ctx.x(a), b, None, ctx.name(node))
    return ctx.mb.matmul(x=ctx.x(a), y=ctx.x(b), name=ctx.name(node))


@lowers("FusedMatMul")
def fused_matmul(ctx, node):
    mb = ctx.mb
    a, b = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    residual = node.inputs[3] if len(node.inputs) > 3 else None
    plain = node.attrs["activation"] == "none" and residual is None
    name = ctx.name(node) if plain else ctx.name(node, "matmul")
    if _linear_fits(node):
        y = dense(ctx, ctx.x(a), b, None if bias is None else ctx.x(bias).reshape(-1), name)
    else:
        y = mb.matmul(x=ctx.x(a), y=ctx.x(b), name=name if bias is None else name + "_product")
        if bias is not None:
            y = mb.add(x=y, y=ctx.x(bias), name=name)
    return y if plain else epilogue(ctx, node, y, residual, ctx.name(node))


@lowers("Gemm")
def gemm(ctx, node):
    mb = ctx.mb
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    alpha, beta = node.attrs["alpha"], node.attrs["beta"]
    last = alpha == 1 and c is None
    y = mb.matmul(x=ctx.x(a), y=ctx.x(b), transpose_x=bool(node.attrs["transA"]),
                  transpose_y=bool(node.attrs["transB"]), name=ctx.name(node) if last else ctx.name(node, "product"))
    if alpha != 1:
        y = mb.mul(x=y, y=np.float32(alpha), name=ctx.name(node) if c is None else ctx.name(node, "alpha"))
    if c is not None:
        cv = ctx.x(c)
        cv = cv * np.float32(beta) if isinstance(cv, np.ndarray) else (
            cv if beta == 1 else mb.mul(x=cv, y=np.float32(beta), name=ctx.name(node, "beta")))
        y = mb.add(x=y, y=cv, name=ctx.name(node))
    return y


def heads(ctx, node, y, seq: int, h: int, d: int, what: str):
    """[B, S, H*D] -> [B, H, S, D]."""
    mb = ctx.mb
    b = node.inputs[0].shape[0]
    y = mb.reshape(x=y, shape=np.array([b, seq, h, d], np.int32), name=ctx.name(node, f"{what}_split"))
    return mb.transpose(x=y, perm=np.array([0, 2, 1, 3], np.int32), name=ctx.name(node, f"{what}_heads"))


def attention_core(ctx, node, q, k, v, add_mask, keep_mask, name: str):
    """softmax(q kᵀ · scale, masked) v on heads [B, H, S, D], merged to [B, Sq, H*D]."""
    mb = ctx.mb
    a = node.attrs
    h, d = a["num_heads"], a["head_dim"]
    b, sq = node.inputs[0].shape[0], node.inputs[0].shape[1]
    scale = a["scale"]
    # MIL's attention adds its mask to the scores; aotc's boolean mask replaces them by mask_fill. The two agree
    # when mask_fill is -inf; a finite fill (a fully masked row then averages the values) takes the chain.
    if ctx.deployment.fused_attention and (keep_mask is None or np.isneginf(a["mask_fill"])):
        # MIL divides by sqrt(D): pre-scale q so the scores are q kᵀ · scale
        q = mb.mul(x=q, y=np.float32(scale * math.sqrt(d)), name=ctx.name(node, "q_scaled"))
        mask = _additive_mask(ctx, node, add_mask, keep_mask)
        kwargs = {"attn_mask": mask} if mask is not None else {}
        ctx_ = mb.scaled_dot_product_attention(query=q, key=k, value=v, name=ctx.name(node, "sdpa"), **kwargs)
    else:
        s = mb.matmul(x=q, y=k, transpose_y=True, name=ctx.name(node, "scores"))
        s = mb.mul(x=s, y=np.float32(scale), name=ctx.name(node, "scaled"))
        if keep_mask is not None:
            s = mb.select(cond=ctx.x(keep_mask), a=s, b=np.float32(a["mask_fill"]), name=ctx.name(node, "keep"))
        if add_mask is not None:
            s = mb.add(x=s, y=ctx.x(add_mask), name=ctx.name(node, "masked"))
        p = mb.softmax(x=s, axis=np.int32(-1), name=ctx.name(node, "softmax"))
        ctx_ = mb.matmul(x=p, y=v, name=ctx.name(node, "context"))
    if a["nan_to_zero"]:  # a fully masked row: 0/0 in the softmax; exporters' guard makes it 0
        nan = mb.not_equal(x=ctx_, y=ctx_, name=ctx.name(node, "isnan"))
        ctx_ = mb.select(cond=nan, a=np.float32(0), b=ctx_, name=ctx.name(node, "nan0"))
    ctx_ = mb.transpose(x=ctx_, perm=np.array([0, 2, 1, 3], np.int32), name=ctx.name(node, "merge"))
    return mb.reshape(x=ctx_, shape=np.array([b, sq, h * d], np.int32), name=name)


def _additive_mask(ctx, node, add_mask, keep_mask):
    """aotc masks scores as where(keep, s, -inf) + add; as one additive mask: where(keep, add, -inf)."""
    mb = ctx.mb
    fill = np.float32(node.attrs["mask_fill"])  # -inf here (see attention_core)
    if keep_mask is None:
        return ctx.x(add_mask) if add_mask is not None else None
    if add_mask is None:  # MIL's bool mask: False -> -inf, exactly aotc's mask_fill
        return ctx.x(keep_mask)
    # broadcast the additive mask to the boolean one's shape first: coremltools infers select's shape from
    # its branches alone, so a narrower `add` would give the mask a wrong static shape
    keep = ctx.x(keep_mask)
    zeros = mb.mul(x=mb.cast(x=keep, dtype="fp32", name=ctx.name(node, "keep_f")), y=np.float32(0),
                   name=ctx.name(node, "mask_zeros"))
    add = mb.add(x=ctx.x(add_mask), y=zeros, name=ctx.name(node, "mask_add"))
    filled = mb.add(x=add, y=fill, name=ctx.name(node, "mask_filled"))
    return mb.select(cond=keep, a=add, b=filled, name=ctx.name(node, "mask"))


def _attention_check(node, deployment):
    if any(v is not None and v.const is None for v in node.inputs[2:8]):
        return "projection weights or biases computed at run time (MIL linear takes constants)"
    return None


@lowers("Attention", check=_attention_check)
def attention(ctx, node):
    xq, xkv, wq, bq, wk, bk, wv, bv, add_mask, keep_mask = node.inputs
    h, d = node.attrs["num_heads"], node.attrs["head_dim"]

    def project(x, w, b, seq, what):
        y = dense(ctx, ctx.x(x), w, None if b is None else ctx.x(b), ctx.name(node, what))
        return heads(ctx, node, y, seq, h, d, what)
    q = project(xq, wq, bq, xq.shape[1], "q")
    k = project(xkv, wk, bk, xkv.shape[1], "k")
    v = project(xkv, wv, bv, xkv.shape[1], "v")
    return attention_core(ctx, node, q, k, v, add_mask, keep_mask, ctx.name(node))

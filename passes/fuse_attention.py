"""Multi-head attention → one `Attention` op.

Exporters spell attention many ways (eager vs SDPA, legacy vs dynamo
exporter): K transposed by one 4-D Transpose or by a Reshape/Transpose/Reshape
detour, the 1/√d scale on the scores or split as √ of it on Q and K, a NaN
guard after Softmax, masks added or applied with Where. Rather than one
pattern per spelling, the matcher anchors at Softmax and checks the head
layouts by *meaning*: it pushes an index tensor through each chain of
Reshape/Transpose nodes and compares the result with the layout attention
needs ([B,H,S,D] for Q and V, [B,H,D,S] for Kᵀ, [B,S,H·D] for the output).

Recognized (forward order): Q/K/V projections (MatMul with constant weight,
optional constant bias) → head split (any Reshape/Transpose chain) →
optional scalar scale on Q and/or K (before or after the head split) → Q·Kᵀ → scalar Mul/Div → optional
Where(bool, fill) → optional additive masks (one or several) → Softmax(last axis) → optional
Where(IsNaN(p), 0, p) → ·V → head merge (any Reshape/Transpose chain).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from aotc.compiler.ir import Graph, Node, Value

from .pass_manager import register_pass
from .patterns import is_weight, scalar

LAYOUT_OPS = {"Reshape", "Transpose"}


class _NoMatch(Exception):
    pass


def _need(cond: bool) -> None:
    if not cond:
        raise _NoMatch


def _apply_chain(chain: list[Node], arr: np.ndarray) -> np.ndarray:
    for n in chain:
        arr = n.op.run([arr], n.attrs)[0]
    return arr


def _layout_matches(chain: list[Node], src_shape, expected: Callable[[np.ndarray], np.ndarray]) -> bool:
    idx = np.arange(int(np.prod(src_shape)), dtype=np.int64).reshape(src_shape)
    got = _apply_chain(chain, idx)
    want = expected(np.arange(idx.size, dtype=np.int64))
    return got.shape == want.shape and np.array_equal(got, want)


class _Matcher:
    def __init__(self, graph: Graph, softmax: Node, consumers: dict[str, list[Node]]):
        self.g = graph
        self.sm = softmax
        self.consumers = consumers
        self.covered: list[Node] = [softmax]

    def users(self, v: Value) -> list[Node]:
        return self.consumers.get(v.name, [])

    def only_user(self, v: Value) -> Node:
        us = self.users(v)
        _need(len(us) == 1 and v not in self.g.outputs)
        return us[0]

    def cover(self, n: Node) -> Node:
        self.covered.append(n)
        return n

    # -- the pieces ---------------------------------------------------------
    def trace_back_layout(self, v: Value) -> tuple[Value, list[Node]]:
        chain = []
        while v.producer is not None and v.producer.op_type in LAYOUT_OPS:
            chain.insert(0, self.cover(v.producer))
            v = v.producer.inputs[0]
        return v, chain

    def projection(self, p: Value) -> tuple[Value, Value | np.ndarray, Value | np.ndarray | None]:
        """p = x @ W (+ b) with constant W [E, N] and b [N] -> (x, W, b). A fused QKV projection
        followed by Split/Slice on the last axis yields this output's columns of W and b."""
        n = p.producer
        _need(n is not None)
        if n.op_type in ("Split", "Slice"):
            lo, hi = self.column_range(n, p)
            x, w, b = self.projection(self.cover(n).inputs[0])
            _need(not isinstance(w, Value) or w.const is not None)  # columns of a dequantized weight: not yet
            cols = slice(lo, hi)
            return x, _array(w)[:, cols], None if b is None else _array(b).reshape(-1)[cols]
        bias = None
        if n.op_type == "Add":
            a, b = n.inputs
            if a.const is not None:
                a, b = b, a
            _need(b.const is not None and b.size == p.shape[-1] and b.shape[-1] == p.shape[-1])
            bias = b
            self.cover(n)
            n = a.producer
            _need(n is not None)
        _need(n.op_type == "MatMul")
        x, w = n.inputs
        _need(is_weight(w) and w.rank == 2 and x.rank == 3)  # a constant, or a pre-quantized model's int8 weight
        self.cover(n)
        return x, w, bias

    @staticmethod
    def column_range(n: Node, p: Value) -> tuple[int, int]:
        src = n.inputs[0]
        last = src.rank - 1
        if n.op_type == "Split":
            _need(n.attrs["axis"] in (-1, last))
            i = n.outputs.index(p)
            lo = sum(o.shape[-1] for o in n.outputs[:i])
            return lo, lo + p.shape[-1]
        a = n.attrs
        axes = a["axes"] if a["axes"] is not None else list(range(len(a["starts"])))
        _need(len(axes) == 1 and axes[0] in (-1, last) and (a["steps"] in (None, [1])))
        start = a["starts"][0] + (src.shape[-1] if a["starts"][0] < 0 else 0)
        return start, start + p.shape[-1]

    def heads(self, v: Value, perm: tuple[int, ...], h: int, d: int):
        """Q/K/V as a head-split view of a projection, optionally scaled by a scalar before the split (Whisper
        scales q_proj's output): returns (x, W, b, scale)."""
        src, chain = self.trace_back_layout(v)
        _need(src.rank == 3 and src.shape[-1] == h * d)
        b, s = src.shape[0], src.shape[1]
        _need(_layout_matches(chain, src.shape, lambda a: a.reshape(b, s, h, d).transpose(perm)))
        src, scale = self.scalar_factor(src)
        return self.projection(src) + (scale,)

    def scalar_factor(self, v: Value) -> tuple[Value, float]:
        """Peel Mul/Div by scalar constants off v."""
        scale = 1.0
        while v.producer is not None and v.producer.op_type in ("Mul", "Div"):
            n = v.producer
            a, c = n.inputs
            if n.op_type == "Mul" and a.const is not None:
                a, c = c, a
            k = scalar(c)
            if k is None or a.const is not None or self.users(v) != [self.users(v)[0]] or len(self.users(v)) != 1:
                break
            scale *= k if n.op_type == "Mul" else 1.0 / k
            self.cover(n)
            v = a
        return v, scale

    # -- the whole ----------------------------------------------------------
    def run(self):
        sm = self.sm
        s_in = sm.inputs[0]
        _need(s_in.rank == 4 and sm.attrs["axis"] in (-1, 3) and s_in.dtype.is_float)
        bsz, h, sq, skv = s_in.shape
        # after Softmax: optional NaN guard, then ·V
        p = sm.outputs[0]
        nan_to_zero = 0
        users = self.users(p)
        if len(users) == 2 and {u.op_type for u in users} == {"IsNaN", "Where"}:
            isnan = next(u for u in users if u.op_type == "IsNaN")
            where = next(u for u in users if u.op_type == "Where")
            _need(where.inputs[0] is isnan.outputs[0] and where.inputs[2] is p and scalar(where.inputs[1]) == 0.0)
            _need(self.users(isnan.outputs[0]) == [where])
            self.cover(isnan), self.cover(where)
            p, nan_to_zero = where.outputs[0], 1
        pv = self.cover(self.only_user(p))
        _need(pv.op_type == "MatMul" and pv.inputs[0] is p)
        v4 = pv.inputs[1]
        _need(v4.rank == 4 and v4.shape[:2] == (bsz, h) and v4.shape[2] == skv)
        d = v4.shape[3]
        # head merge: follow single users through layout ops until [B, Sq, H*D]
        out, chain = pv.outputs[0], []
        while True:
            if out.rank == 3 and chain and _layout_matches(
                    chain, pv.outputs[0].shape, lambda a: a.reshape(bsz, h, sq, d).transpose(0, 2, 1, 3)
                    .reshape(bsz, sq, h * d)):
                break
            nxt = self.only_user(out)
            _need(nxt.op_type in LAYOUT_OPS)
            chain.append(self.cover(nxt))
            out = nxt.outputs[0]
        # before Softmax: optional additive mask, optional Where mask, scalar scales, Q·Kᵀ
        v, add_masks, keep, fill = s_in, [], None, None
        # additive masks: one, or several in a row (T5 adds its position bias, then the padding mask)
        while v.producer is not None and v.producer.op_type == "Add":
            n = v.producer
            for scores, mask in (n.inputs, n.inputs[::-1]):
                if scores.producer is not None and scores.producer.op_type in ("Mul", "Div", "MatMul", "Where",
                                                                              "Add") \
                        and scores.shape == s_in.shape and mask.rank <= 4 and self.users(scores) == [n]:
                    break
            else:
                raise _NoMatch
            _need(mask.dtype == s_in.dtype)
            self.cover(n)
            v = scores
            add_masks.insert(0, mask)
        _need(len(add_masks) <= 3)
        if v.producer is not None and v.producer.op_type == "Where":
            n = v.producer
            cond, a, b = n.inputs
            if scalar(a) is not None and b.shape == s_in.shape:
                v, fill, keep = b, scalar(a), ("not", cond)
            elif scalar(b) is not None and a.shape == s_in.shape:
                v, fill, keep = a, scalar(b), ("is", cond)
            else:
                raise _NoMatch
            _need(self.users(v) == [n])
            self.cover(n)
        v, scale = self.scalar_factor(v)
        qk = v.producer
        _need(qk is not None and qk.op_type == "MatMul" and self.users(v) == [qk if not self.covered[-1:] else
                                                                           self.users(v)[0]])
        self.cover(qk)
        q4, q_scale = self.scalar_factor(qk.inputs[0])
        kt, k_scale = self.scalar_factor(qk.inputs[1])
        scale *= q_scale * k_scale
        # scales on the projections' outputs, before the head split
        xq, wq, bq, q_pre = self.heads(q4, (0, 2, 1, 3), h, d)
        xk, wk, bk, k_pre = self.heads(kt, (0, 2, 3, 1), h, d)
        xv, wv, bv, v_pre = self.heads(v4, (0, 2, 1, 3), h, d)
        _need(v_pre == 1.0)
        scale *= q_pre * k_pre
        _need(xk is xv and all(_dtype(w) == xq.dtype.numpy for w in (wq, wk, wv)))
        self.check_private(out)
        return dict(out=out, xq=xq, xkv=xk, w=(wq, bq, wk, bk, wv, bv), add_masks=add_masks, keep=keep, fill=fill,
                    attrs={"num_heads": h, "head_dim": d, "scale": scale, "nan_to_zero": nan_to_zero})

    def check_private(self, out: Value) -> None:
        """Everything covered feeds only the match, except the final output."""
        inside = {id(n) for n in self.covered}
        for n in self.covered:
            for o in n.outputs:
                if o is out:
                    continue
                _need(o not in self.g.outputs and all(id(u) in inside for u in self.users(o)))


def _array(v: Value | np.ndarray) -> np.ndarray:
    return v.const if isinstance(v, Value) else v


def _dtype(v: Value | np.ndarray) -> np.dtype:
    return v.dtype.numpy if isinstance(v, Value) else v.dtype


def _combined_mask(graph: Graph, masks: list[Value], base: str, cache: dict) -> Value | None:
    """One additive mask for several (their sum, in the order the model added them), made once per distinct
    list: every layer of T5 adds the same position bias and padding mask."""
    if not masks:
        return None
    if len(masks) == 1:
        return masks[0]
    key = tuple(m.name for m in masks)
    if key not in cache:
        total = masks[0]
        for i, m in enumerate(masks[1:]):
            total = graph.add_node("Add", [total, m], name=f"{base}/mask_sum{i}").outputs[0]
        cache[key] = total
    return cache[key]


def _fuse_one(graph: Graph, sm: Node, consumers, mask_cache: dict | None = None) -> bool:
    try:
        m = _Matcher(graph, sm, consumers).run()
    except _NoMatch:
        return False
    out = m["out"]
    base = sm.name.rsplit("/", 1)[0] if "/" in sm.name else sm.name
    # Columns sliced off a fused QKV weight become constants of their own.
    wq, bq, wk, bk, wv, bv = (w if w is None or isinstance(w, Value) else
                              graph.add_const(f"{base}/{name}", np.ascontiguousarray(w))
                              for w, name in zip(m["w"], ("q_weight", "q_bias", "k_weight", "k_bias",
                                                          "v_weight", "v_bias")))
    attrs = dict(m["attrs"])
    with graph.inserting_before(out.producer):
        keep = None
        if m["keep"] is not None:
            how, cond = m["keep"]
            if how == "is":
                keep = cond
            elif cond.const is not None:  # a constant (causal) mask stays constant
                keep = graph.add_const(f"{base}/keep_mask", np.logical_not(cond.const))
            else:
                keep = graph.add_node("Not", [cond], name=f"{base}/keep_mask").outputs[0]
            attrs["mask_fill"] = m["fill"]
        add_mask = _combined_mask(graph, m["add_masks"], base, {} if mask_cache is None else mask_cache)
        node = graph.add_node("Attention", [m["xq"], m["xkv"], wq, bq, wk, bk, wv, bv, add_mask, keep], attrs,
                              name=f"{base}/Attention")
    graph.replace_all_uses(out, node.outputs[0])
    graph.remove_unused()
    return True


@register_pass("fuse_attention")
def fuse_attention(graph: Graph) -> int:
    """Fuse multi-head attention (Q/K/V projections, scaled QKᵀ, additive or boolean mask, Softmax, ·V,
    head split/merge) into one Attention op recording num_heads and head_dim (see module doc)."""
    fused = 0
    mask_cache: dict = {}
    while True:
        consumers = graph.consumers()
        for node in list(graph.nodes):
            if node.op_type == "Softmax" and _fuse_one(graph, node, consumers, mask_cache):
                fused += 1
                break
        else:
            return fused

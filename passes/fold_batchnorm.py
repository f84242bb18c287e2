"""Inference BatchNormalization folded into the weights of the Conv, Gemm or
MatMul in front of it; a BatchNormalization with nothing to fold into becomes
a per-channel Mul + Add (which the epilogue fusions then absorb where they can).

A Conv followed by a Mul or an Add of a constant that is one value per output
channel (or one value) is folded the same way: PP-LCNet's "learnable affine"
blocks (conv, times a scalar, plus a scalar, then the activation) otherwise
run as two elementwise kernels and keep the activation out of the conv's
epilogue."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph

from .pass_manager import register_pass
from .patterns import Const, Match, Op, Rule, Var, apply_rules


def bn_affine(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """BN(y) = y * a + c per channel."""
    scale, bias, mean, var = (m.const(k).astype(np.float64) for k in ("scale", "bias", "mean", "var"))
    a = scale / np.sqrt(var + m.root.attrs["epsilon"])
    return a, bias - mean * a


def _bn(x):
    return Op("BatchNormalization", x, Const("scale"), Const("bias"), Const("mean"), Const("var"))


def _fold_into_conv(g: Graph, m: Match):
    conv = m.node("conv")
    w = m.const("w")
    a, c = bn_affine(m)
    w2 = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b0 = m.const("b").astype(np.float64) if "b" in m.values else 0.0
    b2 = (b0 * a + c).astype(w.dtype)
    return g.add_node("Conv", [m["x"], g.add_const(f"{conv.name}/w_bn", w2), g.add_const(f"{conv.name}/b_bn", b2)],
                      conv.attrs, name=conv.name).outputs[0]


def _fold_into_matmul(g: Graph, m: Match):
    """BN over axis 1 of a 2-D MatMul result scales the weight's columns."""
    mm = m.node("mm")
    a, c = bn_affine(m)
    w = m.const("w")
    w2 = (w.astype(np.float64) * a[None, :]).astype(w.dtype)
    y = g.add_node("MatMul", [m["x"], g.add_const(f"{mm.name}/w_bn", w2)], name=mm.name).outputs[0]
    return g.add_node("Add", [y, g.add_const(f"{mm.name}/b_bn", c.astype(w.dtype))], name=f"{mm.name}/bias").outputs[0]


def _to_affine(g: Graph, m: Match):
    x = m["x"]
    if x.rank < 2:
        return None
    a, c = bn_affine(m)
    shape = (-1,) + (1,) * (x.rank - 2)
    dt = x.dtype.numpy
    y = g.add_node("Mul", [x, g.add_const(f"{m.root.name}/scale", a.reshape(shape).astype(dt))],
                   name=f"{m.root.name}/mul").outputs[0]
    return g.add_node("Add", [y, g.add_const(f"{m.root.name}/shift", c.reshape(shape).astype(dt))],
                      name=m.root.name).outputs[0]


def _per_channel(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant operand of an elementwise op on a [N, M, ...] result as M per-channel values (float64),
    or None when it varies along another axis (or broadcasts the result to a bigger shape)."""
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,))


def _conv_parts(m: Match):
    conv = m.node("conv")
    w = m.const("w")
    b = m.const("b").astype(np.float64) if "b" in m.values else np.zeros(w.shape[0])
    k = _per_channel(m.const("k"), w.shape[0], m.root.outputs[0].rank)
    return conv, w, b, k


def _scale_into_conv(g: Graph, m: Match):
    conv, w, b, k = _conv_parts(m)
    if k is None or m.root.outputs[0].dtype != m["x"].dtype:
        return None
    w2 = (w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    return g.add_node("Conv", [m["x"], g.add_const(f"{conv.name}/w_scaled", w2),
                               g.add_const(f"{conv.name}/b_scaled", (b * k).astype(w.dtype))],
                      conv.attrs, name=conv.name).outputs[0]


def _shift_into_conv(g: Graph, m: Match):
    conv, w, b, k = _conv_parts(m)
    if k is None or m.root.outputs[0].dtype != m["x"].dtype:
        return None
    return g.add_node("Conv", [m["x"], m["w"], g.add_const(f"{conv.name}/b_shifted", (b + k).astype(w.dtype))],
                      conv.attrs, name=conv.name).outputs[0]


def _conv(with_bias: bool):
    return Op("Conv", Var("x"), Const("w"), *([Const("b")] if with_bias else []), name="conv")


RULES = [
    Rule("fold_bn_into_conv_with_bias", _bn(Op("Conv", Var("x"), Const("w"), Const("b"), name="conv")),
         _fold_into_conv),
    Rule("fold_bn_into_conv", _bn(Op("Conv", Var("x"), Const("w"), name="conv")), _fold_into_conv),
    Rule("fold_bn_into_matmul", _bn(Op("MatMul", Var("x"), Const("w", where=lambda v: v.rank == 2), name="mm")),
         _fold_into_matmul, where=lambda m: m["x"].rank == 2),
]
CONV_AFFINE = [Rule(f"fold_{op.lower()}_into_conv{'_with_bias' if bias else ''}", Op(op, _conv(bias), Const("k")), fold)
               for op, fold in (("Mul", _scale_into_conv), ("Add", _shift_into_conv)) for bias in (True, False)]
AFFINE = [Rule("batchnorm_to_affine", _bn(Var("x")), _to_affine)]


@register_pass("fold_batchnorm")
def fold_batchnorm(graph: Graph) -> int:
    """Fold inference BatchNormalization into the preceding Conv/MatMul's constant weights and bias
    (run canonicalize first so Gemm is a MatMul); any other BatchNormalization becomes Mul + Add. A Conv's
    Mul or Add by a per-channel (or single) constant folds into its weights or bias too."""
    return apply_rules(graph, RULES) + apply_rules(graph, CONV_AFFINE) + apply_rules(graph, AFFINE)

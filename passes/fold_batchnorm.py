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
from .patterns import Const, Match, Op, Rule, Var, apply_rules, per_channel


def bn_affine(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """BN(y) = y * a + c per channel."""
    scale, bias, mean, var = (m.const(k).astype(np.float64) for k in ("scale", "bias", "mean", "var"))
    a = scale / np.sqrt(var + m.root.attrs["epsilon"])
    return a, bias - mean * a


def _bn(x):
    return Op("BatchNormalization", x, Const("scale"), Const("bias"), Const("mean"), Const("var"))


def _conv_with_affine(g: Graph, m: Match, a: np.ndarray | None, c, tag: str):
    """The matched Conv with its output times `a` (per output channel; None: 1) plus `c` (None: 0), folded into its
    weights and bias (new constants named .../w_{tag}, .../b_{tag}; the weight is reused when `a` is None)."""
    conv = m.node("conv")
    w = m.const("w")
    b0 = m.const("b").astype(np.float64) if "b" in m.values else 0.0
    if a is None:
        w_val, b2 = m["w"], b0 + c
    else:
        w2 = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        w_val, b2 = g.add_const(f"{conv.name}/w_{tag}", w2), b0 * a if c is None else b0 * a + c
    b2 = np.broadcast_to(b2, (w.shape[0],)).astype(w.dtype)
    return g.add_node("Conv", [m["x"], w_val, g.add_const(f"{conv.name}/b_{tag}", b2)], conv.attrs,
                      name=conv.name).outputs[0]


def _fold_into_conv(g: Graph, m: Match):
    a, c = bn_affine(m)
    return _conv_with_affine(g, m, a, c, "bn")


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


def _channel_constant(m: Match) -> np.ndarray | None:
    """The Mul/Add constant as one value per output channel of the matched Conv, or None."""
    if m.root.outputs[0].dtype != m["x"].dtype:
        return None
    return per_channel(m.const("k"), m.const("w").shape[0], m.root.outputs[0].rank)


def _scale_into_conv(g: Graph, m: Match):
    k = _channel_constant(m)
    return None if k is None else _conv_with_affine(g, m, k, None, "scaled")


def _shift_into_conv(g: Graph, m: Match):
    k = _channel_constant(m)
    return None if k is None else _conv_with_affine(g, m, None, k, "shifted")


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

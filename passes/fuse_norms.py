"""Normalization and activation fusions: LayerNorm from its decomposed form,
residual Add + LayerNorm as SkipLayerNormalization, and GELU from its Erf and
tanh forms."""
from __future__ import annotations

import math

from aotc.compiler.ir import Graph

from .pass_manager import register_pass
from .patterns import AnyOf, Const, Match, Op, Product, Rule, Sum, Var, apply_rules, scalar

# -- GELU ----------------------------------------------------------------------
X = Var("x")
ERF_ARG = AnyOf(Op("Div", X, Const(value=math.sqrt(2.0))), Product(X, Const(value=1 / math.sqrt(2.0))))
GELU_ERF = Product(X, Const(value=0.5), Sum(Const(value=1.0), Op("Erf", ERF_ARG)))
CUBE = AnyOf(Op("Pow", X, Const(value=3.0)), Product(X, X, X))
TANH_ARG = Product(Const(value=math.sqrt(2.0 / math.pi)), Sum(X, Product(Const(value=0.044715), CUBE)))
GELU_TANH = Product(X, Const(value=0.5), Sum(Const(value=1.0), Op("Tanh", TANH_ARG)))


def _gelu(approximate: str):
    return lambda g, m: g.add_node("Gelu", [m["x"]], {"approximate": approximate}, name=m.root.name).outputs[0]


GELU_RULES = [Rule("gelu_from_erf", GELU_ERF, _gelu("none"), where=lambda m: m["x"].dtype.is_float),
              Rule("gelu_from_tanh", GELU_TANH, _gelu("tanh"), where=lambda m: m["x"].dtype.is_float)]


@register_pass("fuse_gelu")
def fuse_gelu(graph: Graph) -> int:
    """Replace x·0.5·(1+erf(x/√2)) and x·0.5·(1+tanh(√(2/π)(x+0.044715x³))), in any association and
    operand order, by one Gelu (approximate none / tanh)."""
    return apply_rules(graph, GELU_RULES)


# -- LayerNorm -------------------------------------------------------------------
def _last_axis_mean(v: Var | Op) -> Op:
    return Op("ReduceMean", v, name="mean", where=lambda n: n.attrs["keepdims"] == 1 and n.attrs["axes"] is not None
              and len(n.attrs["axes"]) == 1 and n.attrs["axes"][0] in (-1, n.inputs[0].rank - 1))


CENTERED = Op("Sub", X, _last_axis_mean(X))
SQUARED = AnyOf(Op("Pow", CENTERED, Const(value=2.0)), Op("Mul", CENTERED, CENTERED))
STDDEV = Op("Sqrt", Op("Add", Op("ReduceMean", SQUARED, name="var",
                                 where=lambda n: n.attrs["keepdims"] == 1 and n.attrs["axes"] is not None
                                 and len(n.attrs["axes"]) == 1), Const("eps")))
NORMALIZED = AnyOf(Op("Div", CENTERED, STDDEV), Op("Mul", CENTERED, Op("Reciprocal", STDDEV)))


def _param_ok(v, m: Match) -> bool:
    """γ and β must act on the normalized (last) axis only."""
    return v.const is not None and v.rank >= 1 and v.shape[-1] == m["x"].shape[-1] and v.size == v.shape[-1]


def _layernorm(g: Graph, m: Match):
    x = m["x"]
    eps = scalar(m["eps"])
    if eps is None or m.node("var").attrs["axes"][0] not in (-1, x.rank - 1):
        return None
    n = x.shape[-1]
    gamma = m.const("gamma").reshape(n) if "gamma" in m.values else None
    beta = m.const("beta").reshape(n) if "beta" in m.values else None
    if gamma is None:
        import numpy as np
        gamma = np.ones(n, x.dtype.numpy)
    inputs = [x, g.add_const(f"{m.root.name}/gamma", gamma)]
    if beta is not None:
        inputs.append(g.add_const(f"{m.root.name}/beta", beta.astype(x.dtype.numpy)))
    return g.add_node("LayerNormalization", inputs, {"axis": -1, "epsilon": eps}, name=m.root.name).outputs[0]


LAYERNORM_RULES = [
    Rule("layernorm_affine", Op("Add", Op("Mul", NORMALIZED, Const("gamma")), Const("beta")), _layernorm,
         where=lambda m: _param_ok(m["gamma"], m) and _param_ok(m["beta"], m)),
    Rule("layernorm_scale", Op("Mul", NORMALIZED, Const("gamma")), _layernorm,
         where=lambda m: _param_ok(m["gamma"], m)),
    Rule("layernorm_plain", NORMALIZED, _layernorm),
]


@register_pass("fuse_layernorm")
def fuse_layernorm(graph: Graph) -> int:
    """Replace the decomposed LayerNorm over the last axis — ReduceMean, Sub, Pow 2 (or x·x),
    ReduceMean, Add ε, Sqrt, Div (or ·Reciprocal), then optional ·γ and +β — by LayerNormalization."""
    return apply_rules(graph, LAYERNORM_RULES)


def _skip_layernorm(g: Graph, m: Match):
    ln, add = m.root, m.node("add")
    a, b = add.inputs
    if a.const is not None or b.const is not None or a.shape != b.shape or ln.attrs["axis"] not in (-1, a.rank - 1):
        return None
    inputs = [a, b] + ln.inputs[1:]
    node = g.add_node("SkipLayerNormalization", inputs, {"epsilon": ln.attrs["epsilon"]}, name=ln.name)
    g.replace_all_uses(add.outputs[0], node.outputs[1])  # later residuals read the sum
    return node.outputs[0]


SKIP_RULES = [Rule("skip_layernorm", Op("LayerNormalization", Op("Add", Var("a"), Var("b"), name="add", shared=True),
                                        Const("gamma"), Const("beta")), _skip_layernorm),
              Rule("skip_layernorm_no_bias", Op("LayerNormalization", Op("Add", Var("a"), Var("b"), name="add",
                                                                          shared=True), Const("gamma")),
                   _skip_layernorm)]


@register_pass("fuse_skip_layernorm")
def fuse_skip_layernorm(graph: Graph) -> int:
    """Replace LayerNormalization(a + b) over the last axis, a and b computed and of one shape, by
    SkipLayerNormalization, which also returns a + b for residual streams that read it later."""
    return apply_rules(graph, SKIP_RULES)

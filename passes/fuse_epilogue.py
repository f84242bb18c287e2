"""MatMul/Conv + bias + activation + residual Add as one op with an epilogue
(FusedMatMul, FusedConv), so a target computes the whole chain while the
product is still in registers."""
from __future__ import annotations

from aotc.compiler.ir import Graph

from .pass_manager import register_pass
import numpy as np

from .patterns import AnyOf, Const, Match, Op, Pattern, Rule, Var, apply_rules, is_weight

def _activations(inner: Pattern) -> dict:
    """activation name -> (pattern over the pre-activation value, how to read (alpha, beta) from a match)"""
    def attr(name):
        return lambda m: m.node("act").attrs[name]
    return {
        "relu": (Op("Relu", inner, name="act"), None),
        "clip": (Op("Clip", inner, name="act"), lambda m: (attr("min")(m), attr("max")(m))),
        "sigmoid": (Op("Sigmoid", inner, name="act"), None),
        "hardsigmoid": (Op("HardSigmoid", inner, name="act"), lambda m: (attr("alpha")(m), attr("beta")(m))),
        "hardswish": (Op("HardSwish", inner, name="act"), None),
        "tanh": (Op("Tanh", inner, name="act"), None),
        "leakyrelu": (Op("LeakyRelu", inner, name="act"), lambda m: (attr("alpha")(m), None)),
        "gelu": (Op("Gelu", inner, name="act", where=lambda n: n.attrs["approximate"] == "none"), None),
        "gelu_tanh": (Op("Gelu", inner, name="act", where=lambda n: n.attrs["approximate"] == "tanh"), None),
        "silu": (Op("Mul", inner, Op("Sigmoid", inner), name="act"), None),
    }


def _bias_ok(m: Match) -> bool:
    """A bias is a constant along the output's last axis (MatMul) that does not grow the output."""
    b, out = m["bias"], m.node("core").outputs[0]
    return b.rank <= out.rank and b.shape[-1:] in ((out.shape[-1],), (1,)) and b.size == b.shape[-1] \
        and b.dtype == out.dtype


def _conv_bias_ok(m: Match) -> bool:
    """Per-output-channel constant: shape [M,1,1] (or [1,M,1,1])."""
    b, out = m["bias"], m.node("core").outputs[0]
    return b.size == out.shape[1] and b.rank in (out.rank - 1, out.rank) and b.shape[-(out.rank - 1)] == out.shape[1] \
        and b.dtype == out.dtype


def _res_ok(m: Match) -> bool:
    r, out = m["res"], m.node("core").outputs[0]
    return r.const is None and r.shape == m.root.outputs[0].shape == out.shape and r.dtype == out.dtype


def _build_rules(kind: str) -> list[Rule]:
    core = (Op("MatMul", Var("a"), Var("b"), name="core") if kind == "matmul"
            else AnyOfConv())
    rules = []
    for has_bias in (True, False):
        pre = Op("Add", core, Const("bias")) if has_bias else core
        acts = [(None, (pre, None))] + list(_activations(pre).items())
        for act, (act_pat, params) in acts:
            for res in (None, "after", "before"):
                if act is None and has_bias is False and res is None:
                    continue  # nothing to fuse
                if res == "before" and act is None:
                    continue  # same as "after"
                if res is None:
                    pat = act_pat
                elif res == "after":
                    pat = Op("Add", act_pat, Var("res"))
                else:
                    pat = _activations(Op("Add", pre, Var("res")))[act][0]
                name = f"{kind}{'_bias' if has_bias else ''}{'_' + act if act else ''}{'_res_' + res if res else ''}"
                rules.append(Rule(name, pat, _replacement(kind, act, params, res), where=_constraint(kind, has_bias, res)))
    return rules


def AnyOfConv() -> Pattern:
    # A pre-quantized model's weight is DequantizeLinear(int8 constant): it stays so, for fuse_quantized_ops.
    w = Var("w", where=is_weight)
    return AnyOf(Op("Conv", Var("x"), w, Const("b"), name="core"), Op("Conv", Var("x"), w, name="core"))


def _constraint(kind, has_bias, res):
    def ok(m: Match) -> bool:
        if has_bias and not (_bias_ok(m) if kind == "matmul" else _conv_bias_ok(m)):
            return False
        return res is None or _res_ok(m)
    return ok


def _replacement(kind, act, params, res):
    def build(g: Graph, m: Match):
        core = m.node("core")
        attrs = {"activation": act or "none"}
        if params is not None:
            alpha, beta = params(m)
            attrs.update(act_alpha=alpha, act_beta=beta)
        attrs["residual_before_activation"] = int(res == "before")
        residual = m["res"] if res else None
        if kind == "matmul":
            bias = m["bias"] if "bias" in m.values else None
            if bias is not None and bias.rank != 1:
                bias = g.add_const(f"{core.name}/bias", bias.const.reshape(-1))
            inputs = [m["a"], m["b"], bias, residual]
            op = "FusedMatMul"
        else:
            b = m["b"] if "b" in m.values else None
            if "bias" in m.values:  # an Add after the conv folds into the conv's own bias
                w = m["w"]
                b0 = b.const if b is not None else np.zeros(w.shape[0], w.dtype.numpy)
                b = g.add_const(f"{core.name}/bias", (b0 + m.const("bias").reshape(-1)).astype(w.dtype.numpy))
            if b is None and residual is not None:
                b = g.add_const(f"{core.name}/zero_bias", np.zeros(m["w"].shape[0], m["w"].dtype.numpy))
            inputs = [m["x"], m["w"], b, residual]
            attrs.update({k: core.attrs[k] for k in core.attrs})
            op = "FusedConv"
        while inputs and inputs[-1] is None:
            inputs.pop()
        return g.add_node(op, inputs, attrs, name=core.name).outputs[0]
    return build


MATMUL_RULES = _build_rules("matmul")
CONV_RULES = _build_rules("conv")


@register_pass("fuse_matmul_epilogue")
def fuse_matmul_epilogue(graph: Graph) -> int:
    """Fuse MatMul + constant bias + activation (Relu, Clip/ReLU6, Sigmoid, HardSigmoid, HardSwish,
    Tanh, LeakyRelu, GELU erf/tanh, SiLU) + residual Add (before or after the activation) into
    FusedMatMul."""
    return apply_rules(graph, MATMUL_RULES)


@register_pass("fuse_conv_epilogue")
def fuse_conv_epilogue(graph: Graph) -> int:
    """Fuse Conv + per-channel bias + activation + residual Add into FusedConv (run fold_batchnorm first,
    so BatchNormalization is already inside the conv's weights)."""
    return apply_rules(graph, CONV_RULES)

"""Canonicalization: remove no-ops and bring equivalent spellings to one form,
so later patterns see one shape of graph.

- Identity, inference Dropout, Cast to the same dtype, Expand/Reshape to the
  same shape, identity Transposes: removed.
- Squeeze, Unsqueeze and Flatten become Reshape (one op for "same data, new
  shape"), and chains of Reshapes collapse into one.
- Transpose of Transpose composes into one Transpose.
- x·HardSigmoid(x) with HardSwish's constants becomes HardSwish, and so does
  its spelled-out form x·relu6(x + 3)/6 (torch's and Paddle's exports: four
  elementwise kernels otherwise, none of which fuses into the conv); a zero
  Pad of the spatial axes in front of a Conv moves into the Conv's pads.
- Gemm becomes MatMul (+ Add) with alpha/beta and transA/transB folded into
  its constant operands, so the matmul fusions see one form.

A transpose of a constant operand of MatMul disappears through constant
folding (the constant is stored transposed).
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph

from .pass_manager import register_pass
from .patterns import AnyOf, Const, Match, Op, Product, Rule, Var, apply_rules


def _same_type(m: Match, a: str = "x") -> bool:
    root = m.root.outputs[0]
    return m[a].shape == root.shape and m[a].dtype == root.dtype


def _to_reshape(g: Graph, m: Match):
    out = m.root.outputs[0]
    return g.add_node("Reshape", [m["x"]], {"shape": list(out.shape)}, name=m.root.name).outputs[0]


def _compose_transpose(g: Graph, m: Match):
    inner, outer = m.node("inner"), m.root
    rank = m["x"].rank
    p1 = inner.attrs["perm"] or list(range(rank))[::-1]
    p2 = outer.attrs["perm"] or list(range(rank))[::-1]
    perm = [p1[i] for i in p2]
    if perm == list(range(rank)):
        return m["x"]
    return g.add_node("Transpose", [m["x"]], {"perm": perm}, name=outer.name).outputs[0]


def _gemm_to_matmul(g: Graph, m: Match):
    node = m.root
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    at, bt, alpha, beta = node.attrs["transA"], node.attrs["transB"], node.attrs["alpha"], node.attrs["beta"]
    if at:
        if a.const is None:
            a = g.add_node("Transpose", [a], {"perm": [1, 0]}, name=f"{node.name}/transA").outputs[0]
        else:
            a = g.add_const(f"{a.name}_T", np.ascontiguousarray(a.const.T))
    if b.const is not None:
        w = b.const.T if bt else b.const
        if alpha != 1.0:
            w = w * np.asarray(alpha, w.dtype)
        b = g.add_const(f"{b.name}_T" if bt or alpha != 1.0 else b.name, np.ascontiguousarray(w)) \
            if bt or alpha != 1.0 else b
    else:
        if bt:
            b = g.add_node("Transpose", [b], {"perm": [1, 0]}, name=f"{node.name}/transB").outputs[0]
        if alpha != 1.0:
            return None  # a scaled product of two computed matrices stays a Gemm
    y = g.add_node("MatMul", [a, b], name=node.name).outputs[0]
    if c is not None and beta != 0.0:
        if beta != 1.0:
            if c.const is None:
                return None
            c = g.add_const(f"{c.name}_scaled", (c.const * np.asarray(beta, c.const.dtype)).astype(c.const.dtype))
        y = g.add_node("Add", [y, c], name=f"{node.name}/bias").outputs[0]
    return y


def _pad_into_conv(g: Graph, m: Match):
    """Zero padding of the spatial axes moves into the Conv's own pads."""
    from aotc.compiler.ops import get_op
    pad, conv = m.node("pad"), m.root
    x = m["x"]
    if pad.attrs["mode"] != "constant" or conv.attrs["auto_pad"] != "NOTSET":
        return None
    if pad.attrs["value"] is not None and np.any(np.asarray(pad.attrs["value"]) != 0):
        return None
    widths = get_op("Pad").widths(x.shape, pad.attrs)
    if widths[0] != (0, 0) or widths[1] != (0, 0) or any(b < 0 or e < 0 for b, e in widths):
        return None
    nsp = x.rank - 2
    old = conv.attrs["pads"] or [0] * (2 * nsp)
    pads = [old[i] + widths[2 + i][0] for i in range(nsp)] + [old[nsp + i] + widths[2 + i][1] for i in range(nsp)]
    return g.add_node("Conv", [x] + conv.inputs[1:], {**conv.attrs, "pads": pads}, name=conv.name).outputs[0]


def _relu6_of_x_plus_3():
    return Op("Clip", Op("Add", Var("x"), Const(value=3.0)), name="relu6",
              where=lambda n: n.attrs["min"] == 0.0 and n.attrs["max"] == 6.0)


# x * relu6(x + 3) / 6, however the exporter placed the division by 6.
HARDSWISH_SPELLED_OUT = AnyOf(
    Op("Div", Op("Mul", Var("x"), _relu6_of_x_plus_3()), Const(value=6.0)),
    Product(Var("x"), _relu6_of_x_plus_3(), Const(value=1 / 6)),
    Op("Mul", Var("x"), Op("Div", _relu6_of_x_plus_3(), Const(value=6.0))),
)

RULES = [
    Rule("remove_identity", Op(("Identity", "Dropout"), Var("x")), lambda g, m: m["x"]),
    Rule("remove_noop_cast", Op("Cast", Var("x")), lambda g, m: m["x"], where=_same_type),
    Rule("remove_noop_reshape", Op(("Reshape", "Expand", "Squeeze", "Unsqueeze", "Flatten"), Var("x")),
         lambda g, m: m["x"], where=_same_type),
    Rule("remove_identity_transpose", Op("Transpose", Var("x")), lambda g, m: m["x"],
         where=lambda m: (m.root.attrs["perm"] or []) == list(range(m["x"].rank)) and m["x"].rank > 0),
    Rule("reshape_like_to_reshape", Op(("Squeeze", "Unsqueeze", "Flatten"), Var("x")), _to_reshape),
    Rule("collapse_reshape_chain", Op("Reshape", Op(("Reshape", "Squeeze", "Unsqueeze", "Flatten"), Var("x"))),
         _to_reshape),
    Rule("compose_transposes", Op("Transpose", Op("Transpose", Var("x"), name="inner")), _compose_transpose),
    Rule("hardswish_from_hardsigmoid", Op("Mul", Var("x"), Op("HardSigmoid", Var("x"), name="hs")),
         lambda g, m: g.add_node("HardSwish", [m["x"]], name=m.root.name).outputs[0],
         where=lambda m: abs(m.node("hs").attrs["alpha"] - 1 / 6) < 1e-6 and abs(m.node("hs").attrs["beta"] - 0.5) < 1e-6),
    Rule("hardswish_spelled_out", HARDSWISH_SPELLED_OUT,
         lambda g, m: g.add_node("HardSwish", [m["x"]], name=m.root.name).outputs[0],
         where=lambda m: m["x"].dtype == m.root.outputs[0].dtype and m["x"].shape == m.root.outputs[0].shape),
    Rule("fold_pad_into_conv", Op("Conv", Op("Pad", Var("x"), name="pad"), Var("w")), _pad_into_conv),
    Rule("fold_pad_into_conv_with_bias", Op("Conv", Op("Pad", Var("x"), name="pad"), Var("w"), Var("b")),
         _pad_into_conv),
    Rule("gemm_to_matmul", Op("Gemm", Var("a"), Var("b")), _gemm_to_matmul),
    Rule("gemm_bias_to_matmul", Op("Gemm", Var("a"), Var("b"), Var("c")), _gemm_to_matmul),
]


@register_pass("canonicalize")
def canonicalize(graph: Graph) -> int:
    """Remove no-op nodes and rewrite equivalent op spellings into one canonical form (see module doc)."""
    return apply_rules(graph, RULES)

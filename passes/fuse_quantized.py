"""QuantizeLinear/DequantizeLinear patterns into aotc's int8 ops.

After quantization inserts explicit Q/DQ (passes/quantization/qdq.py), every
float MatMul/Conv/Attention that reads DequantizeLinear'd activations and
int8 weights becomes one QuantizedMatMul / QuantizedConv / QuantizedAttention
(int32 accumulation, float epilogue); a Gather from a dequantized table reads
the int8 rows and scales only the rows it gathers; and a QuantizeLinear that
is the only reader of an int8 op's float result becomes that op's
requantizing epilogue. The same rules fuse a pre-quantized model's own Q/DQ
(passes/prequantized.py); a weight with a zero point becomes symmetric int8
(q - zp) where that fits. Patterns that do not fit (such a weight that does
not, an activation quantized per axis) are left as they are: Q/DQ pairs are
correct float code, just not faster.
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph, Value

from .pass_manager import register_pass
from .patterns import AnyOf, Const, Match, Op, Opt, Rule, Var, apply_rules


def _per_tensor_act(name: str) -> Op:
    """DequantizeLinear of a u8/s8 activation with a per-tensor scale and zero point (shared: other
    quantized nodes may read the same dequantized value)."""
    return Op("DequantizeLinear", Var(name, where=lambda v: v.dtype in (DType.uint8, DType.int8)),
              Const(f"{name}_scale", where=lambda v: v.size == 1), Const(f"{name}_zp", where=lambda v: v.size == 1),
              shared=True)


def _as_symmetric_int8(node) -> np.ndarray | None:
    """The weight of DequantizeLinear `node` as int8 with zero point 0, exactly: itself when it is int8 with a zero
    (or no) zero point, q - zp when every such difference fits int8 (an asymmetric or uint8 weight of a
    pre-quantized model); None when it does not fit."""
    w = node.inputs[0].const
    zp = node.inputs[2].const if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if w is None or (len(node.inputs) > 2 and node.inputs[2] is not None and zp is None):
        return None
    if zp is None or not np.any(zp):
        return w if w.dtype == np.int8 else None
    axis = node.attrs["axis"] % w.ndim
    shape = [1] * w.ndim
    if zp.size > 1:
        shape[axis] = -1
    d = w.astype(np.int16) - zp.astype(np.int16).reshape(shape if zp.size > 1 else ())
    return d.astype(np.int8) if d.min() >= -128 and d.max() <= 127 else None


def _sym_weight(name: str, axis: int) -> Op:
    """DequantizeLinear of a constant 8-bit weight that is symmetric int8 (zero point 0, or one whose q - zp fits
    int8), per channel along `axis` (or per tensor)."""
    def ok(node):
        w, s = node.inputs[0], node.inputs[1]
        per_axis = s.size > 1
        return s.rank <= 1 and (not per_axis or node.attrs["axis"] % w.rank == axis % w.rank) \
            and _as_symmetric_int8(node) is not None
    w, s = Const(name, where=lambda v: v.dtype in (DType.int8, DType.uint8)), Const(f"{name}_scale")
    return AnyOf(Op("DequantizeLinear", w, s, Const(f"{name}_zp"), name=f"dq_{name}", where=ok),
                 Op("DequantizeLinear", w, s, name=f"dq_{name}", where=ok))


def _weight_inputs(g: Graph, m: Match, name: str) -> list[Value]:
    """[int8 weight, scale] of a _sym_weight match, the weight shifted by its zero point when it had one."""
    node = m.node(f"dq_{name}")
    q = _as_symmetric_int8(node)
    w = m[name] if q is node.inputs[0].const else g.add_const(f"{m[name].name}/symmetric", q)
    return [w, m[f"{name}_scale"]]


def _add_in_place_of(g: Graph, core, op_type: str, inputs, attrs) -> Value:
    """Add the replacement under the replaced node's own name (it is removed right after), so reports and
    exclude lists keep naming the same node."""
    g._node_names.discard(core.name)
    return g.add_node(op_type, inputs, attrs, name=core.name).outputs[0]


def _act_inputs(m: Match, name: str) -> list[Value]:
    return [m[name], m[f"{name}_scale"], m[f"{name}_zp"]]


def _matmul_rules() -> list[Rule]:
    rules = []
    for extra in range(3):  # MatMul: 2 inputs; FusedMatMul: 2..4 (bias?, residual?)
        opts = [Opt("bias"), Opt("res")][:extra]
        pat = Op(["MatMul", "FusedMatMul"], _per_tensor_act("x"), _sym_weight("w", 1), *opts, name="core")

        def build(g: Graph, m: Match):
            core = m.node("core")
            if core.op_type == "MatMul" and len(core.inputs) != 2:
                return None
            if m["w"].rank != 2:
                return None
            attrs = dict(core.attrs) if core.op_type == "FusedMatMul" else {}
            bias, res = m.values.get("bias"), m.values.get("res")
            if bias is not None and (bias.dtype != DType.float32 or bias.shape != (m["w"].shape[1],)):
                return None
            ins = _act_inputs(m, "x") + _weight_inputs(g, m, "w") + [bias, res]
            while ins[-1] is None:
                ins.pop()
            return _add_in_place_of(g, core, "QuantizedMatMul", ins, attrs)
        rules.append(Rule(f"quantized_matmul_{extra}", pat, build))
    return rules


def _conv_rules() -> list[Rule]:
    rules = []
    for extra in range(3):
        opts = [Opt("bias"), Opt("res")][:extra]
        pat = Op(["Conv", "FusedConv"], _per_tensor_act("x"), _sym_weight("w", 0), *opts, name="core")

        def build(g: Graph, m: Match):
            core = m.node("core")
            if core.op_type == "Conv" and len(core.inputs) > 3:
                return None
            ins = _act_inputs(m, "x") + _weight_inputs(g, m, "w") + [m.values.get("bias"), m.values.get("res")]
            while ins[-1] is None:
                ins.pop()
            return _add_in_place_of(g, core, "QuantizedConv", ins, dict(core.attrs))
        rules.append(Rule(f"quantized_conv_{extra}", pat, build))
    return rules


def _attention_rule() -> Rule:
    pat = Op("Attention", _per_tensor_act("xq"), _per_tensor_act("xkv"), _sym_weight("wq", 1), Opt("bq"),
             _sym_weight("wk", 1), Opt("bk"), _sym_weight("wv", 1), Opt("bv"), Opt("add_mask"), Opt("keep_mask"),
             name="core")

    def build(g: Graph, m: Match):
        core = m.node("core")
        ins = _act_inputs(m, "xq") + _act_inputs(m, "xkv")
        for w, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")):
            ins += _weight_inputs(g, m, w) + [m.values.get(b)]
        ins += [m.values.get("add_mask"), m.values.get("keep_mask")]
        return _add_in_place_of(g, core, "QuantizedAttention", ins, dict(core.attrs))
    return Rule("quantized_attention", pat, build)


def _embedding_rule() -> Rule:
    """Gather(DequantizeLinear(table, row scales), ids) -> Cast(Gather(table, ids)) * Gather(scales, ids):
    only the gathered rows are dequantized."""
    pat = Op("Gather", _sym_weight("table", 0), Var("ids"), name="core")

    def build(g: Graph, m: Match):
        core = m.node("core")
        table, scale = _weight_inputs(g, m, "table")
        if core.attrs["axis"] % table.rank != 0 or table.rank != 2:
            return None
        rows = g.add_node("Gather", [table, m["ids"]], {"axis": 0}, name=f"{core.name}/int8_rows").outputs[0]
        rows_f = g.add_node("Cast", [rows], {"to": "float32"}, name=f"{core.name}/to_float").outputs[0]
        if scale.size == 1:
            s = g.add_const(f"{scale.name}/scalar", scale.const.reshape(()).astype(np.float32))
        else:
            col = g.add_const(f"{scale.name}/column", scale.const.reshape(-1, 1).astype(np.float32))
            s = g.add_node("Gather", [col, m["ids"]], {"axis": 0}, name=f"{core.name}/row_scales").outputs[0]
        return g.add_node("Mul", [rows_f, s], name=f"{core.name}/dequantize").outputs[0]
    return Rule("quantized_embedding", pat, build)


def _requantize_rules() -> list[Rule]:
    rules = []
    for op in ("QuantizedMatMul", "QuantizedConv"):
        for n_in in range(5, 8):
            inner = Op(op, *[Var(f"i{i}") if i < 5 else Opt(f"i{i}") for i in range(n_in)], name="core")
            pat = Op("QuantizeLinear", inner, Const("ys", where=lambda v: v.size == 1),
                     Const("yz", where=lambda v: v.size == 1))

            def build(g: Graph, m: Match, n_in=n_in):
                core = m.node("core")
                ins = [m.values.get(f"i{i}") for i in range(n_in)] + [None] * (7 - n_in) + [m["ys"], m["yz"]]
                return _add_in_place_of(g, core, core.op_type, ins, dict(core.attrs))
            rules.append(Rule(f"requantize_{op}_{n_in}", pat, build))
    return rules


QUANTIZED_RULES = _matmul_rules() + _conv_rules() + [_attention_rule(), _embedding_rule()]
REQUANTIZE_RULES = _requantize_rules()


@register_pass("fuse_quantized_ops", requantize=True)
def fuse_quantized_ops(graph: Graph, requantize: bool = True) -> int:
    """Turn DequantizeLinear'd activations and int8 weights feeding MatMul/FusedMatMul, Conv/FusedConv and
    Attention into QuantizedMatMul / QuantizedConv / QuantizedAttention (int32 accumulation, float epilogue),
    Gather from a dequantized table into a gather of int8 rows scaled per row, and (requantize=true) a
    QuantizeLinear that alone reads an int8 op's result into that op's requantizing epilogue."""
    n = apply_rules(graph, QUANTIZED_RULES)
    if requantize:
        n += apply_rules(graph, REQUANTIZE_RULES)
    return n

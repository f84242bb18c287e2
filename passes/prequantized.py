"""Pre-quantized models: the model's own QuantizeLinear/DequantizeLinear pairs
(a QAT export, onnxruntime's quantize_static QDQ format, expanded QOperator
ops) run on aotc's int8 ops with the model's own scales and zero points; no
calibration and no re-quantization.

Two passes of the default pipeline, both no-ops on a float model:

- `prepare_prequantized` (before fusion) brings the model's Q/DQ to the one
  form fuse_quantized_ops reads, by exact rewrites only:
  * QOperator ops become Q/DQ around float ops (passes/qoperator_to_qdq.py);
  * an int8 activation (QuantizeLinear with an int8 zero point z, read only by
    matching DequantizeLinears) becomes uint8 with zero point z + 128: the
    same real values (q_u8 = q_s8 + 128 before and after saturation), in the
    dtype x86 VNNI multiplies (u8 x s8);
  * a layout op (Reshape, Transpose) or a zero Pad after a per-tensor
    DequantizeLinear moves before it (a Pad then fills with the zero point),
    and QuantizeLinear(DequantizeLinear(q)) onto the same grid is q itself, so
    onnxruntime's DQ -> Pad/Reshape -> Q chains vanish;
  * a zero Pad of the spatial axes between DequantizeLinear and Conv moves
    into the Conv's pads (the conv pads with real 0 = the zero point).
- `fuse_prequantized` (after fusion) runs fuse_quantized_ops, then folds the
  DequantizeLinear'd weights no int8 op took into float constants (an
  asymmetric weight that does not fit int8, a weight quantized along another
  axis, a Gather table): those nodes stay float on the model's fake-quantized
  activations, correct but not faster. Its report says what became int8,
  what stayed float and why (the CLI prints it in one line).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph, Node

from .fuse_quantized import fuse_quantized_ops
from .pass_manager import PassContext, register_pass
from .patterns import Match, Op, Rule, Var, apply_rules, is_dequantized_const
from .qoperator_to_qdq import qoperator_to_qdq

QUANTIZED_OPS = ("QuantizedMatMul", "QuantizedConv", "QuantizedAttention")
INTEGER_OPS = ("QuantizedAdd", "QuantizedGlobalAveragePool")
FLOAT_SITES = ("MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv", "Attention")


def _per_tensor_q(n: Node) -> bool:
    """A Q or DQ with constant, 1-element scale and zero point."""
    s = n.inputs[1]
    z = n.inputs[2] if len(n.inputs) > 2 else None
    return s.const is not None and s.size == 1 and z is not None and z.const is not None and z.size == 1


def _same_grid(a: Node, b: Node) -> bool:
    """Same scale, zero point and dtype (both per tensor)."""
    return (_per_tensor_q(a) and _per_tensor_q(b) and a.inputs[2].dtype == b.inputs[2].dtype
            and np.float32(a.inputs[1].const.reshape(())) == np.float32(b.inputs[1].const.reshape(()))
            and int(a.inputs[2].const.reshape(())) == int(b.inputs[2].const.reshape(())))


# -- int8 activations -> uint8 ---------------------------------------------------------------------------
def _int8_activations_to_uint8(graph: Graph) -> int:
    consumers = graph.consumers()
    outputs = {id(v) for v in graph.outputs}
    changed = 0
    for q in list(graph.nodes):
        if q.op_type != "QuantizeLinear" or q.inputs[0].const is not None or not _per_tensor_q(q) \
                or q.inputs[2].dtype != DType.int8 or id(q.outputs[0]) in outputs:
            continue
        users = consumers.get(q.outputs[0].name, [])
        if not users or not all(u.op_type == "DequantizeLinear" and u.inputs[0] is q.outputs[0] and _same_grid(q, u)
                                for u in users):
            continue
        z = graph.add_const(f"{q.inputs[2].name}/as_uint8",
                            (q.inputs[2].const.astype(np.int16) + 128).astype(np.uint8))
        with graph.inserting_before(q):
            new = graph.add_node("QuantizeLinear", [q.inputs[0], q.inputs[1], z], dict(q.attrs),
                                 name=f"{q.name}/uint8").outputs[0]
        for u in users:
            u.inputs[:] = [new, u.inputs[1], z]
        changed += 1
    graph.remove_unused()
    return changed


# -- exact rewrites around the model's Q/DQ ------------------------------------------------------------------
def _dq_pattern(inner="q") -> Op:
    return Op("DequantizeLinear", Var(inner), Var("s"), Var("z"), name="dq", where=_per_tensor_q)


def _move_below_dq(g: Graph, m: Match):
    """layout(DQ(q)) -> DQ(layout(q)); a zero Pad fills with the zero point."""
    op, dq = m.root, m.node("dq")
    attrs = dict(op.attrs)
    if op.op_type == "Pad":
        if attrs["mode"] != "constant" or (attrs["value"] is not None and np.any(np.asarray(attrs["value"]) != 0)):
            return None
        attrs["value"] = np.asarray(m["z"].const).reshape(())
    moved = g.add_node(op.op_type, [m["q"]], attrs, name=f"{op.name}/quantized").outputs[0]
    return g.add_node("DequantizeLinear", [moved, m["s"], m["z"]], dict(dq.attrs), name=f"{dq.name}/after").outputs[0]


def _requantize_identity(g: Graph, m: Match):
    return m["q"] if _same_grid(m.root, m.node("dq")) and m["q"].dtype == m.root.outputs[0].dtype else None


def _pad_into_conv(g: Graph, m: Match):
    """Conv(DQ(Pad(q, zero point))) -> Conv(DQ(q)) with the pad in the conv's pads: the padded taps are real 0."""
    from aotc.compiler.ops.nn import Pad
    conv, dq, pad = m.root, m.node("dq"), m["q"].producer
    if pad is None or pad.op_type != "Pad" or conv.attrs["auto_pad"] != "NOTSET":
        return None
    value = pad.attrs["value"]
    if value is None or int(np.asarray(value).reshape(-1)[0]) != int(m["z"].const.reshape(())):
        return None
    src = pad.inputs[0]
    widths = Pad.widths(src.shape, pad.attrs) if pad.attrs["mode"] == "constant" else None
    if src.rank != 4 or widths is None or widths[0] != (0, 0) or widths[1] != (0, 0) \
            or any(b < 0 or e < 0 for b, e in widths):
        return None
    old = conv.attrs["pads"] or [0] * 4
    pads = [old[0] + widths[2][0], old[1] + widths[3][0], old[2] + widths[2][1], old[3] + widths[3][1]]
    x = g.add_node("DequantizeLinear", [src, m["s"], m["z"]], dict(dq.attrs), name=f"{dq.name}/unpadded").outputs[0]
    return g.add_node("Conv", [x] + conv.inputs[1:], {**conv.attrs, "pads": pads}, name=conv.name).outputs[0]


def _transpose_quantized_weight(g: Graph, m: Match):
    """Transpose(DQ(int8 constant)) -> DQ(transposed int8 constant), the per-channel axis following (Gemm's
    transB, which canonicalize turns into a Transpose of the weight)."""
    t, dq = m.root, m.node("dq")
    q = dq.inputs[0]
    perm = t.attrs["perm"] or list(range(q.rank))[::-1]
    wt = g.add_const(f"{q.name}/transposed", np.ascontiguousarray(q.const.transpose(perm)))
    attrs = dict(dq.attrs)
    if dq.inputs[1].size > 1:
        attrs["axis"] = perm.index(attrs["axis"] % q.rank)
    return g.add_node("DequantizeLinear", [wt] + dq.inputs[1:], attrs, name=f"{dq.name}/transposed").outputs[0]


PREPARE_RULES = [
    Rule("transpose_quantized_weight", Op("Transpose", Op("DequantizeLinear", Var("q"), Var("s"), Var("z"), name="dq")),
         _transpose_quantized_weight, where=lambda m: is_dequantized_const(m.node("dq").outputs[0])),
    Rule("dq_below_layout", Op(("Reshape", "Transpose", "Pad"), _dq_pattern()), _move_below_dq),
    Rule("requantize_identity", Op("QuantizeLinear", _dq_pattern(), Var("s2"), Var("z2")), _requantize_identity),
    Rule("pad_into_conv", Op("Conv", _dq_pattern(), Var("w")), _pad_into_conv),
    Rule("pad_into_conv_bias", Op("Conv", _dq_pattern(), Var("w"), Var("b")), _pad_into_conv),
]


@register_pass("prepare_prequantized")
def prepare_prequantized(graph: Graph) -> int:
    """A pre-quantized model's Q/DQ in the form fuse_quantized_ops reads, by exact rewrites: QOperator ops
    (QLinearConv, QLinearMatMul, *Integer) as Q/DQ around float ops, int8 activations as uint8 (zero point + 128),
    Reshape/Transpose/zero Pad moved before a DequantizeLinear and QuantizeLinear of a DequantizeLinear onto the
    same grid removed, a zero Pad in front of a Conv moved into its pads."""
    expanded = qoperator_to_qdq(graph)
    if not any(n.op_type == "DequantizeLinear" for n in graph.nodes):
        return expanded
    return expanded + _int8_activations_to_uint8(graph) + apply_rules(graph, PREPARE_RULES)


# -- after fusion: onnxruntime's integer arithmetic ---------------------------------------------------------
# onnxruntime's default session runs a QDQ model's units as QLinearConv, QGemm, QLinearAdd and
# QLinearGlobalAveragePool, whose float association differs from the ONNX definition (dequantize, float op,
# quantize); each difference moves a value by one step at a .5 tie, and a deep network amplifies it. Running
# the same units with the same arithmetic (compiler/ops/qlinear.py, requantization="integer" in
# compiler/ops/quant.py) makes a pre-quantized bundle equal to onnxruntime to the bit.
def _quantized_dq(name: str) -> Op:
    return Op("DequantizeLinear", Var(name, where=lambda v: v.dtype in (DType.uint8, DType.int8)), Var(f"{name}_s"),
              Var(f"{name}_z"), name=f"dq_{name}", where=_per_tensor_q, shared=True)


def _output_q() -> dict:
    return {"where": lambda n: _per_tensor_q(n) and n.inputs[2].dtype in (DType.uint8, DType.int8)}


def _quantized_add(g: Graph, m: Match):
    """Q(Add(DQ(a), DQ(b))) -> QuantizedAdd, in the Add's operand order (the arithmetic is not symmetric)."""
    add, q = m.node("add"), m.root
    a_dq, b_dq = (v.producer for v in add.inputs)
    a, b = a_dq.inputs[0], b_dq.inputs[0]
    if a.shape != b.shape or tuple(add.outputs[0].shape) != tuple(a.shape):
        return None
    ins = [a, a_dq.inputs[1], a_dq.inputs[2], b, b_dq.inputs[1], b_dq.inputs[2], q.inputs[1], q.inputs[2]]
    return g.add_node("QuantizedAdd", ins, name=add.name).outputs[0]


def _quantized_pool(g: Graph, m: Match):
    dq, q = m.node("dq_x"), m.root
    return g.add_node("QuantizedGlobalAveragePool", [dq.inputs[0], dq.inputs[1], dq.inputs[2], q.inputs[1],
                                                     q.inputs[2]], name=m.node("pool").name).outputs[0]


INTEGER_RULES = [
    Rule("quantized_add", Op("QuantizeLinear", Op("Add", _quantized_dq("a"), _quantized_dq("b"), name="add"),
                             Var("ys"), Var("yz"), **_output_q()), _quantized_add),
    Rule("quantized_global_average_pool",
         Op("QuantizeLinear", Op("GlobalAveragePool", _quantized_dq("x"), name="pool"), Var("ys"), Var("yz"),
            **_output_q()), _quantized_pool),
]


def _clip_is_saturation(node: Node) -> bool:
    """Whether the epilogue's Relu/Clip is one onnxruntime drops in front of the output QuantizeLinear (its
    ReluQuantFusion / ClipQuantFusion): the output grid's range already clips there, to within float32 epsilon."""
    kind = node.attrs["activation"]
    scale = np.float32(node.inputs[7].const.reshape(()))
    zp = int(node.inputs[8].const.reshape(()))
    lo, hi = (0, 255) if node.inputs[8].dtype == DType.uint8 else (-128, 127)
    if kind == "none":
        return True
    if kind == "relu":
        return zp == lo
    if kind != "clip":
        return False
    lower, upper = np.float32(scale * np.float32(lo - zp)), np.float32(scale * np.float32(hi - zp))
    cmin = np.float32(node.attrs["act_alpha"]) if node.attrs["act_alpha"] is not None else np.float32(-np.inf)
    cmax = np.float32(node.attrs["act_beta"]) if node.attrs["act_beta"] is not None else np.float32(np.inf)
    eps = np.finfo(np.float32).eps
    return not (eps < cmin - lower or eps < upper - cmax)


def _int32_bias(node: Node) -> np.ndarray | None | bool:
    """The float bias as the int32 one it was dequantized from (scale x_scale·w_scale[n], as a QDQ model's bias
    DequantizeLinear has it), verified exactly; None without a bias; False when it is not one."""
    from aotc.compiler.ops.quant import combined_scale
    bias = node.inputs[5] if len(node.inputs) > 5 else None
    if bias is None:
        return None
    if bias.const is None:
        return False
    n = bias.size
    s = combined_scale(node.inputs[1].const, np.broadcast_to(node.inputs[4].const.reshape(-1).astype(np.float32), (n,)))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(bias.const.astype(np.float64) / s.astype(np.float64))
    if not np.all(np.isfinite(q)) or np.abs(q).max(initial=0) >= 2 ** 31 - 1:
        return False
    q = q.astype(np.int32)
    return q if np.array_equal((q.astype(np.float32) * s).astype(np.float32), bias.const.astype(np.float32)) else False


def _as_integer_requantization(graph: Graph) -> int:
    """Requantizing QuantizedConv/QuantizedMatMul -> requantization="integer" where onnxruntime runs the unit as
    QLinearConv/QGemm: no residual, an activation its output range absorbs, a bias that is int32 at the
    accumulator's scale."""
    changed = 0
    for n in graph.nodes:
        if n.op_type not in QUANTIZED_OPS[:2] or len(n.inputs) < 9 or n.inputs[7] is None \
                or n.attrs["requantization"] != "float" or n.inputs[6] is not None \
                or n.inputs[4].const is None or not _clip_is_saturation(n):
            continue
        bias = _int32_bias(n)
        if bias is False:
            continue
        if bias is not None:
            n.inputs[5] = graph.add_const(f"{n.inputs[5].name}/int32", bias)
        n.attrs.update(requantization="integer", activation="none", act_alpha=None, act_beta=None)
        changed += 1
    graph.remove_unused()
    return changed


# -- after fusion ------------------------------------------------------------------------------------------
def _why_float(node: Node) -> str | None:
    """Why a float matmul/conv on the model's dequantized values did not become an int8 op (None: it does not
    read any)."""
    dq = [v.producer for v in node.inputs if v is not None and v.producer is not None
          and v.producer.op_type == "DequantizeLinear"]
    if not dq:
        return None
    weights = [d for d in dq if is_dequantized_const(d.outputs[0])]
    acts = [d for d in dq if d not in weights]
    if not weights:
        return "both operands are computed (an int8 op needs a constant weight)"
    if not acts:
        return "its input is not quantized"
    if any(not _per_tensor_q(d) for d in acts):
        return "its input is quantized per axis"
    w = weights[0]
    zp = w.inputs[2] if len(w.inputs) > 2 else None
    if zp is not None and np.any(zp.const):
        return "its weight has a zero point and does not fit symmetric int8"
    return "its weight is quantized along another axis than the output channels"


def _fold_dequantized_weights(graph: Graph) -> list[str]:
    folded = []
    for n in list(graph.nodes):
        if n.op_type == "DequantizeLinear" and is_dequantized_const(n.outputs[0]) \
                and not any(id(o) == id(n.outputs[0]) for o in graph.outputs):
            arr = n.op.run([v.const if v is not None else None for v in n.inputs], n.attrs)[0]
            graph.replace_all_uses(n.outputs[0], graph.add_const(f"{n.outputs[0].name}/folded", arr))
            folded.append(n.name)
    graph.remove_unused()
    return folded


@register_pass("fuse_prequantized", requantize=True, integer=True)
def fuse_prequantized(graph: Graph, requantize: bool = True, integer: bool = True,
                      context: PassContext | None = None) -> int:
    """A pre-quantized model's Q/DQ patterns into int8 ops with the model's own scales and zero points
    (fuse_quantized_ops), then (integer=true, with requantize) the units onnxruntime runs on integer kernels
    with its arithmetic (QuantizedAdd, QuantizedGlobalAveragePool, integer requantization), then the
    DequantizeLinear'd weights no int8 op took folded into float constants. Reports the int8 ops, the Q/DQ
    pairs left and the float nodes with why."""
    n_q = sum(n.op_type == "QuantizeLinear" for n in graph.nodes)
    n_dq = sum(n.op_type == "DequantizeLinear" for n in graph.nodes)
    if not n_dq:
        return 0
    fused = fuse_quantized_ops(graph, requantize=requantize)
    integer_units = 0
    if requantize and integer:
        integer_units = apply_rules(graph, INTEGER_RULES) + _as_integer_requantization(graph)
    float_nodes = [{"node": n.name, "op": n.op_type, "why": why} for n in graph.nodes
                   if n.op_type in FLOAT_SITES and (why := _why_float(n))]
    folded = _fold_dequantized_weights(graph)
    hist = Counter(n.op_type for n in graph.nodes)
    if context is not None:
        context.reports["fuse_prequantized"] = {
            "quantize_linear_before": n_q, "dequantize_linear_before": n_dq,
            "int8_ops": {op: hist[op] for op in QUANTIZED_OPS if hist[op]},
            "requantizing_epilogues": sum(1 for n in graph.nodes if n.op_type in QUANTIZED_OPS[:2]
                                          and len(n.inputs) > 7 and n.inputs[7] is not None),
            "integer_requantization": sum(1 for n in graph.nodes if n.op_type in QUANTIZED_OPS[:2]
                                          and n.attrs["requantization"] == "integer"),
            "integer_units": {op: hist[op] for op in INTEGER_OPS if hist[op]},
            "float": float_nodes, "weights_folded_to_float": len(folded),
            "quantize_linear_after": hist["QuantizeLinear"], "dequantize_linear_after": hist["DequantizeLinear"]}
    return fused + integer_units + len(folded)


def format_prequantized(report: dict) -> str:
    """One line for the CLI: what the model's own quantization became."""
    ops = ", ".join(f"{n} {op}" for op, n in report["int8_ops"].items()) or "no int8 ops"
    units = "".join(f", {n} {op}" for op, n in report.get("integer_units", {}).items())
    line = (f"pre-quantized model: {report['dequantize_linear_before']} DequantizeLinear / "
            f"{report['quantize_linear_before']} QuantizeLinear -> {ops}{units} with the model's own scales "
            f"({report['requantizing_epilogues']} requantizing epilogues, "
            f"{report.get('integer_requantization', 0)} with onnxruntime's integer requantization)")
    why = Counter(f["why"] for f in report["float"])
    if why:
        line += "; float on fake-quantized values: " + "; ".join(
            f"{n} node(s) because {w} ({', '.join([f['node'] for f in report['float'] if f['why'] == w][:2])})"
            for w, n in why.most_common())
    return line

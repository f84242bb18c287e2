"""ONNX QOperator ops (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger) and onnxruntime's
com.microsoft ones (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinear(Global)AveragePool,
QLinearConcat, QGemm) as the QDQ form fuse_quantized_ops reads: DequantizeLinear of the operands -> the
float op -> QuantizeLinear (QLinear*, QGemm with y_scale) or -> Cast to int32 (*Integer, dequantized with
scale 1, so the int8 op's float32(acc) * 1 is the integer sum). QLinearConv's and QGemm's int32 bias becomes
DequantizeLinear(B, x_scale·w_scale), as onnxruntime's QDQ format writes it, so fuse_prequantized gives the
requantizing op onnxruntime's integer arithmetic again (a QGemm with alpha != 1: a float bias B·alpha·x_scale·
w_scale). The same numbers, in the form the rest of the pipeline (fusion, int8 kernels, the target's float
fallback) already handles."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node, Value
from aotc.compiler.ops.quant import combined_scale
from aotc.compiler.ops.qoperator_ms import QSPECS, QGemm, float_attrs

from .pass_manager import register_pass
from .patterns import replace_nodes

MS_QOPERATOR_OPS = tuple(QSPECS) + ("QLinearConcat", "QGemm")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger") + MS_QOPERATOR_OPS


def _dq(g: Graph, node: Node, x: Value, scale: Value | None, zp: Value | None, axis: int, what: str) -> Value:
    if scale is None:  # *Integer: integers as they are
        scale = g.add_const(f"{node.name}/{what}_unit_scale", np.array(1.0, np.float32))
        if zp is not None and zp.size > 1:
            scale = g.add_const(f"{node.name}/{what}_unit_scales", np.ones(zp.shape, np.float32))
    ins = [x, scale] + ([zp] if zp is not None else [])
    return g.add_node("DequantizeLinear", ins, {"axis": axis}, name=f"{node.name}/dequantize_{what}").outputs[0]


def _int32_bias(g: Graph, node: Node, bias: Value, x_scale: Value, w_scale: Value, n: int) -> Value:
    """An int32 bias at scale x_scale·w_scale[n] as onnxruntime's QDQ format writes it: DequantizeLinear with
    that float32 product as its per-channel scale (what fuse_prequantized reads back as int32)."""
    s = combined_scale(x_scale.const, np.broadcast_to(w_scale.const.reshape(-1).astype(np.float32), (n,)))
    scale = g.add_const(f"{node.name}/bias_scale", s)
    return g.add_node("DequantizeLinear", [bias, scale], {"axis": 0}, name=f"{node.name}/dequantize_bias").outputs[0]


def _q(g: Graph, node: Node, y: Value, scale: Value, zp: Value | None, like: Value) -> Value:
    """QuantizeLinear onto the node's output grid; a missing zero point is 0 of the operand's dtype (ONNX's
    QuantizeLinear would default to uint8)."""
    if zp is None:
        zp = g.add_const(f"{node.name}/y_zero_point", np.zeros((), like.dtype.numpy))
    return g.add_node("QuantizeLinear", [y, scale, zp], {}, name=f"{node.name}/quantize").outputs[0]


def _expand_ms(g: Graph, n: Node) -> Value:
    ins = list(n.inputs) + [None] * 9
    if n.op_type in QSPECS:
        spec = QSPECS[n.op_type]
        floats = [_dq(g, n, ins[x], ins[s], ins[z], 1, f"in{i}") for i, (x, s, z) in enumerate(spec.operands)]
        y = g.add_node(spec.float_op, floats, float_attrs(n.op_type, n.attrs), name=n.name).outputs[0]
        return _q(g, n, y, ins[spec.output[0]], ins[spec.output[1]], ins[0])
    if n.op_type == "QLinearConcat":
        floats = [_dq(g, n, n.inputs[i], n.inputs[i + 1], n.inputs[i + 2], 1, f"in{(i - 2) // 3}")
                  for i in range(2, len(n.inputs), 3)]
        y = g.add_node("Concat", floats, dict(n.attrs), name=n.name).outputs[0]
        return _q(g, n, y, n.inputs[0], n.inputs[1], n.inputs[2])
    # QGemm: MatMul (+ alpha) + float bias; a transposed constant B becomes a transposed int8 constant
    # (prepare_prequantized's transpose_quantized_weight), so the int8 fusion sees MatMul(DQ(x), DQ(w)).
    a, as_, az, b, bs, bz, c, ys, yz = ins[:9]
    x = _dq(g, n, a, as_, az, 1, "a")
    if n.attrs["transA"]:
        x = g.add_node("Transpose", [x], {"perm": [1, 0]}, name=f"{n.name}/transpose_a").outputs[0]
    w = _dq(g, n, b, bs, bz, QGemm.b_axis(n.attrs), "b")
    if n.attrs["transB"]:
        w = g.add_node("Transpose", [w], {"perm": [1, 0]}, name=f"{n.name}/transpose_b").outputs[0]
    y = g.add_node("MatMul", [x, w], name=n.name).outputs[0]
    if n.attrs["alpha"] != 1.0:
        alpha = g.add_const(f"{n.name}/alpha", np.array(n.attrs["alpha"], np.float32))
        y = g.add_node("Mul", [y, alpha], name=f"{n.name}/alpha").outputs[0]
    if c is not None and n.attrs["alpha"] == 1.0 and c.rank == 1 and bs.size in (1, c.size):
        y = g.add_node("Add", [y, _int32_bias(g, n, c, as_, bs, c.size)], name=f"{n.name}/bias").outputs[0]
    elif c is not None:
        bias = g.add_const(f"{n.name}/bias", QGemm.bias(c.const, as_.const, bs.const, n.attrs["alpha"]))
        y = g.add_node("Add", [y, bias], name=f"{n.name}/bias").outputs[0]
    return y if ys is None else _q(g, n, y, ys, yz, a)


def _expand(g: Graph, n: Node) -> Value:
    if n.op_type in MS_QOPERATOR_OPS:
        return _expand_ms(g, n)
    ins = list(n.inputs) + [None] * 9
    if n.op_type == "QLinearConv":
        x, xs, xz, w, ws, wz, ys, yz, b = ins[:9]
        conv_ins = [_dq(g, n, x, xs, xz, 1, "x"), _dq(g, n, w, ws, wz, 0, "w")]
        if b is not None:
            conv_ins.append(_int32_bias(g, n, b, xs, ws, w.shape[0]))
        y = g.add_node("Conv", conv_ins, dict(n.attrs), name=n.name).outputs[0]
        return g.add_node("QuantizeLinear", [y, ys, yz], {}, name=f"{n.name}/quantize").outputs[0]
    if n.op_type == "QLinearMatMul":
        a, as_, az, b, bs, bz, ys, yz = ins[:8]
        y = g.add_node("MatMul", [_dq(g, n, a, as_, az, 1, "a"), _dq(g, n, b, bs, bz, b.rank - 1, "b")],
                       name=n.name).outputs[0]
        return g.add_node("QuantizeLinear", [y, ys, yz], {}, name=f"{n.name}/quantize").outputs[0]
    a, b, az, bz = ins[:4]
    if n.op_type == "MatMulInteger":
        y = g.add_node("MatMul", [_dq(g, n, a, None, az, 1, "a"), _dq(g, n, b, None, bz, b.rank - 1, "b")],
                       name=n.name).outputs[0]
    else:
        y = g.add_node("Conv", [_dq(g, n, a, None, az, 1, "x"), _dq(g, n, b, None, bz, 0, "w")], dict(n.attrs),
                       name=n.name).outputs[0]
    return g.add_node("Cast", [y], {"to": "int32"}, name=f"{n.name}/to_int32").outputs[0]


def _expandable(n: Node) -> bool:
    """Scales and zero points must be constants (they are, in every exporter we know); QLinearConv's and
    QGemm's bias too."""
    if n.op_type in QSPECS:
        spec = QSPECS[n.op_type]
        params = [i for _, s, z in spec.operands for i in (s, z)] + list(spec.output)
    elif n.op_type == "QLinearConcat":
        params = [0, 1] + [i for i in range(3, len(n.inputs)) if (i - 2) % 3]
    else:
        params = {"QLinearConv": (1, 2, 4, 5, 6, 7, 8), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
                  "QGemm": (1, 2, 4, 5, 6, 7, 8)}.get(n.op_type, (2, 3))
    return all(i >= len(n.inputs) or n.inputs[i] is None or n.inputs[i].const is not None for i in params)


@register_pass("qoperator_to_qdq")
def qoperator_to_qdq(graph: Graph) -> int:
    """QLinearConv / QLinearMatMul / ConvInteger / MatMulInteger and onnxruntime's com.microsoft QLinearAdd,
    QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinear(Global)AveragePool, QLinearConcat, QGemm (with
    constant scales and zero points) as DequantizeLinear -> float op -> QuantizeLinear (or Cast to int32),
    for fuse_quantized_ops."""
    # the Conv/MatMul takes the QOperator node's name (reports, exclude lists)
    return replace_nodes(graph, [n for n in graph.nodes if n.op_type in QOPERATOR_OPS and _expandable(n)], _expand,
                         keep_name=True)

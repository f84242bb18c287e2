"""ONNX QOperator ops (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger) as the QDQ form
fuse_quantized_ops reads: DequantizeLinear of the operands -> Conv / MatMul -> QuantizeLinear (QLinear*) or
-> Cast to int32 (*Integer, dequantized with scale 1, so the int8 op's float32(acc) * 1 is the integer sum).
QLinearConv's int32 bias becomes the float bias B·x_scale·w_scale. The same numbers, in the form the rest
of the pipeline (fusion, int8 kernels, the target's float fallback) already handles."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node, Value

from .pass_manager import register_pass
from .patterns import replace_nodes

QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")


def _dq(g: Graph, node: Node, x: Value, scale: Value | None, zp: Value | None, axis: int, what: str) -> Value:
    if scale is None:  # *Integer: integers as they are
        scale = g.add_const(f"{node.name}/{what}_unit_scale", np.array(1.0, np.float32))
        if zp is not None and zp.size > 1:
            scale = g.add_const(f"{node.name}/{what}_unit_scales", np.ones(zp.shape, np.float32))
    ins = [x, scale] + ([zp] if zp is not None else [])
    return g.add_node("DequantizeLinear", ins, {"axis": axis}, name=f"{node.name}/dequantize_{what}").outputs[0]


def _expand(g: Graph, n: Node) -> Value:
    ins = list(n.inputs) + [None] * 9
    if n.op_type == "QLinearConv":
        x, xs, xz, w, ws, wz, ys, yz, b = ins[:9]
        conv_ins = [_dq(g, n, x, xs, xz, 1, "x"), _dq(g, n, w, ws, wz, 0, "w")]
        if b is not None:
            bf = (b.const.astype(np.float64) * np.float32(xs.const.reshape(-1)[0])
                  * ws.const.astype(np.float32).reshape(-1)).astype(np.float32)
            conv_ins.append(g.add_const(f"{n.name}/bias", bf))
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
    """Scales and zero points must be constants (they are, in every exporter we know); QLinearConv's bias too."""
    params = {"QLinearConv": (1, 2, 4, 5, 6, 7, 8), "QLinearMatMul": (1, 2, 4, 5, 6, 7)}.get(n.op_type, (2, 3))
    return all(i >= len(n.inputs) or n.inputs[i] is None or n.inputs[i].const is not None for i in params)


@register_pass("qoperator_to_qdq")
def qoperator_to_qdq(graph: Graph) -> int:
    """QLinearConv / QLinearMatMul / ConvInteger / MatMulInteger (with constant scales and zero points) as
    DequantizeLinear -> Conv/MatMul -> QuantizeLinear (or Cast to int32), for fuse_quantized_ops."""
    # the Conv/MatMul takes the QOperator node's name (reports, exclude lists)
    return replace_nodes(graph, [n for n in graph.nodes if n.op_type in QOPERATOR_OPS and _expandable(n)], _expand,
                         keep_name=True)

"""Where a float graph gets quantized, and the explicit QuantizeLinear /
DequantizeLinear form of it.

A *site* is a node with an int8 kernel (MatMul/FusedMatMul/Gemm with a constant
2-D weight, Conv/FusedConv, Attention's Q/K/V projections, Gather from a
constant embedding table) together with which of its inputs are activations
(quantized per tensor with calibrated ranges) and which are weights (quantized
per output channel). `insert_qdq` rewrites each site's inputs to
DequantizeLinear(QuantizeLinear(x)) and DequantizeLinear(int8 weight): the
graph still computes in float, on exactly the values the int8 kernels will
see, and `fuse_quantized_ops` (passes/fuse_quantized.py) then turns every
such pattern into one int8 op.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph, Node, Value
from .params import activation_qparams, quantize_weight

# op type -> kind of int8 kernel it becomes
QUANTIZABLE_OPS = {"MatMul": "matmul", "FusedMatMul": "matmul", "Gemm": "matmul", "Conv": "conv",
                   "FusedConv": "conv", "Attention": "attention", "Gather": "embedding"}
DEFAULT_QUANTIZE_OPS = tuple(QUANTIZABLE_OPS)


@dataclass
class Site:
    node: Node
    kind: str
    activations: list[int] = field(default_factory=list)  # input slots holding activations
    weights: list[tuple[int, int]] = field(default_factory=list)  # (input slot, output-channel axis)

    @property
    def name(self) -> str:
        return self.node.name

    def activation_values(self) -> list[Value]:
        return [self.node.inputs[i] for i in self.activations]


def _is_float_activation(v: Value | None) -> bool:
    return v is not None and v.const is None and v.dtype == DType.float32


def _is_float_const(v: Value | None, rank: int) -> bool:
    return v is not None and v.const is not None and v.dtype == DType.float32 and v.rank == rank


def _gemm_as_matmul(graph: Graph, node: Node) -> Node | None:
    """Gemm(A, B, C) with constant B (and C a per-column bias) as FusedMatMul(A, B', bias): alpha, transB and
    beta fold into the constants. None when it does not fit (transA, a computed B or a 2-D C)."""
    a = node.inputs[0]
    b = node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    at = node.attrs
    if at["transA"] or not _is_float_const(b, 2) or not _is_float_activation(a):
        return None
    w = b.const.T if at["transB"] else b.const
    n = w.shape[1]
    if c is not None and (c.const is None or c.const.size != n or c.dtype != DType.float32
                          or (c.rank == 2 and c.shape[0] != 1)):
        return None
    w = (w * np.float32(at["alpha"])).astype(np.float32)
    inputs = [a, graph.add_const(f"{b.name}/as_matmul", np.ascontiguousarray(w))]
    if c is not None:
        inputs.append(graph.add_const(f"{c.name}/as_bias", (c.const.reshape(-1) * np.float32(at["beta"])
                                                            ).astype(np.float32)))
    with graph.inserting_before(node):
        new = graph.add_node("FusedMatMul", inputs, {"activation": "none"}, name=node.name + "/as_matmul")
    graph.replace_all_uses(node.outputs[0], new.outputs[0])
    graph.nodes.remove(node)
    return new


def site_for(node: Node) -> Site | str:
    """The quantization site of `node`, or why it has none."""
    kind = QUANTIZABLE_OPS.get(node.op_type)
    ins = node.inputs
    if kind is None:
        return f"aotc has no int8 kernel for {node.op_type}"
    if kind == "matmul":
        if not _is_float_activation(ins[0]) or not _is_float_const(ins[1], 2):
            return "not an activation times a constant 2-D float32 weight"
        return Site(node, kind, [0], [(1, 1)])
    if kind == "conv":
        if not _is_float_activation(ins[0]) or ins[1] is None or ins[1].const is None or ins[1].dtype != DType.float32:
            return "not an activation convolved with a constant float32 weight"
        return Site(node, kind, [0], [(1, 0)])
    if kind == "attention":
        if not (_is_float_activation(ins[0]) and _is_float_activation(ins[1])):
            return "its inputs are not float32 activations"
        if not all(_is_float_const(ins[i], 2) for i in (2, 4, 6)):
            return "its projection weights are not constant"
        if any(ins[i] is not None and ins[i].dtype != DType.float32 for i in (3, 5, 7)):
            return "its projection biases are not float32"
        return Site(node, kind, [0, 1], [(2, 1), (4, 1), (6, 1)])  # x_q is x_kv in self-attention: one Q/DQ
    if kind == "embedding":
        if node.attrs["axis"] % max(ins[0].rank, 1) != 0 or not _is_float_const(ins[0], 2) or ins[1].const is not None:
            return "not a row lookup (axis 0) in a constant 2-D float32 table"
        return Site(node, kind, [], [(0, 0)])
    raise AssertionError(kind)


def find_sites(graph: Graph, quantize_ops, exclude_nodes) -> tuple[list[Site], dict[str, str]]:
    """The sites to quantize, in graph order, and {node name: why it stays float} for the nodes of the chosen
    op types that do not qualify or were excluded."""
    quantize_ops, exclude = set(quantize_ops), set(exclude_nodes)
    sites: list[Site] = []
    skipped: dict[str, str] = {}
    for node in list(graph.nodes):
        if node.op_type not in quantize_ops:
            continue
        if node.name in exclude:
            skipped[node.name] = "excluded (exclude_nodes)"
            continue
        if node.op_type == "Gemm":
            new = _gemm_as_matmul(graph, node)
            if new is None:
                skipped[node.name] = "a Gemm with transA, a computed B or a 2-D C"
                continue
            node = new
        site = site_for(node)
        if isinstance(site, str):
            if node.op_type != "Gather" or _is_float_const(node.inputs[0], node.inputs[0].rank):
                skipped[node.name] = site  # (a Gather of anything but a float table is no embedding: not listed)
        else:
            sites.append(site)
    graph.remove_unused()
    return sites, skipped


def activation_values(sites) -> list[str]:
    seen: dict[str, None] = {}
    for s in sites:
        for v in s.activation_values():
            seen.setdefault(v.name)
    return list(seen)


def insert_qdq(graph: Graph, sites: list[Site], ranges: dict[str, tuple[float, float]]) -> None:
    """Rewrite every site's activation inputs to DequantizeLinear(QuantizeLinear(x)) (one pair per value, placed
    before its first quantized use) and its weights to DequantizeLinear(int8 weight, per-channel scale)."""
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    act_dq: dict[str, Value] = {}
    weights: dict[tuple[str, int], tuple[Value, Value, Value]] = {}
    for site in sorted(sites, key=lambda s: order[id(s.node)]):
        node = site.node
        for slot in site.activations:
            x = node.inputs[slot]
            if x.name not in act_dq:
                scale, zp = activation_qparams(*ranges[x.name])
                s = graph.add_const(f"{x.name}/scale", scale)
                z = graph.add_const(f"{x.name}/zero_point", zp)
                with graph.inserting_before(node):
                    q = graph.add_node("QuantizeLinear", [x, s, z], {"axis": 1}, name=f"{x.name}/quantize")
                    dq = graph.add_node("DequantizeLinear", [q.outputs[0], s, z], {"axis": 1},
                                        name=f"{x.name}/dequantize")
                act_dq[x.name] = dq.outputs[0]
            node.inputs[slot] = act_dq[x.name]
        for slot, axis in site.weights:
            w = node.inputs[slot]
            key = (w.name, axis)
            if key not in weights:
                wq, scale = quantize_weight(w.const, axis)
                weights[key] = (graph.add_const(f"{w.name}/int8", wq), graph.add_const(f"{w.name}/scale", scale),
                                graph.add_const(f"{w.name}/zero_point", np.zeros(scale.shape, np.int8)))
            wq, s, z = weights[key]
            with graph.inserting_before(node):
                dq = graph.add_node("DequantizeLinear", [wq, s, z], {"axis": axis}, name=f"{node.name}/weight{slot}")
            node.inputs[slot] = dq.outputs[0]
    graph.remove_unused()

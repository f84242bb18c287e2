"""Rewrite what the target cannot run into what it can, keeping the numbers.

A target pass: the pass manager runs it after the generic pipeline with the
target's `supports(node)` in the PassContext. For every node the target
refuses:

- `QuantizedAttention` → three QuantizedMatMul projections and the float
  attention core (decompose_quantized); projections the target still refuses
  are handled as below;
- `QuantizedMatMul` / `QuantizedConv` → float: DequantizeLinear of the
  activation, the weight dequantized at compile time, FusedMatMul/FusedConv
  with the same epilogue, and QuantizeLinear where the int8 op requantized
  its output. The float op computes Σ (x - zx)·sx · w·sw, the int8 op the
  same sum exactly in int32 then scaled: they agree to float rounding (an
  integer-requantized op's int32 bias becomes float at the accumulator's scale);
- `QuantizedAdd` / `QuantizedGlobalAveragePool` (onnxruntime's integer
  arithmetic) → DequantizeLinear, the float op, QuantizeLinear: the unit's ONNX
  definition, equal but at .5 ties;
- a 1-D `Conv` / `FusedConv` (Whisper's and wav2vec's front ends) → the 2-D one over a map of height 1,
  between two Reshapes (aliases: no copy), with the weight reshaped at compile time;
- fused float ops (`Attention`, `FusedMatMul`, `SkipLayerNormalization`) →
  the primitive ops they stand for (decompose_fused).

What it changed, and why, is the pass's report (the CLI prints it in one
line; the manifest keeps it). A node none of these rules covers is left for
the target, which names it in its error.
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node, Value
from aotc.compiler.ops.quant import float_bias

from .decompose_fused import DECOMPOSABLE, decompose_nodes
from .decompose_quantized import decompose_quantized_attention_nodes
from .pass_manager import PassContext, register_pass

FLOAT_FALLBACK = {"QuantizedMatMul": "FusedMatMul", "QuantizedConv": "FusedConv"}


def _opt(node: Node, i: int) -> Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


def _float_weight(graph: Graph, node: Node) -> Value:
    """The int8 weight times its per-channel scale, as a float32 constant (MatMul [K, N]: channels on axis 1;
    Conv [M, C, ...]: axis 0)."""
    w, ws = node.inputs[3], node.inputs[4]
    axis = 1 if node.op_type == "QuantizedMatMul" else 0
    shape = [1] * w.rank
    shape[axis] = -1
    scale = np.broadcast_to(ws.const.reshape(-1).astype(np.float32), (w.shape[axis],)).reshape(shape)
    return graph.add_const(f"{w.name}.dequantized", (w.const.astype(np.float32) * scale).astype(np.float32))


def _to_float(graph: Graph, node: Node) -> Value:
    x, xs, xz = node.inputs[:3]
    bias, res, ys, yz = (_opt(node, i) for i in (5, 6, 7, 8))
    base = node.name
    xf = graph.add_node("DequantizeLinear", [x, xs, xz], {}, name=f"{base}/dequantize_x").outputs[0]
    if bias is not None and node.attrs["requantization"] == "integer":  # int32 at the accumulator's scale
        bias = graph.add_const(f"{bias.name}/float", float_bias(node))
    inputs = [xf, _float_weight(graph, node), bias, res]
    while inputs[-1] is None:
        inputs.pop()
    attrs = {k: v for k, v in node.attrs.items() if k != "requantization"}
    y = graph.add_node(FLOAT_FALLBACK[node.op_type], inputs, attrs, name=f"{base}/float").outputs[0]
    if ys is not None:
        y = graph.add_node("QuantizeLinear", [y, ys, yz], {}, name=f"{base}/requantize").outputs[0]
    return y


INTEGER_UNIT_FALLBACK = {"QuantizedAdd": "Add", "QuantizedGlobalAveragePool": "GlobalAveragePool"}


def _integer_unit_to_float(graph: Graph, node: Node) -> Value:
    """QuantizedAdd / QuantizedGlobalAveragePool -> DequantizeLinear of each 8-bit operand, the float op,
    QuantizeLinear: the ONNX definition of the unit, which agrees with onnxruntime's integer arithmetic to a
    step at .5 ties."""
    ins, base = node.inputs, node.name
    operands = [ins[i:i + 3] for i in range(0, len(ins) - 2, 3)]
    floats = [graph.add_node("DequantizeLinear", list(o), {}, name=f"{base}/dequantize_{i}").outputs[0]
              for i, o in enumerate(operands)]
    y = graph.add_node(INTEGER_UNIT_FALLBACK[node.op_type], floats, {}, name=f"{base}/float").outputs[0]
    return graph.add_node("QuantizeLinear", [y, ins[-2], ins[-1]], {}, name=f"{base}/quantize").outputs[0]


def _reshape(graph: Graph, x: Value, shape, name: str) -> Value:
    return graph.add_node("Reshape", [x], {"shape": [int(d) for d in shape]}, name=name).outputs[0]


def _conv_as_2d(graph: Graph, node: Node) -> Value:
    """[N, C, L] conv -> [N, C, 1, L] conv: the same window along L, a window of 1 along the new axis."""
    from aotc.compiler.ops.nn import Conv
    x, w = node.inputs[0], node.inputs[1]
    kernel, _, strides, dils, pb, pe = Conv.geometry(x.shape, w.shape, node.attrs)
    base = node.name
    x4 = _reshape(graph, x, (x.shape[0], x.shape[1], 1, x.shape[2]), f"{base}/as_2d_input")
    w4 = graph.add_const(f"{w.name}.as_2d", w.const.reshape(w.shape[0], w.shape[1], 1, w.shape[2]))
    y = node.outputs[0]
    inputs = [x4, w4] + list(node.inputs[2:])
    if node.op_type == "FusedConv" and len(inputs) > 3 and inputs[3] is not None:  # the residual, as y is
        r = inputs[3]
        inputs[3] = _reshape(graph, r, (y.shape[0], y.shape[1], 1, y.shape[2]), f"{base}/as_2d_residual")
    attrs = {**node.attrs, "auto_pad": "NOTSET", "kernel_shape": [1, kernel[0]], "strides": [1, strides[0]],
             "dilations": [1, dils[0]], "pads": [0, pb[0], 0, pe[0]]}
    y4 = graph.add_node(node.op_type, inputs, attrs, name=f"{base}/2d").outputs[0]
    return _reshape(graph, y4, y.shape, f"{base}/from_2d")


def _is_1d_conv(node: Node) -> bool:
    return node.inputs[0].rank == 3 and node.inputs[1].const is not None


def _replace(graph: Graph, node: Node, make) -> None:
    with graph.inserting_before(node):
        new = make(graph, node)
    graph.replace_all_uses(node.outputs[0], new)
    graph.nodes.remove(node)


@register_pass("fit_to_target")
def fit_to_target(graph: Graph, context: PassContext) -> int:
    """Target pass: nodes the target cannot run become nodes it can — int8 ops without an int8 kernel run in
    float (DequantizeLinear -> float op -> QuantizeLinear), fused ops without a kernel are decomposed. Reports
    every node it changed and why. A no-op without a target in the PassContext."""
    supports = context.supports
    if supports is None:
        return 0
    changed: list[dict] = []

    def refused(kinds) -> list[tuple[Node, str]]:
        out = []
        for n in list(graph.nodes):
            if n.op_type in kinds:
                why = supports(n)
                if why:
                    out.append((n, why))
        return out

    attention = refused(("QuantizedAttention",))
    if attention:
        changed += [{"node": n.name, "op": n.op_type, "now": "QuantizedMatMul + float core", "why": why}
                    for n, why in attention]
        decompose_quantized_attention_nodes(graph, [n for n, _ in attention])
    for node, why in refused(tuple(FLOAT_FALLBACK)):
        if any(v is not None and v.const is None for v in node.inputs[3:5]):
            continue  # weights computed at run time: nothing to dequantize at compile time; the target names it
        _replace(graph, node, _to_float)
        changed.append({"node": node.name, "op": node.op_type, "now": f"float {FLOAT_FALLBACK[node.op_type]}",
                        "why": why})
    for node, why in refused(tuple(INTEGER_UNIT_FALLBACK)):
        _replace(graph, node, _integer_unit_to_float)
        changed.append({"node": node.name, "op": node.op_type,
                        "now": f"DequantizeLinear -> float {INTEGER_UNIT_FALLBACK[node.op_type]} -> QuantizeLinear",
                        "why": why})
    for node, why in refused(("Conv", "FusedConv")):
        if _is_1d_conv(node):
            _replace(graph, node, _conv_as_2d)
            changed.append({"node": node.name, "op": node.op_type, "now": "2-D convolution over height 1",
                            "why": why})
    fused = refused(DECOMPOSABLE)
    if fused:
        changed += [{"node": n.name, "op": n.op_type, "now": "primitive ops", "why": why} for n, why in fused]
        decompose_nodes(graph, [n for n, _ in fused])
    if changed:
        graph.remove_unused()
        context.reports["fit_to_target"] = {"changed": changed}
    return len(changed)


def format_fallbacks(report: dict, target: str) -> str:
    """One line for the CLI: which nodes now run another way on `target`, and why."""
    items = report.get("changed", [])
    groups: dict[tuple[str, str, str], list[str]] = {}
    for c in items:
        groups.setdefault((c["op"], c["now"], c["why"]), []).append(c["node"])
    parts = []
    for (op, now, why), nodes in sorted(groups.items()):
        names = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
        parts.append(f"{len(nodes)} {op} -> {now} ({names}): {why}")
    return f"{target}: {len(items)} node(s) rewritten into ops the target can run; " + "; ".join(parts)

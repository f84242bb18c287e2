"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights.

For an activation X feeding matmuls with weights W ([K, N], K = X's channels),
per input channel j

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)        (max over every W that reads X)
    X' = X / s,   W' = diag(s) W                        (X' W' == X W)

so a few huge activation channels (LayerNorm outputs of transformers) no
longer set the per-tensor activation scale, at the cost of wider weight rows
(absorbed by per-channel weight scales). 1/s is folded into whatever produced X
when that is linear in X's channels and X has no other reader: the V
projection of an Attention (its output channels are V's) or a MatMul without
activation; otherwise an explicit Mul by 1/s goes before the quantizer (a
target fuses it into the QuantizeLinear). alpha = 0.5 is the paper's default.
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node, Value
from .calibrate import calibrate


def _weight_slots(site, x: Value) -> list[int]:
    """Input slots of the site's weights that multiply `x` (rows = x's channels)."""
    ins = site.node.inputs
    if site.kind == "matmul":
        return [1]
    slots = []
    if ins[0] is x:
        slots.append(2)
    if ins[1] is x:
        slots += [4, 6]
    return slots


def _set_const(graph: Graph, node: Node, slot: int, data: np.ndarray, tag: str) -> None:
    node.inputs[slot] = graph.add_const(f"{node.inputs[slot].name}/{tag}", data.astype(np.float32))


def smooth_sites(graph: Graph, sites, feeds, alpha: float) -> dict:
    """Apply SmoothQuant to the activations of the matmul and attention sites, in place; returns the report."""
    groups: dict[str, list] = {}
    for s in sites:
        if s.kind in ("matmul", "attention"):
            for v in dict.fromkeys(s.activation_values()):
                groups.setdefault(v.name, []).append(s)
    if not groups:
        return {"alpha": alpha, "smoothed": []}
    cal = calibrate(graph, feeds, [], "minmax", channel_stats=list(groups))
    consumers = graph.consumers()
    values = {v.name: v for v in graph.values()}
    smoothed = []
    for name, group in groups.items():
        x = values[name]
        act = cal.stats[name].channel_absmax.astype(np.float64)
        wmax = np.zeros_like(act)
        for site in group:
            for slot in _weight_slots(site, x):
                wmax = np.maximum(wmax, np.abs(site.node.inputs[slot].const).max(axis=1))
        s = np.where((act > 0) & (wmax > 0), act ** alpha / np.maximum(wmax, 1e-12) ** (1 - alpha), 1.0)
        s = np.clip(s, 1e-5, 1e5)
        for site in group:
            for slot in _weight_slots(site, x):
                _set_const(graph, site.node, slot, site.node.inputs[slot].const * s[:, None], "smoothed")
        # folding 1/s into the producer is only right when every use of x is a smoothed activation slot
        uses = sum(sum(v is x for v in n.inputs) for n in consumers.get(name, []))
        act_uses = sum(sum(site.node.inputs[i] is x for i in site.activations) for site in group)
        producer = x.producer
        how = "Mul"
        if producer is not None and uses == act_uses and x not in graph.outputs:
            if producer.op_type == "Attention" and producer.inputs[6].const is not None:
                _set_const(graph, producer, 6, producer.inputs[6].const / s[None, :], "smoothed")
                if producer.inputs[7] is not None and producer.inputs[7].const is not None:
                    _set_const(graph, producer, 7, producer.inputs[7].const / s, "smoothed")
                how = f"V projection of {producer.name}"
            elif producer.op_type in ("MatMul", "FusedMatMul") and producer.inputs[1].const is not None \
                    and producer.inputs[1].rank == 2 and producer.attrs.get("activation", "none") == "none" \
                    and (len(producer.inputs) < 4 or producer.inputs[3] is None) \
                    and (len(producer.inputs) < 3 or producer.inputs[2] is None or producer.inputs[2].const is not None):
                _set_const(graph, producer, 1, producer.inputs[1].const / s[None, :], "smoothed")
                if len(producer.inputs) > 2 and producer.inputs[2] is not None:
                    _set_const(graph, producer, 2, producer.inputs[2].const / s, "smoothed")
                how = f"weights of {producer.name}"
        if how == "Mul":
            first = min(group, key=lambda st: graph.nodes.index(st.node)).node
            inv = graph.add_const(f"{name}/smooth_inv_scale", (1.0 / s).astype(np.float32))
            with graph.inserting_before(first):
                xs = graph.add_node("Mul", [x, inv], name=f"{name}/smooth").outputs[0]
            for site in group:
                for i in site.activations:
                    if site.node.inputs[i] is x:
                        site.node.inputs[i] = xs
        smoothed.append({"activation": name, "nodes": [st.name for st in group], "inverse_scale_in": how,
                         "max_channel_absmax_before": float(act.max()),
                         "max_channel_absmax_after": float((act / s).max())})
    graph.remove_unused()
    return {"alpha": alpha, "smoothed": smoothed}

"""The `nchwc_layout` pass: convolutions on channel-blocked tensors.

Every float32 2-D Conv/FusedConv with constant weights that is pointwise,
depthwise or ungrouped becomes a `BlockedConv` (compiler/ops/layout.py);
chains of them pass blocked tensors to each other directly, and a
`FromBlockedLayout` is left only where something else reads the result (the
dead ones go with dead-code elimination). A network's first convolution reads
its few-channel NCHW input as is. A zero Pad in front of a convolution is
folded into its padding, which the blocked kernels apply while reading.

This is a target pass, like TVM's AlterOpLayout: the x86 targets run it before
lowering with their vector width as the block; it is not part of the default
(target-independent) pipeline."""
from __future__ import annotations

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph, Node, Value
from aotc.compiler.ops.nn import Pad

from .pass_manager import register_pass

# An NCHW input with at most this many channels is read directly (an image's 3 channels would be 13/16
# padding in the blocked layout).
DIRECT_INPUT_CHANNELS = 4


def convertible(node: Node) -> bool:
    if node.op_type not in ("Conv", "FusedConv"):
        return False
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    if x.dtype != DType.float32 or x.rank != 4 or w.const is None or (b is not None and b.const is None):
        return False
    g = node.attrs["group"]
    return g == 1 or (g == x.shape[1] == w.shape[0] and w.shape[1] == 1)


@register_pass("nchwc_layout", block=16)
def nchwc_layout(graph: Graph, block: int = 16) -> int:
    """Run 2-D convolutions (pointwise, depthwise, ungrouped) on channel-blocked NCHWc tensors with
    `block` channels per vector, converting layouts only at the edges of conv chains (an x86 target pass)."""
    twin: dict[str, Value] = {}  # NCHW value name -> the same data blocked
    converted = 0

    def blocked(v: Value, before: Node) -> Value:
        if v.name not in twin:
            with graph.inserting_before(before):
                twin[v.name] = graph.add_node("ToBlockedLayout", [v], {"block": block},
                                              name=f"{v.name}/to_blocked").outputs[0]
        return twin[v.name]

    for node in list(graph.nodes):
        if not convertible(node):
            continue
        attrs = dict(node.attrs)
        x = node.inputs[0]
        folded = Pad.zero_spatial_source(x) if attrs["auto_pad"] == "NOTSET" and x.name not in twin else None
        if folded is not None:
            x, pb, pe = folded
            old = attrs["pads"] or [0, 0, 0, 0]
            attrs["pads"] = [old[0] + pb[0], old[1] + pb[1], old[2] + pe[0], old[3] + pe[1]]
        g = attrs["group"]
        if x.name in twin or g != 1 or x.shape[1] > DIRECT_INPUT_CHANNELS:
            x = blocked(x, node)
        inputs = [x, node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None]
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            inputs.append(blocked(node.inputs[3], node))
        if inputs[2] is None and len(inputs) == 3:
            inputs = inputs[:2]
        attrs["block"] = block
        y = node.outputs[0]
        graph._node_names.discard(node.name)  # the blocked conv takes over the user's node name
        with graph.inserting_before(node):
            yb = graph.add_node("BlockedConv", inputs, attrs, name=node.name).outputs[0]
            y2 = graph.add_node("FromBlockedLayout", [yb], {"channels": y.shape[1]},
                                name=f"{node.name}/from_blocked").outputs[0]
        graph.nodes.remove(node)
        graph.replace_all_uses(y, y2)
        twin[y2.name] = yb
        converted += 1
    if converted:
        graph.remove_unused()
    return converted

"""The `nchwc_layout` pass: convolutions on channel-blocked tensors.

Every float32 2-D Conv/FusedConv with constant weights that is pointwise,
depthwise or ungrouped becomes a `BlockedConv` (compiler/ops/layout.py);
chains of them pass blocked tensors to each other directly, and a
`FromBlockedLayout` is left only where something else reads the result (the
dead ones go with dead-code elimination). A network's first convolution reads
its few-channel NCHW input as is. A zero Pad in front of a convolution is
folded into its padding, which the blocked kernels apply while reading.

Elementwise ops between convolutions (a residual Add, a squeeze-and-excitation
Mul by per-channel gates, activations left outside a conv), max pools (ResNet's
stem), spatial resizes and channel concatenations of whole blocks (a feature
pyramid's upsampling and merge) and the global average pool of a
squeeze-and-excitation block run on the blocked tensors too
(`blocked_elementwise`), so a chain pays no layout conversion per op; the
padding channels then hold f(padding), always finite, which the next
convolution multiplies by zero weights and FromBlockedLayout drops.

This is a target pass, like TVM's AlterOpLayout: the x86 targets run it before
lowering with their vector width as the block; it is not part of the default
(target-independent) pipeline."""
from __future__ import annotations

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph, Node, Value
from aotc.compiler.ops.layout import blocks
from aotc.compiler.ops.nn import Pad, Resize
from aotc.compiler.ops.shape_ops import Transpose

from .pass_manager import register_pass
from .patterns import per_channel

# An NCHW input with at most this many channels is read directly (an image's 3 channels would be 13/16
# padding in the blocked layout).
DIRECT_INPUT_CHANNELS = 4


# Elementwise ops that map finite values to finite values (so padding channels stay finite: 0 * inf in the
# next convolution would be NaN), with a blocked twin for every tensor operand.
BLOCKED_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Gelu", "Neg", "Abs",
                 "Erf"}
BLOCKED_BINARY = {"Add", "Sub", "Mul", "Max", "Min", "Div"}


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
        if v.name not in twin and not twin_of_nhwc(graph, v, twin, block):
            with graph.inserting_before(before):
                twin[v.name] = graph.add_node("ToBlockedLayout", [v], {"block": block},
                                              name=f"{v.name}/to_blocked").outputs[0]
        return twin[v.name]

    for node in list(graph.nodes):
        if not convertible(node):
            converted += blocked_elementwise(graph, node, twin, block) or nhwc_from_blocked(graph, node, twin, block)
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
    graph.remove_unused()  # also constants blocked for an op that then stayed NCHW
    return converted


def _blocked_operand(graph: Graph, v: Value, out: Value, twin: dict, block: int, divisor: bool):
    """The operand `v` of an elementwise op with NCHW result `out`, on the blocked layout: its twin (the same
    channels, spatial axes equal to out's or 1 x 1), or a constant of one value per channel (or one value)
    as a [1, Cb, 1, 1, c] constant; None when neither. A divisor's padding channels get ones, not zeros."""
    if v.name in twin or twin_of_nhwc(graph, v, twin, block):
        t = twin[v.name]
        ok = v.shape[:2] == out.shape[:2] and v.shape[2:] in (out.shape[2:], (1, 1))
        return t if ok else None
    if v.const is None or v.dtype != out.dtype:
        return None
    channels = out.shape[1]
    values = per_channel(v.const, channels, 4)
    if values is None:
        return None
    if v.size == 1 and not divisor:
        return v  # a single value broadcasts over the blocked tensor as it is
    cb = blocks(channels, block)
    full = np.full((cb * block,), 1 if divisor else 0, v.const.dtype)
    full[:channels] = values
    return graph.add_const(f"{v.name}/blocked{block}", full.reshape(1, cb, 1, 1, block))


def blocked_elementwise(graph: Graph, node: Node, twin: dict, block: int) -> int:
    """Run an elementwise op (or a MaxPool or GlobalAveragePool) whose tensor operands all have blocked twins on the
    blocked layout; its NCHW result is then a FromBlockedLayout of the blocked one, which later blocked
    consumers bypass. Returns 1 when the node was converted."""
    op = node.op_type
    if len(node.outputs) != 1 or node.outputs[0].rank != 4 or node.outputs[0].dtype != DType.float32:
        return 0
    out = node.outputs[0]
    if op == "MaxPool" and node.inputs[0].name in twin and len(node.attrs["kernel_shape"]) == 2:
        attrs, inputs, new_op = {**node.attrs, "block": block}, [twin[node.inputs[0].name]], "BlockedMaxPool"
    elif op == "GlobalAveragePool":
        x = node.inputs[0]
        if x.name not in twin:
            return 0
        attrs, inputs, new_op = {"axes": [2, 3], "keepdims": 1}, [twin[x.name]], "ReduceMean"
    elif op == "Concat" and node.attrs["axis"] % 4 == 1:
        # Channel concatenation of whole channel blocks (a feature pyramid's merge) is a concatenation of
        # the blocks; a partial block would put padding lanes in the middle.
        if any(v.name not in twin or v.shape[1] % block for v in node.inputs):
            return 0
        attrs, inputs, new_op = {"axis": 1}, [twin[v.name] for v in node.inputs], "Concat"
    elif op == "Resize":
        x = node.inputs[0]
        attrs = x.name in twin and blocked_resize_attrs(node, twin[x.name].shape)
        if not attrs:
            return 0
        inputs, new_op = [twin[x.name]], "Resize"
    elif op in BLOCKED_UNARY or op in BLOCKED_BINARY:
        tensors = [v for v in node.inputs if v is not None and v.const is None]
        if not tensors or any(v.name not in twin for v in tensors):
            # An operand that is a channels-last tensor transposed to NCHW gets its twin by vector copies
            # (twin_of_nhwc), but only when another operand is blocked already.
            if not any(v.name in twin for v in tensors) or not all(
                    v.name in twin or _nhwc_source(v, block) is not None for v in tensors):
                return 0
        if op == "Div" and node.inputs[1].const is None:
            return 0  # 0 / 0 in the padding channels
        if any(v.shape[:2] != out.shape[:2] for v in tensors):
            return 0
        with graph.inserting_before(node):
            inputs = [_blocked_operand(graph, v, out, twin, block, divisor=(op == "Div" and i == 1))
                      for i, v in enumerate(node.inputs)]
        if any(v is None for v in inputs):
            return 0
        if op == "Div" and np_any_zero(inputs[1]):
            return 0
        attrs, new_op = dict(node.attrs), op
    else:
        return 0
    graph._node_names.discard(node.name)  # the blocked op takes over the user's node name
    with graph.inserting_before(node):
        yb = graph.add_node(new_op, inputs, attrs, name=node.name).outputs[0]
        y2 = graph.add_node("FromBlockedLayout", [yb], {"channels": out.shape[1]},
                            name=f"{node.name}/from_blocked").outputs[0]
    graph.nodes.remove(node)
    graph.replace_all_uses(out, y2)
    twin[y2.name] = yb
    return 1


def blocked_resize_attrs(node: Node, blocked_shape: tuple) -> dict | None:
    """A spatial Resize's attributes for the same resampling of its input's blocked twin: the same scales
    (or sizes) on H and W, 1 on the channel blocks and lanes, which Resize copies (so every coordinate mode
    but tf_crop_and_resize, whose extrapolation fills, gives the same pixels; interpolation of finite padding
    channels stays finite). None when the Resize also resizes N or C."""
    at = node.attrs
    x = node.inputs[0]
    if at["coordinate_transformation_mode"] == "tf_crop_and_resize":
        return None
    out, scale, _ = Resize.plan(x.shape, at)
    if tuple(out[:2]) != tuple(x.shape[:2]):
        return None
    attrs = {**at, "roi": None, "axes": None}
    if at["scales"]:
        attrs["scales"], attrs["sizes"] = [1.0, 1.0, float(scale[2]), float(scale[3]), 1.0], None
    else:
        attrs["sizes"], attrs["scales"] = [blocked_shape[0], blocked_shape[1], out[2], out[3], blocked_shape[4]], None
    return attrs


# Channels-last <-> blocked. A model that runs LayerNorm and its MLP channels-last between convolutions
# (ConvNeXt: depthwise conv, Transpose to NHWC, LayerNorm, Linear, GELU, Linear, Transpose back, residual Add)
# would convert FromBlocked -> NCHW -> NHWC and back through NCHW -> ToBlocked, each a transpose of single
# floats. With whole channel blocks, NCHWc and NHWC differ only in where the 16-channel vectors go:
# [N, Cb, H, W, c] <-> [N, H, W, Cb, c] is one transpose of whole vectors.
NCHW_TO_NHWC = [0, 2, 3, 1]
NHWC_TO_NCHW = [0, 3, 1, 2]


def _transpose_perm(node: Node | None) -> list | None:
    if node is None or node.op_type != "Transpose" or node.inputs[0].rank != 4:
        return None
    return list(Transpose.perm(4, node.attrs))


def _nhwc_source(v: Value, block: int) -> Value | None:
    """The NHWC tensor whose NCHW transpose `v` is, when its channels are whole blocks; else None."""
    if v.rank == 4 and v.dtype == DType.float32 and v.shape[1] % block == 0 and \
            _transpose_perm(v.producer) == NHWC_TO_NCHW:
        return v.producer.inputs[0]
    return None


def twin_of_nhwc(graph: Graph, v: Value, twin: dict, block: int) -> bool:
    """Give `v` (NCHW, the transpose of an NHWC tensor) a blocked twin made from the NHWC tensor directly:
    a reshape into channel blocks and one transpose of whole vectors. True when it did."""
    u = _nhwc_source(v, block)
    if u is None:
        return False
    n, h, w, c = u.shape
    with graph.inserting_before(v.producer):
        r = graph.add_node("Reshape", [u], {"shape": [n, h, w, c // block, block]},
                           name=f"{v.name}/nhwc_blocks").outputs[0]
        twin[v.name] = graph.add_node("Transpose", [r], {"perm": [0, 3, 1, 2, 4]},
                                      name=f"{v.name}/to_blocked").outputs[0]
    return True


def nhwc_from_blocked(graph: Graph, node: Node, twin: dict, block: int) -> int:
    """An NCHW -> NHWC Transpose of a tensor with a blocked twin and whole channel blocks reads the twin: one
    transpose of whole vectors and a reshape. Returns 1 when the node was rewritten."""
    if _transpose_perm(node) != NCHW_TO_NHWC:
        return 0
    x = node.inputs[0]
    if x.name not in twin or x.shape[1] % block:
        return 0
    out = node.outputs[0]
    graph._node_names.discard(node.name)
    with graph.inserting_before(node):
        t = graph.add_node("Transpose", [twin[x.name]], {"perm": [0, 2, 3, 1, 4]},
                           name=f"{node.name}/from_blocked").outputs[0]
        y = graph.add_node("Reshape", [t], {"shape": list(out.shape)}, name=node.name).outputs[0]
    graph.nodes.remove(node)
    graph.replace_all_uses(out, y)
    return 1


def np_any_zero(v: Value) -> bool:
    return v.const is None or bool(np.any(np.asarray(v.const) == 0))

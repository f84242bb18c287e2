"""The `subpixel_conv_transpose` pass: a strided ConvTranspose as one stride-1 Conv and an interleave.

A ConvTranspose with stride s multiplies, computed directly or as a Conv over a zero-inserted input, s_h*s_w
times more products than it needs: each output phase (u mod s) only meets every s-th kernel tap. Here every
phase becomes its own group of output channels of one stride-1 Conv over x (a sub-kernel of ceil(k/s) taps per
axis, flipped), then Reshape -> Transpose -> Reshape interleave the phases into the upsampled map and a Slice
crops the ConvTranspose's padding (the sub-pixel convolution of ESPCN, TVM's and TFLite's rewrites). The Conv
then takes the target's tuned convolution kernels (on x86 the blocked layout). A CPU target pass; targets with
a native ConvTranspose (Core ML, Ascend) keep it.

Exactness: every output element is the same sum of products as ConvTranspose's definition (zero terms dropped),
in another order. Per axis with stride s, kernel k, begin padding pb: the uncropped output u' = u + pb = q*s + r
gets sum_j x[q - j] * W[r + j*s], which the Conv computes with left padding ceil(k/s) - 1 and taps
Wc[j'] = W[r + (ceil(k/s) - 1 - j') * s]."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node

from .pass_manager import register_pass


def _rewritable(node: Node) -> bool:
    if node.op_type != "ConvTranspose" or node.inputs[0].rank != 4:
        return False
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    at = node.attrs
    return (w.const is not None and (b is None or b.const is not None) and x.dtype.is_float
            and at["group"] == 1 and all(d == 1 for d in (at["dilations"] or [1, 1]))
            and any(s > 1 for s in (at["strides"] or [1, 1])))


def _rewrite(graph: Graph, node: Node) -> None:
    from aotc.compiler.ops.nn import ConvTranspose
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    kernel, out, strides, _, pb = ConvTranspose.geometry(x.shape, w.shape, node.attrs)
    (kh, kw), (sh, sw), (h, wd) = kernel, strides, x.shape[2:]
    c, m = w.shape[0], w.shape[1]
    kq = [-(-k // s) for k, s in zip(kernel, strides)]  # taps per phase
    rows = [-(-(p + o) // s) for p, o, s in zip(pb, out, strides)]  # phase rows/columns the crop needs
    right = [max(0, q - n) for q, n in zip(rows, (h, wd))]
    length = [n + r for n, r in zip((h, wd), right)]
    wc = np.zeros((sh * sw * m, c, kq[0], kq[1]), w.const.dtype)
    wt = w.const.transpose(1, 0, 2, 3)  # [M, C, kh, kw]
    for rh in range(sh):
        for rw in range(sw):
            for jh in range(kq[0]):
                th = rh + (kq[0] - 1 - jh) * sh
                if th >= kh:
                    continue
                for jw in range(kq[1]):
                    tw = rw + (kq[1] - 1 - jw) * sw
                    if tw < kw:
                        wc[(rh * sw + rw) * m:(rh * sw + rw + 1) * m, :, jh, jw] = wt[:, :, th, tw]
    base = node.name
    inputs = [x, graph.add_const(f"{base}/subpixel_weight", wc)]
    if b is not None:
        inputs.append(graph.add_const(f"{base}/subpixel_bias", np.tile(b.const.reshape(-1), sh * sw)))
    nb = x.shape[0]
    with graph.inserting_before(node):
        v = graph.add_node("Conv", inputs, {"pads": [kq[0] - 1, kq[1] - 1, right[0], right[1]],
                                            "kernel_shape": kq}, name=f"{base}/subpixel_conv").outputs[0]
        v = graph.add_node("Reshape", [v], {"shape": [nb, sh, sw, m, length[0], length[1]]},
                           name=f"{base}/phases").outputs[0]
        v = graph.add_node("Transpose", [v], {"perm": [0, 3, 4, 1, 5, 2]}, name=f"{base}/interleave").outputs[0]
        v = graph.add_node("Reshape", [v], {"shape": [nb, m, length[0] * sh, length[1] * sw]},
                           name=f"{base}/upsampled").outputs[0]
        if tuple(v.shape[2:]) != tuple(out) or any(pb):
            v = graph.add_node("Slice", [v], {"starts": list(pb), "ends": [p + o for p, o in zip(pb, out)],
                                              "axes": [2, 3]}, name=f"{base}/crop").outputs[0]
    graph.nodes.remove(node)
    graph.replace_all_uses(y, v)


@register_pass("subpixel_conv_transpose")
def subpixel_conv_transpose(graph: Graph) -> int:
    """Rewrite 2-D strided ConvTransposes (constant weights, group 1, no dilation) into one stride-1 Conv over
    the input (one output-channel group per output phase) and a phase interleave (a CPU target pass)."""
    nodes = [n for n in graph.nodes if _rewritable(n)]
    for n in nodes:
        _rewrite(graph, n)
    if nodes:
        graph.remove_unused()
    return len(nodes)

"""QuantizedAttention -> three QuantizedMatMul projections and the float
attention core in primitive ops, for targets that have an int8 GEMM kernel
but no fused attention kernel (yet). Exact in the reference interpreter: the
projections are the same int8 GEMMs, the core the same float ops as
`Attention` decomposed by decompose_fused_ops.

Not in the default pipeline: `aotc compile ... --quantize int8` adds it (with
decompose_fused_ops) where the target needs it."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node, Value

from .pass_manager import register_pass
from .patterns import replace_nodes


def _op(g: Graph, op: str, inputs, attrs=None, name="") -> Value:
    return g.add_node(op, inputs, attrs or {}, name=name).outputs[0]


def _quantized_attention(g: Graph, n: Node) -> Value:
    ins = n.inputs
    h, d, base = n.attrs["num_heads"], n.attrs["head_dim"], n.name
    xq, xkv = ins[0], ins[3]
    b, sq, skv = xq.shape[0], xq.shape[1], xkv.shape[1]
    add_mask, keep_mask = ins[15], ins[16]

    def heads(x_slots, w_slots, seq, perm, what):
        w, ws, bias = (ins[i] for i in w_slots)
        args = [ins[i] for i in x_slots] + [w, ws, bias]
        while args[-1] is None:
            args.pop()
        y = _op(g, "QuantizedMatMul", args, name=f"{base}/{what}")
        y = _op(g, "Reshape", [y], {"shape": [b, seq, h, d]}, name=f"{base}/{what}_split")
        return _op(g, "Transpose", [y], {"perm": list(perm)}, name=f"{base}/{what}_heads")

    q = heads((0, 1, 2), (6, 7, 8), sq, (0, 2, 1, 3), "q")
    kt = heads((3, 4, 5), (9, 10, 11), skv, (0, 2, 3, 1), "k")
    v = heads((3, 4, 5), (12, 13, 14), skv, (0, 2, 1, 3), "v")
    s = _op(g, "MatMul", [q, kt], name=f"{base}/scores")
    s = _op(g, "Mul", [s, g.add_const(f"{base}/scale", np.array(n.attrs["scale"], np.float32))], name=f"{base}/scaled")
    if keep_mask is not None:
        fill = g.add_const(f"{base}/mask_fill", np.array(n.attrs["mask_fill"], np.float32))
        s = _op(g, "Where", [keep_mask, s, fill], name=f"{base}/keep")
    if add_mask is not None:
        s = _op(g, "Add", [s, add_mask], name=f"{base}/masked")
    p = _op(g, "Softmax", [s], {"axis": -1}, name=f"{base}/softmax")
    if n.attrs["nan_to_zero"]:
        isnan = _op(g, "IsNaN", [p], name=f"{base}/isnan")
        p = _op(g, "Where", [isnan, g.add_const(f"{base}/zero", np.array(0, np.float32)), p], name=f"{base}/nan0")
    ctx = _op(g, "MatMul", [p, v], name=f"{base}/context")
    ctx = _op(g, "Transpose", [ctx], {"perm": [0, 2, 1, 3]}, name=f"{base}/merge")
    return _op(g, "Reshape", [ctx], {"shape": [b, sq, h * d]}, name=f"{base}/merged")


@register_pass("decompose_quantized_attention")
def decompose_quantized_attention(graph: Graph) -> int:
    """Rewrite QuantizedAttention into three QuantizedMatMul projections (int8 GEMMs, float out with the bias)
    and the float attention core in primitive ops, for targets without a fused attention kernel."""
    return decompose_quantized_attention_nodes(graph, [n for n in graph.nodes if n.op_type == "QuantizedAttention"])


def decompose_quantized_attention_nodes(graph: Graph, nodes) -> int:
    return replace_nodes(graph, nodes, _quantized_attention)

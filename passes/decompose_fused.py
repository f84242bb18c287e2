"""Fused ops → the primitive ops they stand for, for targets that have no
kernel for a fused op (yet) — the inverse of the fusion passes, exact in the
reference interpreter.

`Attention` → Q/K/V MatMul (+ bias Add), head split (Reshape, Transpose),
QKᵀ MatMul, scale Mul, mask Where/Add, Softmax, NaN guard, ·V, head merge;
`FusedMatMul` → MatMul, bias Add, activation op(s), residual Add;
`FusedConv` → Conv (with its bias), activation op(s), residual Add;
`SkipLayerNormalization` → Add, LayerNormalization.

Not in the default pipeline. A graph pruned after fusion (prune_heads) keeps
its smaller shapes through the decomposition, so a target that lowers only
primitive ops still compiles the pruned model:
`aotc compile ... --passes <pipeline>,prune_heads{...},decompose_fused_ops`.
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph, Node, Value

from .pass_manager import register_pass

DECOMPOSABLE = ("Attention", "FusedMatMul", "FusedConv", "SkipLayerNormalization")


def _op(g: Graph, op: str, inputs, attrs=None, name="") -> Value:
    return g.add_node(op, inputs, attrs or {}, name=name).outputs[0]


def _scalar(g: Graph, name: str, value: float, dtype) -> Value:
    return g.add_const(name, np.array(value, dtype=dtype.numpy))


def _attention(g: Graph, n: Node) -> list[Value]:
    xq, xkv, wq, bq, wk, bk, wv, bv, add_mask, keep_mask = n.inputs
    h, d, base = n.attrs["num_heads"], n.attrs["head_dim"], n.name
    b, sq, skv = xq.shape[0], xq.shape[1], xkv.shape[1]

    def heads(x: Value, w: Value, bias: Value | None, seq: int, perm, what: str) -> Value:
        y = _op(g, "MatMul", [x, w], name=f"{base}/{what}")
        if bias is not None:
            y = _op(g, "Add", [y, bias], name=f"{base}/{what}_bias")
        y = _op(g, "Reshape", [y], {"shape": [b, seq, h, d]}, name=f"{base}/{what}_split")
        return _op(g, "Transpose", [y], {"perm": list(perm)}, name=f"{base}/{what}_heads")

    q = heads(xq, wq, bq, sq, (0, 2, 1, 3), "q")
    kt = heads(xkv, wk, bk, skv, (0, 2, 3, 1), "k")
    v = heads(xkv, wv, bv, skv, (0, 2, 1, 3), "v")
    s = _op(g, "MatMul", [q, kt], name=f"{base}/scores")
    s = _op(g, "Mul", [s, _scalar(g, f"{base}/scale", n.attrs["scale"], xq.dtype)], name=f"{base}/scaled")
    if keep_mask is not None:
        fill = _scalar(g, f"{base}/mask_fill", n.attrs["mask_fill"], xq.dtype)
        s = _op(g, "Where", [keep_mask, s, fill], name=f"{base}/keep")
    if add_mask is not None:
        s = _op(g, "Add", [s, add_mask], name=f"{base}/masked")
    p = _op(g, "Softmax", [s], {"axis": -1}, name=f"{base}/softmax")
    if n.attrs["nan_to_zero"]:
        isnan = _op(g, "IsNaN", [p], name=f"{base}/isnan")
        p = _op(g, "Where", [isnan, _scalar(g, f"{base}/zero", 0.0, xq.dtype), p], name=f"{base}/nan_to_zero")
    ctx = _op(g, "MatMul", [p, v], name=f"{base}/context")
    ctx = _op(g, "Transpose", [ctx], {"perm": [0, 2, 1, 3]}, name=f"{base}/merge")
    return [_op(g, "Reshape", [ctx], {"shape": [b, sq, h * d]}, name=f"{base}/merged")]


def _activation(g: Graph, y: Value, attrs: dict, base: str) -> Value:
    from aotc.compiler.ops.fused import activation_as_op
    kind = attrs["activation"]
    if kind == "none":
        return y
    if kind == "silu":
        return _op(g, "Mul", [y, _op(g, "Sigmoid", [y], name=f"{base}/sigmoid")], name=f"{base}/silu")
    op, a = activation_as_op(kind, attrs["act_alpha"], attrs["act_beta"])
    a = {k: v for k, v in a.items() if v is not None}
    return _op(g, op, [y], a, name=f"{base}/{kind}")


def _epilogue(g: Graph, n: Node, y: Value, res: Value | None) -> Value:
    """The activation and residual Add of a fused op's epilogue, in the order its attributes say."""
    if res is not None and n.attrs["residual_before_activation"]:
        y = _op(g, "Add", [y, res], name=f"{n.name}/residual")
    y = _activation(g, y, n.attrs, n.name)
    if res is not None and not n.attrs["residual_before_activation"]:
        y = _op(g, "Add", [y, res], name=f"{n.name}/residual")
    return y


def _fused_matmul(g: Graph, n: Node) -> list[Value]:
    a, w = n.inputs[0], n.inputs[1]
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    res = n.inputs[3] if len(n.inputs) > 3 else None
    y = _op(g, "MatMul", [a, w], name=f"{n.name}/matmul")
    if bias is not None:
        y = _op(g, "Add", [y, bias], name=f"{n.name}/bias")
    return [_epilogue(g, n, y, res)]


def _fused_conv(g: Graph, n: Node) -> list[Value]:
    from aotc.compiler.ops import get_op
    conv_inputs = [v for v in n.inputs[:3] if v is not None]
    res = n.inputs[3] if len(n.inputs) > 3 else None
    y = _op(g, "Conv", conv_inputs, get_op("FusedConv").conv_attrs(n.attrs), name=f"{n.name}/conv")
    return [_epilogue(g, n, y, res)]


def _skip_layernorm(g: Graph, n: Node) -> list[Value]:
    s = _op(g, "Add", n.inputs[:2], name=f"{n.name}/skip")
    y = _op(g, "LayerNormalization", [s, *n.inputs[2:]], {"axis": -1, "epsilon": n.attrs["epsilon"]},
            name=f"{n.name}/layernorm")
    return [y, s]


_DECOMPOSE = {"Attention": _attention, "FusedMatMul": _fused_matmul, "FusedConv": _fused_conv,
              "SkipLayerNormalization": _skip_layernorm}


@register_pass("decompose_fused_ops", ops="")
def decompose_fused_ops(graph: Graph, ops: str = "") -> int:
    """Rewrite fused ops (Attention, FusedMatMul, FusedConv, SkipLayerNormalization; or only the comma-separated `ops`)
    back into the primitive ops they stand for, for targets without kernels for them. Not in the default
    pipeline; e.g. after prune_heads for a target that lowers only primitive ops."""
    wanted = [o.strip() for o in ops.split(",") if o.strip()] or list(DECOMPOSABLE)
    unknown = [o for o in wanted if o not in _DECOMPOSE]
    if unknown:
        from .pass_manager import PipelineError
        raise PipelineError(f"decompose_fused_ops cannot decompose {', '.join(unknown)}; it knows "
                            f"{', '.join(DECOMPOSABLE)}.")
    return decompose_nodes(graph, [n for n in graph.nodes if n.op_type in wanted])


def decompose_nodes(graph: Graph, nodes) -> int:
    """Replace each of `nodes` (fused ops of DECOMPOSABLE types) by the primitive ops it stands for."""
    count = 0
    for node in nodes:
        with graph.inserting_before(node):
            new = _DECOMPOSE[node.op_type](graph, node)
        for old, val in zip(node.outputs, new):
            graph.replace_all_uses(old, val)
        graph.nodes.remove(node)
        count += 1
    if count:
        graph.remove_unused()
    return count

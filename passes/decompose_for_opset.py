"""Ops that ONNX added late → the older ops they stand for, so a graph exports at a lower opset.

`onnx.version_converter` cannot lower these ("No Previous Version"), and a
consumer pinned to an older opset (ATC looks every op up at the model's own
opset) cannot parse them:

`Gelu` (opset 20) → exact: 0.5·x·(1 + Erf(x/√2)); tanh: 0.5·x·(1 + Tanh(√(2/π)·(x + 0.044715·x³)));
`LayerNormalization` (opset 17) → ReduceMean, Sub, Mul, ReduceMean, Add ε, Sqrt, Div, Mul scale, Add bias
(over axes [axis, rank), in the input's dtype: the same as stash_type=1 for float32 inputs; a float16
LayerNormalization computes its statistics in float16 after the rewrite).

Both are exact in real arithmetic; in float32 they differ from the fused
reference kernels by rounding only. Not in the default pipeline: a target
that exports ONNX at an older opset runs it (`{opset=N}`: ops that exist at
N stay as they are).
"""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.ir import Graph, Node, Value

from .pass_manager import register_pass

# The opset at which each op entered the default ONNX domain.
INTRODUCED_AT = {"Gelu": 20, "LayerNormalization": 17}


def _op(g: Graph, op: str, inputs, attrs=None, name="") -> Value:
    return g.add_node(op, inputs, attrs or {}, name=name).outputs[0]


def _const(g: Graph, name: str, value: float, like: Value) -> Value:
    return g.add_const(name, np.array(value, dtype=like.dtype.numpy))


def _gelu(g: Graph, n: Node) -> list[Value]:
    x, base = n.inputs[0], n.name
    if n.attrs["approximate"] == "tanh":
        cube = _op(g, "Mul", [_op(g, "Mul", [x, x], name=f"{base}/x2"), x], name=f"{base}/x3")
        inner = _op(g, "Add", [x, _op(g, "Mul", [cube, _const(g, f"{base}/c", 0.044715, x)], name=f"{base}/cx3")],
                    name=f"{base}/poly")
        inner = _op(g, "Mul", [inner, _const(g, f"{base}/k", math.sqrt(2.0 / math.pi), x)], name=f"{base}/arg")
        t = _op(g, "Tanh", [inner], name=f"{base}/tanh")
    else:
        scaled = _op(g, "Mul", [x, _const(g, f"{base}/inv_sqrt2", 1.0 / math.sqrt(2.0), x)], name=f"{base}/arg")
        t = _op(g, "Erf", [scaled], name=f"{base}/erf")
    one_plus = _op(g, "Add", [t, _const(g, f"{base}/one", 1.0, x)], name=f"{base}/one_plus")
    half_x = _op(g, "Mul", [x, _const(g, f"{base}/half", 0.5, x)], name=f"{base}/half_x")
    return [_op(g, "Mul", [half_x, one_plus], name=f"{base}/gelu")]


def _layernorm(g: Graph, n: Node) -> list[Value]:
    x, scale = n.inputs[0], n.inputs[1]
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    base = n.name
    axes = list(range(n.attrs["axis"] % x.rank, x.rank))
    mean = _op(g, "ReduceMean", [x], {"axes": axes, "keepdims": 1}, name=f"{base}/mean")
    centered = _op(g, "Sub", [x, mean], name=f"{base}/centered")
    var = _op(g, "ReduceMean", [_op(g, "Mul", [centered, centered], name=f"{base}/square")],
              {"axes": axes, "keepdims": 1}, name=f"{base}/var")
    std = _op(g, "Sqrt", [_op(g, "Add", [var, _const(g, f"{base}/epsilon", n.attrs["epsilon"], x)],
                              name=f"{base}/var_eps")], name=f"{base}/std")
    y = _op(g, "Mul", [_op(g, "Div", [centered, std], name=f"{base}/normalized"), scale], name=f"{base}/scaled")
    if bias is not None:
        y = _op(g, "Add", [y, bias], name=f"{base}/biased")
    return [y]


_DECOMPOSE = {"Gelu": _gelu, "LayerNormalization": _layernorm}


@register_pass("decompose_for_opset", opset=15)
def decompose_for_opset(graph: Graph, opset: int = 15) -> int:
    """Rewrite ops that ONNX added after `opset` (Gelu: 20, LayerNormalization: 17) into older ops, so the
    graph exports at `opset`. Not in the default pipeline; targets that export ONNX run it."""
    count = 0
    for node in [n for n in graph.nodes if INTRODUCED_AT.get(n.op_type, 0) > opset]:
        with graph.inserting_before(node):
            new = _DECOMPOSE[node.op_type](graph, node)
        graph.replace_all_uses(node.outputs[0], new[0])
        graph.nodes.remove(node)
        count += 1
    if count:
        graph.remove_unused()
    return count

"""Constant folding: a node whose inputs are all constants (or that only reads
static shapes: Shape, Size) is evaluated once by its reference kernel."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Graph
from aotc.compiler.ops.quant import keeps_quantized_weight

from .pass_manager import register_pass

SHAPE_ONLY_OPS = {"Shape", "Size"}


@register_pass("fold_constants", max_elements=1 << 22)
def fold_constants(graph: Graph, max_elements: int) -> int:
    """Evaluate nodes whose inputs are all constant (and Shape/Size, which only need static shapes),
    replacing them by constants. Results over `max_elements` stay computed at run time, so weights
    do not balloon (e.g. an Expand of a scalar to a large tensor)."""
    folded = 0
    outputs = {id(v) for v in graph.outputs}
    for node in list(graph.nodes):
        if any(id(o) in outputs for o in node.outputs):
            continue  # a graph output stays a node's result
        shape_only = node.op_type in SHAPE_ONLY_OPS
        if not shape_only and not all(v is None or v.const is not None for v in node.inputs):
            continue
        if not node.inputs and node.op_type != "ConstantOfShape":
            continue
        if keeps_quantized_weight(node.op_type, node.inputs):
            continue  # an int8 weight stays int8 until fuse_quantized_ops has taken it (or folded)
        if sum(o.size for o in node.outputs) > max_elements:
            continue
        args = [None if v is None else v.const if v.const is not None
                else np.broadcast_to(np.zeros((), v.dtype.numpy), v.shape) for v in node.inputs]
        results = node.op.run(args, node.attrs)
        for old, arr in zip(node.outputs, results):
            const = graph.add_const(f"{old.name}_folded", arr)
            graph.replace_all_uses(old, const)
        folded += 1
    graph.remove_unused()
    return folded

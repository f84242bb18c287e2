"""Dead-code and common-subexpression elimination."""
from __future__ import annotations

from aotc.compiler.ir import Graph

from .pass_manager import register_pass

SMALL_CONST_ELEMENTS = 4096


@register_pass("eliminate_dead_code")
def eliminate_dead_code(graph: Graph) -> int:
    """Remove nodes and constants that no graph output depends on."""
    return graph.remove_unused()


def _attr_key(attrs: dict) -> tuple:
    out = []
    for k, v in sorted(attrs.items()):
        if hasattr(v, "tobytes"):
            v = (str(v.dtype), v.shape, v.tobytes())
        elif isinstance(v, list):
            v = tuple(v)
        out.append((k, v))
    return tuple(out)


@register_pass("eliminate_common_subexpressions")
def eliminate_common_subexpressions(graph: Graph) -> int:
    """Merge identical constants (same dtype, shape and bytes), then nodes that apply the same op with
    the same attributes to the same inputs. Exporters repeat small constants (0.5, 1.0, sqrt(2)) per
    layer; merging them lets identical computations on them merge too."""
    merged = 0
    outputs = {id(v) for v in graph.outputs}
    seen_consts: dict[tuple, object] = {}
    for v in list(graph.initializers.values()):
        if v.size > SMALL_CONST_ELEMENTS:
            continue  # hashing every weight costs more than the rare duplicate saves
        key = (v.dtype, v.shape, v.const.tobytes())
        if key in seen_consts:
            graph.replace_all_uses(v, seen_consts[key])
            merged += 1
        else:
            seen_consts[key] = v
    seen: dict[tuple, object] = {}
    for node in list(graph.nodes):
        key = (node.op_type, tuple(id(v) for v in node.inputs), _attr_key(node.attrs), len(node.outputs))
        twin = seen.get(key)
        if twin is None or any(id(o) in outputs for o in node.outputs):
            seen.setdefault(key, node)
            continue
        for old, new in zip(node.outputs, twin.outputs):
            graph.replace_all_uses(old, new)
        merged += 1
    graph.remove_unused()
    return merged

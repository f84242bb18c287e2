"""Every CPU lowering rule, loaded in one place, and graph lowering over them.

The rule modules register themselves with lowering.lowers when imported;
this module imports all of the shared ones, and a target's own overrides
(`CpuTarget.rule_modules`, e.g. arm64's sdot GEMM) before it lowers a graph.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import importlib

from aotc.compiler.ir import Graph, Node

from . import lower_blocked  # noqa: F401  (NCHWc convolutions, after passes.blocked_layout)
from . import lower_elementwise, lower_fused, lower_gemm, lower_nn, lower_reduce, lower_shape  # noqa: F401
from . import lower_extra_ops  # noqa: F401  (ConvTranspose, InstanceNormalization, LRN, ReduceProd, Shape & co.)
from . import lower_quant, lower_quant_conv  # noqa: F401  (int8: GEMM, attention, convolutions, Q/DQ)
from . import lower_dynamic_quant  # noqa: F401  (DynamicQuantizeLinear: run-time range, scale, zero point)
from . import lower_qlinear  # noqa: F401  (onnxruntime's integer QLinearAdd / QLinearGlobalAveragePool)
from .lowering import (LoweringContext, NoLoweringError, UnsupportedOnTargetError, drop_dead_steps,
                       registered_rules, rule_for)

if TYPE_CHECKING:
    from .target import CpuTarget


def load_rules(target: CpuTarget) -> None:
    for module in target.rule_modules:
        importlib.import_module(module)


# Rules that are building blocks several op lowerings call (ctx.rule), not op types.
SHARED_RULES = ("int8_gemm",)


def lowered_ops(target: CpuTarget | None = None) -> list[str]:
    """The op types with a lowering for `target` (default: the generic rules)."""
    if target is not None:
        load_rules(target)
    return [r for r in registered_rules(target.platform if target is not None else None) if r not in SHARED_RULES]


def check_node(node: Node, graph: Graph, target: CpuTarget) -> str | None:
    """None when `target` lowers `node`; otherwise why not. Runs the node's lowering on a scratch context (the
    rules decide from dtypes, shapes and constants, so asking them is the one honest answer)."""
    load_rules(target)
    fn = rule_for(node.op_type, target.platform)
    if fn is None:
        return f"{target.name} has no {node.op_type} kernel"
    try:
        fn(node, LoweringContext(graph, target))
    except NoLoweringError as e:
        return str(e)
    return None


def lower_graph(graph: Graph, target: CpuTarget) -> tuple[list, LoweringContext]:
    """Every node's steps, in graph order; one error naming every node that has no lowering."""
    load_rules(target)
    ctx = LoweringContext(graph, target)
    steps: list = []
    problems: dict[str, list[tuple[str, str]]] = {}
    for node in graph.nodes:
        fn = rule_for(node.op_type, target.platform)
        if fn is None:
            problems.setdefault(node.op_type, []).append((node.name, ""))
            continue
        try:
            steps.extend(fn(node, ctx))
        except NoLoweringError as e:
            problems.setdefault(node.op_type, []).append((node.name, str(e)))
    if problems:
        raise UnsupportedOnTargetError(target.name, problems)
    return drop_dead_steps(graph, steps), ctx

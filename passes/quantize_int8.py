"""INT8 post-training quantization as a pipeline step.

Not in the default pipeline: `aotc optimize/compile --quantize int8` inserts it
after fusion and head pruning (scales are calibrated on the final float
graph). Calibration data comes from the PassContext (`--calibration
FILE.npz`); the work is done by compiler/quantization, and the report (scheme,
calibration method, quantized and float nodes, output error, weight bytes) is
left in context.reports["quantize_int8"] for the bundle manifest.
"""
from __future__ import annotations

from typing import Any

from aotc.compiler.ir import Graph

from .pass_manager import PassContext, register_pass


@register_pass("quantize_int8", method="minmax", percentile=99.99, samples=None, quantize_ops="", exclude_nodes="",
               smoothquant=None, max_drop=None, requantize=True)
def quantize_int8(graph: Graph, method: str = "minmax", percentile: float = 99.99, samples: int | None = None,
                  quantize_ops: Any = "", exclude_nodes: Any = "", smoothquant: float | None = None,
                  max_drop: float | None = None, requantize: bool = True, context: PassContext | None = None) -> int:
    """Quantize MatMul/FusedMatMul/Gemm, Conv/FusedConv, Attention's Q/K/V projections and embedding
    Gathers to int8 (weights per output channel, symmetric; activations uint8 per tensor, calibrated with
    method minmax | percentile (percentile=99.99) | entropy on the first `samples` calibration inputs).
    quantize_ops / exclude_nodes: comma-separated op types / node names; smoothquant=ALPHA migrates activation
    outliers into the weights; max_drop=X keeps the most sensitive layers float until the output error
    (1 - cosine) on the calibration set is at most X. Needs calibration data in the PassContext."""
    from aotc.passes.quantization import quantize_graph
    ctx = context if context is not None else PassContext()
    report = quantize_graph(graph, calibration=ctx, method=method, percentile=percentile, samples=samples,
                            quantize_ops=quantize_ops or None, exclude_nodes=exclude_nodes or (),
                            smoothquant=smoothquant, max_drop=max_drop, requantize=requantize)
    ctx.reports["quantize_int8"] = report
    return len(report["quantized"])

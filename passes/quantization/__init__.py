"""INT8 post-training quantization (see docs/quantization.md).

    from aotc.passes.quantization import quantize_graph
    report = quantize_graph(graph, calibration=feeds, method="percentile", percentile=99.99)

One module per concern: `calibrate` (observers and range methods), `params`
(scales and zero points), `qdq` (sites and explicit Q/DQ), `smoothquant`,
`sensitivity` (float fallback), `quantize` (the driver and its report); the
int8 ops are in compiler/ops/quant.py and the Q/DQ fusion in
passes/fuse_quantized.py.
"""
from .calibrate import METHODS, QuantizationError, calibrate  # noqa: F401
from .qdq import DEFAULT_QUANTIZE_OPS, QUANTIZABLE_OPS  # noqa: F401
from .quantize import SCHEME, QuantConfig, output_error, quantize_graph  # noqa: F401

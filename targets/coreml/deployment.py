"""Core ML deployment targets: which MIL opset each `--coreml-target` gets, and so which ops aotc may emit.

iOS16/macOS13 are MIL opset iOS16 (spec version 7), iOS17/macOS14 opset iOS17 (spec 8), iOS18/macOS15 opset
iOS18 (spec 9); checked with coremltools 9.0 (TARGET_NOTES.md, Core ML section). What each one gets:

- every deployment target: int8 weights (per output channel) as `constexpr_affine_dequantize` (iOS16+);
- iOS17 and later: activations really quantized at run time with MIL's `quantize`/`dequantize` (uint8);
  on iOS16 those ops do not exist, so aotc's QuantizeLinear/DequantizeLinear run as the same arithmetic in
  float (round, clip, shift, scale): the numbers are aotc's int8 numbers, the tensors stay float;
- iOS18 and later: `Attention` becomes one `scaled_dot_product_attention` (before: matmul, softmax, matmul).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deployment:
    name: str            # the --coreml-target value, also the coremltools.target attribute name
    opset: int           # the MIL opset year: 16, 17 or 18
    spec_version: int    # the Core ML model specification version the package gets

    @property
    def runtime_quantize(self) -> bool:
        """MIL `quantize`/`dequantize` of run-time tensors exist (iOS17 opset)."""
        return self.opset >= 17

    @property
    def fused_attention(self) -> bool:
        """MIL `scaled_dot_product_attention` exists (iOS18 opset)."""
        return self.opset >= 18

    def coremltools_target(self):
        import coremltools as ct
        return getattr(ct.target, self.name)


DEPLOYMENTS = {d.name: d for d in (
    Deployment("iOS16", 16, 7), Deployment("macOS13", 16, 7),
    Deployment("iOS17", 17, 8), Deployment("macOS14", 17, 8),
    Deployment("iOS18", 18, 9), Deployment("macOS15", 18, 9),
)}
DEFAULT_DEPLOYMENT = "iOS16"
PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"   # Core ML's own default for ML programs (coremltools' compute_precision)

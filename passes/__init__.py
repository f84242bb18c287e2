"""Graph-to-graph passes over the IR (pipeline, canonicalization, fusion, quantization)."""

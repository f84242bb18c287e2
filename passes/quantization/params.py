"""Scales and zero points: the scheme in numbers.

- Activations: asymmetric uint8 per tensor. The range is widened to include 0
  (so real zero, e.g. padding, is exact), scale = (hi - lo) / 255 and
  zero_point = round(-lo / scale). uint8 is what VNNI's vpdpbusd multiplies.
- Weights: symmetric int8 per output channel, zero point 0, values in
  [-127, 127] (never -128: the range is symmetric, and u8 x s8 products then
  stay within what the accumulator bound in compiler/ops/quant.py assumes).
"""
from __future__ import annotations

import numpy as np

from aotc.compiler.ops.quant import dequantize, quantize


def activation_qparams(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32 [], zero_point uint8 []) for the range [lo, hi]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError(f"non-finite calibration range [{lo}, {hi}]")
    scale = np.float32((hi - lo) / 255.0)
    if scale == 0 or not np.isfinite(scale):
        return np.array(1.0, np.float32), np.array(0, np.uint8)
    zp = np.clip(np.rint(-lo / np.float64(scale)), 0, 255)
    return np.array(scale, np.float32), np.array(zp, np.uint8)


def weight_qparams(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric scales: absmax over every axis but `axis`, / 127 (1.0 for an all-zero channel)."""
    axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    absmax = np.max(np.abs(w.astype(np.float64)), axis=axes) if axes else np.abs(w.astype(np.float64))
    scale = (absmax / 127.0).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights in [-127, 127], float32 scales [w.shape[axis]])."""
    scale = weight_qparams(w, axis)
    q = quantize(w.astype(np.float32), scale, np.zeros(scale.shape, np.int8), np.int8, axis=axis % w.ndim)
    return np.maximum(q, np.int8(-127)), scale


def fake_quantize_weight(w: np.ndarray, axis: int) -> np.ndarray:
    q, s = quantize_weight(w, axis)
    return dequantize(q, s, None, axis=axis % w.ndim)

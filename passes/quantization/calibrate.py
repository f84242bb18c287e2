"""Activation ranges from calibration runs of the float graph, observed through
the interpreter's observer hook.

Methods (each turns what was observed into one range [lo, hi] per tensor):
- minmax: the smallest and largest value seen over all samples.
- percentile: the p-th and (100-p)-th percentiles of all values seen (p = 99.99
  by default), read from a histogram of `num_bins` bins over [min, max];
  precise to one bin width.
- entropy: TensorRT's KL-divergence calibration. A histogram of |x| over
  [0, absmax] is cut at every candidate threshold (clipped mass folded into
  the last kept bin), quantized to the number of levels the tensor gets
  (256 when it is never negative, 128 per side otherwise) and expanded back;
  the threshold whose quantized distribution is closest (KL) to the clipped
  one wins, and the range is [max(min, -T), min(max, T)]. A tensor with a
  saturation spike in its top bin (ReLU6/Clip outputs) keeps its full range.
Percentile and entropy need two passes over the data: one for min/max, then
one filling histograms with fixed edges (so every sample lands in the same
bins and the result does not depend on the order of the samples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from aotc.compiler import progress
from aotc.compiler.errors import AotcError
from aotc.compiler.interpreter import interpret
from aotc.compiler.ir import Graph

METHODS = ("minmax", "percentile", "entropy")


class QuantizationError(AotcError):
    """Quantization settings that cannot work, or a model they cannot apply to."""


@dataclass
class TensorStats:
    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0
    hist: np.ndarray | None = None  # percentile: signed over [min, max]; entropy: |x| over [0, absmax]
    channel_absmax: np.ndarray | None = None  # per channel (last axis), for SmoothQuant

    def update_minmax(self, x: np.ndarray) -> None:
        if x.size:
            self.min = min(self.min, float(x.min()))
            self.max = max(self.max, float(x.max()))
            self.count += x.size


def histogram(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Counts of x in `bins` equal bins over [lo, hi] (values on the upper edge go to the last bin)."""
    if hi <= lo:
        h = np.zeros(bins, np.int64)
        h[0] = x.size
        return h
    idx = ((x.astype(np.float64).reshape(-1) - lo) * (bins / (hi - lo))).astype(np.int64)
    return np.bincount(np.clip(idx, 0, bins - 1), minlength=bins).astype(np.int64)


# -- ranges from statistics ------------------------------------------------------
def minmax_range(stats: TensorStats) -> tuple[float, float]:
    return stats.min, stats.max


def percentile_range(hist: np.ndarray, lo: float, hi: float, percentile: float) -> tuple[float, float]:
    """[(100-p)th, p-th] percentile from a signed histogram over [lo, hi]: the upper edge of the bin where the
    cumulative count first reaches p% of the total, and the lower edge of the bin where it first exceeds (100-p)%."""
    if not 50.0 < percentile <= 100.0:
        raise QuantizationError(f"The calibration percentile must be in (50, 100], got {percentile}.")
    total = hist.sum()
    if total == 0 or hi <= lo:
        return lo, hi
    width = (hi - lo) / hist.size
    cdf = np.cumsum(hist)
    top = int(np.searchsorted(cdf, total * percentile / 100.0, side="left"))
    bottom = int(np.searchsorted(cdf, total * (1.0 - percentile / 100.0), side="right"))
    return max(lo, lo + bottom * width), min(hi, lo + (top + 1) * width)


def _quantized_distribution(p: np.ndarray, levels: int) -> np.ndarray:
    """Merge `p` into `levels` groups of (nearly) equal bin counts and spread each group's mass evenly
    over its nonzero bins (TensorRT's candidate distribution Q)."""
    n = p.size
    starts = (np.arange(levels) * n) // levels
    sums = np.add.reduceat(p, starts)
    nonzero = np.add.reduceat((p > 0).astype(np.float64), starts)
    group = np.repeat(np.arange(levels), np.diff(np.append(starts, n)))
    per_bin = np.divide(sums, nonzero, out=np.zeros_like(sums), where=nonzero > 0)
    return np.where(p > 0, per_bin[group], 0.0)


def smooth(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Give empty bins `eps` counts, taken evenly from the non-empty ones (as onnxruntime's entropy calibrator
    does), so a candidate that empties a bin the reference still uses costs a large but finite divergence."""
    zeros = counts == 0
    nonzero = counts.size - int(zeros.sum())
    if nonzero == 0:
        return None
    eps1 = eps * (counts.size - nonzero) / nonzero
    return counts + eps * zeros - eps1 * ~zeros


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two histograms of counts, after `smooth`ing both and normalizing."""
    p, q = smooth(p.astype(np.float64)), smooth(q.astype(np.float64))
    if p is None or q is None:
        return float("inf")
    p, q = p / p.sum(), q / q.sum()
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def entropy_threshold(abs_hist: np.ndarray, absmax: float, levels: int = 128) -> float:
    """TensorRT's KL calibration over a histogram of |x| on [0, absmax]: the threshold T = i * bin width
    minimizing KL(P_i || Q_i), where P_i is the first i bins with the clipped mass added to bin i-1, and Q_i the
    first i bins (without the clipped mass) quantized to `levels` groups and expanded back."""
    bins = abs_hist.size
    if absmax <= 0 or abs_hist.sum() == 0:
        return absmax
    if bins <= levels:
        return absmax
    h = abs_hist.astype(np.float64)
    tail = np.cumsum(h[::-1])[::-1]  # tail[i] = sum(h[i:])
    best_i, best_kl = bins, float("inf")
    for i in range(levels, bins + 1):
        p = h[:i].copy()
        if i < bins:
            p[i - 1] += tail[i]
        if p.sum() == 0:
            continue
        q = _quantized_distribution(h[:i], levels)
        kl = kl_divergence(p, q)
        if kl < best_kl:  # the first (tightest) threshold wins ties
            best_kl, best_i = kl, i
    return best_i * absmax / bins


def saturated(hist: np.ndarray) -> bool:
    """A point mass in the top bin, far above the bins below it: values the model clamps (ReLU6, Clip). A
    natural tail has about one value (the maximum) there."""
    top, below = hist[-1], hist[-9:-1]
    return top >= 16 and top > 8 * max(float(below.mean()), 1.0)


def entropy_range(stats: TensorStats, absmax: float) -> tuple[float, float]:
    """The KL threshold as a range; a tensor the model already saturates keeps its full range, since KL
    undervalues clipping such a point mass."""
    levels = 256 if stats.min >= 0 else 128
    if saturated(stats.hist):
        return stats.min, stats.max
    t = entropy_threshold(stats.hist, absmax, levels)
    return max(stats.min, -t), min(stats.max, t)


# -- running the graph -----------------------------------------------------------
@dataclass
class Calibration:
    """Observed statistics and the chosen ranges, per value name."""
    method: str
    percentile: float
    samples: int
    stats: dict[str, TensorStats] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # the float graph's outputs per sample


def _observe(graph: Graph, samples: Sequence[dict], names: set[str], visit) -> list[dict[str, np.ndarray]]:
    """Call visit(name, array) for every watched value (graph inputs included) in every sample; returns the
    graph's outputs per sample."""
    outputs = []
    with progress.task("calibrating (one interpreter run per sample)", total=len(samples)) as step:
        for feeds in samples:
            for name in names:
                if name in feeds:
                    visit(name, np.asarray(feeds[name]))

            def observer(node, results):
                for v, arr in zip(node.outputs, results):
                    if v.name in names:
                        visit(v.name, arr)
            outputs.append(interpret(graph, feeds, observer=observer))
            step.advance()
    return outputs


def calibrate(graph: Graph, samples: Sequence[dict], value_names: Iterable[str], method: str = "minmax",
              percentile: float = 99.99, num_bins: int = 2048, channel_stats: Iterable[str] = (),
              keep_outputs: bool = False) -> Calibration:
    """Run `graph` (float) on every sample and compute a range for each named value.

    `channel_stats` names values whose per-channel (last axis) absolute maximum is also recorded
    (SmoothQuant's activation statistics)."""
    if method not in METHODS:
        raise QuantizationError(f"Unknown calibration method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "percentile" and not 50.0 < percentile <= 100.0:
        raise QuantizationError(f"The calibration percentile must be in (50, 100], got {percentile}.")
    if num_bins < 256:
        raise QuantizationError(f"Histograms need at least 256 bins, got {num_bins}.")
    names = set(value_names)
    chan = set(channel_stats)
    cal = Calibration(method, percentile, len(samples), {n: TensorStats() for n in names | chan})

    def first_pass(name, arr):
        st = cal.stats[name]
        st.update_minmax(arr)
        if name in chan and arr.size:
            a = np.abs(arr.reshape(-1, arr.shape[-1])).max(axis=0).astype(np.float32)
            st.channel_absmax = a if st.channel_absmax is None else np.maximum(st.channel_absmax, a)

    outputs = _observe(graph, samples, names | chan, first_pass)
    if keep_outputs:
        cal.outputs = outputs
    if method != "minmax":
        for n in names:
            cal.stats[n].hist = np.zeros(num_bins, np.int64)

        def second_pass(name, arr):
            if name not in names:
                return
            st = cal.stats[name]
            if method == "percentile":
                st.hist += histogram(arr, st.min, st.max, num_bins)
            else:
                st.hist += histogram(np.abs(arr), 0.0, max(abs(st.min), abs(st.max)), num_bins)

        _observe(graph, samples, names, second_pass)
    for n in names:
        st = cal.stats[n]
        if st.count == 0:
            raise QuantizationError(f"Calibration never saw value %{n}; is it computed for these inputs?")
        if method == "minmax":
            cal.ranges[n] = minmax_range(st)
        elif method == "percentile":
            cal.ranges[n] = percentile_range(st.hist, st.min, st.max, percentile)
        else:
            cal.ranges[n] = entropy_range(st, max(abs(st.min), abs(st.max)))
    return cal

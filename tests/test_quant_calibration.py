"""Calibration methods against ranges computed by hand, and the observer-driven
calibration over a graph."""
import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.ir import Graph
from aotc.passes.quantization.calibrate import (TensorStats, calibrate, entropy_range, entropy_threshold, histogram,
                                             kl_divergence, percentile_range, QuantizationError)


def test_histogram_edges():
    h = histogram(np.array([0.0, 0.49, 0.5, 0.99, 1.0]), 0.0, 1.0, 2)
    assert h.tolist() == [2, 3]  # [0, .5) and [.5, 1], the top edge inclusive


def test_minmax_over_samples_and_graph_inputs():
    g = Graph()
    x = g.add_input("x", (4,), compiler.DType.float32)
    y = g.add_node("Relu", [x]).outputs[0]
    g.outputs = [g.add_node("Neg", [y]).outputs[0]]
    samples = [{"x": np.array([-1.0, 2.0, 0.5, 3.0], np.float32)}, {"x": np.array([-4.0, 1.0, 0.0, 7.5], np.float32)}]
    cal = calibrate(g, samples, ["x", y.name, g.outputs[0].name], "minmax")
    assert cal.ranges["x"] == (-4.0, 7.5)
    assert cal.ranges[y.name] == (0.0, 7.5)
    assert cal.ranges[g.outputs[0].name] == (-7.5, 0.0)


def test_percentile_range_by_hand():
    # 1000 values 0..999 in 1000 bins over [0, 999.999]: bin i holds value i
    hist = np.ones(1000, np.int64)
    lo, hi = percentile_range(hist, 0.0, 1000.0, 99.0)
    # 99% of 1000 = 990 values: the top one is value 989, whose bin ends at 990;
    # the bottom 1% (10 values, 0..9) is cut: the range starts at the bin of value 10
    assert (lo, hi) == (10.0, 990.0)
    assert percentile_range(hist, 0.0, 1000.0, 100.0) == (0.0, 1000.0)


def test_percentile_clips_an_outlier():
    x = np.concatenate([np.linspace(-1, 1, 99999), [50.0]]).astype(np.float32)
    g = Graph()
    xin = g.add_input("x", x.shape, compiler.DType.float32)
    g.outputs = [g.add_node("Relu", [xin]).outputs[0]]
    cal = calibrate(g, [{"x": x}], ["x"], "percentile", percentile=99.99, num_bins=2048)
    width = 51.0 / 2048
    lo, hi = cal.ranges["x"]
    assert lo == pytest.approx(-1.0, abs=width) and hi == pytest.approx(1.0, abs=width)
    assert calibrate(g, [{"x": x}], ["x"], "minmax").ranges["x"] == (-1.0, 50.0)


def brute_force_kl_threshold(hist, levels):
    """TensorRT's algorithm written out step by step, independently of the library code."""
    best, best_i = None, None
    for i in range(levels, len(hist) + 1):
        p = [float(c) for c in hist[:i]]
        p[i - 1] += float(sum(hist[i:]))
        q = [0.0] * i
        for j in range(levels):
            a, b = (j * i) // levels, ((j + 1) * i) // levels
            group = hist[a:b]
            nz = sum(1 for c in group if c > 0)
            for t in range(a, b):
                q[t] = float(sum(group)) / nz if hist[t] > 0 else 0.0
        def smoothed(d, eps=1e-4):  # empty bins get eps, taken evenly from the others
            nz = sum(1 for c in d if c > 0)
            eps1 = eps * (len(d) - nz) / nz
            return [c - eps1 if c > 0 else eps for c in d]
        p, q = smoothed(p), smoothed(q)
        ps, qs = sum(p), sum(q)
        kl = sum(pi / ps * np.log((pi / ps) / (qi / qs)) for pi, qi in zip(p, q) if pi > 0)
        if best is None or kl < best:
            best, best_i = kl, i
    return best_i


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_threshold_matches_brute_force(seed):
    r = np.random.default_rng(seed)
    x = np.abs(np.concatenate([r.standard_normal(20000), r.standard_normal(20) * 15]))
    bins, levels = 512, 32
    hist = histogram(x, 0.0, float(x.max()), bins)
    t = entropy_threshold(hist, float(x.max()), levels)
    assert t == pytest.approx(brute_force_kl_threshold(hist.tolist(), levels) * x.max() / bins)


def test_entropy_keeps_a_uniform_range_and_clips_a_far_outlier():
    # uniform data: any clipping piles mass in the last bin, so the full range wins (KL 0 there)
    u = np.linspace(0, 1, 200000)
    hist = histogram(u, 0.0, 1.0, 2048)
    assert entropy_threshold(hist, 1.0, 128) == 1.0
    # a Gaussian with one value at 100 sigma: the threshold stays within the Gaussian's bulk
    r = np.random.default_rng(0)
    g = np.concatenate([r.standard_normal(100000), [100.0]])
    st = TensorStats(min=float(g.min()), max=float(g.max()))
    st.hist = histogram(np.abs(g), 0.0, 100.0, 2048)
    lo, hi = entropy_range(st, 100.0)
    assert 2.0 < hi < 10.0 and lo == max(g.min(), -hi)


def test_kl_divergence_basics():
    p = np.array([1.0, 2.0, 3.0])
    assert kl_divergence(p, p * 7) == pytest.approx(0.0, abs=1e-12)
    # a bin the candidate empties costs a lot, but finitely (smoothing)
    assert 1.0 < kl_divergence(p, np.array([1.0, 0.0, 3.0])) < 10.0


def test_bad_settings():
    g = Graph()
    xin = g.add_input("x", (3,), compiler.DType.float32)
    g.outputs = [g.add_node("Relu", [xin]).outputs[0]]
    with pytest.raises(QuantizationError, match="Unknown calibration method"):
        calibrate(g, [], ["x"], "mse")
    with pytest.raises(QuantizationError, match="percentile must be in"):
        calibrate(g, [], ["x"], "percentile", percentile=30)


def test_entropy_keeps_the_range_of_a_saturated_tensor():
    """ReLU6 outputs: a point mass at 6 is never clipped (on EfficientNet-Lite0, KL alone cut some to 1.4)."""
    r = np.random.default_rng(0)
    x = np.concatenate([np.abs(r.standard_normal(100000)) * 0.3, np.full(2000, 6.0)])
    st = TensorStats(min=0.0, max=6.0)
    st.hist = histogram(x, 0.0, 6.0, 2048)
    assert entropy_range(st, 6.0) == (0.0, 6.0)

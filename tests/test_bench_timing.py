"""The timing loop `aotc bench` and every bench/ script share (aotc/bench.py): engines alternate round by round,
each round starts with an untimed call, and the summary's statistics are the samples' own."""
from __future__ import annotations

import numpy as np

from aotc import bench


def test_engines_alternate_in_rounds_with_an_untimed_call_first(monkeypatch):
    monkeypatch.setattr(bench, "POOL_IDLE_S", 0.0)
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = bench.measure_interleaved(fns, rounds=3, runs=2, warmup=1)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 6, "b": 6}
    assert all(t >= 0 for v in times.values() for t in v)


def test_summary_is_computed_from_the_samples():
    s = bench.summarize_ms([0.003, 0.001, 0.002, 0.010])
    assert s["median_ms"] == 2.5 and s["min_ms"] == 1.0 and s["mean_ms"] == 4.0
    assert np.isclose(s["p10_ms"], np.percentile([3, 1, 2, 10], 10))
    assert np.isclose(s["p90_ms"], np.percentile([3, 1, 2, 10], 90))

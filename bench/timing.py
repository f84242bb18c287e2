"""The timing every benchmark here shares is `aotc bench`'s (aotc/bench.py): interleaved rounds, one engine
at a time, each engine's round started after the previous engine's thread pool has gone idle. This module
adds only the onnxruntime session the benchmarks compare with."""
from __future__ import annotations

from aotc.bench import POOL_IDLE_S, measure_interleaved, summarize_ms  # noqa: F401


def measure(fns, rounds: int, runs: int) -> dict[str, list[float]]:
    """Seconds per call of each engine (aotc.bench.measure_interleaved with 3 warm-up calls)."""
    return measure_interleaved(fns, rounds, runs)


def ort_session(path, threads: int):
    """The onnxruntime session every benchmark here compares with: ORT_ENABLE_ALL, `threads` intra-op threads."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

"""The timing loop every x86 benchmark here shares: interleaved rounds, one engine at a time, each
engine's round started after the previous engine's thread pool has gone idle."""
from __future__ import annotations

import time
from typing import Callable

# onnxruntime's workers keep spinning for a while after a run and, on a 2-core machine, take the core the
# next engine's second thread needs (measured: aotc EfficientNet-Lite0 9.2 ms right after onnxruntime runs
# vs 5.4 ms alone). A pause before each round lets every pool go idle, so each engine is measured in its
# own steady state.
POOL_IDLE_S = 0.25


def measure(fns: dict[str, Callable[[], object]], rounds: int, runs: int) -> dict[str, list[float]]:
    """Seconds per call of each engine: 3 warm-up calls each, then `rounds` x (pause, one untimed call,
    `runs` timed calls) per engine in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(POOL_IDLE_S)
            fn()
            for _ in range(runs):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return times


def ort_session(path, threads: int):
    """The onnxruntime session every benchmark here compares with: ORT_ENABLE_ALL, `threads` intra-op threads."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

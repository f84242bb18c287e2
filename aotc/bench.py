"""`aotc bench BUNDLE`: how fast a bundle runs here — median, p10/p90, min and throughput of repeated runs,
on the user's inputs or on random inputs of the manifest's shapes and dtypes.

The timing primitives here are also what the bench/ scripts compare engines with (bench/timing.py):
`measure_interleaved` runs several engines in alternating rounds, `summarize_ms` reduces the samples."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .api import load

# A thread pool (onnxruntime's, aotc's) keeps spinning for a while after a run and, on a 2-core machine, takes
# the core the next engine's second thread needs (measured: aotc EfficientNet-Lite0 9.2 ms right after
# onnxruntime runs vs 5.4 ms alone). A pause before each round lets every pool go idle, so each engine is
# measured in its own steady state.
POOL_IDLE_S = 0.25


def time_calls(fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds of each of `runs` calls."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure_interleaved(fns: dict[str, Callable[[], object]], rounds: int, runs: int,
                        warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each engine: `warmup` calls each, then `rounds` x (pause, one untimed call, `runs`
    timed calls) per engine in turn, so slow drift of the machine's speed hits every engine alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(POOL_IDLE_S)
            fn()
            times[k] += time_calls(fn, runs)
    return times


def summarize_ms(seconds) -> dict[str, float]:
    """median, p10, p90, min and mean in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "mean_ms": float(ms.mean())}


def random_feeds(manifest: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the manifest's shapes and dtypes: normal floats; small non-negative integers (valid token ids
    and indices for any vocabulary of 100 or more); booleans at random."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for item in manifest["inputs"]:
        shape, dtype = tuple(item["shape"]), item["dtype"]
        if dtype == "bool":
            feeds[item["name"]] = rng.integers(0, 2, shape).astype(bool)
        elif dtype.startswith(("int", "uint")):
            feeds[item["name"]] = rng.integers(0, 100, shape).astype(dtype)
        else:
            feeds[item["name"]] = rng.standard_normal(shape).astype(np.float32).astype(_numpy_dtype(dtype))
    return feeds


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.dtype(name)


def feeds_for(bundle, inputs: str | None) -> dict[str, np.ndarray]:
    if inputs:
        from aotc.compiler.user_files import read_npz
        return read_npz(inputs)
    return random_feeds(bundle.manifest)


def bench_bundle(path, inputs: str | None = None, threads: int = 0, warmup: int = 5, runs: int = 50) -> dict:
    bundle = load(path)
    feeds = feeds_for(bundle, inputs)
    session = bundle.session()
    if threads:
        session.set_num_threads(threads)
    for _ in range(warmup):
        session.run(feeds)
    stats = summarize_ms(time_calls(lambda: session.run(feeds), runs))
    first = np.shape(next(iter(feeds.values()))) if feeds else ()  # a bucketed bundle takes smaller inputs
    batch = first[0] if first else 1
    median = stats["median_ms"]
    # Which bucket ran, where the runtime runs in this process (a bucketed x86 bundle's BucketedModel).
    chooser = getattr(getattr(session, "model", None), "bucket_for", None)
    bucket = {"bucket": chooser(feeds)} if chooser is not None else {}
    return {**bucket, "bundle": str(bundle.path), "target": bundle.target, "threads": threads or "default",
            "inputs": inputs or "random", "warmup": warmup, "runs": runs, **stats, "runs_per_s": 1e3 / median,
            "batch": batch,
            "samples_per_s": batch * 1e3 / median}


def format_bench(r: dict) -> str:
    return (f"{r['bundle']} ({r['target']}, threads {r['threads']}, {r['inputs']} inputs"
            f"{', bucket ' + r['bucket'] if 'bucket' in r else ''}): "
            f"median {r['median_ms']:.3f} ms, p10 {r['p10_ms']:.3f}, p90 {r['p90_ms']:.3f}, min {r['min_ms']:.3f} "
            f"over {r['runs']} runs after {r['warmup']} warm-up; {r['runs_per_s']:.1f} runs/s, "
            f"{r['samples_per_s']:.1f} samples/s at batch {r['batch']}")

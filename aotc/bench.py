"""`aotc bench BUNDLE`: how fast a bundle runs here — median, p10/p90, min and throughput of repeated runs,
on the user's inputs or on random inputs of the manifest's shapes and dtypes."""
from __future__ import annotations

import time

import numpy as np

from .api import load


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
        from compiler.user_files import read_npz
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
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = np.array(times)
    first = np.shape(next(iter(feeds.values()))) if feeds else ()  # a bucketed bundle takes smaller inputs
    batch = first[0] if first else 1
    median = float(np.median(ms))
    # Which bucket ran, where the runtime runs in this process (a bucketed x86 bundle's BucketedModel).
    chooser = getattr(getattr(session, "model", None), "bucket_for", None)
    bucket = {"bucket": chooser(feeds)} if chooser is not None else {}
    return {**bucket, "bundle": str(bundle.path), "target": bundle.target, "threads": threads or "default",
            "inputs": inputs or "random", "warmup": warmup, "runs": runs, "median_ms": median,
            "p10_ms": float(np.percentile(ms, 10)), "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()),
            "mean_ms": float(ms.mean()), "runs_per_s": 1e3 / median, "batch": batch,
            "samples_per_s": batch * 1e3 / median}


def format_bench(r: dict) -> str:
    return (f"{r['bundle']} ({r['target']}, threads {r['threads']}, {r['inputs']} inputs"
            f"{', bucket ' + r['bucket'] if 'bucket' in r else ''}): "
            f"median {r['median_ms']:.3f} ms, p10 {r['p10_ms']:.3f}, p90 {r['p90_ms']:.3f}, min {r['min_ms']:.3f} "
            f"over {r['runs']} runs after {r['warmup']} warm-up; {r['runs_per_s']:.1f} runs/s, "
            f"{r['samples_per_s']:.1f} samples/s at batch {r['batch']}")

"""Shape buckets (issue #20) on MiniLM-L6 (real weights), x86-avx512:

1. compile time and bundle size: the bucketed bundle (--bucket batch=1,8 --bucket seq=16,32,64,128, 8 buckets)
   against one variant (batch 1, seq 128);
2. correctness: inputs of length 7, 16, 37, 100, 128 at batch 1, 3, 8 through the bucketed bundle against
   onnxruntime on the unpadded inputs, at the valid (attention mask 1) positions;
3. speed: a mixed-length workload at batch 1 (real sentences, alone and joined in twos, fours and eights, each
   tokenized at its own length) through the bucketed bundle, the single seq-128 bundle (every text padded to
   128) and onnxruntime with dynamic shapes (each text at its own length), in interleaved rounds in one process.

Writes bench/results/bench_buckets.json.

    .venv/bin/python bench/bench_buckets.py [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads would take the engines' cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests", ROOT / "bench", ROOT / "examples"):
    sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
CACHE = ROOT / ".cache"
OUT = CACHE / "bench-buckets"
PAD = {"input_ids": 0, "attention_mask": 0}

from timing import measure, ort_session  # noqa: E402


def bundle_bytes(path: Path) -> int:
    """Bytes of the bundle's regular files (links to shared files count nothing)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def workload_texts() -> list[str]:
    from test_quant_models import CALIBRATION_SENTENCES, TEST_SENTENCES
    s = list(TEST_SENTENCES) + list(CALIBRATION_SENTENCES)
    texts = list(s[:24])                                            # single sentences
    texts += [" ".join(s[i:i + 2]) for i in range(24, 40, 2)]       # pairs
    texts += [" ".join(s[i:i + 4]) for i in range(40, 72, 4)]       # short paragraphs
    texts += [" ".join(s[i:i + 8]) for i in range(72, len(s) - 7, 8)]  # long ones (cut at 128 tokens)
    return texts


def natural_feeds(texts: list[str]) -> list[dict[str, np.ndarray]]:
    """Each text tokenized alone, at its own length (at most 128 tokens)."""
    from minilm import tokenize
    out = []
    for t in texts:
        f = tokenize([t], 128)
        n = int(f["attention_mask"].sum())
        out.append({k: np.ascontiguousarray(v[:, :n]) for k, v in f.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import aotc
    from aotc import runtime_stub
    from models import export_minilm, minilm_feeds
    path = export_minilm(CACHE / "test-models", "legacy", "eager", dynamic=True)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)

    t0 = time.perf_counter()
    aotc.compile(path, OUT / "buckets", target="x86-avx512", buckets={"batch": (1, 8), "seq": (16, 32, 64, 128)},
                 pad=PAD)
    t_buckets = time.perf_counter() - t0
    t0 = time.perf_counter()
    aotc.compile(path, OUT / "s128", target="x86-avx512", input_shapes={"batch": (1,), "seq": (128,)})
    t_single = time.perf_counter() - t0
    buckets = runtime_stub.load(OUT / "buckets")
    single = runtime_stub.load(OUT / "s128")
    manifest = json.loads((OUT / "buckets" / "manifest.json").read_text())
    for m in (buckets, single):
        m.set_num_threads(args.threads)
    sess = ort_session(path, args.threads)

    matrix = []
    for batch in (1, 3, 8):
        for seq in (7, 16, 37, 100, 128):
            feeds = minilm_feeds(batch, seq, seed=batch * 1000 + seq)
            got = buckets.run(feeds)["last_hidden_state"]
            want = sess.run(None, feeds)[0]
            valid = feeds["attention_mask"].astype(bool)
            err = float(np.abs(got - want)[valid].max())
            matrix.append({"batch": batch, "seq": seq, "shape_ok": got.shape == want.shape, "max_abs_error": err,
                           "max_rel_error": err / float(np.abs(want[valid]).max()),
                           "bucket": buckets.bucket_for(feeds)})
            print(f"batch {batch} seq {seq:3d} -> {matrix[-1]['bucket']}: max abs error {err:.2e}", flush=True)

    texts = workload_texts()
    feeds = natural_feeds(texts)
    padded = [{k: np.pad(v, [(0, 0), (0, 128 - v.shape[1])]) for k, v in f.items()} for f in feeds]
    lengths = [f["input_ids"].shape[1] for f in feeds]
    used = [buckets.bucket_for(f) for f in feeds]
    # The same embeddings from every engine (the first token's hidden state at the valid positions).
    for f, p in zip(feeds[:4] + feeds[-4:], padded[:4] + padded[-4:]):
        n = f["input_ids"].shape[1]
        a = buckets.run(f)["last_hidden_state"]
        b = single.run(p)["last_hidden_state"][:, :n]
        c = sess.run(None, f)[0]
        assert np.abs(a - c).max() < 1e-4 and np.abs(b - c).max() < 1e-4

    engines = {
        "aotc_buckets": lambda: [buckets.run(f) for f in feeds],
        "aotc_single_s128": lambda: [single.run(p) for p in padded],
        "onnxruntime_dynamic": lambda: [sess.run(None, f) for f in feeds],
    }
    times = measure(engines, rounds=args.rounds, runs=1)
    per_text = {k: float(np.median(v)) * 1e3 / len(feeds) for k, v in times.items()}
    result = {
        "machine": "2-core development VM (x86-64 AVX-512), shared with other engineers' jobs during the run",
        "model": "all-MiniLM-L6-v2 (legacy exporter, dynamic batch/seq)", "target": "x86-avx512",
        "threads": args.threads,
        "compile": {"buckets": "batch=1,8 x seq=16,32,64,128 (8 buckets)", "bucketed_s": round(t_buckets, 1),
                    "single_b1_s128_s": round(t_single, 1), "ratio": round(t_buckets / t_single, 2)},
        "bundle_bytes": {"bucketed": bundle_bytes(OUT / "buckets"), "single_b1_s128": bundle_bytes(OUT / "s128"),
                         "bucketed_weights_bin": (OUT / "buckets" / "weights.bin").stat().st_size,
                         "single_weights_bin": (OUT / "s128" / "weights.bin").stat().st_size},
        "padding_check": manifest["buckets"]["padding_check"],
        "correctness_vs_onnxruntime": matrix,
        "workload": {"texts": len(feeds), "batch": 1, "token_lengths": {"min": min(lengths), "max": max(lengths),
                                                                        "median": float(np.median(lengths))},
                     "buckets_used": {n: used.count(n) for n in sorted(set(used))},
                     "rounds": args.rounds, "ms_per_text_median_round": per_text,
                     "speedup_buckets_vs_single_s128": per_text["aotc_single_s128"] / per_text["aotc_buckets"],
                     "ratio_buckets_to_onnxruntime": per_text["aotc_buckets"] / per_text["onnxruntime_dynamic"]},
    }
    result["bundle_bytes"]["ratio"] = round(result["bundle_bytes"]["bucketed"] /
                                            result["bundle_bytes"]["single_b1_s128"], 3)
    out = ROOT / "bench" / "results" / "bench_buckets.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("compile", "bundle_bytes", "workload")}, indent=2))


if __name__ == "__main__":
    main()

"""Pre-quantized models on x86-avx512: onnxruntime quantize_static QDQ models of MiniLM-L6 (b1 s128) and
EfficientNet-Lite0 (b1 224x224), compiled by aotc's default pipeline (their own Q/DQ fused into int8 ops,
passes/prequantized.py), against aotc fp32, aotc's own `--quantize int8` of the same float model
(bench/bench_quant_x86.py builds both) and onnxruntime running the same QDQ model, in one process on the
same input (interleaved rounds, bench/timing.py). Writes bench/results/bench_prequantized_x86.json.

    .venv/bin/python bench/bench_prequantized_x86.py [--rounds 5] [--runs 10] [--threads 2]
        [--models minilm,efficientnet] [--out bench_prequantized_x86.json]

"max diff vs onnxruntime": the pre-quantized bundle's output against onnxruntime on the same QDQ model
(optimizations on, and off = the ONNX operators' reference semantics), on the timed input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# first: it pins numpy's BLAS threads (before numpy loads) and puts tests/, examples/ on sys.path
from bench_quant_x86 import (CACHE, ROOT, _sources_hash, bench_engines, efficientnet_bundles, fp32_bundle,
                             int8_bundle, ort_sessions)

import numpy as np  # noqa: E402


def prequantized_bundle(qdq_path, shapes: dict | None, tag: str):
    import aotc
    out = CACHE / "bench-bundles" / f"{tag}-prequantized-{_sources_hash(qdq_path).hexdigest()[:12]}"
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        aotc.compile(qdq_path, out, target="x86-avx512", input_shapes=shapes, quiet=False)
        print(f"  compiled {tag} pre-quantized in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out


def ort_reference(path, feeds: dict) -> np.ndarray:
    """onnxruntime without graph optimizations: the QDQ model's ONNX reference semantics."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def run_case(model: str, engines_paths: dict, qdq_path, feeds: dict, output: str, args) -> dict:
    from aotc import runtime_stub
    engines_paths = dict(engines_paths)
    fp32_onnx = engines_paths.pop("_fp32_onnx")
    engines = {k: runtime_stub.load(p) for k, p in engines_paths.items()}
    for m in engines.values():
        m.set_num_threads(args.threads)
    ort_paths = {"onnxruntime fp32": fp32_onnx, "onnxruntime, same QDQ model": qdq_path}
    sizes = {k: (p / "weights.bin").stat().st_size for k, p in engines_paths.items()}
    sizes.update({k: p.stat().st_size for k, p in ort_paths.items()})
    sessions = ort_sessions(ort_paths, args.threads)
    row = bench_engines(model, engines, sessions, feeds, output, sizes, args)
    got = engines["aotc pre-quantized"].run(feeds)[output]
    opt = sessions["onnxruntime, same QDQ model"].run(None, feeds)[0]
    ref = ort_reference(qdq_path, feeds)
    row["prequantized_max_abs_diff"] = {"vs onnxruntime optimized": float(np.abs(got - opt).max()),
                                        "vs onnxruntime reference (no optimizations)": float(np.abs(got - ref).max()),
                                        "onnxruntime optimized vs reference": float(np.abs(opt - ref).max()),
                                        "output_abs_max": float(np.abs(ref).max())}
    e = row["engines"]
    row["prequantized_vs_aotc_int8"] = e["aotc int8 (--quantize int8)"]["median_ms"] / e["aotc pre-quantized"]["median_ms"]
    row["prequantized_vs_onnxruntime_qdq"] = (e["onnxruntime, same QDQ model"]["median_ms"]
                                              / e["aotc pre-quantized"]["median_ms"])
    print(f"  pre-quantized: x{row['prequantized_vs_aotc_int8']:.2f} vs aotc int8, "
          f"x{row['prequantized_vs_onnxruntime_qdq']:.2f} vs onnxruntime QDQ; {row['prequantized_max_abs_diff']}",
          file=sys.stderr)
    return row


def minilm_row(args) -> dict:
    from bench_x86 import minilm_case
    from prequantized_models import minilm_qdq
    path, feeds, shapes, _ = minilm_case(1)
    qdq = minilm_qdq(CACHE / "test-models")
    bundles = {"_fp32_onnx": path, "aotc fp32": fp32_bundle(path, 1), "aotc int8 (--quantize int8)": int8_bundle(path, 1)[0],
               "aotc pre-quantized": prequantized_bundle(qdq, shapes, "minilm-qdq-b1")}
    return run_case("MiniLM-L6 b1 s128", bundles, qdq, feeds, "last_hidden_state", args)


def efficientnet_row(args) -> dict:
    from prequantized_models import efficientnet_qdq
    from test_model_x86 import efficientnet_lite0_onnx
    from test_quant_models import photo_test_set
    path = efficientnet_lite0_onnx(CACHE / "test-models")
    fp32, int8, _ = efficientnet_bundles(path)
    qdq = efficientnet_qdq(CACHE / "test-models")
    bundles = {"_fp32_onnx": path, "aotc fp32": fp32, "aotc int8 (--quantize int8)": int8,
               "aotc pre-quantized": prequantized_bundle(qdq, None, "efficientnet-lite0-qdq")}
    return run_case("EfficientNet-Lite0 b1 224x224", bundles, qdq, photo_test_set()[0], "y", args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="minilm,efficientnet")
    ap.add_argument("--out", default="bench_prequantized_x86.json", help="file name in bench/results/")
    args = ap.parse_args(argv)
    import onnxruntime as ort
    from bench_x86 import cpu_name
    models = args.models.split(",")
    load_before = os.getloadavg()
    rows = ([minilm_row(args)] if "minilm" in models else []) + \
        ([efficientnet_row(args)] if "efficientnet" in models else [])
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                          "note": "a shared machine: compare rows of one run (ratios), not across runs"},
              "settings": {"rounds": args.rounds, "runs_per_round": args.runs, "onnxruntime": ort.__version__},
              "results": rows}
    out = ROOT / "bench" / "results" / args.out
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps([{k: r[k] for k in ("model", "prequantized_vs_aotc_int8", "prequantized_vs_onnxruntime_qdq",
                                         "prequantized_max_abs_diff")} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

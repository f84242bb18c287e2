"""arm64-neon bundles under qemu-aarch64 on this (x86) machine: compile time,
bundle size, the runner's time per run and the error against onnxruntime (fp32)
or the reference interpreter (int8). qemu translates every instruction, so the
times measure the emulator, not an ARM core; they are here to show what the
tests cost and to catch gross regressions (e.g. a kernel falling back to
scalar code). Writes bench/results/arm64_qemu.json.

    .venv/bin/python bench/bench_arm64_qemu.py [--models minilm,efficientnet,minilm-int8] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
CACHE = ROOT / ".cache" / "test-models"


def case(name: str):
    """(model path or graph, the generic passes to run, target, feeds, reference outputs)."""
    from oracle import ort_run
    from aotc.targets.arm64.target import arm64_target
    if name == "minilm":
        from models import export_minilm, minilm_feeds
        path = export_minilm(CACHE, "legacy", "eager")
        feeds = minilm_feeds(seed=0)
        return path, "default", arm64_target(), feeds, ort_run(str(path), feeds)
    if name == "efficientnet":
        from test_model_x86 import efficientnet_lite0_onnx
        path = efficientnet_lite0_onnx(CACHE)
        feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        return path, "default", arm64_target(), feeds, ort_run(str(path), feeds)
    if name == "minilm-int8":
        from aotc import compiler
        from aotc.passes.quantization import quantize_graph
        from models import export_minilm
        from aotc.passes import PassManager
        from test_quant_models import BATCH, CALIBRATION_SENTENCES, SEQ, TEST_SENTENCES, _batches
        g = compiler.load_onnx(export_minilm(CACHE, "legacy", "eager", dynamic=True),
                               input_shapes={"input_ids": (BATCH, SEQ), "attention_mask": (BATCH, SEQ)})
        PassManager(None).run(g)
        quantize_graph(g, calibration=_batches(CALIBRATION_SENTENCES))
        feeds = _batches(TEST_SENTENCES[:BATCH])[0]
        return g, "none", arm64_target(cpu_features=["dotprod"]), feeds, compiler.interpret(g, feeds)
    raise SystemExit(f"unknown model {name!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,efficientnet,minilm-int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "arm64_qemu.json"))
    args = ap.parse_args()
    import tempfile
    from aotc.targets.arm64.qemu import run_bundle
    import aotc
    rows = []
    with tempfile.TemporaryDirectory(prefix="aotc-bench-arm64-") as tmp:
        for name in args.models.split(","):
            model, passes, target, feeds, want = case(name)
            t0 = time.perf_counter()
            bundle = aotc.compile(model, Path(tmp) / name, target=target, passes=passes).path
            compile_s = time.perf_counter() - t0
            got, stats = run_bundle(bundle, feeds, threads=args.threads)
            err = max(float(np.abs(got[k].astype(np.float64) - want[k]).max()) for k in want)
            man = json.loads((bundle / "manifest.json").read_text())
            row = {"model": name, "target": man["target"]["name"], "cpu_features": man["target"]["cpu_features"],
                   "compile_s": round(compile_s, 1), "qemu_ms_per_run": stats["mean_ms"],
                   "max_abs_err": err, "kernels": man["kernels"], "kernel_calls": man["kernel_calls"],
                   "gflop": round(man["flops"] / 1e9, 3),
                   "bundle_bytes": sum(p.stat().st_size for p in bundle.iterdir())}
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {"host": platform.processor() or platform.machine(), "threads": args.threads,
           "note": "times under qemu-aarch64 user-mode emulation on an x86 host, not ARM hardware", "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

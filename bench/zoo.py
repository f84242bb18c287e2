"""aotc's x86-avx512 bundles on the model zoo (bench/zoo_models.py: architectures nobody tuned aotc for)
against onnxruntime (ORT_ENABLE_ALL) and eager PyTorch where the model is a torch module, in one process
on the same inputs, at 2 threads and 1 thread.

Per model: the compile time (measured when the bundle is built; bundles are cached by the model file and
the compiler's sources), the largest error against onnxruntime relative to the output's largest magnitude,
and the median latency of each engine over interleaved rounds (bench/timing.py: aotc, ort, torch, pause,
aotc, ...). The table gives aotc's speed relative to onnxruntime (ort ms / aotc ms: above 1 aotc is
faster), its geometric mean over the zoo, and the worst model. Writes bench/results/zoo.json.

    .venv/bin/python bench/zoo.py [--models a,b] [--threads 2,1] [--rounds 3] [--no-torch] [--compile-only]
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

# numpy's BLAS threads spin after any numpy call and would take CPU from whichever engine runs next.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_x86 import cpu_name  # noqa: E402
from timing import measure, ort_session  # noqa: E402
from zoo_models import ZOO, ZooModelUnavailable, feeds_for, input_shapes, onnx_path  # noqa: E402

BUNDLES = ROOT / ".cache" / "zoo-bundles"
# Each round times about this long per engine (a fixed run count would take minutes on the big models).
ROUND_S = 0.4


def compiler_digest() -> str:
    """The compiler's sources: a bundle compiled by other code is stale."""
    h = hashlib.sha256()
    for folder in ("compiler", "passes", "targets", "runtime_stub"):
        for src in sorted((ROOT / folder).rglob("*")):
            if src.is_file() and src.suffix in (".py", ".j2", ".c", ".h"):
                h.update(str(src.relative_to(ROOT)).encode() + src.read_bytes())
    return h.hexdigest()


def bundle_for(name: str, log=print) -> tuple[Path, float]:
    """The model's x86-avx512 bundle (default pipeline) and the seconds its compile took (recorded beside
    the bundle when it was built, so a cached bundle still reports its compile time)."""
    import aotc
    path = onnx_path(name)
    shapes = input_shapes(name, path)
    h = hashlib.sha256(compiler_digest().encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    h.update(json.dumps({k: list(v) for k, v in shapes.items()}, sort_keys=True).encode())
    out = BUNDLES / f"{name}-{h.hexdigest()[:12]}"
    record = out.with_name(out.name + ".compile.json")
    if not (out / "manifest.json").exists() or not record.exists():
        t = time.perf_counter()
        aotc.compile(path, out, target="x86-avx512", input_shapes=shapes)
        record.write_text(json.dumps({"compile_s": time.perf_counter() - t, "cpu_count": os.cpu_count(),
                                      "loadavg": os.getloadavg()}))
        log(f"  compiled {name} in {json.loads(record.read_text())['compile_s']:.1f} s")
    return out, json.loads(record.read_text())["compile_s"]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference over the largest magnitude of the reference."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def bench_model(name: str, threads_list: list[int], rounds: int, torch_too: bool, log) -> dict:
    from aotc import runtime_stub
    m = ZOO[name]
    path = onnx_path(name)
    feeds = feeds_for(name, path)
    bundle, compile_s = bundle_for(name, log)
    manifest = json.loads((bundle / "manifest.json").read_text())
    model = runtime_stub.load(bundle)
    row = {"model": name, "note": m.note, "source": path.name, "bundle": str(bundle.relative_to(ROOT)),
           "compile_s": compile_s, "flops": manifest["flops"],
           "kernels": manifest["kernels"], "kernel_calls": manifest["kernel_calls"],
           "weight_bytes": manifest["weight_bytes"], "by_threads": {}}
    torch_fn = None
    if torch_too and m.torch_module is not None:
        import torch
        module = m.torch_module()
        args = [torch.from_numpy(v) for v in m.feeds().values()]

        def torch_fn():
            with torch.inference_mode():
                return module(*args)
    for threads in threads_list:
        model.set_num_threads(threads)
        sess = ort_session(path, threads)
        out_name = sess.get_outputs()[0].name
        want = sess.run([out_name], feeds)[0]
        got = model.run(feeds)[out_name]
        row["rel_err_vs_onnxruntime"] = relative_error(got, want)
        fns = {"aotc": lambda: model.run(feeds), "onnxruntime": lambda: sess.run(None, feeds)}
        if torch_fn is not None:
            import torch
            torch.set_num_threads(threads)
            fns["torch"] = torch_fn
        t = time.perf_counter()
        sess.run(None, feeds)
        runs = max(2, min(20, int(ROUND_S / max(time.perf_counter() - t, 1e-4))))
        times = measure(fns, rounds, runs)
        med = {k: float(np.median(v)) for k, v in times.items()}
        row["by_threads"][str(threads)] = {
            "runs_per_round": runs, "rounds": rounds,
            "engines": {k: {"median_ms": v * 1e3, "p10_ms": float(np.percentile(times[k], 10)) * 1e3,
                            "p90_ms": float(np.percentile(times[k], 90)) * 1e3,
                            "gflops": manifest["flops"] / v / 1e9} for k, v in med.items()},
            "speed_vs_onnxruntime": med["onnxruntime"] / med["aotc"]}
        e = row["by_threads"][str(threads)]
        log(f"  {threads} thread(s): " + ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in e["engines"].items())
            + f"; aotc speed vs ort x{e['speed_vs_onnxruntime']:.2f}")
        del sess
    del model
    gc.collect()
    return row


def summary(results: list[dict], threads: str) -> dict:
    speeds = {r["model"]: r["by_threads"][threads]["speed_vs_onnxruntime"] for r in results
              if threads in r.get("by_threads", {})}
    if not speeds:
        return {}
    worst = min(speeds, key=speeds.get)
    return {"geomean_speed_vs_onnxruntime": math.exp(sum(math.log(s) for s in speeds.values()) / len(speeds)),
            "worst_model": worst, "worst_speed_vs_onnxruntime": speeds[worst], "models": len(speeds)}


def table(results: list[dict], threads_list: list[int]) -> str:
    lines = []
    for t in map(str, threads_list):
        lines += [f"\n{t} thread(s)", "| model | aotc ms | onnxruntime ms | torch ms | speed vs ort | compile s | "
                  "rel err |", "|---|---|---|---|---|---|---|"]
        for r in results:
            if "error" in r:
                lines.append(f"| {r['model']} | failed: {r['error'][:80]} | | | | | |")
                continue
            e = r["by_threads"][t]["engines"]
            torch_ms = f"{e['torch']['median_ms']:.2f}" if "torch" in e else "-"
            lines.append(f"| {r['model']} | {e['aotc']['median_ms']:.2f} | {e['onnxruntime']['median_ms']:.2f} | "
                         f"{torch_ms} | {r['by_threads'][t]['speed_vs_onnxruntime']:.2f} | {r['compile_s']:.0f} | "
                         f"{r['rel_err_vs_onnxruntime']:.1e} |")
        s = summary(results, t)
        if s:
            lines.append(f"geomean speed vs onnxruntime x{s['geomean_speed_vs_onnxruntime']:.2f} over "
                         f"{s['models']} models; worst {s['worst_model']} x{s['worst_speed_vs_onnxruntime']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--compile-only", action="store_true", help="Build (and time) the bundles, nothing else.")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "zoo.json"))
    args = ap.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    threads_list = [int(t) for t in args.threads.split(",")]
    names = args.models.split(",")
    if args.compile_only:
        for name in names:
            log(f"{name}:")
            try:
                _, s = bundle_for(name, log)
                log(f"  compile {s:.1f} s")
            except Exception as e:  # a model that does not compile is a finding, not the end of the run
                log(f"  failed: {type(e).__name__}: {e}")
        return 0

    import onnxruntime as ort
    import torch
    load_before = os.getloadavg()
    results = []
    for name in names:
        log(f"{name}:")
        try:
            results.append(bench_model(name, threads_list, args.rounds, not args.no_torch, log))
        except ZooModelUnavailable as e:
            log(f"  skipped: {e}")
        except Exception as e:
            log(f"  failed: {type(e).__name__}: {e}")
            results.append({"model": name, "error": f"{type(e).__name__}: {str(e)[:500]}"})
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "shared": True,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "command": "bench/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": {"rounds": args.rounds, "round_s": ROUND_S, "threads": threads_list,
                           "onnxruntime": {"version": ort.__version__, "graph_optimization_level": "ORT_ENABLE_ALL"},
                           "torch": torch.__version__},
              "summary": {str(t): summary(results, str(t)) for t in threads_list},
              "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(table(results, threads_list))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

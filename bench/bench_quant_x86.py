"""INT8 vs fp32 on the x86-avx512 target, against onnxruntime fp32, quantize_dynamic and static QDQ, in one
process on the same inputs (interleaved rounds, median latency): MiniLM-L6 batch 1 and 8 at sequence 128, and
EfficientNet-Lite0 batch 1 at 224x224 (int8 convolutions: targets/cpu/lower_quant_conv.py).

aotc fp32 = the default (fusing) pipeline with the target's fused kernels; aotc int8 = the same pipeline with
quantize_int8 (minmax, calibrated on tokenized sentences) after fusion, then only the decompositions the
target needs (none on x86-avx512 today); its int8 GEMMs (QuantizedMatMul, QuantizedAttention's projections)
are the VNNI kernels of targets/cpu/lower_quant.py. Writes bench/results/bench_quant_x86.json and
bench/results/quant_speed.md (appended to docs/quantization.md by bench/quant_report.py).

    .venv/bin/python bench/bench_quant_x86.py [--rounds 5] [--runs 10] [--threads 2] [--batches 1,8]
        [--models minilm,efficientnet]

EfficientNet-Lite0 runs on a real photo crop; besides the cosine of its logits vs aotc fp32, each engine's
top-1 agreement with aotc fp32 on the 36 photo crops of tests/test_quant_models.photo_test_set is reported
(calibration: the 8 other crops of calibration_images, for aotc and for onnxruntime's static QDQ).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

# numpy's BLAS threads spin after any numpy call and would take CPU from whichever engine runs next.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CACHE = ROOT / ".cache"

from timing import measure  # noqa: E402
SEQ = 128


def calibration_feeds(batch: int) -> list[dict]:
    from minilm import tokenize
    from test_quant_models import CALIBRATION_SENTENCES
    s = CALIBRATION_SENTENCES
    return [tokenize(s[i:i + batch], SEQ) for i in range(0, min(len(s), max(8, batch * 4)), batch)]


def _sources_hash(path: Path) -> "hashlib._Hash":
    h = hashlib.sha256(path.read_bytes())
    for folder in ("targets", "compiler", "passes"):
        for src in sorted((ROOT / folder).rglob("*")):
            if src.is_file() and src.suffix in (".py", ".j2"):
                h.update(src.read_bytes())
    return h


def quantization_report(manifest: dict) -> dict:
    """The quantize_int8 pass's report, as the bundle's manifest records it."""
    return next(p["report"] for p in manifest["passes"] if p["name"] == "quantize_int8")


def fp32_bundle(path: Path, batch: int) -> Path:
    """aotc's best fp32: the default (fusing) pipeline and the target's passes."""
    import aotc
    out = CACHE / "bench-bundles" / f"minilm-fp32-fused-b{batch}-{_sources_hash(path).hexdigest()[:12]}"
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        aotc.compile(path, out, target="x86-avx512",
                     input_shapes={"input_ids": (batch, SEQ), "attention_mask": (batch, SEQ)})
        print(f"  compiled fp32 b{batch} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out


def int8_bundle(path: Path, batch: int, decompose_attention: bool = False) -> tuple[Path, dict]:
    """The same pipeline with quantize_int8 after fusion (and, with `decompose_attention`, QuantizedAttention
    into int8 GEMMs and primitive float ops)."""
    import aotc
    from aotc.passes import DEFAULT_PIPELINE
    tag = "-attn-decomposed" if decompose_attention else ""
    out = CACHE / "bench-bundles" / f"minilm-int8{tag}-b{batch}-{_sources_hash(path).hexdigest()[:12]}"
    report_file = out.with_suffix(".quant.json")
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        passes = list(DEFAULT_PIPELINE) + (["decompose_quantized_attention"] if decompose_attention else [])
        bundle = aotc.compile(path, out, target="x86-avx512", passes=passes, quantize="int8",
                              calibration=calibration_feeds(batch),
                              input_shapes={"input_ids": (batch, SEQ), "attention_mask": (batch, SEQ)})
        report_file.write_text(json.dumps(quantization_report(bundle.manifest), default=str))
        print(f"  compiled int8 b{batch} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out, json.loads(report_file.read_text())


def efficientnet_bundles(path: Path) -> tuple[Path, Path, dict]:
    """aotc fp32 (default pipeline) and int8 (quantize_int8 after fusion, calibrated on the photo crops of
    calibration_images) bundles of EfficientNet-Lite0 b1."""
    import aotc
    from test_quant_models import calibration_images
    h = _sources_hash(path).hexdigest()[:12]
    fp32 = CACHE / "bench-bundles" / f"efficientnet-lite0-fp32-b1-{h}"
    int8 = CACHE / "bench-bundles" / f"efficientnet-lite0-int8-b1-{h}"
    report_file = int8.with_suffix(".quant.json")
    for out, quantize in ((fp32, False), (int8, True)):
        if (out / "manifest.json").exists():
            continue
        t = time.perf_counter()
        bundle = aotc.compile(path, out, target="x86-avx512", **({"quantize": "int8", "calibration": calibration_images()}
                                                                 if quantize else {}))
        if quantize:
            report_file.write_text(json.dumps(quantization_report(bundle.manifest), default=str))
        print(f"  compiled EfficientNet-Lite0 {'int8' if quantize else 'fp32'} in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
    return fp32, int8, json.loads(report_file.read_text())


def ort_models(path: Path, batch: int, calibration: list[dict] | None = None, tag: str = "") -> dict[str, Path]:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    dyn = CACHE / "test-models" / f"{path.stem}-ort-dynamic.onnx"
    if not dyn.exists():
        quantize_dynamic(str(path), str(dyn))
    qdq = CACHE / "test-models" / f"{path.stem}-ort-static-qdq-b{batch}{tag}.onnx"
    if not qdq.exists():
        feeds = calibration if calibration is not None else calibration_feeds(batch)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(feeds)

            def get_next(self):
                return next(self.it, None)
        quantize_static(str(path), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {"onnxruntime quantize_dynamic": dyn, "onnxruntime static QDQ": qdq}


def ort_sessions(paths: dict[str, Path], threads: int) -> dict:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in paths.items()}


def bench_engines(model: str, engines: dict, sessions: dict, feeds: dict, output: str, sizes: dict, args) -> dict:
    """Interleaved timing of every engine on `feeds`; cosine of the flattened output vs aotc fp32."""
    fns = {k: (lambda m=m: m.run(feeds)) for k, m in engines.items()}
    fns.update({k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()})
    outs = {k: (fn() if k in engines else {output: fn()[0]})[output] for k, fn in fns.items()}
    times = measure(fns, args.rounds, args.runs)
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {"model": model, "engines": {}}
    ref = outs["aotc fp32"].reshape(-1).astype(np.float64)
    for k in fns:
        o = outs[k].reshape(-1).astype(np.float64)
        row["engines"][k] = {"median_ms": med[k] * 1e3, "p10_ms": float(np.percentile(times[k], 10)) * 1e3,
                             "p90_ms": float(np.percentile(times[k], 90)) * 1e3,
                             "speedup_vs_aotc_fp32": med["aotc fp32"] / med[k],
                             "cosine_vs_aotc_fp32": float(o @ ref / np.linalg.norm(o) / np.linalg.norm(ref)),
                             "weight_or_file_bytes": sizes.get(k)}
        print(f"  {k:42s} {med[k] * 1e3:8.2f} ms  x{med['aotc fp32'] / med[k]:.2f} vs aotc fp32", file=sys.stderr)
    return row


def minilm_rows(args) -> list[dict]:
    from aotc import runtime_stub
    from bench_x86 import minilm_case
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        print(f"minilm b{batch}:", file=sys.stderr)
        path, feeds, shapes, _ = minilm_case(batch)
        fp32_path = fp32_bundle(path, batch)
        int8_path, qreport = int8_bundle(path, batch)
        int8_dec, _ = int8_bundle(path, batch, decompose_attention=True)
        bundles = {"aotc fp32": fp32_path, "aotc int8": int8_path, "aotc int8, attention core as primitive ops": int8_dec}
        engines = {k: runtime_stub.load(p) for k, p in bundles.items()}
        for m in engines.values():
            m.set_num_threads(args.threads)
        ort_paths = {"onnxruntime fp32": path, **ort_models(path, batch)}
        sizes = {k: (p / "weights.bin").stat().st_size for k, p in bundles.items()}
        sizes.update({k: p.stat().st_size for k, p in ort_paths.items()})
        row = bench_engines(f"MiniLM-L6 b{batch} s{SEQ}", engines, ort_sessions(ort_paths, args.threads), feeds,
                            "last_hidden_state", sizes, args)
        row["batch"] = batch
        row["int8_nodes"] = len(qreport["quantized"])
        rows.append(row)
    return rows


def efficientnet_rows(args) -> list[dict]:
    from aotc import runtime_stub
    from test_model_x86 import efficientnet_lite0_onnx
    from test_quant_models import calibration_images, photo_test_set
    print("efficientnet-lite0 b1:", file=sys.stderr)
    path = efficientnet_lite0_onnx(CACHE / "test-models")
    fp32_path, int8_path, qreport = efficientnet_bundles(path)
    bundles = {"aotc fp32": fp32_path, "aotc int8": int8_path}
    engines = {k: runtime_stub.load(p) for k, p in bundles.items()}
    for m in engines.values():
        m.set_num_threads(args.threads)
    ort_paths = {"onnxruntime fp32": path, **ort_models(path, 1, calibration_images(), "-photos")}
    sessions = ort_sessions(ort_paths, args.threads)
    sizes = {k: (p / "weights.bin").stat().st_size for k, p in bundles.items()}
    sizes.update({k: p.stat().st_size for k, p in ort_paths.items()})
    test = photo_test_set()
    row = bench_engines("EfficientNet-Lite0 b1 224x224", engines, sessions, test[0], "y", sizes, args)
    # top-1 agreement with aotc fp32 on the photo crops (accuracy of the compiled kernels, not the interpreter)
    logits = {k: np.concatenate([m.run(f)["y"] for f in test]) for k, m in engines.items()}
    logits.update({k: np.concatenate([s.run(None, f)[0] for f in test]) for k, s in sessions.items()})
    ref = logits["aotc fp32"].argmax(1)
    for k, v in logits.items():
        row["engines"][k]["top1_agreement_vs_aotc_fp32"] = float(np.mean(v.argmax(1) == ref))
    row["images"] = len(test)
    row["fp32_classes"] = len(set(ref.tolist()))
    row["int8_nodes"] = len(qreport["quantized"])
    return [row]


def summary(rows: list[dict]) -> list[str]:
    """Where the measured rows leave the issue's targets (int8 vs aotc fp32, vs onnxruntime's int8, size)."""
    out = []
    for r in rows:
        e = r["engines"]
        i8, f32 = e["aotc int8"], e["aotc fp32"]
        ort = {k: v["median_ms"] for k, v in e.items() if k.startswith("onnxruntime") and k != "onnxruntime fp32"}
        best_ort = min(ort, key=ort.get)
        out.append(f"- {r['model']}: aotc int8 {i8['median_ms']:.2f} ms = {i8['speedup_vs_aotc_fp32']:.2f}x aotc fp32 "
                   f"({f32['median_ms']:.2f} ms); fastest onnxruntime int8 ({best_ort}) {ort[best_ort]:.2f} ms "
                   f"({'slower' if ort[best_ort] > i8['median_ms'] else 'faster'} than aotc int8); onnxruntime fp32 "
                   f"{e['onnxruntime fp32']['median_ms']:.2f} ms; weights {f32['weight_or_file_bytes'] / i8['weight_or_file_bytes']:.2f}x "
                   "smaller than aotc fp32.")
    return out


def render(report: dict) -> str:
    lines = ["", "## Speed on x86-avx512 (measured)", "",
             f"Generated by `bench/bench_quant_x86.py`: {report['machine']['cpu']}, {report['machine']['threads']} threads, "
             f"median of {report['settings']['rounds']}x{report['settings']['runs_per_round']} interleaved runs, load average "
             f"{report['machine']['loadavg_before'][0]:.1f} before / {report['machine']['loadavg_after'][0]:.1f} after (a shared machine: "
             "compare rows of one table, not across runs). Cosine: flattened output (last_hidden_state, logits) vs "
             "aotc fp32 on the timed input. Size: weights.bin for aotc, the .onnx file for onnxruntime.", ""]
    for r in report["results"]:
        top1 = "images" in r
        lines += [f"### {r['model']}", ""]
        if top1:
            lines += [f"Top-1: agreement with aotc fp32's class on {r['images']} real photo crops ({r['fp32_classes']} "
                      "distinct fp32 classes), each engine running its own kernels.", ""]
        lines += ["| engine | median ms | p10-p90 ms | speedup vs aotc fp32 | cosine |" + (" top-1 |" if top1 else "")
                  + " size |", "|---|---:|---:|---:|---:|" + ("---:|" if top1 else "") + "---:|"]
        for k, e in r["engines"].items():
            size = f"{e['weight_or_file_bytes'] / 1e6:.1f} MB" if e["weight_or_file_bytes"] else ""
            t1 = f" {e['top1_agreement_vs_aotc_fp32']:.3f} |" if top1 else ""
            lines.append(f"| {k} | {e['median_ms']:.2f} | {e['p10_ms']:.1f}-{e['p90_ms']:.1f} | "
                         f"{e['speedup_vs_aotc_fp32']:.2f}x | {e['cosine_vs_aotc_fp32']:.4f} |{t1} {size} |")
        lines.append("")
    lines += ["### Summary of this run", ""] + summary(report["results"]) + [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8", help="MiniLM batch sizes")
    ap.add_argument("--models", default="minilm,efficientnet")
    ap.add_argument("--from-json", action="store_true", help="re-render quant_speed.md from bench_quant_x86.json")
    args = ap.parse_args(argv)
    if args.from_json:
        text = render(json.loads((ROOT / "bench" / "results" / "bench_quant_x86.json").read_text()))
        (ROOT / "bench" / "results" / "quant_speed.md").write_text(text)
        print(text)
        return 0
    import onnxruntime as ort
    from bench_x86 import cpu_name
    models = args.models.split(",")
    unknown = set(models) - {"minilm", "efficientnet"}
    if unknown:
        ap.error(f"unknown model(s) {sorted(unknown)}: choose from minilm, efficientnet")
    load_before = os.getloadavg()
    rows = (minilm_rows(args) if "minilm" in models else []) + \
        (efficientnet_rows(args) if "efficientnet" in models else [])
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "settings": {"rounds": args.rounds, "runs_per_round": args.runs, "onnxruntime": ort.__version__},
              "results": rows}
    out = ROOT / "bench" / "results" / "bench_quant_x86.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (ROOT / "bench" / "results" / "quant_speed.md").write_text(text)
    print(text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

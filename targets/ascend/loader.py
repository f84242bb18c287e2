"""How `aotc run` / `aotc.load(...).run` execute an Ascend bundle.

On a machine with CANN (ASCEND_HOME_PATH set, libascendcl.so there, `cmake` on PATH) and a bundle holding
model.om, the bundle's driver is built once with its CMakeLists.txt into a cache folder and its aotc_runner
runs the model on the NPU. Anywhere else loading raises CannotRunHereError naming what is missing;
`reference_run` runs the bundle's model.onnx with onnxruntime instead (`aotc run --reference`), which checks
the exported model, not the NPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from aotc.targets.base import BundleRunError, CannotRunHereError, LoadedBundle


def _ascend_home() -> Path | None:
    home = os.environ.get("ASCEND_HOME_PATH")
    return Path(home) if home else None


def missing_for_npu_run(bundle: Path) -> list[str]:
    """What this machine or bundle lacks for running on an NPU ([] when nothing)."""
    missing = []
    home = _ascend_home()
    if home is None:
        missing.append("CANN (ASCEND_HOME_PATH is not set; source CANN's set_env.sh)")
    elif not any((home / d / "libascendcl.so").is_file() for d in ("lib64", "runtime/lib64")):
        missing.append(f"AscendCL (no libascendcl.so under {home}/lib64)")
    if shutil.which("cmake") is None:
        missing.append("cmake (to build the bundle's driver)")
    if not (bundle / "model.om").is_file():
        missing.append("model.om in the bundle (run its build_om.sh with CANN's atc)")
    return missing


def _build_driver(bundle: Path) -> Path:
    """The bundle's aotc_runner, built with its CMakeLists.txt into a cache folder keyed by the sources."""
    h = hashlib.sha256()
    for f in sorted((bundle / "driver").iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    build = base / "aotc" / "ascend" / h.hexdigest()[:16]
    runner = build / "aotc_runner"
    if not runner.is_file():
        for cmd in (["cmake", "-S", str(bundle / "driver"), "-B", str(build)], ["cmake", "--build", str(build)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise BundleRunError(f"Building the bundle's AscendCL driver failed ({' '.join(cmd)}): "
                                     f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return runner


class AscendBundle(LoadedBundle):
    """An Ascend bundle on a machine with CANN: runs through the bundle's AscendCL driver (aotc_runner)."""

    def __init__(self, bundle_dir, manifest=None, public_key=None):
        self.bundle = Path(bundle_dir)
        missing = missing_for_npu_run(self.bundle)
        if missing:
            raise CannotRunHereError(
                f"Cannot run the Ascend bundle {str(self.bundle)!r} on this machine: it needs " + "; ".join(missing)
                + ". `aotc run --reference` runs its model.onnx with onnxruntime instead (a check of the exported "
                "model, not of the NPU).")
        self.manifest = manifest or json.loads((self.bundle / "manifest.json").read_text())
        self.runner = _build_driver(self.bundle)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict:
        with tempfile.TemporaryDirectory(prefix="aotc-ascend-run-") as tmp:
            tmp = Path(tmp)
            args = []
            for i, (name, arr) in enumerate(feeds.items()):
                np.save(tmp / f"in{i}.npy", np.ascontiguousarray(arr))
                args += ["-i", f"{name}={tmp / f'in{i}.npy'}"]
            proc = subprocess.run([str(self.runner), str(self.bundle), *args, "-o", str(tmp)], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise BundleRunError(f"The AscendCL driver failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
            return {o["name"]: np.load(tmp / (re.sub(r"[^A-Za-z0-9._-]", "_", o["name"]) + ".npy"))
                    for o in self.manifest["outputs"]}


def reference_run(bundle_dir, feeds: Mapping[str, np.ndarray]) -> dict:
    """The bundle's model.onnx run by onnxruntime on the CPU: what ATC was handed, not what the NPU computes."""
    from aotc.compiler.optional_dependencies import require
    ort = require("onnxruntime", "Running an Ascend bundle's model.onnx on the CPU (--reference)", extra="ascend")
    path = Path(bundle_dir) / "model.onnx"
    if not path.is_file():
        raise BundleRunError(f"{str(bundle_dir)!r} has no model.onnx: --reference runs Ascend bundles only.")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the nodes ATC gets, as they are
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, dict(feeds))))
    except Exception as e:  # onnxruntime's own errors (wrong input names, dtypes, shapes)
        raise BundleRunError(f"onnxruntime could not run {path}: {e}") from None

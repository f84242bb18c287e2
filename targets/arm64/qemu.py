"""Running an arm64-neon bundle on a non-ARM machine: the bundle's own
aotc_runner under qemu-aarch64 (user mode), with the aarch64 sysroot's
dynamic loader and libc (Debian: qemu-user-static, and libc6-arm64-cross,
which gcc-aarch64-linux-gnu brings)."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from aotc.compiler.errors import AotcError
from aotc.targets.base import LoadedBundle

from .target import RUNNER

QEMU = "qemu-aarch64-static"
QEMU_PACKAGE = "qemu-user-static"
SYSROOT = "/usr/aarch64-linux-gnu"


class QemuRunError(AotcError):
    """The bundle could not be run under qemu (or the runner reported an error)."""


def npy_name(name: str) -> str:
    """The file name aotc_runner writes an output to (runner.c)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".npy"


def is_native() -> bool:
    return platform.machine() in ("aarch64", "arm64")


def runner_command(bundle: Path, cpu: str | None = None) -> list[str]:
    runner = str(Path(bundle) / RUNNER)
    if is_native():
        return [runner]
    qemu = shutil.which(QEMU) or shutil.which("qemu-aarch64")
    if qemu is None:
        raise QemuRunError(f"Running an arm64-neon bundle on {platform.machine()} needs {QEMU}; install it with "
                           f"`apt-get install {QEMU_PACKAGE}`.")
    sysroot = os.environ.get("AOTC_ARM64_SYSROOT", SYSROOT)
    return [qemu, "-L", sysroot] + (["-cpu", cpu] if cpu else []) + [runner]


def run_bundle(bundle, feeds: Mapping[str, np.ndarray], cpu: str | None = None, threads: int = 1,
               repeat: int = 1, timeout: float = 1800) -> tuple[dict[str, np.ndarray], dict]:
    """Run `bundle` on `feeds` with its aotc_runner (under qemu unless this is an aarch64 machine).
    Returns the outputs and {"mean_ms", "min_ms", "wall_s"} as the runner measured them."""
    import json
    bundle = Path(bundle)
    outputs = [o["name"] for o in json.loads((bundle / "manifest.json").read_text())["outputs"]]
    with tempfile.TemporaryDirectory(prefix="aotc-arm64-run-") as tmp:
        tmp = Path(tmp)
        args = []
        for i, (name, arr) in enumerate(feeds.items()):
            f = tmp / f"in{i}.npy"
            np.save(f, np.ascontiguousarray(arr))
            args += ["-i", f"{name}={f}"]
        out_dir = tmp / "out"
        out_dir.mkdir()
        cmd = runner_command(bundle, cpu) + [str(bundle), *args, "-o", str(out_dir), "-j", str(threads),
                                             "-r", str(repeat)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise QemuRunError(f"aotc_runner failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
        m = re.search(r"mean ([0-9.]+) ms, min ([0-9.]+) ms", proc.stdout)
        stats = {"mean_ms": float(m.group(1)) if m else None, "min_ms": float(m.group(2)) if m else None,
                 "wall_s": wall}
        return {name: np.load(out_dir / npy_name(name)) for name in outputs}, stats


class QemuBundle(LoadedBundle):
    """How arm64-neon bundles run here: the bundle's own aotc_runner, under qemu-aarch64 unless this is an ARM
    machine (one runner process per run)."""

    def __init__(self, bundle, manifest=None, public_key=None):  # a key was checked by aotc.load already
        runner_command(Path(bundle))  # fails now, naming the package, where qemu is missing
        # A bundle of shape buckets runs the same way: the runner's runtime picks the bucket (aotc_bucketed_run).
        self.bundle, self.threads = Path(bundle), 0  # 0: the runner uses every core

    def run(self, feeds) -> dict:
        return run_bundle(self.bundle, feeds, threads=self.threads)[0]

    def set_num_threads(self, n: int) -> None:
        self.threads = n

"""Shared by the arm64-neon tests: compile an IR graph for arm64-neon, run the
bundle's aotc_runner under qemu-aarch64 and compare with compiler.interpret."""
from __future__ import annotations

import hashlib
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler

TOL = 1e-4  # the bar: every op and model within 1e-4 of the reference


def _missing() -> str | None:
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        return "needs the aarch64 cross compiler: apt-get install gcc-aarch64-linux-gnu"
    if platform.machine() not in ("aarch64", "arm64") and shutil.which("qemu-aarch64-static") is None:
        return "needs qemu-aarch64-static to run aarch64 bundles: apt-get install qemu-user-static"
    if platform.machine() not in ("aarch64", "arm64") and not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        return "needs the aarch64 sysroot /usr/aarch64-linux-gnu: apt-get install gcc-aarch64-linux-gnu"
    return None


MISSING = _missing()
needs_arm64 = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def compile_arm(graph: compiler.Graph, out_dir: Path, target="arm64-neon", tag: str = "") -> Path:
    import aotc
    digest = hashlib.sha256((str(graph) + tag).encode()).hexdigest()[:10]
    return aotc.compile(graph, out_dir / f"{graph.name}-{digest}", target=target, passes="none").path


def run_arm(bundle: Path, feeds: dict, cpu: str | None = None, threads: int = 1) -> dict:
    from aotc.targets.arm64.qemu import run_bundle
    return run_bundle(bundle, feeds, cpu=cpu, threads=threads)[0]


def compare(graph: compiler.Graph, feeds: dict, out_dir: Path, rtol=TOL, atol=TOL, target="arm64-neon",
            cpu: str | None = None) -> dict:
    want = compiler.interpret(graph, feeds)
    got = run_arm(compile_arm(graph, out_dir, target), feeds, cpu=cpu)
    for name, ref in want.items():
        assert got[name].shape == ref.shape and got[name].dtype == ref.dtype, name
        if ref.dtype.kind in "biu":
            np.testing.assert_array_equal(got[name], ref, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], ref, rtol=rtol, atol=atol, err_msg=name, equal_nan=True)
    return got

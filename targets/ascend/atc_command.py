"""The atc command that turns a bundle's model.onnx into model.om, as argv, as build_om.sh, and run here
where CANN's `atc` is on PATH.

ATC options used (CANN ATC documentation, "ATC offline model compiler", parameter reference):
--model/--framework=5 (ONNX)/--output (file name without .om)/--soc_version (Ascend + npu-smi's Chip Name)/
--input_shape ("name:d0,d1;name2:...", the model's static shapes restated so the command is exact)/
--precision_mode (force_fp16: float16 wherever an operator has both; force_fp32: float32 vector operators,
matrix operators float32 output and float16 inputs where the chip's cube unit lacks float32).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from aotc.compiler.errors import AotcError

PRECISION_MODE = {"fp16": "force_fp16", "fp32": "force_fp32"}
ATC_TIMEOUT_S = 3600


class AtcRunError(AotcError):
    """`atc` was found on PATH and failed."""


def atc_argv(inputs: list[dict], soc_version: str, precision: str) -> list[str]:
    """inputs: the manifest's [{"name", "shape", ...}] in model order."""
    shapes = ";".join(f"{i['name']}:{','.join(str(d) for d in i['shape'])}" for i in inputs)
    return ["atc", "--model=model.onnx", "--framework=5", "--output=model", f"--soc_version={soc_version}",
            f"--input_shape={shapes}", f"--precision_mode={PRECISION_MODE[precision]}"]


def build_script(argv: list[str]) -> bytes:
    return ("#!/bin/sh\n"
            "# Builds model.om (for AscendCL's aclmdlLoadFromFile) from model.onnx with CANN's ATC.\n"
            "# Set up CANN first, e.g. . /usr/local/Ascend/ascend-toolkit/set_env.sh\n"
            "set -e\n"
            'cd "$(dirname "$0")"\n'
            f"{shlex.join(argv)}\n").encode()


def run_atc_if_present(argv: list[str], onnx_bytes: bytes, workdir: Path, progress) -> bytes | None:
    """model.om from ATC where `atc` is on PATH (None elsewhere)."""
    atc = shutil.which("atc")
    if atc is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "model.onnx").write_bytes(onnx_bytes)
    progress(f"ascend: running {shlex.join(argv)}")
    try:
        proc = subprocess.run([atc, *argv[1:]], cwd=workdir, capture_output=True, text=True, timeout=ATC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AtcRunError(f"atc ran longer than {ATC_TIMEOUT_S} s: {shlex.join(argv)}") from None
    om = workdir / "model.om"
    if proc.returncode != 0 or not om.is_file():
        raise AtcRunError(f"atc failed (exit {proc.returncode}) on the ONNX model aotc checked against ATC's "
                          f"registrations; its output: {(proc.stdout + proc.stderr).strip()[-3000:]}. Command: "
                          f"{shlex.join(argv)}")
    return om.read_bytes()

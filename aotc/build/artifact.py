"""The per-artifact function every executor runs: one job in, one bundle (as bytes) or one error out.

A job is plain data, so it pickles to a process of the local pool or to a Dask worker on another machine.
It names its input files either by absolute path (a worker that shares this machine's file system) or
carries their bytes (`ship_inputs`), which the worker writes into a scratch folder under the same names.
The bundle comes back as {relative path: bytes}; the caller stores it in the cache and in the release."""
from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aotc.compiler.errors import AotcError


@dataclass(frozen=True)
class ArtifactJob:
    name: str
    where: str                          # the spec entry that asked for it, for error messages
    model: str                          # the ONNX file: absolute, or relative to the shipped files
    target: str
    target_options: dict[str, Any]
    options: dict[str, Any]             # CompileOptions fields; calibration like model
    files: dict[str, bytes] = field(default_factory=dict)   # shipped inputs: relative path -> bytes


@dataclass(frozen=True)
class ArtifactOutcome:
    name: str
    files: dict[str, bytes] | None      # the bundle, None when it failed
    error: str | None = None            # one paragraph
    seconds: float = 0.0
    toolchains: dict[str, str] = field(default_factory=dict)   # what the worker compiled with
    worker: str = ""


def ship_inputs(job: ArtifactJob) -> ArtifactJob:
    """The job with its input files inside it, for workers that do not see this file system. Each input
    folder becomes `input<i>/`, so the model keeps its file name (the manifest records it) and its
    external-data files stay beside it."""
    folders: dict[Path, str] = {}
    files: dict[str, bytes] = {}

    def move(path: str, extra: list[Path] = ()) -> str:
        p = Path(path)
        folder = folders.setdefault(p.parent, f"input{len(folders)}")
        for f in (p, *extra):
            files[f"{folder}/{f.relative_to(p.parent).as_posix()}"] = f.read_bytes()
        return f"{folder}/{p.name}"

    from .cache_key import model_files
    model_path = Path(job.model)
    model = move(job.model, model_files(model_path)[1:])
    options = dict(job.options)
    if "calibration" in options:
        options["calibration"] = move(options["calibration"])
    return replace(job, model=model, options=options, files=files)


def build_artifact(job: ArtifactJob) -> ArtifactOutcome:
    """Compile one artifact with aotc.compile into a scratch folder and return the bundle's files. A user
    error (AotcError) becomes its paragraph; anything else is reported as aotc's bug, never raised, so one
    artifact cannot stop the others."""
    import socket
    from aotc.api import compile as compile_model
    from aotc.targets.base import get_target
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="aotc-artifact-") as tmp:
        root = Path(tmp)
        try:
            for rel, data in job.files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
            options = dict(job.options)
            if job.files and "calibration" in options:
                options["calibration"] = str(root / options["calibration"])
            model = str(root / job.model) if job.files else job.model
            toolchains = get_target(job.target, **job.target_options).toolchain_versions()
            out = root / "bundle"
            compile_model(model, out, target=job.target, target_options=job.target_options, quiet=True, **options)
            files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        except AotcError as e:
            return ArtifactOutcome(job.name, None, f"{job.name} ({job.where}): {e}",
                                   time.perf_counter() - t0, worker=worker)
        except Exception as e:  # noqa: BLE001 - one artifact's crash is reported, the others go on
            where = traceback.extract_tb(e.__traceback__)[-1]
            return ArtifactOutcome(job.name, None, f"{job.name} ({job.where}): internal error: {type(e).__name__}: "
                                   f"{e} (at {Path(where.filename).name}:{where.lineno}). This is a bug in aotc; "
                                   f"`aotc compile` with the same options and --debug shows the traceback.",
                                   time.perf_counter() - t0, worker=worker)
    return ArtifactOutcome(job.name, files, None, time.perf_counter() - t0, toolchains, worker)

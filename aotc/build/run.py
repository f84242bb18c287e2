"""`aotc build`: the release matrix of a spec, each artifact from the cache or compiled by an executor, into
an output folder with `release.json`.

    spec -> artifacts (--only) -> cache keys -> hits from the cache, misses to the executor
         -> every new bundle into the cache -> dist/NAME/ for each artifact -> dist/release.json

One artifact's failure does not stop the others; release.json is written only when every selected artifact
has its bundle, so a deployment pipeline never reads a release with a hole in it."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from aotc.compiler import progress
from aotc.compiler.errors import AotcError

from .artifact import ArtifactJob
from .cache import BundleCache, read_files, write_files
from .cache_key import cache_key, key_material, model_files
from .executors import default_jobs, run_jobs
from .spec import Artifact, BuildSpec, BuildSpecError, load_spec

RELEASE = "release.json"
MARKER = ".aotc-build"  # an output folder aotc build owns: it removes bundles that left the release


class BuildOutputError(AotcError):
    """The output folder cannot take the release."""


class BuildFailedError(AotcError):
    """Some artifacts failed (each was reported with its error); `report` is the whole build's."""
    exit_code = 1

    def __init__(self, msg: str, report: "BuildReport"):
        super().__init__(msg)
        self.report = report


@dataclass
class ArtifactResult:
    artifact: Artifact
    key: str
    status: str = "pending"        # built | cached | failed
    error: str | None = None
    seconds: float = 0.0
    entry: Path | None = None      # its bundle in the cache


@dataclass
class BuildReport:
    spec: BuildSpec
    output: Path
    results: list[ArtifactResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def summary(self) -> str:
        where = f"; wrote {self.output / RELEASE}" if not self.count("failed") else \
            f"; {RELEASE} not written (a release has every artifact or none)"
        return (f"{len(self.results)} artifact(s): {self.count('built')} built, {self.count('cached')} from the cache, "
                f"{self.count('failed')} failed in {self.seconds:.1f} s{where}")

    def as_json(self) -> dict:
        return {"spec": str(self.spec.path), "output": str(self.output), "seconds": round(self.seconds, 3),
                "built": self.count("built"), "cached": self.count("cached"), "failed": self.count("failed"),
                "artifacts": [{"name": r.artifact.name, "status": r.status, "cache_key": r.key,
                               "seconds": round(r.seconds, 3), "error": r.error} for r in self.results]}


def build(spec_path: str | os.PathLike, output: str | os.PathLike | None = None,
          cache: str | os.PathLike | None = None, only: Sequence[str] = (), jobs: int | None = None,
          executor: str = "local", address: str | None = None,
          log: Callable[[str], None] | None = None) -> BuildReport:
    """Build the spec's artifacts (those matching an --only pattern) into `output` (default: the spec's
    [build] output, dist/ beside it). Raises BuildFailedError after writing what succeeded if any failed."""
    logged = log is not None
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    out = Path(output) if output is not None else spec.output
    check_output(out)
    store = BundleCache(Path(cache) if cache is not None else spec.cache)
    report = BuildReport(spec, out, [ArtifactResult(a, "") for a in select(spec, only)])
    jobs_by_key: dict[str, ArtifactJob] = {}
    with progress.task(f"aotc build: {len(report.results)} artifacts", total=len(report.results)) as bar:
        for r in report.results:
            job, r.key = artifact_job(r.artifact)
            r.entry = store.get(r.key)
            if r.entry is not None:
                r.status = "cached"
                log(f"cached  {r.artifact.name}")
                bar.advance()
            else:
                jobs_by_key.setdefault(r.key, job)
        waiting = {k: [r for r in report.results if r.key == k and r.status == "pending"] for k in jobs_by_key}
        largest = max((Path(j.model).stat().st_size for j in jobs_by_key.values()), default=0)
        n_jobs = jobs or default_jobs(largest)
        by_name = {job.name: key for key, job in jobs_by_key.items()}
        for outcome in run_jobs(list(jobs_by_key.values()), executor, n_jobs, address) if jobs_by_key else ():
            key = by_name[outcome.name]
            error = outcome.error or toolchain_mismatch(outcome, waiting[key][0].artifact)
            entry = store.put(key, outcome.files) if error is None else None
            for r in waiting[key]:  # artifacts with equal keys share one compile
                r.status, r.error, r.seconds, r.entry = ("failed", error, outcome.seconds, None) if error else \
                    ("built", None, outcome.seconds, entry)
                log(f"FAILED  {error}" if error else f"built   {r.artifact.name} in {outcome.seconds:.1f} s")
                bar.advance()
    write_release(report)
    report.seconds = time.perf_counter() - t0
    failed = [r for r in report.results if r.status == "failed"]
    if failed:
        # A caller without a log has seen no error yet: the message carries them.
        errors = "each error is above" if logged else "; ".join(f"FAILED  {r.error}" for r in failed)
        raise BuildFailedError(f"{len(failed)} of {len(report.results)} artifact(s) failed: "
                               f"{', '.join(r.artifact.name for r in failed)} ({errors}). {report.summary()}.", report)
    return report


def select(spec: BuildSpec, only: Sequence[str]) -> list[Artifact]:
    if not only:
        return list(spec.artifacts)
    picked = [a for a in spec.artifacts if any(fnmatch.fnmatchcase(a.name, p) for p in only)]
    if not picked:
        raise BuildSpecError(f"--only {' '.join(only)} matches no artifact of {spec.path.name}; its artifacts are "
                             f"{', '.join(a.name for a in spec.artifacts)}.")
    return picked


def artifact_job(art: Artifact) -> tuple[ArtifactJob, str]:
    """The artifact as a job for an executor, and its cache key."""
    from aotc.targets.base import get_target
    target = get_target(art.target.target, **art.target_options())
    try:
        files = model_files(art.model.path)
        missing = [p.name for p in files[1:] if not p.is_file()]
    except Exception as e:  # noqa: BLE001 - onnx's parse errors have no common type
        raise BuildSpecError(f"{art.where.split()[0]} [models.{art.model.name}] path: {art.model.path.name} is not "
                             f"an ONNX model ({type(e).__name__}: {e}).") from None
    if missing:
        raise BuildSpecError(f"{art.where.split()[0]} [models.{art.model.name}] path: {art.model.path.name} keeps "
                             f"tensors in {', '.join(missing)}, which is not beside it.")
    key = cache_key(key_material(art, target, files))
    job = ArtifactJob(art.name, art.where, str(art.model.path), art.target.target, art.target_options(),
                      art.compile_options())
    return job, key


def toolchain_mismatch(outcome, art: Artifact) -> str | None:
    """A worker elsewhere may have other tools than this machine, whose versions the key holds; its bundle
    would then be cached under a key that does not describe it."""
    from aotc.compiler import __version__
    from aotc.targets.base import get_target
    ours = get_target(art.target.target, **art.target_options()).toolchain_versions()
    theirs = outcome.toolchains
    manifest = json.loads(outcome.files["manifest.json"])
    if theirs != ours or manifest.get("aotc_version") != __version__:
        return (f"{art.name} ({art.where}): worker {outcome.worker} compiled with aotc "
                f"{manifest.get('aotc_version')} and {theirs}, but this machine has aotc {__version__} and {ours}, "
                "which the cache key holds; give the workers the same versions.")
    return None


def check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BuildOutputError(f"Output {str(out)!r} is a file; aotc build writes a folder of bundles there.")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise BuildOutputError(f"Output folder {str(out)!r} has files aotc build did not write; it replaces the "
                               "folder's bundles with each release, so give it an empty or new folder (-o).")


def write_release(report: BuildReport) -> None:
    """dist/NAME/ for every artifact that has a bundle, bundles of earlier releases removed, then release.json
    (only when nothing failed)."""
    out = report.output
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_bytes(b"")
    done = [r for r in report.results if r.entry is not None]
    for r in done:
        replace_folder(out / r.artifact.name, read_files(r.entry))
    keep = {r.artifact.name for r in done}
    for old in out.iterdir():
        if old.is_dir() and old.name not in keep and (old / "manifest.json").is_file():
            shutil.rmtree(old)
    release = out / RELEASE
    if any(r.status == "failed" for r in report.results):
        release.unlink(missing_ok=True)
        return
    text = json.dumps(release_document(report), indent=2, sort_keys=True) + "\n"
    tmp = release.with_name(f".{RELEASE}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, release)


def release_document(report: BuildReport) -> dict:
    """What a deployment pipeline reads: per artifact its folder, model, target, options, cache key and the
    SHA-256 of its manifest (which holds the SHA-256 of every other file). No times, no absolute paths."""
    from aotc.compiler import __version__
    base = report.spec.path.parent
    items = []
    for r in sorted(report.results, key=lambda r: r.artifact.name):
        art = r.artifact
        manifest = (report.output / art.name / "manifest.json").read_bytes()
        options = art.compile_options()
        if "calibration" in options:
            options["calibration"] = Path(os.path.relpath(options["calibration"], base)).as_posix()
        items.append({
            "name": art.name, "path": art.name, "model": art.model.name,
            "model_file": Path(os.path.relpath(art.model.path, base)).as_posix(),
            "target": art.target.target, "target_options": art.target_options(), "variant": art.variant.name,
            "options": options, "cache_key": r.key, "model_id": json.loads(manifest)["model_id"],
            "manifest_sha256": hashlib.sha256(manifest).hexdigest()})
    return {"format": 1, "aotc_version": __version__, "spec": report.spec.path.name, "artifacts": items}


def replace_folder(dest: Path, files: dict[str, bytes]) -> None:
    """dest/ holding exactly `files`, swapped in whole (a reader sees the old bundle or the new one)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    write_files(staging, files)
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}-old-", dir=dest.parent))
        os.rename(dest, old / "bundle")
    os.rename(staging, dest)
    if old is not None:
        shutil.rmtree(old)

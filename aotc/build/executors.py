"""Where the artifacts compile: in this process (one job), a local process pool, or a Dask cluster.

Every executor runs the same function, `artifact.build_artifact`, on the same jobs, and yields each
outcome as it arrives; scheduling, worker processes and lost workers are the pool's or Dask's business, not
aotc's. Dask's `distributed` is the engine for clusters (docs/build.md says why): `--executor dask` with no
`--address` starts a LocalCluster of `--jobs` worker processes on this machine, with an `--address` it
connects to a running scheduler (`dask scheduler` + `dask worker` on each machine, or any Dask deployment).
Dask workers may not share this file system, so their jobs carry their input files and the bundles come
back as bytes."""
from __future__ import annotations

import os
from typing import Iterable, Iterator

from aotc.compiler.errors import AotcError

from .artifact import ArtifactJob, ArtifactOutcome, build_artifact, ship_inputs

EXECUTORS = ("local", "dask")
# What one compile may take besides the model itself (TVM, LLVM, the pass pipeline); with the model's size
# this bounds the local pool by the memory this machine has free.
MEMORY_PER_JOB = 1536 << 20


class ExecutorError(AotcError):
    """The executor cannot start (e.g. Dask not installed, or no scheduler at --address)."""


def default_jobs(largest_model_bytes: int = 0) -> int:
    """As many jobs as cores, and no more than free memory holds (each ~1.5 GB + 4x the model)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, free // (MEMORY_PER_JOB + 4 * largest_model_bytes)))


def run_jobs(jobs: list[ArtifactJob], executor: str, n_jobs: int, address: str | None = None
             ) -> Iterator[ArtifactOutcome]:
    if executor == "dask":
        yield from _run_dask(jobs, n_jobs, address)
    elif executor == "local":
        yield from (_run_inline(jobs) if n_jobs == 1 or len(jobs) == 1 else _run_pool(jobs, n_jobs))
    else:
        raise ExecutorError(f"--executor {executor!r} is not one aotc has; use one of {', '.join(EXECUTORS)}.")


def _run_inline(jobs: Iterable[ArtifactJob]) -> Iterator[ArtifactOutcome]:
    for job in jobs:
        yield build_artifact(job)


def _failed(job: ArtifactJob, why: str) -> ArtifactOutcome:
    return ArtifactOutcome(job.name, None, f"{job.name} ({job.where}): {why}")


def _run_pool(jobs: list[ArtifactJob], n_jobs: int) -> Iterator[ArtifactOutcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # spawn: this process has TVM's threads loaded (keys configure targets); a forked child would inherit
    # their locks
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=None) as pool:
        futures = {pool.submit(build_artifact, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:  # noqa: BLE001 - a worker killed (e.g. out of memory) fails its jobs only
                yield _failed(futures[future], f"the worker process died ({type(e).__name__}: {e}); an "
                              "out-of-memory kill is the usual cause: lower --jobs.")


def _run_dask(jobs: list[ArtifactJob], n_jobs: int, address: str | None) -> Iterator[ArtifactOutcome]:
    try:
        import logging
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ExecutorError("--executor dask needs Dask's distributed scheduler: pip install 'aotc[build]' (or "
                            "distributed).") from None
    if address:
        try:
            client = Client(address, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise ExecutorError(f"--address {address}: no Dask scheduler answered ({e}); start one with `dask "
                                "scheduler` and workers with `dask worker ADDRESS`, or leave --address out for a "
                                "local cluster.") from None
        cluster = None
    else:
        # processes, one thread each: TVM and the C compilers are not to be shared between threads of a job
        cluster = LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futures = {client.submit(build_artifact, ship_inputs(job), key=f"aotc-build-{job.name}", pure=False): job
                   for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker: this artifact fails, the rest go on
                yield _failed(futures[future], f"the Dask worker running it failed ({type(e).__name__}: {e}).")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

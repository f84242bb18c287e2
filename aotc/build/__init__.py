"""`aotc build`: a release matrix of bundles from one spec (aotc.toml), cached by content, compiled in a local
process pool or on a Dask cluster (docs/build.md).

    spec.py       the spec: models, targets, variants -> artifacts
    cache_key.py  an artifact's key: SHA-256 of its inputs, options and toolchain versions
    cache.py      the content-addressed bundle cache
    artifact.py   the per-artifact function every executor runs
    executors.py  local (inline or process pool) and dask
    run.py        the build: keys, cache, executor, dist/ and release.json
"""
from .run import BuildFailedError, BuildReport, build
from .spec import BuildSpecError, load_spec

__all__ = ["build", "BuildReport", "BuildFailedError", "BuildSpecError", "load_spec"]

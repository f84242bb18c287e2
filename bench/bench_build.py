"""Wall time of `aotc build` on the test matrix (2 models x x86-avx512, arm64-neon, coreml x fp32, int8 = 12
bundles): serial (--jobs 1), the local pool (--jobs 2), Dask's local cluster with 2 workers, each from an empty
cache, then the whole matrix again from a warm cache (what the cache saves). Each build is a fresh
`python -m aotc build` process, as CI runs it, so interpreter start-up and imports count.

    .venv/bin/python bench/bench_build.py [--out bench/results/build_matrix.json]

The machine's core count and load averages are recorded: on a shared machine the numbers say what they
were then, not what the code can do."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_build import write_project  # noqa: E402  (the tests' project: models, calibration data, spec)

RUNS = {  # name -> aotc build flags; each from an empty cache except "cached"
    "serial": ["--jobs", "1"],
    "local_jobs2": ["--jobs", "2"],
    "dask_2_workers": ["--jobs", "2", "--executor", "dask"],
}


def aotc_build(spec: Path, out: Path, cache: Path, flags: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "aotc", "build", str(spec), "-o", str(out), "--cache", str(cache),
                          "--json", "-q", *flags], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"aotc build {' '.join(flags)} failed:\n{res.stderr}")
    return seconds, json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "build_matrix.json"))
    args = ap.parse_args()
    results: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                 "loadavg_before": os.getloadavg()}, "artifacts": 12, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="aotc-bench-build-") as tmp:
        spec = write_project(Path(tmp) / "project")
        for name, flags in RUNS.items():
            seconds, report = aotc_build(spec, Path(tmp) / f"dist-{name}", Path(tmp) / f"cache-{name}", flags)
            assert report["built"] == 12, report
            results["runs"][name] = {"flags": flags, "wall_s": round(seconds, 2), "built": report["built"]}
            print(f"{name}: {seconds:.1f} s", flush=True)
        seconds, report = aotc_build(spec, Path(tmp) / "dist-cached", Path(tmp) / "cache-local_jobs2", ["--jobs", "2"])
        assert report["cached"] == 12, report
        results["runs"]["cached"] = {"flags": ["--jobs", "2"], "wall_s": round(seconds, 2), "cached": 12}
        print(f"cached: {seconds:.1f} s", flush=True)
        dists = [Path(tmp) / f"dist-{n}" / "release.json" for n in (*RUNS, "cached")]
        results["release_json_identical"] = len({d.read_bytes() for d in dists}) == 1
    results["machine"]["loadavg_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""aotc and onnxruntime (2 threads each) with the machine to themselves and with a third process busy on one
core, in one process on the same inputs (issue 17: a thread pool under contention).

A busy process (a Python loop pinned to the last core) is started and stopped between blocks: each round
times every engine idle, then every engine beside the busy process, so slow drift hits both conditions
alike. Reports each engine's median per condition and its slowdown (contended / idle). Writes
bench/results/contention.json.

    .venv/bin/python bench/contention.py [--rounds 4] [--runs 10] [--models minilm-b1,efficientnet-lite0-b1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_x86 import CASES, bundle_for, cpu_name  # noqa: E402
from timing import measure, ort_session, summarize_ms  # noqa: E402

HOG = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


class BusyCore:
    """A process spinning on one core while the block runs."""

    def __init__(self, core: int):
        self.core = core
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", HOG, str(self.core)])
        time.sleep(0.5)  # let it start spinning
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="minilm-b1,efficientnet-lite0-b1")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "contention.json"))
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from aotc import runtime_stub
    busy_core = max(os.sched_getaffinity(0))
    load_before = os.getloadavg()
    results = []
    for name in args.models.split(","):
        print(f"{name}:", file=sys.stderr)
        path, feeds, shapes, _ = CASES[name]()
        model = runtime_stub.load(bundle_for(name, path, shapes, passes=True))
        model.set_num_threads(args.threads)
        sess = ort_session(path, args.threads)
        fns = {"aotc": lambda: model.run(feeds), "onnxruntime": lambda: sess.run(None, feeds)}
        times = {cond: {k: [] for k in fns} for cond in ("idle", "contended")}
        for _ in range(args.rounds):  # a round: one block idle, one block beside the busy process
            for k, v in measure(fns, 1, args.runs).items():
                times["idle"][k] += v
            with BusyCore(busy_core):
                for k, v in measure(fns, 1, args.runs).items():
                    times["contended"][k] += v
        row = {"model": name, "engines": {}}
        for k in fns:
            idle, busy = summarize_ms(times["idle"][k]), summarize_ms(times["contended"][k])
            row["engines"][k] = {"idle": idle, "contended": busy,
                                 "slowdown": busy["median_ms"] / idle["median_ms"]}
            print(f"  {k:12s} idle {idle['median_ms']:8.2f} ms  contended {busy['median_ms']:8.2f} ms  "
                  f"x{row['engines'][k]['slowdown']:.2f}", file=sys.stderr)
        results.append(row)
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
                          "busy_core": busy_core, "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "settings": {"rounds": args.rounds, "runs_per_block": args.runs,
                           "onnxruntime": {"version": ort.__version__, "intra_op_num_threads": args.threads}},
              "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| model | engine | idle ms | contended ms | slowdown |\n|---|---|---:|---:|---:|", file=sys.stderr)
    for r in results:
        for k, e in r["engines"].items():
            print(f"| {r['model']} | {k} | {e['idle']['median_ms']:.2f} | {e['contended']['median_ms']:.2f} | "
                  f"{e['slowdown']:.2f} |", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())

"""A compiler change measured on the zoo: the bundles an earlier bench/zoo.py run built (its JSON records
each model's bundle; they stay in .cache/zoo-bundles) against bundles the current sources build, with
onnxruntime beside them, in one process, interleaved (bench/timing.py), so the two are compared under the
same machine load. Checks that both agree with onnxruntime first. Writes bench/results/zoo_before_after.json.

    .venv/bin/python bench/zoo_before_after.py --before bench/results/zoo_before.json [--models a,b] [--threads 2,1]
        [--out bench/results/zoo_before_after.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_x86 import cpu_name  # noqa: E402
from timing import measure, ort_session  # noqa: E402
from zoo import bundle_for, relative_error  # noqa: E402
from zoo_models import feeds_for, onnx_path  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="A bench/zoo.py JSON whose rows name their bundles.")
    ap.add_argument("--models", default="")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "zoo_before_after.json"))
    args = ap.parse_args(argv)
    from aotc import runtime_stub
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    # A zoo.py run's rows name their bundle; an earlier run of this script's, its "after" bundle.
    before = {r["model"]: ROOT / (r.get("bundle") or r["after_bundle"])
              for r in json.loads(Path(args.before).read_text())["results"] if "bundle" in r or "after_bundle" in r}
    names = args.models.split(",") if args.models else list(before)
    rows = []
    for name in names:
        log(f"{name}:")
        path = onnx_path(name)
        feeds = feeds_for(name, path)
        after_bundle, compile_s = bundle_for(name, log)
        old, new = runtime_stub.load(before[name]), runtime_stub.load(after_bundle)
        row = {"model": name, "before_bundle": str(before[name].relative_to(ROOT)),
               "after_bundle": str(after_bundle.relative_to(ROOT)), "after_compile_s": compile_s, "by_threads": {}}
        for threads in [int(t) for t in args.threads.split(",")]:
            old.set_num_threads(threads)
            new.set_num_threads(threads)
            sess = ort_session(path, threads)
            out_name = sess.get_outputs()[0].name
            want = sess.run([out_name], feeds)[0]
            row["rel_err_before"] = relative_error(old.run(feeds)[out_name], want)
            row["rel_err_after"] = relative_error(new.run(feeds)[out_name], want)
            import time
            t = time.perf_counter()
            old.run(feeds)
            runs = max(2, min(20, int(0.4 / max(time.perf_counter() - t, 1e-4))))
            times = measure({"before": lambda: old.run(feeds), "after": lambda: new.run(feeds),
                             "onnxruntime": lambda: sess.run(None, feeds)}, args.rounds, runs)
            med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            row["by_threads"][str(threads)] = {"median_ms": med, "speedup": med["before"] / med["after"],
                                               "after_speed_vs_onnxruntime": med["onnxruntime"] / med["after"],
                                               "before_speed_vs_onnxruntime": med["onnxruntime"] / med["before"]}
            log(f"  {threads} thread(s): before {med['before']:.2f} ms, after {med['after']:.2f} ms "
                f"(x{med['before'] / med['after']:.2f}), onnxruntime {med['onnxruntime']:.2f} ms")
            del sess
        rows.append(row)
    report = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "shared": True, "loadavg": os.getloadavg()},
              "before_run": args.before, "rounds": args.rounds, "results": rows}
    for t in args.threads.split(","):
        sp = [r["by_threads"][t]["speedup"] for r in rows]
        report.setdefault("geomean_speedup", {})[t] = math.exp(sum(map(math.log, sp)) / len(sp)) if sp else None
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Performance cliffs over the model zoo: every kernel that runs below 10% of its roofline bound and takes
more than 2% of its model's kernel time, from `aotc profile`'s per-kernel numbers (aotc/profile.py: the
median of per-call wall times, the op registry's FLOP and byte counts, this machine's measured FMA peak
and copy bandwidth). Each cliff gets a class (what kind of a kernel it is, from its op and operand
shapes), and the classes are ranked by the model time they cost summed over the zoo — the first is the one
to fix first. Writes bench/results/cliffs.json.

    .venv/bin/python bench/cliffs.py [--models a,b] [--threads 2] [--runs 10]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from zoo import bundle_for  # noqa: E402
from zoo_models import ZOO, ZooModelUnavailable, feeds_for, onnx_path  # noqa: E402

MAX_OF_ROOFLINE = 0.10
MIN_SHARE = 0.02
GEMM_OPS = ("MatMul", "Gemm", "FusedMatMul")
CONV_OPS = ("Conv", "FusedConv", "BlockedConv")
LAYOUT_OPS = ("ToBlockedLayout", "FromBlockedLayout", "Transpose")
ROW_OPS = ("Softmax", "LayerNormalization", "SkipLayerNormalization", "ReduceMean", "ReduceSum")


def classify(k: dict, lanes: int = 16) -> str:
    """What kind of a kernel this is, in the terms a fix would be made in: GEMMs by their output's shape
    (ragged N: not a whole number of vectors; small M: fewer rows than a register tile), convolutions by
    their kernel (from the lowering's kind), row reductions by their row length, the rest by op family."""
    op, shapes, kind = k["op"], k.get("shapes") or [], k.get("kind") or ""
    out = shapes[-1] if shapes else []
    if op == "Attention":  # one fused node, several kernels: name the part (scores, softmax, context...)
        part = kind.split("|")[0]
        if part == "packed_gemm":
            return "Attention projection GEMM"
        keys = shapes[0][-1] if part == "attn_softmax" and shapes else out[-1] if out else 0
        return f"Attention {part} ({'ragged' if keys % lanes else 'whole-vector'} key count)"
    if op in GEMM_OPS and len(out) >= 2:
        n = out[-1]
        runtime_b = kind.startswith("matmul")  # the unpacked path: B computed at run time, or not packable
        m = out[-2] if runtime_b else math.prod(out[:-1])
        tags = ["unpacked B" if runtime_b else "packed weight"]
        if n % lanes:
            tags.append("ragged N")
        if m < 8:
            tags.append("small M")
        if n >= 4096:
            tags.append("large N")
        return "GEMM (" + ", ".join(tags) + ")"
    if op in CONV_OPS:
        parts = kind.split("|")
        sub = parts[1] if len(parts) > 1 and op == "BlockedConv" else "nchw"
        geom = parts[2] if len(parts) > 2 and op == "BlockedConv" else ""
        if geom.startswith("[1, 1]") and sub != "depthwise":
            return f"conv 1x1 ({sub.rstrip('0123456789x')})"
        ks = geom.split("]")[0].strip("[") if geom else "?"
        stride = geom.split("],")[1].strip("[") if geom.count("],") >= 1 else "?"
        first = len(shapes[0]) == 4 if shapes else False  # reads the NCHW image: the stem
        return f"conv {ks.replace(', ', 'x')} stride {stride.replace(', ', 'x')} ({'stem' if first else sub})"
    if op in LAYOUT_OPS:
        return f"layout ({op})"
    if op in ROW_OPS:
        row = shapes[0][-1] if shapes and shapes[0] else 0
        return f"{op} ({'ragged' if row % lanes else 'whole-vector'} rows of {'< 64' if row < 64 else '>= 64'})"
    return f"elementwise/other ({op})"


def profile_model(name: str, threads: int, runs: int) -> dict:
    from aotc.profile import profile_bundle
    path = onnx_path(name)
    bundle, _ = bundle_for(name, log=lambda s: print(s, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="aotc-cliffs-") as tmp:
        feeds = Path(tmp) / "feeds.npz"
        np.savez(feeds, **feeds_for(name, path))  # the zoo's inputs: valid token ids and masks
        return profile_bundle(bundle, inputs=str(feeds), threads=threads, runs=runs)


def cliffs_of(name: str, prof: dict) -> list[dict]:
    rows = []
    for k in prof["kernels"]:
        if k["of_roofline"] < MAX_OF_ROOFLINE and k["share"] > MIN_SHARE:
            rows.append({"model": name, "kernel": k["kernel"], "op": k["op"], "class": classify(k),
                         "kind": k.get("kind"), "nodes": k["nodes"][:3] + ([f"+{len(k['nodes']) - 3}"]
                                                                          if len(k["nodes"]) > 3 else []),
                         "calls": k["calls"], "us": round(k["us"], 1), "share": round(k["share"], 4),
                         "gflops": round(k["gflops"], 2), "gbps": round(k["gbps"], 2),
                         "of_roofline": round(k["of_roofline"], 4), "shapes": k.get("shapes")})
    return rows


def rank_classes(cliffs: list[dict]) -> list[dict]:
    classes: dict[str, dict] = {}
    for c in cliffs:
        e = classes.setdefault(c["class"], {"class": c["class"], "kernels": 0, "models": set(), "share_sum": 0.0,
                                            "us": 0.0})
        e["kernels"] += 1
        e["models"].add(c["model"])
        e["share_sum"] += c["share"]
        e["us"] += c["us"]
    out = sorted(classes.values(), key=lambda e: -e["share_sum"])
    for e in out:
        e["models"] = sorted(e["models"])
        e["share_sum"] = round(e["share_sum"], 4)
        e["us"] = round(e["us"], 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ZOO))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cliffs.json"))
    args = ap.parse_args(argv)
    cliffs, models, peak = [], {}, None
    for name in args.models.split(","):
        print(f"{name}:", file=sys.stderr, flush=True)
        try:
            prof = profile_model(name, args.threads, args.runs)
        except ZooModelUnavailable as e:
            print(f"  skipped: {e}", file=sys.stderr)
            continue
        peak = prof["peak"]
        found = cliffs_of(name, prof)
        # What would be next: a cliff list is empty on a good day and a kernel at 11% of its roofline is
        # still far from it, so each model also keeps its three farthest kernels among those over 2%.
        big = sorted((k for k in prof["kernels"] if k["share"] > MIN_SHARE), key=lambda k: k["of_roofline"])[:3]
        models[name] = {"kernel_ms": round(prof["kernel_us"] / 1e3, 3), "kernels": len(prof["kernels"]),
                        "cliffs": len(found), "cliff_share": round(sum(c["share"] for c in found), 4),
                        "farthest_from_roofline": [
                            {"kernel": k["kernel"], "class": classify(k), "share": round(k["share"], 4),
                             "of_roofline": round(k["of_roofline"], 4), "shapes": k.get("shapes")} for k in big]}
        cliffs += found
        for c in found:
            print(f"  {c['kernel']:<28} {c['class']:<36} {c['us']:>9.1f} us {100 * c['share']:5.1f}% "
                  f"{100 * c['of_roofline']:5.1f}% of roofline", file=sys.stderr)
    classes = rank_classes(cliffs)
    report = {"criteria": {"of_roofline_below": MAX_OF_ROOFLINE, "share_above": MIN_SHARE},
              "threads": args.threads, "runs": args.runs, "peak": peak, "shared_machine": True,
              "loadavg": os.getloadavg(), "models": models, "classes": classes, "cliffs": cliffs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("\nclasses, by model time summed over the zoo (sum of shares):", file=sys.stderr)
    for e in classes:
        print(f"  {e['class']:<40} {e['kernels']:>3} kernels in {len(e['models']):>2} models, "
              f"shares sum {100 * e['share_sum']:.1f}%", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

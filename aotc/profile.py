"""`aotc profile BUNDLE`: where a CPU bundle's time goes, kernel by kernel, against a roofline.

The driver times every kernel call when AOTC_PROFILE=1 (one `aotc-profile` line per call on stderr, read
once per process), so the runs happen in a child process. Each call's FLOPs and bytes moved come from the
bundle's kernels.json (the op registry's counts, written at compile time). The roofline's two ceilings are
measured on this machine each time (aotc/peak.py): float32 FMA throughput and copy bandwidth."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from aotc.compiler.errors import AotcError

from .api import load
from .bench import feeds_for
from .peak import machine_peak


class ProfileError(AotcError):
    """The bundle cannot be profiled (not a CPU bundle, or compiled before kernels.json existed)."""


def _measure(bundle: Path, feeds_file: Path, threads: int, warmup: int, runs: int) -> list[list[float]]:
    """Per run, each call's wall time in µs (the child process's AOTC_PROFILE lines)."""
    code = ("import sys, numpy as np, runtime_stub\n"
            "m = runtime_stub.load(sys.argv[1])\n"
            "t = int(sys.argv[3])\n"
            "if t: m.set_num_threads(t)\n"
            "with np.load(sys.argv[2]) as d: feeds = {k: d[k] for k in d.files}\n"
            "for _ in range(int(sys.argv[4])): m.run(feeds)\n")
    env = {**os.environ, "AOTC_PROFILE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(feeds_file), str(threads),
                           str(warmup + runs)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ProfileError(f"Running {bundle} for the profile failed: {proc.stderr.strip()[-1500:]}")
    per_run, current = [], []
    for line in proc.stderr.splitlines():
        if line.startswith("aotc-profile-run "):
            per_run.append(current)
            current = []
        elif line.startswith("aotc-profile "):
            current.append(float(line.split()[-2]))  # "... <wall µs> <cpu µs>"; node names may hold spaces
    return per_run[warmup:]


def profile_bundle(path, inputs: str | None = None, threads: int = 0, warmup: int = 3, runs: int = 10) -> dict:
    bundle = load(path)
    info_file = bundle.path / "kernels.json"
    if "buckets" in bundle.manifest:
        names = ", ".join(v.get("name", "?") for v in bundle.manifest["buckets"].get("variants", []))
        raise ProfileError(f"{bundle.path} holds shape buckets; profile one of them: each bucket folder ({names}) "
                           f"is a bundle, e.g. `aotc profile {bundle.path}/{names.split(', ')[0]}`.")
    if not info_file.exists():
        raise ProfileError(f"{bundle.path} has no kernels.json: `aotc profile` reads the per-kernel FLOP and byte "
                           f"counts a CPU bundle carries ({bundle.target} bundles have none, and CPU bundles "
                           "compiled before aotc 0.1 neither); recompile it with aotc compile.")
    calls = json.loads(info_file.read_text())
    feeds = feeds_for(bundle, inputs)
    with tempfile.TemporaryDirectory(prefix="aotc-profile-") as tmp:
        feeds_file = Path(tmp) / "in.npz"
        np.savez(feeds_file, **feeds)
        per_run = _measure(bundle.path, feeds_file, threads, warmup, runs)
    if not per_run or any(len(r) != len(calls) for r in per_run):
        raise ProfileError(f"{bundle.path}: the driver reported {len(per_run[0]) if per_run else 0} kernel calls "
                           f"per run, kernels.json lists {len(calls)}; the bundle's files do not belong together.")
    median_us = np.median(np.array(per_run), axis=0)
    peak = machine_peak(threads)
    kernels: dict[str, dict] = {}
    for call, us in zip(calls, median_us):
        k = kernels.setdefault(call["kernel"], {"kernel": call["kernel"], "op": call["op"], "nodes": [], "calls": 0,
                                                "us": 0.0, "flops": 0, "bytes": 0,
                                                "shapes": call.get("shapes"), "kind": call.get("kind")})
        k["nodes"].append(call["node"])
        k["calls"] += 1
        k["us"] += float(us)
        k["flops"] += call["flops"]
        k["bytes"] += call["bytes"]
    total = float(median_us.sum())
    rows = []
    for k in sorted(kernels.values(), key=lambda k: -k["us"]):
        sec = max(k["us"], 1e-3) / 1e6
        gflops, gbps = k["flops"] / sec / 1e9, k["bytes"] / sec / 1e9
        # Roofline: the best this machine could do for this kernel's intensity (FLOPs per byte moved). int8
        # kernels are set against 4x the float32 ceiling: one vpdpbusd/sdot does 4 multiply-adds per 32-bit lane.
        ceiling = peak["gflops"] * (4 if k["op"].startswith("Quantized") else 1)
        bound_s = max(k["flops"] / (ceiling * 1e9), k["bytes"] / (peak["gbps"] * 1e9))
        rows.append({**k, "share": k["us"] / total if total else 0.0, "gflops": gflops, "gbps": gbps,
                     "of_roofline": bound_s / sec})
    return {"bundle": str(bundle.path), "target": bundle.target, "threads": threads or "default", "runs": runs,
            "kernel_us": total, "peak": peak, "kernels": rows}


def format_profile(r: dict, top: int = 25) -> str:
    p = r["peak"]
    lines = [f"{r['bundle']} ({r['target']}, threads {r['threads']}): kernels {r['kernel_us'] / 1e3:.3f} ms per run "
             f"(median of {r['runs']}); this machine: {p['gflops']:.0f} GFLOP/s, {p['gbps']:.1f} GB/s ({p['how']})",
             f"{'kernel':<28} {'op':<22} {'calls':>5} {'µs':>9} {'%':>6} {'GFLOP/s':>8} {'GB/s':>7} "
             f"{'roofline':>8}  node"]
    rows = r["kernels"]
    for k in rows[:top]:
        nodes = k["nodes"][0] + (f" (+{len(k['nodes']) - 1})" if len(k["nodes"]) > 1 else "")
        lines.append(f"{k['kernel'][:28]:<28} {k['op'][:22]:<22} {k['calls']:>5} {k['us']:>9.1f} "
                     f"{100 * k['share']:>5.1f}% {k['gflops']:>8.1f} {k['gbps']:>7.1f} {100 * k['of_roofline']:>7.1f}%"
                     f"  {nodes}")
    if len(rows) > top:
        rest = rows[top:]
        lines.append(f"{'(' + str(len(rest)) + ' more kernels)':<51} {sum(k['calls'] for k in rest):>5} "
                     f"{sum(k['us'] for k in rest):>9.1f} {100 * sum(k['share'] for k in rest):>5.1f}%")
    return "\n".join(lines)

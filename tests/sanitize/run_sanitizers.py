"""`make sanitize`: the thin runtime and a C harness under AddressSanitizer + UndefinedBehaviorSanitizer
(with LeakSanitizer) against the manifest-tamper matrix and random byte mutations of a manifest, and
under ThreadSanitizer running a bundle from 2 threads with a 2-thread pool each; the same for a shape-bucket
bundle through the aotc_bucketed_* API (every input size up to the largest bucket, byte mutations of its
top-level manifest, 2 calling threads on one handle). The bundles' drivers
(model.so) are built with the same sanitizer (AOTC_DRIVER_CFLAGS). Too slow for every CI run (a minute or
two); its result is recorded in docs/reliability.md.

    python tests/sanitize/run_sanitizers.py [--mutations 1000] [--thread-runs 200]

Exits 0 only if no sanitizer reported anything, every tamper case was refused with a message, and every
bundle that loaded ran."""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tamper_cases import tamper_cases  # noqa: E402

SANITIZERS = {"asan": "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer",
              "tsan": "-fsanitize=thread"}
REPORT_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
                  "SUMMARY: ")


def weights() -> dict[str, np.ndarray]:
    r = np.random.default_rng(0)
    return {"w1": (r.standard_normal((256, 256)) * 0.05).astype(np.float32),
            "w2": (r.standard_normal((256, 64)) * 0.05).astype(np.float32)}


def model():
    """Two GEMMs big enough that their kernels run on the thread pool, and a softmax."""
    from aotc import compiler
    g = compiler.Graph("sanitize")
    x = g.add_input("x", (64, 256), compiler.DType.float32)
    w1, w2 = (g.add_const(name, w) for name, w in weights().items())
    h = g.add_node("Relu", [g.add_node("MatMul", [x, w1]).outputs[0]], output_names=["h"]).outputs[0]
    y = g.add_node("Softmax", [g.add_node("MatMul", [h, w2]).outputs[0]], {"axis": -1}, output_names=["y"]).outputs[0]
    g.outputs = [y, h]
    return g


def build_bundle(out: Path, flags: str) -> Path:
    import aotc
    os.environ["AOTC_DRIVER_CFLAGS"] = flags
    try:
        return aotc.compile(model(), out, target="x86-avx512", passes="none").path
    finally:
        del os.environ["AOTC_DRIVER_CFLAGS"]


BUCKET_ROWS = (16, 64)


def bucketed_onnx(path: Path) -> Path:
    """The same network as an ONNX file whose row count is a named dimension ("rows"), to bucket on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    consts = [numpy_helper.from_array(w, name) for name, w in weights().items()]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["xw1"]), helper.make_node("Relu", ["xw1"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["hw2"]), helper.make_node("Softmax", ["hw2"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "sanitize_bucketed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 64]),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, ["rows", 256])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def build_bucketed_bundle(out: Path, flags: str) -> Path:
    import aotc
    os.environ["AOTC_DRIVER_CFLAGS"] = flags
    try:
        return aotc.compile(bucketed_onnx(out.parent / f"{out.name}.onnx"), out, target="x86-avx512",
                            buckets={"rows": BUCKET_ROWS}, pad={"x": 0}).path
    finally:
        del os.environ["AOTC_DRIVER_CFLAGS"]


def build_harness(out: Path, flags: str) -> Path:
    rt = ROOT / "runtime_stub"
    subprocess.run(["cc", "-g", "-O1", "-std=gnu11", *flags.split(), "-I", str(rt), "-o", str(out),
                    str(ROOT / "tests/sanitize/tamper_harness.c"), str(rt / "aotc_runtime.c"), "-ldl", "-lpthread"],
                   check=True)
    return out


def case_dir(bundle: Path, root: Path, i: int, manifest_text: str) -> Path:
    d = root / f"case{i:05d}"
    d.mkdir()
    for f in bundle.iterdir():
        if f.name != "manifest.json":
            (d / f.name).symlink_to(f)
    (d / "manifest.json").write_text(manifest_text)
    return d


def byte_mutations(text: str, n: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        b = bytearray(text.encode())
        for _ in range(rng.choice((1, 1, 2, 4))):
            if not b:  # a truncation left nothing to mutate
                break
            op, i = rng.randrange(5), rng.randrange(len(b))
            if op == 0:
                b[i] = rng.randrange(256)
            elif op == 1:
                del b[i:i + rng.randrange(1, 16)]
            elif op == 2:
                b[i:i] = rng.choice([b"0", b"-", b"9" * 20, b"\"", b"\\u", b"{", b"[", b",", b"1e999", b"\x00"])
            elif op == 3:
                b = b[:i]
            else:
                j = rng.randrange(len(b))
                b[i:i] = b[j:j + rng.randrange(1, 64)]
        out.append(b.decode("latin-1"))
    return out


def check_lines(lines: list[str], cases: list[tuple[str, str]], dirs: list[Path], n_tamper: int,
                problems: list[str]) -> tuple[int, int]:
    """The harness's one line per bundle against what each case must give: the valid one (case 0) loads and
    runs, the tamper cases (1..n_tamper) are refused, anything that loads runs, every refusal has a message."""
    by_dir = {f[1]: f for f in (line.split("\t", 2) for line in lines) if len(f) == 3}
    refused = loaded = 0
    for i, ((what, _), d) in enumerate(zip(cases, dirs)):
        got = by_dir.get(str(d))
        if got is None:
            problems.append(f"{what}: no result (the harness died)")
        elif got[0] == "loaded":
            loaded += 1
            if got[2] != "ran":
                problems.append(f"{what}: loaded but did not run")
            if 0 < i <= n_tamper:
                problems.append(f"{what}: a tampered manifest was loaded")
        else:
            refused += 1
            if i == 0:
                problems.append(f"the valid bundle was refused: {got[2]}")
            if not got[2].strip():
                problems.append(f"{what}: refused without a message")
    return refused, loaded


def run_harness(exe: Path, mode: list[str], dirs: list[Path], env: dict, problems: list[str]) -> list[str]:
    lines: list[str] = []
    for start in range(0, len(dirs), 200):  # one process per 200 bundles: LSan checks each at exit
        proc = run([str(exe), *mode, *map(str, dirs[start:start + 200])], env)
        lines += proc.stdout.splitlines()
        if proc.returncode != 0 or any(m in proc.stderr for m in REPORT_MARKERS):
            problems.append(f"asan harness {mode[0]} (cases {start}..): exit {proc.returncode}: {proc.stderr[-3000:]}")
    return lines


def run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutations", type=int, default=1000)
    ap.add_argument("--thread-runs", type=int, default=200)
    args = ap.parse_args()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aotc-sanitize-") as tmp:
        tmp = Path(tmp)
        # -- ASan + UBSan (+ LSan): the tamper matrix and byte mutations -----------------------------------
        bundle = build_bundle(tmp / "asan-bundle", SANITIZERS["asan"])
        exe = build_harness(tmp / "harness-asan", SANITIZERS["asan"])
        text = (bundle / "manifest.json").read_text()
        cases = [("valid", text)] + [(what, json.dumps(m)) for what, m in tamper_cases(json.loads(text))]
        cases += [(f"byte mutation {i}", t) for i, t in enumerate(byte_mutations(text, args.mutations))]
        dirs = [case_dir(bundle, tmp, i, t) for i, (_, t) in enumerate(cases)]
        env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
        lines = run_harness(exe, ["load"], dirs, env, problems)
        n_tamper = len(cases) - args.mutations - 1
        refused, loaded = check_lines(lines, cases, dirs, n_tamper, problems)
        print(f"asan+ubsan+lsan: {len(cases)} bundles ({n_tamper} tamper cases, {args.mutations} byte mutations): "
              f"{refused} refused, {loaded} loaded and ran")
        # -- the same for a bucketed bundle: its top-level manifest mutated, every size 1..64 rows run -------
        bucketed = build_bucketed_bundle(tmp / "asan-bucketed", SANITIZERS["asan"])
        text = (bucketed / "manifest.json").read_text()
        n = max(args.mutations // 5, 1)
        cases = [("bucketed valid", text)] + [(f"bucketed byte mutation {i}", m)
                                              for i, m in enumerate(byte_mutations(text, n, seed=17))]
        dirs = [case_dir(bucketed, tmp, 100000 + i, t) for i, (_, t) in enumerate(cases)]
        lines = run_harness(exe, ["bucketed", str(BUCKET_ROWS[-1])], dirs, env, problems)
        refused, loaded = check_lines(lines, cases, dirs, 0, problems)
        print(f"asan+ubsan+lsan, bucketed: {len(cases)} bundles ({n} byte mutations of the top-level manifest), "
              f"rows 1..{BUCKET_ROWS[-1]} each: {refused} refused, {loaded} loaded and ran")
        # -- TSan: 2 calling threads, a 2-thread pool ---------------------------------------------------------
        bundle = build_bundle(tmp / "tsan-bundle", SANITIZERS["tsan"])
        exe = build_harness(tmp / "harness-tsan", SANITIZERS["tsan"])
        proc = run([str(exe), "threads", str(bundle), str(args.thread_runs)], {"TSAN_OPTIONS": "halt_on_error=0"})
        reports = proc.stderr.count("WARNING: ThreadSanitizer")
        print(f"tsan: {proc.stdout.strip()} ({reports} reports)")
        if proc.returncode != 0 or reports:
            problems.append(f"tsan: exit {proc.returncode}: {proc.stderr[-3000:]}")
        bucketed = build_bucketed_bundle(tmp / "tsan-bucketed", SANITIZERS["tsan"])
        runs = max(args.thread_runs // 20, 1)
        proc = run([str(exe), "bucketed-threads", str(BUCKET_ROWS[-1]), str(bucketed), str(runs)],
                   {"TSAN_OPTIONS": "halt_on_error=0"})
        reports = proc.stderr.count("WARNING: ThreadSanitizer")
        print(f"tsan: {proc.stdout.strip()} ({reports} reports)")
        if proc.returncode != 0 or reports:
            problems.append(f"tsan bucketed: exit {proc.returncode}: {proc.stderr[-3000:]}")
    for p in problems[:20]:
        print("PROBLEM:", p)
    print("sanitize:", "FAILED" if problems else "ok (0 sanitizer reports)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzzes aotc's ONNX importer and `aotc inspect` with mutated models.

Each case takes a model from tests/fuzz/corpus.zip, applies structural mutations
(tests/fuzz/mutators.py) and/or byte mutations, and feeds the result to
`compiler.load_onnx` or to the `aotc inspect` command in-process, in a forked child
with a memory limit and a wall-clock limit. Outcomes:

  ok          the model imported (the mutation left it valid)
  aotc_error  an AotcError (exit 2): the expected answer to a malformed model
  bug         any other exception, an AotcError that is not one paragraph, a
              VerificationError (the importer let a malformed graph through), or an
              `aotc inspect` exit code other than 0/2
  crash       the child died from a signal or exited without reporting
  hang        the case ran past --timeout

Case i of seed s is fully determined by (s, i): `--replay I` reruns it in this process with
the full traceback, `--save I PATH` writes the mutated model. A JSON summary (counts, every
finding with its mutations and the traceback's last frames) goes to --out, rewritten every
1000 cases so a long run can be watched and survives being stopped.

    PYTHONPATH=. python tests/fuzz/run_fuzz.py --seed 1 --cases 2000 --out fuzz.json
    PYTHONPATH=. python tests/fuzz/run_fuzz.py --seed 1 --replay 1234
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for _p in (ROOT, HERE.parent):  # this checkout's aotc (not an installed one) and tests/ (for fuzz.*)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import onnx  # noqa: E402

from fuzz.mutators import STRUCTURAL, mutate_bytes  # noqa: E402

CORPUS = HERE / "corpus.zip"
TARGETS = ("load", "inspect", "inspect-json")
MEMORY_LIMIT = 3 << 30  # address space a case may add; a bigger allocation is a MemoryError (a finding)
MAX_FINDINGS = 200  # findings kept in full in the summary; all are counted


def load_corpus(path: Path = CORPUS) -> list[tuple[str, bytes]]:
    if not path.is_file():
        raise SystemExit(f"no corpus at {path}; run tests/fuzz/build_corpus.py")
    with zipfile.ZipFile(path) as z:
        return [(name, z.read(name)) for name in sorted(z.namelist())]


@dataclass
class Case:
    index: int
    corpus: str
    data: bytes
    target: str
    input_shapes: dict[str, list[int]]
    mutations: list[str] = field(default_factory=list)


def _input_shapes(rng: random.Random, model: onnx.ModelProto | None) -> dict[str, list[int]]:
    """Shapes a user might pass: for the model's inputs or not, huge, negative, zero, rank changed."""
    names = [i.name for i in model.graph.input] if model is not None else []
    name = rng.choice(names + ["not_an_input"]) if names else "x"
    dims = [rng.choice([1, 2, 3, 4, 0, -1, 10 ** 23, 1 << 40, 1 << 63]) for _ in range(rng.randrange(0, 5))]
    return {name: dims}


def make_case(corpus: list[tuple[str, bytes]], seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}/{index}")
    name, data = corpus[rng.randrange(len(corpus))]
    case = Case(index, name, data, rng.choice(TARGETS), {})
    mode = rng.choices(["structural", "bytes", "both"], [70, 20, 10])[0]
    model = onnx.ModelProto()
    model.ParseFromString(data)
    if mode != "bytes":
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            mutation = STRUCTURAL[rng.randrange(len(STRUCTURAL))]
            case.mutations.append(mutation(model, rng))
        case.data = model.SerializeToString()
    if mode != "structural":
        other = corpus[rng.randrange(len(corpus))][1]
        for _ in range(rng.choice([1, 1, 2, 4])):
            case.data, what = mutate_bytes(case.data, rng, other)
            case.mutations.append(what)
    if rng.random() < 0.15:
        case.input_shapes = _input_shapes(rng, model)
        case.mutations.append(f"input_shapes {case.input_shapes}")
    return case


# -- running one case ------------------------------------------------------------------
def _frames(tb) -> tuple[str, str]:
    """The traceback's last frame, and the last frame inside aotc's own code."""
    frames = traceback.extract_tb(tb)
    fmt = lambda f: f"{os.path.relpath(f.filename, ROOT)}:{f.lineno} in {f.name}"  # noqa: E731
    own = [f for f in frames if f.filename.startswith(str(ROOT)) and "/tests/" not in f.filename]
    return (fmt(frames[-1]) if frames else "?"), (fmt(own[-1]) if own else "?")


def _inspect_argv(case: Case, path: str) -> list[str]:
    argv = ["inspect", path]
    for name, dims in case.input_shapes.items():
        argv += ["--input-shape", f"{name}={'x'.join(map(str, dims))}"]
    return argv + (["--json"] if case.target == "inspect-json" else [])


def run_target(case: Case, path: str) -> None:
    if case.target == "load":
        from aotc import compiler
        compiler.load_onnx(path, input_shapes=case.input_shapes)
    else:  # the command's function itself: typer would rebuild its command tree on every call
        from aotc import cli
        shapes = [f"{name}={'x'.join(map(str, dims))}" for name, dims in case.input_shapes.items()]
        cli.inspect(model=path, input_shape=shapes or None, as_json=case.target == "inspect-json")


def execute(case: Case, path: str) -> dict:
    """Runs the case in this process and classifies the result."""
    from aotc.compiler.errors import AotcError, VerificationError
    try:
        run_target(case, path)
    except AotcError as e:
        msg = str(e)
        if isinstance(e, VerificationError) or "\n" in msg.strip() or not msg.strip():
            frame, own = _frames(e.__traceback__)
            return {"outcome": "bug", "type": type(e).__name__, "message": msg[:400], "frame": frame, "aotc_frame": own}
        return {"outcome": "aotc_error", "type": type(e).__name__}
    except BaseException as e:  # noqa: BLE001 - classifying every other exception is the point
        frame, own = _frames(e.__traceback__)
        return {"outcome": "bug", "type": type(e).__name__, "message": str(e)[:400], "frame": frame, "aotc_frame": own}
    return {"outcome": "ok"}


def _child(case: Case, path: str, wfd: int) -> None:
    gc.disable()  # a collection would touch (and so copy) every page inherited from the parent
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (current + MEMORY_LIMIT, hard))
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        result = execute(case, path)
        os.write(wfd, json.dumps(result).encode())
    finally:
        os._exit(0)


def run_forked(case: Case, path: str, timeout: float) -> dict:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(case, path, wfd)
    os.close(wfd)
    chunks, deadline, hung = [], time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([rfd], [], [], max(left, 0))
        if not ready:
            hung = True
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(rfd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if hung:
        return {"outcome": "hang", "type": f"over {timeout:g} s"}
    if os.WIFSIGNALED(status):
        return {"outcome": "crash", "type": f"signal {signal.Signals(os.WTERMSIG(status)).name}"}
    if not chunks:
        return {"outcome": "crash", "type": f"exit {os.WEXITSTATUS(status)} without a report"}
    return json.loads(b"".join(chunks))


def run_subprocess(case: Case, path: str, timeout: float) -> dict:
    """`python -m aotc inspect` as a user runs it: exit 0 or 2 with one `error:` paragraph."""
    argv = _inspect_argv(case, path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        res = subprocess.run([sys.executable, "-m", "aotc", *argv], capture_output=True, text=True,
                             timeout=timeout * 10, env=env, errors="replace")
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "type": "subprocess"}
    err = res.stderr.strip()
    if res.returncode < 0:
        return {"outcome": "crash", "type": f"signal {-res.returncode}"}
    if res.returncode == 0:
        return {"outcome": "ok"}
    if res.returncode == 2 and err.startswith("error: ") and "\n" not in err:
        return {"outcome": "aotc_error", "type": "cli"}
    if res.returncode == 2 and err.startswith("Usage: ") and "internal error" not in err:
        return {"outcome": "aotc_error", "type": "cli usage"}  # a bad flag value (e.g. --input-shape): click's usage error
    return {"outcome": "bug", "type": f"cli exit {res.returncode}", "message": err[-400:], "frame": "?", "aotc_frame": "?"}


def _warm_up(corpus: list[tuple[str, bytes]], path: str) -> None:
    """Runs every target once here, so that each forked case starts with the imports and caches
    (typer's command tree, the op registry) already built: a cold `aotc inspect` costs ~20x a warm one."""
    with open(path, "wb") as f:
        f.write(corpus[0][1])
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        for target in TARGETS:
            execute(Case(-1, corpus[0][0], corpus[0][1], target, {}), path)
    finally:
        sys.stdout.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(devnull)


# -- the campaign --------------------------------------------------------------------
def campaign(seed: int, cases: int, start: int = 0, timeout: float = 10.0, out: Path | None = None,
             cli_every: int = 0, max_seconds: float | None = None, progress: bool = False) -> dict:
    corpus = load_corpus()
    workdir = tempfile.mkdtemp(prefix="aotc-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(workdir, "case.onnx")
    _warm_up(corpus, path)
    gc.collect()
    gc.freeze()  # the parent's objects stay out of the children's collections (copy-on-write stays cheap)
    outcomes: Counter = Counter()
    errors: Counter = Counter()
    groups: dict[str, dict] = {}
    findings: list[dict] = []
    t0 = time.monotonic()
    summary: dict = {}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None  # which code the figures are for

    def write_summary(done: int) -> None:
        elapsed = time.monotonic() - t0
        summary.update({
            "commit": commit, "seed": seed, "start": start, "cases": done, "elapsed_s": round(elapsed, 1),
            "cases_per_s": round(done / elapsed, 1) if elapsed else None, "timeout_s": timeout,
            "corpus_models": len(corpus), "cli_subprocess_every": cli_every,
            "outcomes": dict(outcomes), "aotc_errors": dict(errors.most_common()),
            "finding_groups": groups, "findings": findings,
        })
        if out:
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(summary, indent=1))
            os.replace(tmp, out)

    try:
        done = 0
        for index in range(start, start + cases):
            if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                break
            try:
                case = make_case(corpus, seed, index)
            except Exception as e:  # the harness's own problem, not aotc's: counted apart, kept for replay
                outcomes["mutation_failed"] += 1
                frame, _ = _frames(e.__traceback__)
                if len(findings) < MAX_FINDINGS:
                    findings.append({"index": index, "outcome": "mutation_failed", "type": type(e).__name__,
                                     "message": str(e)[:400], "frame": frame})
                done += 1
                continue
            with open(path, "wb") as f:
                f.write(case.data)
            results = [run_forked(case, path, timeout)]
            if cli_every and index % cli_every == 0 and case.target != "load":
                results.append(run_subprocess(case, path, timeout))
            for res in results:
                outcomes[res["outcome"]] += 1
                if res["outcome"] == "aotc_error":
                    errors[res["type"]] += 1
                elif res["outcome"] in ("bug", "crash", "hang"):
                    key = f"{res['outcome']}: {res['type']} at {res.get('aotc_frame', '?')}"
                    g = groups.setdefault(key, {"count": 0, "first_index": index, "message": res.get("message", "")})
                    g["count"] += 1
                    if len(findings) < MAX_FINDINGS:
                        findings.append({"index": index, **res, "target": case.target, "corpus": case.corpus,
                                         "mutations": case.mutations})
            done += 1
            if done % 1000 == 0:
                write_summary(done)
                if progress:
                    print(f"{done} cases, {dict(outcomes)}", file=sys.stderr, flush=True)
    finally:
        for p in (path,):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(workdir)
    write_summary(done)
    return summary


def replay(seed: int, index: int, save: Path | None) -> None:
    case = make_case(load_corpus(), seed, index)
    print(f"case {index} of seed {seed}: {case.corpus}, target {case.target}, mutations {case.mutations}")
    from aotc.compiler.errors import AotcError
    with tempfile.TemporaryDirectory() as d:
        path = save or Path(d) / "case.onnx"
        Path(path).write_bytes(case.data)
        try:
            run_target(case, str(path))
        except AotcError as e:  # the expected answer; anything else propagates with its traceback
            print(f"aotc's own error ({type(e).__name__}, exit {e.exit_code}): {e}")
            return
    print("no exception")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--start", type=int, default=0, help="first case index (to continue a run)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--cli-every", type=int, default=0, help="also run every Nth case through `python -m aotc inspect`")
    p.add_argument("--out", type=Path, default=None, help="JSON summary")
    p.add_argument("--replay", type=int, default=None, help="rerun this case here, with its traceback")
    p.add_argument("--save", type=Path, default=None, help="with --replay: where to write the mutated model")
    a = p.parse_args()
    if a.replay is not None:
        return replay(a.seed, a.replay, a.save)
    s = campaign(a.seed, a.cases, a.start, a.timeout, a.out, a.cli_every, a.max_seconds, progress=True)
    print(json.dumps({k: s[k] for k in ("cases", "elapsed_s", "cases_per_s", "outcomes")}))
    for key, g in sorted(s["finding_groups"].items(), key=lambda kv: -kv[1]["count"]):
        print(f"{g['count']:6d}  {key}  (first: case {g['first_index']})  {g['message'][:150]}")
    sys.exit(1 if s["finding_groups"] else 0)


if __name__ == "__main__":
    main()

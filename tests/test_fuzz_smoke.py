"""A short, fixed-seed run of the importer fuzzer (tests/fuzz/run_fuzz.py), and checks that the
harness itself tells a bug, a crash and a hang apart (a harness that cannot see them proves nothing).
The long campaign and its figures are in docs/reliability.md."""
import os
import signal
import time

from aotc import compiler
from fuzz import run_fuzz

SMOKE_CASES = 1500  # ~10-30 s on the 2-core development VM


def test_fuzz_smoke_finds_no_bugs(tmp_path):
    summary = run_fuzz.campaign(seed=0, cases=SMOKE_CASES, timeout=20, out=tmp_path / "fuzz.json", cli_every=600)
    outcomes = summary["outcomes"]
    assert summary["cases"] == SMOKE_CASES
    assert not summary["findings"], summary["finding_groups"]
    assert set(outcomes) <= {"ok", "aotc_error"}, outcomes
    # both kinds of answer occur: the mutations neither all break the model nor all leave it valid
    assert outcomes["ok"] > SMOKE_CASES // 10 and outcomes["aotc_error"] > SMOKE_CASES // 10, outcomes
    assert (tmp_path / "fuzz.json").is_file()


def test_cases_are_determined_by_seed_and_index():
    corpus = run_fuzz.load_corpus()
    a, b, c = (run_fuzz.make_case(corpus, 5, i) for i in (17, 17, 18))
    assert (a.data, a.mutations, a.target, a.input_shapes) == (b.data, b.mutations, b.target, b.input_shapes)
    assert (a.data, a.mutations) != (c.data, c.mutations)


def _case(tmp_path):
    corpus = run_fuzz.load_corpus()
    case = run_fuzz.Case(0, corpus[0][0], corpus[0][1], "load", {})
    path = tmp_path / "case.onnx"
    path.write_bytes(case.data)
    return case, str(path)


def test_harness_classifies_bug_crash_and_hang(tmp_path, monkeypatch):
    case, path = _case(tmp_path)
    assert run_fuzz.run_forked(case, path, timeout=20)["outcome"] == "ok"

    def not_aotc_error(*a, **k):
        raise KeyError("x")
    monkeypatch.setattr(compiler, "load_onnx", not_aotc_error)
    res = run_fuzz.run_forked(case, path, timeout=20)
    assert (res["outcome"], res["type"]) == ("bug", "KeyError") and "not_aotc_error" in res["frame"]

    monkeypatch.setattr(compiler, "load_onnx", lambda *a, **k: os.kill(os.getpid(), signal.SIGSEGV))
    assert run_fuzz.run_forked(case, path, timeout=20) == {"outcome": "crash", "type": "signal SIGSEGV"}

    monkeypatch.setattr(compiler, "load_onnx", lambda *a, **k: time.sleep(30))
    t0 = time.monotonic()
    assert run_fuzz.run_forked(case, path, timeout=0.5)["outcome"] == "hang"
    assert time.monotonic() - t0 < 10

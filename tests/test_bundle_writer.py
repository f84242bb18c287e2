"""The generic bundle writer: atomic replacement, concurrent writers to one -o, nothing left behind."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from aotc.targets.bundle import BundleWriteError, BundleWriter, write_bundle


def consistent(bundle: Path) -> bool:
    man = json.loads((bundle / "manifest.json").read_text())
    return all(hashlib.sha256((bundle / n).read_bytes()).hexdigest() == h for n, h in man["files"].items())


def test_concurrent_writers_leave_one_complete_bundle_and_nothing_else(tmp_path):
    """8 threads x 25 replacements of one bundle, a reader checking that the path always holds a bundle: the
    last writer wins with a consistent bundle, no writer fails, and no staging or old folder is left."""
    out = tmp_path / "b"
    errors, missing = [], []
    stop = threading.Event()

    def writer(i: int):
        try:
            for j in range(25):
                data = f"writer {i} round {j}".encode() * 100
                write_bundle(out, {"a.bin": data, "sub/b.bin": data[::-1]}, {"writer": i, "round": j})
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    def reader():
        seen = False
        while not stop.is_set():
            if (out / "manifest.json").exists():
                seen = True
            elif seen:
                missing.append("the bundle vanished")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == [] and missing == []
    assert consistent(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_failed_compile_removes_its_staging_and_the_folders_it_made(tmp_path):
    out = tmp_path / "new" / "deeper" / "b"
    with pytest.raises(RuntimeError):
        with BundleWriter(out):
            assert any(p.name.endswith(".partial") for p in out.parent.iterdir())
            raise RuntimeError("the compile failed")
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(BundleWriteError, match="exists and is not an aotc bundle"):
        write_bundle(tmp_path / "photos", {"a": b"1"}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_two_cli_compiles_to_one_output(tmp_path):
    """Two `aotc compile` processes racing to one -o: both succeed, the result is a complete bundle that runs."""
    from aotc.compiler.onnx_export import save_onnx
    g = compiler.Graph("mlp")
    x = g.add_input("x", (4, 16), DType.float32)
    w = g.add_const("w", np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))
    g.outputs = list(g.add_node("MatMul", [x, w], output_names=["y"]).outputs)
    save_onnx(g, tmp_path / "m.onnx")
    cmd = [sys.executable, "-m", "aotc", "compile", str(tmp_path / "m.onnx"), "--target", "x86-avx2", "-o",
           str(tmp_path / "out"), "-q"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0], results
    assert consistent(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out"]
    if "avx2" in open("/proc/cpuinfo").read():
        import aotc
        feeds = {"x": np.ones((4, 16), np.float32)}
        np.testing.assert_allclose(aotc.load(tmp_path / "out").run(feeds)["y"], compiler.interpret(g, feeds)["y"],
                                   rtol=1e-5, atol=1e-5)

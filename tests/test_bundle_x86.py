"""x86 bundles as artifacts: reproducible builds, the manifest, the thin
runtime's checks (bad inputs, corrupted or foreign files, unknown format),
concurrent runs, the C API used from a C program, and the CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from x86_helpers import copy_bundle, needs_avx512, rewrite_manifest

pytestmark = needs_avx512
ROOT = Path(__file__).resolve().parent.parent


def small_model() -> compiler.Graph:
    """A little MLP with attention-like parts: GEMMs big enough to run in parallel, a softmax, a layernorm."""
    r = np.random.default_rng(7)
    g = compiler.Graph("small_mlp")
    x = g.add_input("x", (64, 256), compiler.DType.float32)
    w1 = g.add_const("w1", (r.standard_normal((256, 512)) * 0.05).astype(np.float32))
    b1 = g.add_const("b1", r.standard_normal(512).astype(np.float32))
    w2 = g.add_const("w2", (r.standard_normal((512, 128)) * 0.05).astype(np.float32))
    h = g.add_node("MatMul", [x, w1]).outputs[0]
    h = g.add_node("Add", [h, b1]).outputs[0]
    h = g.add_node("Gelu", [h]).outputs[0]
    h = g.add_node("MatMul", [h, w2]).outputs[0]
    s = g.add_node("Softmax", [h], {"axis": -1}).outputs[0]
    r4 = g.add_node("Reshape", [s], {"shape": [8, 8, 128]}).outputs[0]
    scale = g.add_const("ln_scale", np.ones(128, np.float32))
    y = g.add_node("LayerNormalization", [r4, scale], {"axis": -1}, output_names=["y"]).outputs[0]
    g.outputs = [y, h]
    return g


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import aotc
    return aotc.compile(small_model(), tmp_path_factory.mktemp("b") / "small", target="x86-avx512", passes="none").path


@pytest.fixture(scope="module")
def feeds():
    return {"x": np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)}


@pytest.fixture(scope="module")
def reference(feeds):
    return compiler.interpret(small_model(), feeds)


def test_bundle_matches_reference_and_manifest(bundle, feeds, reference):
    from aotc import runtime_stub
    got = runtime_stub.load(bundle).run(feeds)
    for name, want in reference.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["format_version"] == 1 and man["target"]["name"] == "x86-avx512"
    assert man["inputs"] == [{"name": "x", "dtype": "float32", "shape": [64, 256]}]
    assert [o["name"] for o in man["outputs"]] == list(reference)
    assert [p["name"] for p in man["passes"]] == ["fit_to_target", "subpixel_conv_transpose", "nchwc_layout"]  # target passes
    assert man["arena_bytes"] > 0
    assert man["weight_bytes"] == (bundle / "weights.bin").stat().st_size and man["weight_bytes"] % 64 == 0
    import hashlib
    files = sorted(p.name for p in bundle.iterdir() if p.name != "manifest.json")
    # The runtime library rides along (with its sources and a C example): running needs no C compiler.
    assert sorted(man["files"]) == files == ["aotc_runtime.c", "aotc_runtime.h", "driver.c", "glibc_compat.h", "kernels.json",
                                             "libaotc_runtime.so", "model.so", "run_bundle_example.c", "weights.bin"]
    for name, digest in man["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    # No TVM at run time: model.so and the runtime need only libc, libm, libdl and pthreads.
    for so in ("model.so", "libaotc_runtime.so"):
        needed = subprocess.run(["readelf", "-d", str(bundle / so)], capture_output=True, text=True).stdout
        libs = {line.split("[")[1].split("]")[0] for line in needed.splitlines() if "(NEEDED)" in line}
        assert libs <= {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "ld-linux-x86-64.so.2"}, (so, libs)


def test_compiling_twice_is_byte_identical(bundle, tmp_path):
    import aotc
    again = aotc.compile(small_model(), tmp_path / "again", target="x86-avx512", passes="none").path
    for p in sorted(bundle.iterdir()):
        assert (again / p.name).read_bytes() == p.read_bytes(), f"{p.name} differs between two compiles"
    assert sorted(x.name for x in again.iterdir()) == sorted(x.name for x in bundle.iterdir())


def test_recompiling_into_an_existing_bundle_replaces_it(tmp_path):
    import aotc
    g = small_model()
    out = aotc.compile(g, tmp_path / "b", target="x86-avx512", passes="none").path
    (out / "stale.txt").write_text("old")
    aotc.compile(g, out, target="x86-avx512", passes="none").path
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no staging leftovers


# -- run-time errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,message", [
    ({"y": np.zeros((64, 256), np.float32)}, "unknown input 'y'"),
    ({"x": np.zeros((64, 255), np.float32)}, "shape [64, 255], the model expects [64, 256]"),
    ({"x": np.zeros((64, 256), np.float64)}, "dtype float64, the model expects float32"),
    ({}, "missing input 'x'"),
])
def test_bad_inputs_are_refused(bundle, bad, message):
    from aotc import runtime_stub
    m = runtime_stub.load(bundle)
    with pytest.raises(runtime_stub.RuntimeStubError, match=None) as e:
        m.run(bad)
    assert message in str(e.value)


def test_corrupted_weights_are_refused_before_loading_code(bundle, tmp_path):
    from aotc import runtime_stub
    b = copy_bundle(bundle, tmp_path)
    data = bytearray((b / "weights.bin").read_bytes())
    data[1000] ^= 0xFF
    (b / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(runtime_stub.RuntimeStubError, match="corrupted: weights.bin has SHA-256"):
        runtime_stub.load(b)


def test_missing_model_so(bundle, tmp_path):
    from aotc import runtime_stub
    b = copy_bundle(bundle, tmp_path)
    (b / "model.so").unlink()
    with pytest.raises(runtime_stub.RuntimeStubError, match="incomplete: cannot open .*model.so"):
        runtime_stub.load(b)


def test_foreign_model_so(bundle, tmp_path):
    """A model.so from another model: caught by its checksum, and (checksum patched) by its model id."""
    import hashlib
    from aotc import runtime_stub
    import aotc
    g = compiler.Graph("other")
    x = g.add_input("x", (64, 256), compiler.DType.float32)
    g.outputs = list(g.add_node("Relu", [x]).outputs)
    other = aotc.compile(g, tmp_path / "other", target="x86-avx512", passes="none").path
    b = copy_bundle(bundle, tmp_path)
    shutil.copy(other / "model.so", b / "model.so")
    with pytest.raises(runtime_stub.RuntimeStubError, match="corrupted: model.so"):
        runtime_stub.load(b)
    man = json.loads((b / "manifest.json").read_text())
    man["files"]["model.so"] = hashlib.sha256((b / "model.so").read_bytes()).hexdigest()
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(runtime_stub.RuntimeStubError, match="belongs to another model"):
        runtime_stub.load(b)
    (b / "model.so").unlink()  # a new file, not a rewrite of one the process may have mapped
    (b / "model.so").write_bytes(b"\x7fELF not really")
    man["files"]["model.so"] = hashlib.sha256((b / "model.so").read_bytes()).hexdigest()
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(runtime_stub.RuntimeStubError, match="cannot load"):
        runtime_stub.load(b)


def test_unknown_format_version(bundle, tmp_path):
    from aotc import runtime_stub
    b = copy_bundle(bundle, tmp_path)
    rewrite_manifest(b, format_version=99)
    with pytest.raises(runtime_stub.RuntimeStubError, match="format version 99, but this runtime reads format version 1"):
        runtime_stub.load(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(runtime_stub.RuntimeStubError, match="not valid JSON"):
        runtime_stub.load(b)
    with pytest.raises(runtime_stub.RuntimeStubError, match="not an aotc bundle"):
        runtime_stub.load(tmp_path / "nowhere")


# -- concurrency -----------------------------------------------------------------------------------------
def test_four_threads_fifty_runs_each(bundle, reference):
    from aotc import runtime_stub
    m = runtime_stub.load(bundle)
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((64, 256)).astype(np.float32) for _ in range(4)]
    wants = [compiler.interpret(small_model(), {"x": x}) for x in inputs]
    errors: list[str] = []

    def worker(t):
        for i in range(50):
            k = (t + i) % 4
            got = m.run({"x": inputs[k]})
            for name, want in wants[k].items():
                if not np.allclose(got[name], want, rtol=1e-5, atol=1e-5):
                    errors.append(f"thread {t} run {i} output {name}")
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_thread_count_is_a_run_time_setting(bundle, feeds, reference):
    from aotc import runtime_stub
    m = runtime_stub.load(bundle)
    for n in (1, 2, 3):
        m.set_num_threads(n)
        got = m.run(feeds)
        np.testing.assert_allclose(got["y"], reference["y"], rtol=1e-5, atol=1e-5)


# -- the C API from a C program ------------------------------------------------------------------------
def test_c_program_runs_a_bundle_without_python(bundle, feeds, reference, tmp_path):
    """The bundle's own C example, built as its first lines say, against the bundle's own runtime library."""
    exe = tmp_path / "run_bundle"
    subprocess.run(["cc", "-O2", "-std=gnu11", "-Wall", "-Werror", "-o", str(exe), "run_bundle_example.c", "-L.",
                    "-laotc_runtime", f"-Wl,-rpath,{bundle}"], check=True, cwd=bundle)
    feeds["x"].tofile(tmp_path / "x.bin")
    proc = subprocess.run([str(exe), str(bundle), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "y.bin", np.float32).reshape(reference["y"].shape)
    np.testing.assert_allclose(got, reference["y"], rtol=1e-5, atol=1e-5)
    bad = subprocess.run([str(exe), str(tmp_path / "nowhere"), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "not an aotc bundle" in bad.stderr


# -- the CLI -------------------------------------------------------------------------------------------
def test_cli_compile_and_run(tmp_path):
    from aotc.compiler.onnx_export import save_onnx
    model = tmp_path / "small.onnx"
    save_onnx(small_model(), str(model))
    aotc = [sys.executable, "-c", "from aotc.cli import main; main()"]
    out = tmp_path / "bundle"
    proc = subprocess.run(aotc + ["compile", str(model), "--target", "x86-avx512", "-o", str(out), "-v"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "scheduling" in proc.stderr and "[1/" in proc.stderr  # per-kernel steps with -v
    x = np.random.default_rng(5).standard_normal((64, 256)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    proc = subprocess.run(aotc + ["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--outputs",
                                  str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as got:
        want = compiler.interpret(small_model(), {"x": x})
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "bad.npz", x=x[:, :10])
    proc = subprocess.run(aotc + ["run", str(out), "--inputs", str(tmp_path / "bad.npz")], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and "the model expects [64, 256]" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(aotc + ["compile", str(model), "--target", "sparc", "-o", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "'sparc' is not one of" in proc.stderr and proc.stderr.startswith("Usage: ")
    assert not (tmp_path / "x").exists()


def test_avx2_target_matches_reference(tmp_path, feeds, reference):
    """The 8-lane target (the host fallback on CPUs without AVX-512) takes other tile paths."""
    from aotc import runtime_stub
    import aotc
    b = aotc.compile(small_model(), tmp_path / "avx2", target="x86-avx2", passes="none").path
    got = runtime_stub.load(b).run(feeds)
    for name, want in reference.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)
    assert json.loads((b / "manifest.json").read_text())["target"]["name"] == "x86-avx2"

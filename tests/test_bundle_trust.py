"""The bundle is untrusted input (issue #13): every manifest field validated and checked against what
model.so was built for, nothing of the bundle's code run before that, signatures, 0-d tensors."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from tamper_cases import tamper_cases
from test_bundle_x86 import bundle, feeds, small_model  # noqa: F401 (fixtures: the same small MLP bundle)
from x86_helpers import copy_bundle, needs_avx512

pytestmark = needs_avx512
ROOT = Path(__file__).resolve().parent.parent


def refusal(path: Path, **kw) -> str:
    from aotc import runtime_stub
    with pytest.raises(runtime_stub.RuntimeStubError) as e:
        runtime_stub.load(path, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def write_manifest(path: Path, man) -> None:
    (path / "manifest.json").write_text(json.dumps(man))


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


# -- 1. the manifest is validated, and model.so is the source of truth ------------------------------------
def test_every_tampered_manifest_field_is_refused(bundle, tmp_path):
    b = copy_bundle(bundle, tmp_path)
    cases = tamper_cases(manifest(bundle))
    assert len(cases) > 200
    loaded = []
    for what, man in cases:
        write_manifest(b, man)
        try:
            refusal(b)
        except pytest.fail.Exception:
            loaded.append(what)
    assert not loaded, f"loaded with a tampered manifest: {loaded}"


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(arena_bytes=1), "was built for a"),
    (lambda m: m["inputs"][0].update(shape=[1, 4]), "another input 0"),
    (lambda m: m["outputs"][0].update(shape=[64, 64]), "another output 0"),
    (lambda m: m["outputs"][1].update(shape=[64, 127]), "another output 1"),
    (lambda m: m["outputs"][0].update(dtype="int64"), "another output 0"),
    (lambda m: m.update(outputs=[]), "'outputs' has 0 entries"),
    (lambda m: m.update(format_version=1.9), "no format_version"),
    (lambda m: m["files"].update({".": "0" * 64}), "bad file entry '.'"),
    (lambda m: m["files"].update({"": "0" * 64}), "bad file entry ''"),
    (lambda m: m["files"].update({"../x": "0" * 64}), "bad file entry '../x'"),
    (lambda m: m["inputs"][0].update(shape=[4, "8"]), "not an integer"),
    (lambda m: m["inputs"][0].update(shape=[4, -8]), "not an integer"),
    (lambda m: m["inputs"][0].update(shape=[2 ** 40, 2 ** 20]), "more than 2^46 bytes"),
])
def test_issue_13_manifest_edits_are_refused(bundle, tmp_path, change, message):
    b = copy_bundle(bundle, tmp_path)
    man = manifest(b)
    change(man)
    write_manifest(b, man)
    assert message in refusal(b)


def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(bundle, tmp_path):
    """A named pipe would block a plain open() forever (no writer); the loader refuses it at once."""
    import os
    import subprocess
    import sys
    b = copy_bundle(bundle, tmp_path)
    (b / "weights.bin").unlink()
    os.mkfifo(b / "weights.bin")
    code = ("import sys, runtime_stub\ntry:\n    runtime_stub.load(sys.argv[1])\n"
            "except runtime_stub.RuntimeStubError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code, str(b)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "is not a regular file" in res.stdout, res.stdout + res.stderr


def test_truncated_weights_with_a_consistent_manifest_are_refused(bundle, tmp_path):
    """The checksum and size updated to match a shorter weights.bin: the library knows its weights' size."""
    b = copy_bundle(bundle, tmp_path)
    data = (b / "weights.bin").read_bytes()[:-64]
    (b / "weights.bin").write_bytes(data)
    man = manifest(b)
    man["weight_bytes"] = len(data)
    man["files"]["weights.bin"] = hashlib.sha256(data).hexdigest()
    write_manifest(b, man)
    assert "bytes of weights" in refusal(b)


@pytest.mark.parametrize("text,why", [
    ('{"a": 1, "a": 2}', "duplicate key"),
    ('{"format_version": NaN}', "NaN"),
    ('{"format_version": 1} x', "trailing data"),
    ('{"format_version": 0x1}', "hex number"),
    ('{"a": "\\u0000"}', "NUL in a string"),
    ('{"a": "\\ud800"}', "lone surrogate"),
    ('{"a": "\\q"}', "bad escape"),
    ('[' * 100 + ']' * 100, "too deep"),
    ('{"a": "tab\there"}', "raw control character"),
])
def test_manifest_json_is_parsed_strictly(bundle, tmp_path, text, why):
    b = copy_bundle(bundle, tmp_path)
    (b / "manifest.json").write_text(text)
    assert "not valid JSON" in refusal(b), why


def test_non_ascii_io_names_round_trip(tmp_path):
    """Names reach the runtime byte for byte from the manifest and from the library; both must agree."""
    from aotc import runtime_stub
    from aotc import compile as aotc_compile
    g = compiler.Graph("names")
    x = g.add_input('x"é\\?\U0001f600', (3,), compiler.DType.float32)
    g.outputs = list(g.add_node("Relu", [x], output_names=["y*/\u00e9"]).outputs)
    b = aotc_compile(g, tmp_path / "names", target="x86-avx512", passes="none").path
    got = runtime_stub.load(b).run({'x"é\\?\U0001f600': np.array([-1, 0, 2], np.float32)})
    np.testing.assert_array_equal(got["y*/\u00e9"], [0, 0, 2])


# -- 2. no code from the bundle runs before it is validated --------------------------------------------
CONSTRUCTOR_LIB = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void touch(void) {
  const char* p = getenv("AOTC_TEST_MARKER");
  FILE* f = p ? fopen(p, "w") : NULL;
  if (f) { fputs("ran", f); fclose(f); }
}
"""


@pytest.fixture
def hostile_bundle(bundle, tmp_path, monkeypatch):
    """A bundle whose model.so writes a marker file from its constructor; its checksum is updated."""
    b = copy_bundle(bundle, tmp_path)
    (tmp_path / "evil.c").write_text(CONSTRUCTOR_LIB)
    (b / "model.so").unlink()
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(b / "model.so"), str(tmp_path / "evil.c")], check=True)
    man = manifest(b)
    man["files"]["model.so"] = hashlib.sha256((b / "model.so").read_bytes()).hexdigest()
    write_manifest(b, man)
    marker = tmp_path / "marker"
    monkeypatch.setenv("AOTC_TEST_MARKER", str(marker))
    return b, marker


def test_no_code_is_loaded_before_the_manifest_validates(hostile_bundle):
    b, marker = hostile_bundle
    man = manifest(b)
    for key, bad in (("arena_bytes", -1), ("weight_bytes", "many"), ("outputs", [])):
        write_manifest(b, {**man, key: bad})
        refusal(b)
        assert not marker.exists(), f"model.so ran before {key}={bad!r} was refused"
    man["files"]["weights.bin"] = "0" * 64  # a checksum that does not match: refused before loading code
    write_manifest(b, man)
    assert "corrupted: weights.bin" in refusal(b)
    assert not marker.exists()


# -- signatures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    d = tmp_path_factory.mktemp("keys")
    for name in ("good", "other"):
        k = ed25519.Ed25519PrivateKey.generate()
        (d / f"{name}.pem").write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        (d / f"{name}.pub").write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return d


@pytest.fixture(scope="module")
def signed(keys, tmp_path_factory) -> Path:
    from aotc import compile as aotc_compile
    return aotc_compile(small_model(), tmp_path_factory.mktemp("s") / "signed", target="x86-avx512",
                        passes="none", sign=keys / "good.pem").path


def test_signed_bundle_loads_with_its_key_and_is_deterministic(signed, keys, feeds, tmp_path):
    from aotc import runtime_stub
    from aotc import compile as aotc_compile
    want = compiler.interpret(small_model(), feeds)
    for key in (keys / "good.pub", str(keys / "good.pub"), (keys / "good.pub").read_bytes()):
        got = runtime_stub.load(signed, public_key=key).run(feeds)
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-5)
    again = aotc_compile(small_model(), tmp_path / "again", target="x86-avx512", passes="none",
                         sign=keys / "good.pem").path
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in signed.iterdir())
    for p in signed.iterdir():
        assert (again / p.name).read_bytes() == p.read_bytes(), p.name


def test_signature_refusals(signed, bundle, keys, tmp_path, hostile_bundle):
    assert "does not verify with public key" in refusal(signed, public_key=keys / "other.pub")
    assert "is not signed" in refusal(bundle, public_key=keys / "good.pub")
    b = copy_bundle(signed, tmp_path, "edited")
    man = manifest(b)
    man["arena_bytes"] += 64  # any edit after signing
    (b / "manifest.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    assert "does not verify" in refusal(b, public_key=keys / "good.pub")
    assert "not an Ed25519 public key" in refusal(signed, public_key=b"not a key")
    hostile, marker = hostile_bundle  # a valid manifest, unsigned: its library's constructor must not run
    assert "is not signed" in refusal(hostile, public_key=keys / "good.pub")
    assert not marker.exists()


def aotc(*args):
    return subprocess.run([sys.executable, "-m", "aotc.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_sign_and_public_key(keys, tmp_path):
    from aotc.compiler.onnx_export import save_onnx
    model = tmp_path / "small.onnx"
    save_onnx(small_model(), str(model))
    out = tmp_path / "b"
    res = aotc("compile", str(model), "-t", "x86-avx512", "-q", "--sign", str(keys / "good.pem"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    x = np.ones((64, 256), np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    ok = aotc("run", str(out), "-i", str(tmp_path / "in.npz"), "--public-key", str(keys / "good.pub"))
    assert ok.returncode == 0, ok.stderr
    bad = aotc("run", str(out), "-i", str(tmp_path / "in.npz"), "--public-key", str(keys / "other.pub"))
    assert bad.returncode == 2 and "does not verify" in bad.stderr and "Traceback" not in bad.stderr
    res = aotc("compile", str(model), "-t", "x86-avx512", "--sign", str(keys / "good.pub"), "-o", str(tmp_path / "c"))
    assert res.returncode == 2 and "not an unencrypted PEM private key" in res.stderr
    assert not (tmp_path / "c").exists()


# -- 5. 0-d tensors ------------------------------------------------------------------------------------
def test_zero_d_input_and_output(tmp_path):
    from aotc import runtime_stub
    from aotc.compiler.onnx_export import save_onnx
    from aotc import compile as aotc_compile
    g = compiler.Graph("scalar")
    x = g.add_input("x", (), compiler.DType.float32)
    two = g.add_const("two", np.array(2, np.float32))
    g.outputs = list(g.add_node("Mul", [x, two], output_names=["y"]).outputs)
    b = aotc_compile(g, tmp_path / "scalar", target="x86-avx512", passes="none").path
    got = runtime_stub.load(b).run({"x": np.array(3.5, np.float32)})
    assert got["y"].shape == () and got["y"] == 7.0
    np.savez(tmp_path / "in.npz", x=np.array(1.25, np.float32))
    res = aotc("run", str(b), "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert out["y"].shape == () and out["y"] == 2.5
    save_onnx(g, str(tmp_path / "scalar.onnx"))


def test_inputs_are_checked_before_outputs_are_allocated(bundle, monkeypatch):
    from aotc import runtime_stub
    m = runtime_stub.load(bundle)
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("an output was allocated before the check"))
    with pytest.raises(runtime_stub.RuntimeStubError, match="has shape"):
        m.run({"x": np.zeros((64, 9), np.float32)})


# -- 6. inspect of a malformed bundle --------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "not an object"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1]}], "outputs": []}), "no known dtype"),
    (json.dumps({"inputs": [], "outputs": [], "passes": ["x"]}), "'passes'"),
    ("{", "not valid JSON"),
])
def test_inspect_of_a_malformed_bundle_is_a_user_error(tmp_path, text, message):
    (tmp_path / "manifest.json").write_text(text)
    res = aotc("inspect", str(tmp_path))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr

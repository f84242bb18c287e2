"""The runtime library a CPU bundle carries (libaotc_runtime.so): runtime_stub.load uses it, so running needs no C
compiler, and it is trusted like model.so: never dlopened before its SHA-256 matches the (signed) manifest."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_bundle_trust import CONSTRUCTOR_LIB, keys, manifest, refusal, signed, write_manifest  # noqa: F401
from test_bundle_x86 import bundle, feeds, reference, small_model  # noqa: F401 (fixtures: the small MLP bundle)
from x86_helpers import copy_bundle, needs_avx512

pytestmark = needs_avx512
LIB = "libaotc_runtime.so"


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """No C compiler and an empty cache: nothing can be built on first use."""
    monkeypatch.setenv("CC", "/nonexistent")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AOTC_RUNTIME_LIB", raising=False)
    return tmp_path / "cache"


def test_the_bundles_own_library_runs_it_without_a_compiler(bundle, feeds, reference, no_compiler):
    from aotc import runtime_stub
    model = runtime_stub.load(bundle)
    # The library loaded is the one with the bundle's digest (byte-identical copies in other bundles share it).
    assert model._lib is runtime_stub._libs[manifest(bundle)["files"][LIB]]
    assert Path(model._lib._name).name == LIB
    np.testing.assert_allclose(model.run(feeds)["y"], reference["y"], rtol=1e-5, atol=1e-5)
    assert not list(no_compiler.rglob("*.so"))


def test_a_bundle_without_the_library_needs_a_compiler_and_says_so(bundle, tmp_path, no_compiler):
    b = copy_bundle(bundle, tmp_path)
    (b / LIB).unlink()
    man = manifest(b)
    del man["files"][LIB]
    write_manifest(b, man)
    msg = refusal(b)
    assert f"carries no {LIB}" in msg and "'/nonexistent' cannot be run" in msg and "AOTC_RUNTIME_LIB" in msg


@pytest.fixture
def hostile_library(bundle, tmp_path, monkeypatch):
    """(bundle copy, the bytes of a libaotc_runtime.so that writes a marker file from its constructor, marker)."""
    (tmp_path / "evil.c").write_text(CONSTRUCTOR_LIB)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "evil.so"), str(tmp_path / "evil.c")], check=True)
    marker = tmp_path / "marker"
    monkeypatch.setenv("AOTC_TEST_MARKER", str(marker))
    monkeypatch.delenv("AOTC_RUNTIME_LIB", raising=False)
    return (tmp_path / "evil.so").read_bytes(), marker


def test_a_replaced_library_is_refused_before_it_is_loaded(bundle, tmp_path, hostile_library):
    evil, marker = hostile_library
    b = copy_bundle(bundle, tmp_path)
    (b / LIB).write_bytes(evil)
    assert f"corrupted: {LIB} has SHA-256" in refusal(b)
    assert not marker.exists()
    man = manifest(b)
    man["files"][LIB] = "not hex"
    write_manifest(b, man)
    assert f"bad file entry '{LIB}'" in refusal(b)
    assert not marker.exists()


def test_a_signature_covers_the_library(signed, keys, tmp_path, hostile_library):  # noqa: F811
    evil, marker = hostile_library
    b = copy_bundle(signed, tmp_path, "evil-signed")
    (b / LIB).write_bytes(evil)  # the signed manifest still names the real library
    assert f"corrupted: {LIB}" in refusal(b, public_key=keys / "good.pub")
    man = manifest(b)
    man["files"][LIB] = hashlib.sha256(evil).hexdigest()  # a consistent forgery: the signature catches it
    (b / "manifest.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    assert "does not verify" in refusal(b, public_key=keys / "good.pub")
    assert not marker.exists()

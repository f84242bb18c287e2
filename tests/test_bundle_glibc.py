"""A bundle says which glibc its native code needs (manifest `glibc`: the newest GLIBC_ symbol version of its
ELF files), and the Python runtime refuses an older one with that sentence before loading anything."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from aotc.targets.elf_glibc import bundle_glibc, glibc_needed
from x86_helpers import build_graph, copy_bundle, needs_avx512

pytestmark = needs_avx512


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import aotc
    g = build_graph("Relu", [("x", np.zeros((2, 12), np.float32))])
    return aotc.compile(g, tmp_path_factory.mktemp("glibc") / "relu", target="x86-avx512", passes="none").path


def objdump_glibc(path) -> tuple[int, ...]:
    """The reference: binutils' reading of the dynamic symbols' versions."""
    out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, check=True).stdout
    return max(tuple(int(x) for x in v.split(".")) for v in re.findall(r"\(GLIBC_([0-9.]+)\)", out))


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump as the reference")
def test_manifest_names_the_newest_glibc_symbol_version(bundle):
    man = json.loads((bundle / "manifest.json").read_text())
    elves = {n: (bundle / n).read_bytes() for n in ("model.so", "libaotc_runtime.so")}
    for name, data in elves.items():
        assert glibc_needed(data) == objdump_glibc(bundle / name), name
    assert man["glibc"] == bundle_glibc(elves) == ".".join(map(str, max(map(objdump_glibc, (bundle / n for n in elves)))))
    from aotc.bundle_summary import format_bundle  # what `aotc inspect BUNDLE` prints
    assert f"needs glibc {man['glibc']} or newer" in format_bundle(man)


def test_not_elf_or_truncated_is_no_requirement(bundle):
    data = (bundle / "model.so").read_bytes()
    assert glibc_needed(b"not an ELF file") is None
    assert glibc_needed(data[:4096]) is None  # section headers sit at the end: cut off, nothing is read
    assert bundle_glibc({"weights.bin": b"\0" * 64}) is None


@pytest.mark.parametrize("need, message", [
    ("99.0", r"needs glibc 99.0 or newer \(its native code was linked on a newer system\), this system has glibc "
             r"\d+\.\d+: compile the model on a system no newer than the device"),
    (2.34, r"'glibc' must be a version such as \"2.34\""),
    ("2.34; rm", r"'glibc' must be a version"),
])
def test_older_glibc_is_refused_before_loading(bundle, tmp_path, need, message):
    from aotc import runtime_stub
    b = copy_bundle(bundle, tmp_path)
    man = json.loads((b / "manifest.json").read_text())
    man["glibc"] = need
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(runtime_stub.RuntimeStubError, match=message):
        runtime_stub.load(b)
    got = runtime_stub.load(bundle).run({"x": np.full((2, 12), -1, np.float32)})
    np.testing.assert_array_equal(next(iter(got.values())), np.zeros((2, 12), np.float32))

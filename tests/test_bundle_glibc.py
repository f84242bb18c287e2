"""A bundle says which glibc its native code needs (manifest `glibc`: the newest GLIBC_ symbol version of its
ELF files), the Python runtime refuses an older one with that sentence before loading anything, and what it
needs is old: a bundle built here (glibc 2.36) loads and runs under Debian 11's glibc 2.31."""
from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

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


# -- a bundle under an older glibc ----------------------------------------------------------------------
DEBIAN = "http://deb.debian.org/debian"


def old_glibc_root(cache: Path, arch: str, packages: tuple[str, ...]) -> Path:
    """Debian 11's (bullseye: glibc 2.31) `packages` for `arch` unpacked under `cache`, downloaded once;
    skips the test, saying what is missing, where they cannot be had."""
    root = cache / f"debian11-{'-'.join(packages)}-{arch}"
    if (root / "done").exists():
        return root
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb to unpack Debian 11's libc6 (glibc 2.31)")
    tmp = root.with_name(f"{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with urllib.request.urlopen(f"{DEBIAN}/dists/bullseye/main/binary-{arch}/Packages.xz", timeout=60) as r:
            index = lzma.decompress(r.read()).decode()
        for pkg in packages:
            entry = re.search(rf"^Package: {re.escape(pkg)}\n(?:.+\n)*?Filename: (\S+)", index, re.M)
            deb = tmp / f"{pkg}.deb"
            with urllib.request.urlopen(f"{DEBIAN}/{entry.group(1)}", timeout=120) as r:
                deb.write_bytes(r.read())
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            deb.unlink()
    except (OSError, AttributeError, subprocess.CalledProcessError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"needs Debian 11's {', '.join(packages)} ({arch}) from {DEBIAN} (glibc 2.31): {e}")
    for link in [p for p in tmp.rglob("*") if p.is_symlink() and os.readlink(p).startswith("/")]:
        target = tmp / os.readlink(link).lstrip("/")  # absolute links point into the unpacked tree
        link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))
    (tmp / "done").write_text("")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def test_bundle_runs_under_glibc_2_31(model_cache, tmp_path):
    """The bundle's C example, built against Debian 11's libc as on such a device, runs the bundle (its
    thread pool included) under that libc's ld.so: dlopen, pthread and stat bind to versions glibc 2.31 has."""
    import aotc
    root = old_glibc_root(model_cache.parent, "amd64", ("libc6", "libc6-dev", "linux-libc-dev"))
    libdir = root / "lib" / "x86_64-linux-gnu"
    ld_so = next(libdir.glob("ld-2.*.so"))
    x = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((512, 384)).astype(np.float32)
    g = build_graph("MatMul", [("x", x)], consts=[("w", w)])
    b = aotc.compile(g, tmp_path / "mm", target="x86-avx512", passes="none").path
    man = json.loads((b / "manifest.json").read_text())
    assert man["glibc"] == "2.17"  # x86-64's base ABI is 2.2.5; memcpy is 2.14, clock_gettime 2.17
    exe = tmp_path / "run_bundle"
    subprocess.run(["cc", f"--sysroot={root}", f"-B{root}/usr/lib/x86_64-linux-gnu/", "-O2", "-std=gnu11", "-o",
                    str(exe), "run_bundle_example.c", "-L.", "-laotc_runtime", f"-Wl,-rpath,{b}"], check=True, cwd=b)
    assert glibc_needed(exe.read_bytes()) <= (2, 31)
    x.tofile(tmp_path / "x.bin")
    proc = subprocess.run([str(ld_so), "--library-path", str(libdir), str(exe), str(b), str(tmp_path / "x.bin"),
                           str(tmp_path / "y.bin")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "y.bin", np.float32).reshape(256, 384)
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-3)


def test_arm64_bundle_and_runner_run_under_glibc_2_31(model_cache, tmp_path, monkeypatch):
    """An arm64 bundle's aotc_runner (its start code included: glibc_compat.h's __libc_start_main) and the
    libraries it loads, under qemu-aarch64 with Debian 11's arm64 libc, with one and two threads."""
    import aotc
    from arm64_helpers import MISSING, run_arm
    if MISSING is not None:
        pytest.skip(MISSING)
    root = old_glibc_root(model_cache.parent, "arm64", ("libc6",))
    from test_target_arm64 import small_model
    g, feeds = small_model()
    b = aotc.compile(g, tmp_path / "arm", target="arm64-neon", passes="none").path
    assert json.loads((b / "manifest.json").read_text())["glibc"] == "2.17"
    want = aotc.compiler.interpret(g, feeds)[g.outputs[0].name]
    monkeypatch.setenv("AOTC_ARM64_SYSROOT", str(root))
    for threads in (1, 2):
        got = run_arm(b, feeds, threads=threads)[g.outputs[0].name]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"threads={threads}")

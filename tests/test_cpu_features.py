"""The CPU features a bundle's code may use are the ones its target promises (target.cpu_features, in the
manifest), and the runtime refuses, naming them, a CPU that lacks one. An x86-avx512 bundle once came from
LLVM's `znver4` CPU model and carried AMD's SSE4A `insertq`: an illegal instruction on Intel."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from x86_helpers import build_graph, copy_bundle, needs_avx512

# LLVM's subtarget features that tune code generation but add no instructions.
TUNING = ("fast-", "slow-", "false-deps-", "allow-light-", "prefer-", "idivq-to-divl", "macrofusion", "branchfusion",
          "sbb-dep-breaking", "vzeroupper", "tuning-", "no-bypass-", "faster-", "ermsb", "fsrm", "64bit-mode", "nopl")


def llvm_features(target: dict) -> set[str]:
    """Every subtarget feature LLVM enables for a TVM target dict (tuning included)."""
    import tvm
    from tvm.target import codegen
    return {str(f) for f in codegen.llvm_get_cpu_features(tvm.target.Target(target))}


def llvm_isa(target: dict) -> set[str]:
    """The instruction-set features LLVM enables for a TVM target dict."""
    return {f for f in llvm_features(target) if not f.startswith(TUNING)}


def beyond_promise(llvm: dict, cpu_features) -> set[str]:
    """What LLVM may use that neither x86-64-v2 (every AVX-512 and AVX2 CPU has it) nor `cpu_features` covers."""
    return llvm_isa(llvm) - llvm_isa({"kind": "llvm", "mcpu": "x86-64-v2"}) - set(cpu_features)


@pytest.mark.parametrize("name", ["x86-avx512", "x86-avx2"])
def test_llvm_uses_only_the_promised_isa(name):
    from aotc.targets.cpu.target import X86_TARGETS
    t = X86_TARGETS[name]
    assert beyond_promise(t.llvm, t.cpu_features) == set()
    # Vectors stay 512-bit wide: the kernels are scheduled for 16 float lanes.
    assert name != "x86-avx512" or "prefer-256-bit" not in llvm_features(t.llvm)


def test_a_cpu_model_brings_more_than_its_isa():
    """The check above can fail: the CPU model the x86-avx512 target used to name enables AMD-only SSE4A
    and AVX-512 extensions Cascade Lake lacks."""
    from aotc.targets.cpu.target import X86_AVX512
    extra = beyond_promise({"kind": "llvm", "mcpu": "znver4"}, X86_AVX512.cpu_features)
    assert {"sse4a", "avx512vbmi", "avx512bf16"} <= extra


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import aotc
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    g = build_graph("Relu", [("x", x)])
    return aotc.compile(g, tmp_path_factory.mktemp("cpu-features") / "relu", target="x86-avx512", passes="none").path


def set_cpu_features(bundle, features) -> None:
    man = json.loads((bundle / "manifest.json").read_text())
    man["target"]["cpu_features"] = features
    (bundle / "manifest.json").write_text(json.dumps(man))


def test_manifest_lists_the_features(bundle):
    from aotc.targets.cpu.target import X86_AVX512
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["target"]["cpu_features"] == list(X86_AVX512.cpu_features)
    assert "avx512vnni" in man["target"]["cpu_features"] and "sse4a" not in man["target"]["cpu_features"]
    from aotc.bundle_summary import format_bundle  # what `aotc inspect BUNDLE` prints
    assert "needs CPU features: avx, avx2, bmi, bmi2, f16c, fma, lzcnt, movbe, xsave, avx512f, avx512cd, " \
        "avx512bw, avx512dq, avx512vl, avx512vnni" in format_bundle(man)


@needs_avx512
@pytest.mark.parametrize("features, message", [
    (["avx512f", "dotprod", "sve"], "needs CPU features this runtime cannot check: dotprod, sve[.]"),
    ("avx512f", "cpu_features must be a list"),
    (["avx512f", 3], r"cpu_features\[1\] is not a feature name"),
])
def test_runtime_refuses_features_it_cannot_check(bundle, tmp_path, features, message):
    from aotc import runtime_stub
    b = copy_bundle(bundle, tmp_path)
    set_cpu_features(b, features)
    with pytest.raises(runtime_stub.RuntimeStubError, match=message):
        runtime_stub.load(b)
    runtime_stub.load(bundle).run({"x": np.ones((2, 12), np.float32)})  # the original still loads


QEMU_X86 = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


@needs_avx512
@pytest.mark.skipif(QEMU_X86 is None, reason="needs qemu-x86_64 (Debian package qemu-user-static) to emulate a CPU "
                                              "without AVX-512")
def test_runtime_refuses_a_cpu_without_the_features(bundle, tmp_path):
    """The bundle's C example, on an emulated Haswell (AVX2, no AVX-512): a clear refusal, not SIGILL."""
    exe = tmp_path / "run_bundle"
    subprocess.run(["cc", "-O2", "-std=gnu11", "-o", str(exe), "run_bundle_example.c", "-L.", "-laotc_runtime",
                    f"-Wl,-rpath,{bundle}"], check=True, cwd=bundle)
    np.ones((2, 12), np.float32).tofile(tmp_path / "x.bin")
    args = [str(exe), str(bundle), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")]
    proc = subprocess.run([QEMU_X86, "-cpu", "Haswell", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "needs CPU features this CPU does not have: avx512f, avx512cd, avx512bw, avx512dq, avx512vl, avx512vnni." \
        in proc.stderr, proc.stderr
    assert not (tmp_path / "y.bin").exists()
    native = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert native.returncode == 0, native.stderr
    np.testing.assert_array_equal(np.fromfile(tmp_path / "y.bin", np.float32), np.ones(24, np.float32))

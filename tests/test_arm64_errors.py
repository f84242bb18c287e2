"""arm64-neon errors that need neither the cross compiler nor qemu: a missing cross compiler is named with
its Debian package, unknown CPU features and target names are refused."""
from __future__ import annotations

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType


def small_graph() -> compiler.Graph:
    g = compiler.Graph("arm_errors")
    x = g.add_input("x", (4, 8), DType.float32)
    g.outputs = list(g.add_node("MatMul", [x, g.add_const("w", np.ones((8, 4), np.float32))]).outputs)
    return g


def test_missing_cross_compiler_names_the_package(tmp_path, monkeypatch):
    import aotc
    monkeypatch.setenv("AOTC_ARM64_CC", "aarch64-no-such-gcc")
    g = small_graph()
    with pytest.raises(compiler.AotcError, match="apt-get install gcc-aarch64-linux-gnu"):
        aotc.compile(g, tmp_path / "b", target="arm64-neon", passes="none").path
    assert not (tmp_path / "b").exists()


def test_unknown_feature_is_refused():
    from aotc.targets.arm64.target import arm64_target
    with pytest.raises(compiler.AotcError, match="Unknown arm64 CPU feature 'avx512'"):
        arm64_target(cpu_features=["+avx512"])


def test_unknown_arm_target_name():
    from aotc.targets.base import get_target
    with pytest.raises(compiler.AotcError, match="Unknown target 'arm64-sve2'; aotc knows: .*arm64-neon"):
        get_target("arm64-sve2")


def test_missing_qemu_names_the_package(tmp_path, monkeypatch):
    from aotc.targets.arm64 import qemu
    monkeypatch.setattr(qemu, "is_native", lambda: False)
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)
    with pytest.raises(compiler.AotcError, match="apt-get install qemu-user-static"):
        qemu.runner_command(tmp_path)


def test_host_on_aarch64_is_arm64_neon(monkeypatch, tmp_path):
    import platform
    from aotc.targets.arm64 import target as arm
    from aotc.targets.base import get_target
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n")
    real_path = arm.Path
    monkeypatch.setattr(arm, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    t = get_target("host")
    assert t.name == "arm64-neon" and t.features == ("dotprod",)

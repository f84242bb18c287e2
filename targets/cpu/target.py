"""CPU target descriptions: what LLVM is asked for, how wide a float32 vector
is, and how the driver is compiled and linked. Shared by x86 (and later ARM)."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

from compiler.errors import AotcError


class UnknownTargetError(AotcError):
    """The --target name is not one aotc knows."""


@dataclass(frozen=True)
class CpuTarget:
    name: str                    # as written in the manifest
    llvm: dict                   # the TVM target dict (kind llvm, mcpu, mattr, ...)
    lanes: int                   # float32 lanes of one vector register
    cc: str = "gcc"
    cflags: tuple[str, ...] = field(default=("-O2",))
    description: str = ""
    cc_package: str = "gcc"      # the Debian package that provides `cc` (named when it is missing)
    conv_block: int = 0          # channels per block of the NCHWc conv layout (0: convolutions stay NCHW)

    def tvm_target(self):
        import tvm
        return tvm.target.Target(dict(self.llvm))

    def manifest(self) -> dict:
        m = {"name": self.name, "llvm": dict(sorted(self.llvm.items())), "vector_lanes_f32": self.lanes,
             "description": self.description}
        if self.conv_block:
            m["conv_layout"] = f"NCHW{self.conv_block}c"
        return m

    def bundle_extras(self, workdir) -> dict[str, bytes]:
        """Files besides model.so / weights.bin / driver.c this target puts in a bundle (e.g. a runner)."""
        return {}


X86_AVX512 = CpuTarget(
    name="x86-avx512",
    # znver4 makes LLVM use full zmm registers (skylake-avx512 prefers ymm); the ISA it assumes is the
    # AVX-512 F/BW/DQ/VL/VNNI/BF16 set every AVX-512 server CPU since Ice Lake / Zen 4 has.
    llvm={"kind": "llvm", "mcpu": "znver4"},
    lanes=16,
    conv_block=16,
    cflags=("-O2", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"),
    description="x86-64 with AVX-512 (zmm FMA)",
)

X86_AVX2 = CpuTarget(
    name="x86-avx2",
    llvm={"kind": "llvm", "mcpu": "haswell"},
    lanes=8,
    conv_block=8,
    cflags=("-O2", "-mavx2", "-mfma"),
    description="x86-64 with AVX2 + FMA",
)

TARGETS = {t.name: t for t in (X86_AVX512, X86_AVX2)}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def host_target() -> CpuTarget:
    """The best CPU target this machine runs."""
    if platform.machine() in ("aarch64", "arm64"):
        from targets.arm64.target import host_arm64_target
        return host_arm64_target()
    if platform.machine() not in ("x86_64", "AMD64"):
        raise UnknownTargetError(f"--target host: aotc has no CPU target for {platform.machine()} yet "
                                 f"(known: {', '.join(TARGETS)}).")
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return X86_AVX512
    if {"avx2", "fma"} <= flags:
        return X86_AVX2
    raise UnknownTargetError("--target host: this CPU has neither AVX-512 nor AVX2+FMA, which aotc's x86 "
                             "kernels need.")


def get_target(name: str) -> CpuTarget:
    if name == "host":
        return host_target()
    if name.startswith("arm64"):
        from targets.arm64.target import arm64_target
        return arm64_target(name)
    try:
        return TARGETS[name]
    except KeyError:
        raise UnknownTargetError(f"Unknown target {name!r}; aotc's CPU targets are: host, "
                                 f"{', '.join(TARGETS)}, arm64-neon.") from None

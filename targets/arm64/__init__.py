"""The arm64-neon target: aarch64 bundles cross-compiled on any host (see README.md)."""
from ..base import TargetOption, TargetSpec, register_target
from .target import KNOWN_FEATURES

register_target(TargetSpec(
    name="arm64-neon",
    description="aarch64 with NEON (cross-compiled; runs under qemu-aarch64 on other machines); sdot int8 "
                "kernels with +dotprod",
    factory="aotc.targets.arm64.target:arm64_target",
    loader="aotc.targets.arm64.qemu:QemuBundle",
    host="aotc.targets.arm64.target:host_arm64",
    host_rank=0,
    aliases={"arm64": {}, "arm64-neon-dotprod": {"cpu_features": ("dotprod",)}},
    options=(
        TargetOption("mcpu", "arm64-neon: the CPU to tune for (LLVM and gcc -mcpu, e.g. cortex-a76)."),
        TargetOption("cpu_features", "arm64-neon: extra CPU features, e.g. +dotprod (repeatable or "
                     f"comma-separated; known: {', '.join(KNOWN_FEATURES)}).", multiple=True),
        TargetOption("cross_cc", "arm64-neon: the cross compiler (default aarch64-linux-gnu-gcc, or "
                     "$AOTC_ARM64_CC)."),
        TargetOption("sysroot", "arm64-neon: the cross compiler's --sysroot."),
    ),
))

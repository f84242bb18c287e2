"""The CPU targets' description: what LLVM is asked for, how wide a float32
vector is, which int8 dot instruction the kernels may use, and how the
driver is compiled and linked. x86-avx512 and x86-avx2 are instances of
`CpuTarget`; arm64-neon subclasses it (targets/arm64/target.py).

The CPU family shares its lowering rules (targets/cpu/rules.py); a
`platform` names the overrides a target adds (`rule_modules` imports them),
and lowerings read `capabilities` instead of testing target names."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aotc.compiler.ir import Graph, Node

from ..base import BucketVariant, BuildContext, Capabilities, Target, TargetBuild
from ..elf_glibc import bundle_glibc


@dataclass(frozen=True)
class CpuTarget(Target):
    name: str                    # as written in the manifest
    llvm: dict                   # the TVM target dict (kind llvm, mcpu, mattr, ...)
    lanes: int                   # float32 lanes of one vector register
    cc: str = "gcc"
    cflags: tuple[str, ...] = field(default=("-O2",))
    description: str = ""
    cc_package: str = "gcc"      # the Debian package that provides `cc` (named when it is missing)
    conv_block: int = 0          # channels per block of the NCHWc conv layout (0: convolutions stay NCHW)
    int8_dot: str | None = None  # the int8 dot-product instruction the int8 kernels use
    platform: str = "x86"        # whose lowering overrides apply (lowering.lowers(..., platform=))
    rule_modules: tuple[str, ...] = ()  # modules that register this platform's overrides
    # Flags for the plain C a bundle carries besides the kernels (the runtime library): no vector ISA, so the
    # runtime loads, and says what is wrong, on any CPU of the architecture.
    runtime_cflags: tuple[str, ...] = ("-O2",)
    # The CPU features the kernels may use beyond the architecture's baseline, in LLVM's spelling: the
    # manifest lists them and the runtime refuses, with their names, a CPU that lacks one (instead of
    # dying of an illegal instruction in the first kernel that uses it).
    cpu_features: tuple[str, ...] = ()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(level="kernels", vector_lanes_f32=self.lanes, int8_dot=self.int8_dot,
                            dtypes=("float32", "int8", "uint8", "int32", "int64", "bool"),
                            conv_block=self.conv_block)

    def tvm_target(self):
        import tvm
        return tvm.target.Target(dict(self.llvm))

    def manifest(self) -> dict:
        m = {"name": self.name, "llvm": dict(sorted(self.llvm.items())), "vector_lanes_f32": self.lanes,
             "description": self.description}
        if self.conv_block:
            m["conv_layout"] = f"NCHW{self.conv_block}c"
        if self.cpu_features:
            m["cpu_features"] = list(self.cpu_features)
        return m

    def pipeline(self) -> list[tuple[str, dict]]:
        # What the kernels cannot run becomes what they can (int8 without an int8 kernel -> float), then the
        # layout pass (TVM's AlterOpLayout): convolution chains on NCHWc blocks of one vector.
        # Strided ConvTransposes become a stride-1 Conv + phase interleave (no products with inserted zeros).
        steps = [("fit_to_target", {}), ("subpixel_conv_transpose", {})]
        if self.conv_block:
            steps.append(("nchwc_layout", {"block": self.conv_block}))
        return steps

    def supports(self, node: Node) -> str | None:
        from .rules import check_node
        return check_node(node, Graph("scratch"), self)

    def toolchain_versions(self) -> dict[str, str]:
        # TVM (LLVM inside) generates the kernels; `cc` (the cross compiler on arm64) builds the driver and
        # the runtime library and links model.so
        from ..toolchains import command_version, package_version
        return {"tvm": package_version("apache-tvm"), "cc": command_version(self.cc)}

    def bundle_extras(self, workdir: Path) -> dict[str, bytes]:
        """Files besides model.so / weights.bin / driver.c this target puts in a bundle: the runtime library
        built for the target, with its header and a C example, so running a bundle needs no C compiler."""
        from ..runtime_library import runtime_files
        from .codegen import ToolchainError
        return runtime_files(self.cc, self.runtime_cflags, Path(workdir) / "runtime", ToolchainError)

    def compile(self, graph: Graph, ctx: BuildContext) -> TargetBuild:
        from .codegen import compile_graph
        cm = compile_graph(graph, self, ctx.workdir / "build", ctx.model_id, ctx.aotc_version, progress=ctx.progress,
                           max_memory=ctx.max_memory)
        return self._build(cm, self.bundle_extras(ctx.workdir / "build"))

    def compile_buckets(self, variants: list[BucketVariant], ctx: BuildContext) -> list[TargetBuild]:
        """One model.so per bucket over one weights.bin: every variant is lowered and planned first, so the
        constants of all of them can be laid out once (memory_plan.share_weights) before any kernel is built."""
        from .codegen import build_model, plan_graph
        from .memory_plan import share_weights
        from aotc.targets.memory_limit import check_memory_limit
        planned = [plan_graph(v.graph, self, ctx.max_memory) for v in variants]
        share_weights([p.plan for p in planned])
        for p in planned:  # each bucket loads the union of the weights
            check_memory_limit(p.plan, ctx.max_memory)
        extras = self.bundle_extras(ctx.workdir / "runtime-build")  # the same runtime for every variant
        builds = []
        for v, p in zip(variants, planned):
            ctx.progress(f"aotc: bucket {v.name}")
            cm = build_model(p, self, ctx.workdir / v.name, v.model_id, ctx.aotc_version, ctx.progress)
            builds.append(self._build(cm, extras))
        return builds

    def _build(self, cm, extras: dict[str, bytes]) -> TargetBuild:
        files = {"model.so": cm.model_so, "weights.bin": cm.plan.weights, "driver.c": cm.driver_c.encode(),
                 "kernels.json": (json.dumps(cm.calls_info, indent=1) + "\n").encode()}
        files.update(extras)
        manifest = {"arena_bytes": cm.plan.arena_bytes, "weight_bytes": cm.plan.weight_bytes,
                    "kernels": len(cm.kernels), "kernel_calls": cm.calls, "flops": cm.flops}
        glibc = bundle_glibc(files)
        if glibc:
            manifest["glibc"] = glibc  # the oldest glibc the native files load on (runtime_stub checks it)
        summary = (f"{len(cm.kernels)} kernels ({cm.calls} calls) for {self.name}, arena {cm.plan.arena_bytes} B, "
                   f"weights {cm.plan.weight_bytes} B")
        return TargetBuild(files, manifest, summary)


# The ISA each x86 target promises beyond x86-64-v2, in LLVM's names: x86-64-v3 (AVX2, FMA, BMI, ...), and
# for x86-avx512 AVX-512 F/CD/BW/DQ/VL + VNNI, which every AVX-512 server CPU since Cascade Lake and Zen 4
# has. The manifest lists it and the runtime checks it (runtime_stub/aotc_runtime.c: check_cpu).
X86_64_V3 = ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave")
AVX512_VNNI = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512vnni")

# LLVM's CPU models give the tuning and scheduling the kernels were measured with, but also their vendor's
# extensions: znver4 alone made LLVM emit SSE4A's `insertq` (an illegal instruction on Intel) and GFNI's
# `vgf2p8affineqb` (none on Cascade Lake). So every feature a model enables beyond the promise is switched
# off; tests/test_cpu_features.py asks LLVM that nothing else is left. (x86-64-v4, which enables exactly the
# promise, brings Skylake's tuning: 1-4% slower on swin-t and whisper-tiny in bench/zoo_before_after.py.)
ZNVER4_EXTRAS = ("adx", "aes", "avx512bf16", "avx512bitalg", "avx512ifma", "avx512vbmi", "avx512vbmi2",
                 "avx512vpopcntdq", "clflushopt", "clwb", "clzero", "fsgsbase", "gfni", "invpcid", "mwaitx", "pclmul",
                 "pku", "prfchw", "rdpid", "rdpru", "rdrnd", "rdseed", "sha", "shstk", "sse4a", "vaes", "vpclmulqdq",
                 "wbnoinvd", "xsavec", "xsaveopt", "xsaves")
HASWELL_EXTRAS = ("fsgsbase", "invpcid", "pclmul", "rdrnd", "xsaveopt")


def _without(extras: tuple[str, ...]) -> list[str]:
    return [f"-{f}" for f in extras]


X86_AVX512 = CpuTarget(
    name="x86-avx512",
    # znver4 makes LLVM use full zmm registers (skylake-avx512 and x86-64-v4 prefer ymm).
    llvm={"kind": "llvm", "mcpu": "znver4", "mattr": _without(ZNVER4_EXTRAS)},
    lanes=16,
    conv_block=16,
    int8_dot="vpdpbusd",
    cflags=("-O2", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"),
    description="x86-64 with AVX-512 (zmm FMA)",
    cpu_features=X86_64_V3 + AVX512_VNNI,
)

X86_AVX2 = CpuTarget(
    name="x86-avx2",
    llvm={"kind": "llvm", "mcpu": "haswell", "mattr": _without(HASWELL_EXTRAS)},
    lanes=8,
    conv_block=8,
    cflags=("-O2", "-mavx2", "-mfma"),
    description="x86-64 with AVX2 + FMA",
    cpu_features=X86_64_V3,
)

X86_TARGETS = {t.name: t for t in (X86_AVX512, X86_AVX2)}


def make_x86_target(name: str) -> CpuTarget:
    return X86_TARGETS[name]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _is_x86() -> bool:
    import platform
    return platform.machine() in ("x86_64", "AMD64")


# /proc/cpuinfo's names for the LLVM features that it spells otherwise.
CPUINFO_NAMES = {"bmi": "bmi1", "lzcnt": "abm", "avx512vnni": "avx512_vnni"}


def host_has(target: CpuTarget) -> bool:
    return _is_x86() and {CPUINFO_NAMES.get(f, f) for f in target.cpu_features} <= cpu_flags()


def host_avx512() -> dict | None:
    return {} if host_has(X86_AVX512) else None


def host_avx2() -> dict | None:
    return {} if host_has(X86_AVX2) else None

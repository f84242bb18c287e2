"""The CUDA targets: `cuda-sm90`, `cuda-sm80`, and `cuda` (one fatbin with sm_80 and sm_90 SASS plus compute_90
PTX). A `CudaTarget` offers what the CPU family's lowering rules read (`platform`, `rule_modules`, `lanes`,
`capabilities`), because the CUDA kernels start from those rules' TE computes (targets/cuda/kernels.py)."""
from __future__ import annotations

from dataclasses import dataclass

from aotc.compiler.ir import Graph, Node

from ..base import BuildContext, Capabilities, Target, TargetBuild

ARCH_SETS = {"sm_80": ("sm_80",), "sm_90": ("sm_90",), "all": ("sm_80", "sm_90")}


@dataclass(frozen=True)
class CudaTarget(Target):
    name: str
    arch: str = "all"              # sm_80, sm_90 or all
    allow_tf32: bool = False
    debug: bool = False            # synchronize and check after every launch (driver built with AOTC_CUDA_DEBUG)
    cc: str = "gcc"                # links the host driver
    # The CPU lowering rules' knobs. lanes sets the packing of constant GEMM operands ([N/NR, K, NR] panels), a
    # layout the GPU kernels read as well as any; no platform overrides: int8 kernels need VNNI/sdot, so int8
    # nodes run in float here (fit_to_target).
    lanes: int = 16
    platform: str = "cuda"
    rule_modules: tuple[str, ...] = ()

    @property
    def archs(self) -> tuple[str, ...]:
        return ARCH_SETS[self.arch]

    @property
    def description(self) -> str:
        return f"NVIDIA GPUs ({', '.join(self.archs)}): TVM CUDA kernels, static launch table, cudart_static"

    @property
    def capabilities(self) -> Capabilities:
        # conv_block 0: NCHW convolutions (the NCHWc layout is a CPU vector layout); int8_dot None: no int8 kernels.
        return Capabilities(level="kernels", vector_lanes_f32=0, int8_dot=None,
                            dtypes=("float32", "int32", "int64", "bool", "uint8", "int8"), conv_block=0)

    def tvm_target(self):
        import tvm
        # TVM's codegen takes one arch; the source it prints holds no arch-specific intrinsics for the fp32
        # SIMT schedules used here, and nvcc compiles it for every arch of the fatbin.
        return tvm.target.Target({"kind": "cuda", "arch": self.archs[0]})

    def manifest(self) -> dict:
        return {"name": self.name, "archs": list(self.archs), "allow_tf32": self.allow_tf32, "debug": self.debug,
                "description": self.description}

    def pipeline(self) -> list[tuple[str, dict]]:
        return [("fit_to_target", {})]

    def toolchain_versions(self) -> dict[str, str]:
        # TVM prints the kernels' CUDA source, nvcc compiles it into the fatbin, `cc` links the host driver
        from ..toolchains import command_version, package_version
        from .fatbin import nvcc_path
        return {"tvm": package_version("apache-tvm"), "nvcc": command_version(nvcc_path() or "nvcc", "release"),
                "cc": command_version(self.cc)}

    def supports(self, node: Node) -> str | None:
        from aotc.targets.cpu.rules import check_node
        from aotc.targets.cpu.schedules import compute_only
        with compute_only():
            return check_node(node, Graph("scratch"), self)

    def compile(self, graph: Graph, ctx: BuildContext) -> TargetBuild:
        from .codegen import ABI_VERSION, compile_graph
        cm = compile_graph(graph, self, ctx.workdir / "build", ctx.model_id, ctx.aotc_version, progress=ctx.progress,
                           max_memory=ctx.max_memory)
        manifest = {"arena_bytes": cm.plan.arena_bytes, "weight_bytes": cm.plan.weight_bytes,
                    "kernels": len(cm.kernels), "kernel_calls": cm.calls, "launches": len(cm.launches),
                    "flops": cm.flops, "cuda_abi_version": ABI_VERSION, "archs": list(self.archs)}
        summary = (f"{len(cm.kernels)} CUDA kernels ({len(cm.launches)} launches) for {', '.join(self.archs)}, "
                   f"arena {cm.plan.arena_bytes} B, weights {cm.plan.weight_bytes} B")
        return TargetBuild(cm.files, manifest, summary)


def make_cuda_target(name: str, arch: str | None = None, allow_tf32: bool = False,
                     debug_launches: bool = False) -> CudaTarget:
    arch = arch or "all"
    return CudaTarget(name=name if arch == "all" else f"cuda-{arch.replace('_', '')}", arch=arch,
                      allow_tf32=bool(allow_tf32), debug=bool(debug_launches))

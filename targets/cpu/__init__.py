"""The x86 CPU targets (x86-avx512, x86-avx2): TVM kernels with aotc's own schedule rules, memory planning
and the AOT C driver. The lowering rules here are shared with arm64-neon (targets/arm64)."""
from ..base import TargetSpec, register_target

register_target(TargetSpec(
    name="x86-avx512",
    description="x86-64 with AVX-512 F/BW/DQ/VL + VNNI: zmm FMA kernels, vpdpbusd int8 kernels",
    factory="aotc.targets.cpu.target:make_x86_target",
    loader="aotc.targets.base:InProcessBundle",
    host="aotc.targets.cpu.target:host_avx512",
    host_rank=0,
))

register_target(TargetSpec(
    name="x86-avx2",
    description="x86-64 with AVX2 + FMA: ymm FMA kernels; int8 nodes run in float (no VNNI)",
    factory="aotc.targets.cpu.target:make_x86_target",
    loader="aotc.targets.base:InProcessBundle",
    host="aotc.targets.cpu.target:host_avx2",
    host_rank=1,
))

"""The CUDA targets (cuda, cuda-sm80, cuda-sm90): TVM CUDA kernels generated offline from the CPU family's
compute definitions, one nvcc fatbin, a generated C driver with a static launch table linked with
libcudart_static; bundles need only the NVIDIA driver. See targets/cuda/README.md."""
from ..base import TargetOption, TargetSpec, register_target

register_target(TargetSpec(
    name="cuda",
    description="NVIDIA GPUs: one fatbin with sm_80 + sm_90 SASS and compute_90 PTX (aliases pick one arch)",
    factory="aotc.targets.cuda.target:make_cuda_target",
    loader="aotc.targets.cuda.loader:CudaBundle",
    options=(
        TargetOption("arch", "GPU architectures in the fatbin (all: sm_80 and sm_90 SASS + compute_90 PTX)",
                     choices=("all", "sm_80", "sm_90"), default="all"),
        TargetOption("allow_tf32", "let fp32 matmuls use TF32 tensor cores (off: IEEE fp32; the current kernels "
                     "are fp32 FMA either way)", type=bool, default=False),
        TargetOption("debug_launches", "synchronize and check for errors after every kernel launch", type=bool,
                     default=False),
    ),
    aliases={"cuda-sm80": {"arch": "sm_80"}, "cuda-sm90": {"arch": "sm_90"}},
))

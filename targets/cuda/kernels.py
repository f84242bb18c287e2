"""CUDA kernels from the CPU family's compute definitions: every lowering's TE compute (built without its CPU
schedule, targets/cpu/schedules.compute_only), scheduled by TVM's dlight GPU rules, lowered by TVM's TIR
pipeline for the CUDA target and printed as CUDA C by TVM's CUDA codegen. No GPU and no nvcc are needed here;
targets/cuda/fatbin.py compiles the source.

What the AOT driver needs besides the source is each kernel's launch: grid, block, dynamic shared memory and
argument order. TVM writes them into the host half of the lowered module (one `call_ffi_kernel` per launch),
and the kernel's parameter order there is the device function's, not the PrimFunc's (a layernorm's was
Bt, G, out, X), so targets/cuda/launches.py reads them from that host code instead of assuming an order."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from compiler.errors import AotcError

from .launches import Launch, launches_of

# dlight's GPU rules, most specific first (TVM's own default order): the first that applies schedules the
# function; Fallback binds whatever is left to blocks and threads.
RULE_NAMES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")


class CudaCodegenError(AotcError):
    """TVM could not schedule or lower a kernel for CUDA; the message names the node."""


@dataclass
class CudaKernels:
    source: str                            # CUDA C of every kernel
    launches: dict[str, list[Launch]]      # PrimFunc name -> its launches, in order


def dlight_rules():
    from tvm.s_tir import dlight as dl
    return [getattr(dl.gpu, n)() for n in RULE_NAMES]


def schedule_for_gpu(func, tvm_target, what: str):
    """`func` (unscheduled) scheduled by the first dlight rule that applies."""
    import tvm
    from tvm.s_tir import dlight as dl
    mod = tvm.IRModule({"main": func})
    try:
        with tvm_target:
            mod = dl.ApplyDefaultSchedule(*dlight_rules())(mod)
    except Exception as e:  # a rule that matched but could not finish: a compiler bug, name the kernel
        raise CudaCodegenError(f"Scheduling {what} for CUDA failed: {str(e).strip().splitlines()[-1][:400]}") \
            from e
    return mod["main"]


def tir_build_module():
    """TVM's tirx.build module (the package attribute of that name is the build function, not the module)."""
    import tvm.tirx  # noqa: F401
    return sys.modules["tvm.tirx.build"]


def build_cuda(funcs: dict, tvm_target, what: dict[str, str]) -> CudaKernels:
    """funcs: name -> scheduled PrimFunc (global_symbol = name). One TIR pipeline over all of them, the host
    halves read for launches, the device halves printed as one CUDA source."""
    import tvm
    from tvm.target import Target
    tb = tir_build_module()
    mod = tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in funcs.items()})
    # The host half is never compiled (the AOT driver replaces it): "c" keeps it target-neutral.
    mod = tvm.tirx.transform.BindTarget(tvm_target.with_host(Target({"kind": "c"})))(mod)
    pipeline, _, finalize_device = tvm.tirx.get_tir_pipeline("s_tir")
    try:
        mod = pipeline(mod)
    except Exception as e:
        raise CudaCodegenError(f"Lowering CUDA kernels failed ({', '.join(sorted(what.values()))[:300]}): "
                               f"{str(e).strip().splitlines()[-1][:400]}") from e
    host, devices = tb.split_host_device_mods(mod)
    launches = {}
    for gv, f in host.functions.items():
        if gv.name_hint in funcs:
            launches[gv.name_hint] = launches_of(f, funcs[gv.name_hint], what[gv.name_hint])
    sources = []
    for tgt, dev in devices.items():
        dev = finalize_device()(dev)
        sources.append(tb.codegen_build(dev, tgt).inspect_source("cuda"))
    return CudaKernels("\n".join(sources), launches)

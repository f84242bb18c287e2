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

from aotc.compiler.errors import AotcError

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
    workspaces: dict[str, list[int]]       # PrimFunc name -> bytes of each intermediate device buffer


def dlight_rules():
    from tvm.s_tir import dlight as dl
    return [getattr(dl.gpu, n)() for n in RULE_NAMES]


def schedule_for_gpu(func, tvm_target, what: str):
    """`func` (unscheduled) scheduled by the first dlight rule that applies and succeeds. A rule that matches
    the pattern but fails on the details (Matmul on a depthwise convolution's strided window) gives way to the
    next one; Fallback schedules anything injective or reducing."""
    import tvm
    from tvm.s_tir import dlight as dl
    errors = []
    for rule in dlight_rules():
        try:
            with tvm_target:
                mod = dl.ApplyDefaultSchedule(rule)(tvm.IRModule({"main": func}))
        except Exception as e:  # noqa: BLE001 - TVM raises its own error types; the next rule may fit
            errors.append(f"{type(rule).__name__}: {str(e).strip().splitlines()[-1][:200]}")
            continue
        if mod["main"].attrs is None or "tirx.is_scheduled" not in mod["main"].attrs:
            continue
        # A schedule TVM cannot lower (a cross-thread reduction over aotc's NaN-propagating max, whose
        # combiner TVM's allreduce does not recognize) gives way to the next rule: Fallback keeps
        # reductions within one thread.
        problem = lowering_problem(mod["main"], tvm_target)
        if problem is None:
            return mod["main"]
        errors.append(f"{type(rule).__name__}: {problem}")
    raise CudaCodegenError(f"No GPU schedule rule fits {what} ({'; '.join(errors) or 'no rule applies'}).")


def lowering_problem(func, tvm_target) -> str | None:
    """Why TVM's TIR pipeline cannot lower the scheduled `func` for CUDA, or None."""
    import tvm
    from tvm.target import Target
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    mod = tvm.tirx.transform.BindTarget(tvm_target.with_host(Target({"kind": "c"})))(mod)
    try:
        tvm.tirx.get_tir_pipeline("s_tir")[0](mod)
    except Exception as e:  # noqa: BLE001
        return _last_line(e)
    return None


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
    except Exception:  # noqa: BLE001 - find and name the kernels that fail, one by one
        bad = []
        for n in funcs:
            try:
                pipeline(tvm.IRModule({n: mod[n]}))
            except Exception as e:  # noqa: BLE001
                bad.append(f"{what[n]}: {_last_line(e)}")
        raise CudaCodegenError(f"TVM could not lower {len(bad)} CUDA kernel(s): {'; '.join(bad)[:1500]}.") from None
    host, devices = tb.split_host_device_mods(mod)
    launches, workspaces = {}, {}
    for gv, f in host.functions.items():
        if gv.name_hint in funcs:
            launches[gv.name_hint], workspaces[gv.name_hint] = launches_of(f, funcs[gv.name_hint], what[gv.name_hint])
    sources = []
    for tgt, dev in devices.items():
        dev = finalize_device()(dev)
        sources.append(tb.codegen_build(dev, tgt).inspect_source("cuda"))
    return CudaKernels("\n".join(sources), launches, workspaces)


def _last_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip() and not set(ln.strip()) <= set("^~ ")]
    return lines[-1][:300] if lines else type(e).__name__

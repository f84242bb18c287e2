"""From a graph to a CUDA bundle's files: lower every node with the CPU family's rules (their TE computes, not
their CPU schedules), schedule and print the kernels for CUDA (kernels.py), plan the arena (the CPU family's
planner: the same lifetimes on a device), build the launch table, compile the fatbin with nvcc (fatbin.py),
render the driver (templates/driver.c.j2) and link model.so against the static CUDA runtime.

Reproducibility: kernels are named in graph order, nvcc and the C compiler run in a fixed folder on relative
names, the link drops the build id and strips symbols."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import jinja2

from aotc.compiler.errors import AotcError
from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Graph, Value
from aotc.compiler.progress import task
from aotc.targets.cpu.codegen import _cstr, kernel_name
from aotc.targets.cpu.lowering import Call, Operand
from aotc.targets.cpu.memory_plan import MemoryPlan, align, plan_memory
from aotc.targets.cpu.rules import lower_graph
from aotc.targets.cpu.schedules import compute_only
from aotc.targets.memory_limit import check_memory_limit

from .fatbin import ARCH_LIMITS, build_fatbin, nvcc_path
from .kernels import build_cuda, schedule_for_gpu

if TYPE_CHECKING:
    from .target import CudaTarget

TEMPLATES = Path(__file__).parent / "templates"
ABI_VERSION = 1          # the aotc_cuda_* entry points of model.so (templates/driver.c.j2)
BASE_ARENA, BASE_WEIGHTS, BASE_IO = 0, 1, 2


class CudaBuildError(AotcError):
    """The CUDA toolchain is missing or failed, or a kernel does not fit the target GPUs."""


@dataclass
class CudaModel:
    files: dict[str, bytes]
    plan: MemoryPlan
    kernels: list[str]
    launches: list[dict]
    calls: int
    flops: int


def cuda_home(nvcc: str) -> Path:
    """The toolkit folder of `nvcc` (its bin/ may be a wrapper script elsewhere, as /usr/local/bin/nvcc here)."""
    real = Path(nvcc).resolve()
    text = real.read_bytes()[:400]
    m = re.search(rb"exec\s+(\S+/bin/nvcc)", text)  # a shell wrapper: follow it
    if m:
        real = Path(m.group(1).decode()).resolve()
    return real.parent.parent


def link_flags(home: Path) -> tuple[list[str], list[str]]:
    lib = next((home / d for d in ("lib64", "lib", "targets/x86_64-linux/lib")
                if (home / d / "libcudart_static.a").is_file()), None)
    if lib is None or not (home / "include" / "cuda_runtime_api.h").is_file():
        raise CudaBuildError(f"The CUDA toolkit at {home} has no libcudart_static.a or cuda_runtime_api.h; the "
                             f"CUDA targets link the runtime statically so bundles need only the NVIDIA driver.")
    return [f"-I{home / 'include'}"], [str(lib / "libcudart_static.a"), "-ldl", "-lrt", "-lpthread"]


def bindings(graph: Graph, plan: MemoryPlan) -> tuple[dict[str, int], list[bool], list[bool]]:
    """Which storages a device-pointer run binds to the caller's buffers: storage name -> base index, and per
    input/output whether it is bound. A storage shared by two inputs/outputs, or a constant, is copied."""
    root = {v.name: st.name for st in plan.storages for v in st.values}
    io = [root[v.name] for v in graph.inputs] + [root[v.name] for v in graph.outputs]
    const = {st.name for st in plan.storages if st.const}
    bound = [io.count(s) == 1 and s not in const for s in io]
    base = {s: BASE_IO + k for k, (s, b) in enumerate(zip(io, bound)) if b}
    return base, bound[:len(graph.inputs)], bound[len(graph.inputs):]


def compile_graph(graph: Graph, target: "CudaTarget", workdir: Path, model_id: str, aotc_version: str,
                  progress: Callable[[str], None] = lambda msg: None, max_memory: int | None = None) -> CudaModel:
    nvcc = nvcc_path()
    if nvcc is None:
        raise CudaBuildError("The CUDA targets compile kernels with nvcc (CUDA 12.x/13.x toolkit), which is not on "
                             "PATH or in /usr/local/cuda/bin; install the toolkit or set AOTC_NVCC.")
    cflags, libs = link_flags(cuda_home(nvcc))
    tvm_target = target.tvm_target()
    with compute_only():  # the CPU rules' TE computes, without their CPU schedules
        steps, _ = lower_graph(graph, target)
        calls = [s for s in steps if isinstance(s, Call)]
        names: dict[str, str] = {}
        firsts: dict[str, Call] = {}
        for c in calls:
            if c.key not in names:
                names[c.key] = kernel_name(len(names), c.node.op_type)
                firsts[c.key] = c
            c.kernel = names[c.key]
        progress(f"aotc: {len(graph.nodes)} nodes -> {len(calls)} kernel calls, {len(names)} distinct kernels")
        funcs, what = {}, {}
        with task("scheduling CUDA kernels", total=len(names)) as step:
            for key, name in names.items():
                c = firsts[key]
                what[name] = f"node {c.node.name!r} ({c.node.op_type})"
                funcs[name] = schedule_for_gpu(c.build(), tvm_target, what[name])
                step.advance()
    progress(f"aotc: lowering {len(funcs)} kernels for CUDA {', '.join(target.archs)}")
    built = build_cuda(funcs, tvm_target, what)
    # Intermediate device buffers of multi-kernel functions (TVM's host code would allocate them per call):
    # written operands of their call, so the planner gives them arena space for that call only.
    for c in calls:
        for k, nbytes in enumerate(built.workspaces[c.kernel]):
            c.operands.append(Operand(Value(f"{c.node.name}.{c.kernel}.ws{k}", (nbytes,), DType.uint8), (nbytes,)))
            c.num_outputs += 1
    plan = plan_memory(graph, steps)
    check_memory_limit(plan, max_memory)

    # The launch table, in graph order: every launch of every call, its arguments placed by the plan.
    weights_at = align(plan.arena_bytes, 256)
    base_of, in_bound, out_bound = bindings(graph, plan)
    root = {v.name: st for st in plan.storages for v in st.values}
    symbols: list[str] = []
    args, launches, profile = [], [], []
    for c in calls:
        for ln in built.launches[c.kernel]:
            if ln.kernel not in symbols:
                symbols.append(ln.kernel)
            first = len(args)
            for p in ln.params:
                v = c.operands[p].value
                st = root[v.name]
                if st.name in base_of:
                    args.append({"base": base_of[st.name], "offset": 0})
                else:
                    where, off = plan.place[v.name]
                    args.append({"base": BASE_WEIGHTS if where == "weights" else BASE_ARENA, "offset": off,
                                 "nbytes": v.nbytes})
            launches.append({"kernel": symbols.index(ln.kernel), "symbol": ln.kernel, "grid": list(ln.grid),
                             "block": list(ln.block), "dyn_smem": ln.dyn_smem, "first_arg": first,
                             "num_args": len(ln.params), "node": c.node.name, "op": c.node.op_type})
        profile.append({"kernel": c.kernel, "node": c.node.name, "op": c.node.op_type, "flops": int(c.flops),
                        "bytes": int(sum(math.prod(o.shape) * o.dtype.itemsize for o in c.operands)),
                        "launches": [ln.kernel for ln in built.launches[c.kernel]]})
    check_launches(launches, args, plan, target.archs)

    def io(v, bound):
        where, off = plan.place[v.name]
        return {"base": BASE_WEIGHTS if where == "weights" else BASE_ARENA, "offset": off, "nbytes": v.nbytes,
                "bound": int(bound)}

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["cstr"] = _cstr
    driver = env.get_template("driver.c.j2").render(
        aotc_version=aotc_version, target=target.name, archs=target.archs, model_id=model_id, kernels=symbols,
        launches=launches, args=args, inputs=[io(v, b) for v, b in zip(graph.inputs, in_bound)],
        outputs=[io(v, b) for v, b in zip(graph.outputs, out_bound)], arena_bytes=plan.arena_bytes,
        weight_bytes=plan.weight_bytes, weights_at=weights_at, abi_version=ABI_VERSION,
        max_args=max([ln["num_args"] for ln in launches] + [1]))

    build = workdir
    build.mkdir(parents=True, exist_ok=True)
    progress(f"aotc: nvcc: {len(symbols)} kernels -> fatbin ({', '.join(target.archs)})")
    fatbin, resources = build_fatbin(built.source, target.archs, build)
    check_resources(resources, launches, target.archs)
    (build / "driver.c").write_text(driver)
    # AOTC_DRIVER_CFLAGS: extra flags for the driver (e.g. -DAOTC_CUDA_DEBUG: synchronize after every launch).
    extra = shlex.split(os.environ.get("AOTC_DRIVER_CFLAGS", "")) + (["-DAOTC_CUDA_DEBUG"] if target.debug else [])
    cmd = [target.cc, "-O2", "-std=gnu11", "-fPIC", "-shared", "-fvisibility=hidden", *cflags, *extra,
           "-o", "model.so", "driver.c", *libs, "-Wl,--build-id=none", "-Wl,--hash-style=gnu",
           *([] if os.environ.get("AOTC_KEEP_SYMBOLS") else ["-Wl,-s"]), "-ffile-prefix-map=" + str(build) + "=."]
    if shutil.which(target.cc) is None:
        raise CudaBuildError(f"The CUDA targets link model.so with {target.cc!r}, which is not on PATH; install it "
                             f"with `apt-get install gcc` (Debian/Ubuntu).")
    progress(f"aotc: linking model.so ({target.cc}, libcudart_static)")
    proc = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CudaBuildError(f"Linking model.so failed ({' '.join(cmd)}): {proc.stderr.strip()[:2000]}")
    files = {"model.so": (build / "model.so").read_bytes(), "weights.bin": plan.weights, "driver.c": driver.encode(),
             "kernels.cu": built.source.encode(), "model.fatbin": fatbin,
             "kernels.json": (json.dumps(profile, indent=1) + "\n").encode(),
             "launches.json": (json.dumps({"archs": list(target.archs), "arena_bytes": plan.arena_bytes,
                                           "weight_bytes": plan.weight_bytes, "launches": launches, "args": args,
                                           "resources": resources}, indent=1) + "\n").encode()}
    return CudaModel(files, plan, symbols, launches, len(calls), sum(int(c.flops) for c in calls))


def check_launches(launches: list[dict], args: list[dict], plan: MemoryPlan, archs) -> None:
    """Every launch within what the GPUs allow, every argument inside the arena or the weights: a compiler
    bug caught here, not a fault on the device."""
    smem_limit = min(ARCH_LIMITS[a]["smem_per_block"] for a in archs)
    for ln in launches:
        threads = math.prod(ln["block"])
        where = f"launch of {ln['symbol']} for node {ln['node']!r}"
        if not 1 <= threads <= 1024 or ln["block"][2] > 64:
            raise CudaBuildError(f"The {where} has a block of {ln['block']} threads (at most 1024, z at most 64).")
        if not all(1 <= g < 2 ** 31 for g in ln["grid"]) or ln["grid"][1] > 65535 or ln["grid"][2] > 65535:
            raise CudaBuildError(f"The {where} has a grid of {ln['grid']} blocks, beyond CUDA's limits.")
        if ln["dyn_smem"] > smem_limit:
            raise CudaBuildError(f"The {where} asks for {ln['dyn_smem']} bytes of dynamic shared memory; "
                                 f"{'/'.join(archs)} allow{'s' if len(archs) == 1 else ''} {smem_limit}.")
    for a in args:
        size = plan.arena_bytes if a["base"] == BASE_ARENA else plan.weight_bytes if a["base"] == BASE_WEIGHTS \
            else None
        if size is not None and not 0 <= a["offset"] <= a["offset"] + a.get("nbytes", 0) <= size:
            raise CudaBuildError(f"A kernel argument at offset {a['offset']} lies outside its "
                                 f"{'arena' if a['base'] == BASE_ARENA else 'weights'} ({size} bytes).")


def check_resources(resources: list[dict], launches: list[dict], archs) -> None:
    """ptxas's numbers against each arch: shared memory (static + the launch's dynamic) within the block limit."""
    dyn = {}
    for ln in launches:
        dyn[ln["symbol"]] = max(dyn.get(ln["symbol"], 0), ln["dyn_smem"])
    for r in resources:
        limit = ARCH_LIMITS[r["arch"]]["smem_per_block"]
        if r["smem"] + dyn.get(r["kernel"], 0) > limit:
            raise CudaBuildError(f"Kernel {r['kernel']} needs {r['smem'] + dyn.get(r['kernel'], 0)} bytes of shared "
                                 f"memory on {r['arch']}, more than its {limit}.")

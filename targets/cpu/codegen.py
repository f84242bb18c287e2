"""From a lowered, memory-planned graph to model.so: build each distinct
kernel once, compile them with TVM/LLVM into object files, render the AOT
driver from its jinja2 template and link both with the system C compiler.

Reproducibility: kernel names are assigned in graph order, objects are
written and linked in a fixed scratch directory layout with relative names,
and the link drops the build id and strips symbol tables, so the same graph
and target give the same model.so byte for byte."""
from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable
from pathlib import Path

import jinja2

from aotc.compiler.dtypes import DType
from aotc.compiler.progress import task
from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph

from aotc.targets.memory_limit import check_memory_limit
from aotc.targets.runtime_library import OLD_GLIBC_LIBS, glibc_compat_source

from .bounds_check import checking, out_of_bounds_access
from .lowering import Call
from .memory_plan import MemoryPlan, plan_memory
from .rules import lower_graph

if TYPE_CHECKING:
    from .target import CpuTarget

TEMPLATES = Path(__file__).parent / "templates"
KERNELS_PER_OBJECT = 12

# DLPack type codes (kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6).
DL_TYPE = {DType.float32: (2, 32), DType.float16: (2, 16), DType.bfloat16: (4, 16), DType.int8: (0, 8),
           DType.uint8: (1, 8), DType.int32: (0, 32), DType.int64: (0, 64), DType.bool: (6, 8)}


class ToolchainError(AotcError):
    """The C compiler or linker failed on generated code."""


@dataclass
class CompiledModel:
    model_so: bytes
    driver_c: str
    plan: MemoryPlan
    calls_info: list  # per kernel call, in order: kernel, node, op, flops, bytes moved, operand shapes
    kernels: list[str]
    calls: int
    flops: int
    model_id: str


def _cstr(s: str) -> str:
    """A C string literal holding `s`'s UTF-8 bytes: printable ASCII as is, every other byte as an octal
    escape (JSON's \\uXXXX escapes are not C: \\u0001 does not compile, and names reach the runtime byte for
    byte, where they must equal the manifest's)."""
    out = []
    for b in s.encode("utf-8", "surrogatepass"):
        ch = chr(b)
        out.append(ch if 0x20 <= b < 0x7F and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def bytes_moved(call: Call) -> int:
    """Bytes a kernel call reads and writes: its operands, except that an op which reads only part of its data
    input (Gather, Slice) is counted as reading as much of it as it writes."""
    sizes = [math.prod(o.shape) * o.dtype.itemsize for o in call.operands]
    if call.node.op.reads_part_of_input0 and call.node.inputs and call.operands[0].value is call.node.inputs[0]:
        sizes[0] = min(sizes[0], sum(sizes[len(sizes) - call.num_outputs:]))
    return int(sum(sizes))


def kernel_name(i: int, op_type: str) -> str:
    return f"k{i:03d}_" + re.sub(r"[^0-9a-zA-Z]+", "_", op_type).lower()


@dataclass
class PlannedGraph:
    """A graph lowered to kernel calls with its memory plan, before any kernel is built: the point where
    shape buckets (targets/cpu/target.py compile_buckets) merge the weights of several graphs into one."""
    graph: Graph
    steps: list
    plan: MemoryPlan


def plan_graph(graph: Graph, target: CpuTarget, max_memory: int | None = None) -> PlannedGraph:
    """Lower `graph` for `target` and plan its memory (refused here when it needs more than `max_memory`)."""
    if shutil.which(target.cc) is None:
        raise ToolchainError(f"The {target.name} target links with {target.cc!r}, which is not on PATH; install it "
                             f"with `apt-get install {target.cc_package}` (Debian/Ubuntu).")
    steps, _ = lower_graph(graph, target)
    plan = plan_memory(graph, steps)
    check_memory_limit(plan, max_memory)  # before any kernel is built
    return PlannedGraph(graph, steps, plan)


def compile_graph(graph: Graph, target: CpuTarget, workdir: Path, model_id: str, aotc_version: str,
                  progress: Callable[[str], None] = lambda msg: None,
                  max_memory: int | None = None) -> CompiledModel:
    return build_model(plan_graph(graph, target, max_memory), target, workdir, model_id, aotc_version, progress)


def build_model(planned: PlannedGraph, target: CpuTarget, workdir: Path, model_id: str, aotc_version: str,
                progress: Callable[[str], None] = lambda msg: None) -> CompiledModel:
    """model.so for a planned graph: its kernels built with TVM/LLVM, the driver rendered and linked."""
    import tvm

    graph, steps, plan = planned.graph, planned.steps, planned.plan
    calls = [s for s in steps if isinstance(s, Call)]

    # One kernel per distinct key, named in order of first use.
    kernels: dict[str, str] = {}
    builders = {}
    for c in calls:
        if c.key not in kernels:
            kernels[c.key] = kernel_name(len(kernels), c.label or c.node.op_type)
            builders[c.key] = c
        c.kernel = kernels[c.key]
    names = list(kernels.values())
    progress(f"aotc: {len(graph.nodes)} nodes -> {len(calls)} kernel calls, {len(names)} distinct kernels "
              f"(arena {plan.arena_bytes} B, weights {plan.weight_bytes} B)")

    funcs = {}
    checking_bounds, tvm_target = checking(), target.tvm_target()
    with task("scheduling kernels", total=len(names)) as step:
        for i, (key, name) in enumerate(kernels.items()):
            call = builders[key]
            progress(f"aotc: [{i + 1}/{len(names)}] scheduling {name} ({call.node.op_type} {call.node.name})")
            try:
                funcs[name] = call.build().with_attr("global_symbol", name)
            except Exception as e:  # a schedule rule that does not fit: a compiler bug, name the node
                raise RuntimeError(f"building kernel {name} for node {call.node.name!r} ({call.node.op_type}, "
                                   f"operands {[o.shape for o in call.operands]}) failed: {e}") from e
            if checking_bounds:
                oob = out_of_bounds_access(funcs[name], tvm_target)
                if oob:
                    raise RuntimeError(f"kernel {name} for node {call.node.name!r} ({call.node.op_type}) accesses "
                                       f"memory outside its buffers: {oob}")
            step.advance()

    tgt = target.tvm_target()
    workdir.mkdir(parents=True, exist_ok=True)
    objects = []
    with task("compiling kernels with LLVM", total=len(names)) as step:
        for start in range(0, len(names), KERNELS_PER_OBJECT):
            chunk = names[start:start + KERNELS_PER_OBJECT]
            progress(f"aotc: compiling kernels {start + 1}-{start + len(chunk)} of {len(names)} with LLVM")
            ex = tvm.compile(tvm.IRModule({n: funcs[n] for n in chunk}), target=tgt)
            obj = f"kernels{start // KERNELS_PER_OBJECT:03d}.o"
            ex.mod.write_to_file(str(workdir / obj))
            objects.append(obj)
            step.advance(len(chunk))

    # The driver's tables.
    shapes: list[tuple] = []
    shape_ids: dict[tuple, int] = {}
    args, call_specs, profile = [], [], []
    for c in calls:
        first = len(args)
        for o in c.operands:
            where, off = plan.place[o.value.name]
            if o.shape not in shape_ids:
                shape_ids[o.shape] = len(shapes)
                shapes.append(o.shape)
            code, bits = DL_TYPE[o.dtype]
            args.append({"where": 0 if where == "arena" else 1, "offset": off, "ndim": len(o.shape),
                         "code": code, "bits": bits, "shape_id": shape_ids[o.shape]})
        call_specs.append({"kernel": c.kernel, "node": c.node.name, "first_arg": first,
                           "num_args": len(c.operands)})
        # What `aotc profile` sets each call's measured time against (the roofline's two axes), and the
        # operands' shapes (outputs last), which say what kind of a kernel a slow one is (bench/cliffs.py).
        profile.append({"kernel": c.kernel, "node": c.node.name, "op": c.node.op_type, "flops": int(c.flops),
                        "bytes": bytes_moved(c), "shapes": [list(o.shape) for o in c.operands],
                        "kind": "|".join(c.key.split("|")[:3])[:160]})

    def io(v):
        where, off = plan.place[v.name]
        if v.shape not in shape_ids:
            shape_ids[v.shape] = len(shapes)
            shapes.append(v.shape)
        return {"name": v.name, "where": 0 if where == "arena" else 1, "offset": off, "nbytes": v.nbytes,
                "dtype": v.dtype.value, "ndim": len(v.shape), "shape_id": shape_ids[v.shape]}

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["cstr"] = _cstr
    driver = env.get_template("driver.c.j2").render(
        aotc_version=aotc_version, target=target.name, model_id=model_id, kernels=names, calls=call_specs,
        args=args, shapes=shapes, inputs=[io(v) for v in graph.inputs], outputs=[io(v) for v in graph.outputs],
        arena_bytes=plan.arena_bytes, weight_bytes=plan.weight_bytes,
        max_args=max([len(c.operands) for c in calls] + [1]), glibc_compat=glibc_compat_source())
    (workdir / "driver.c").write_text(driver)

    # AOTC_DRIVER_CFLAGS: extra flags for the driver, e.g. -fsanitize=thread for `make sanitize` (test builds only).
    cmd = [target.cc, *target.cflags, *shlex.split(os.environ.get("AOTC_DRIVER_CFLAGS", "")), "-std=gnu11",
           "-fPIC", "-shared", "-fvisibility=hidden", "-o", "model.so",
           "driver.c", *objects, "-lm", *OLD_GLIBC_LIBS, "-Wl,--build-id=none", "-Wl,--hash-style=gnu",
           *([] if os.environ.get("AOTC_KEEP_SYMBOLS") else ["-Wl,-s"]),
           "-ffile-prefix-map=" + str(workdir) + "=."]
    progress(f"aotc: linking model.so ({target.cc})")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"Linking model.so failed ({' '.join(cmd)}): {proc.stderr.strip()[:2000]}")
    so = (workdir / "model.so").read_bytes()
    model_flops = sum(c.flops if c.model_flops is None else c.model_flops for c in calls)
    return CompiledModel(so, driver, plan, profile, names, len(calls), model_flops, model_id)

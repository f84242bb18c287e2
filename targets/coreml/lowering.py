"""aotc IR -> a MIL program (coremltools' builder), one registered lowering per aotc op.

Each lowering is `fn(ctx, node) -> MIL var | list of vars` (one per node output) plus an optional
`check(node, deployment) -> reason | None`: what the lowering cannot express (an attribute value, an opset
too old). `unsupported_nodes` asks every check before anything is built, so one error names every node the
target cannot map. The lowering modules (lower_*.py) register themselves here; rules.py imports them all.

Value representation in the program:
- int64 tensors become int32 (Core ML's integer type; indices and shapes fit);
- uint8/int8 activations are real uint8/int8 MIL tensors where MIL has run-time `quantize` (iOS17+);
  on iOS16 they are float tensors holding the integer values ("float-coded", `ctx.float_coded`), so
  aotc's int8 arithmetic is reproduced in float;
- graph inputs Core ML cannot take (int64, bool, uint8/int8) are declared int32 and converted inside;
  outputs it cannot give (bool, int64, uint8/int8) leave as int32 — the manifest records both, and the
  loader converts back to the aotc dtypes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph, Node, Value

from .deployment import Deployment


class UnsupportedOnCoreMLError(AotcError):
    """The graph holds nodes the Core ML target cannot map to MIL; the message names every one."""


@dataclass(frozen=True)
class Lowering:
    fn: Callable
    check: Callable[[Node, Deployment], str | None] | None = None


LOWERINGS: dict[str, Lowering] = {}


def lowers(*op_types: str, check=None):
    """Register `fn` as the lowering of `op_types`."""
    def deco(fn):
        for op in op_types:
            if op in LOWERINGS:
                raise RuntimeError(f"two Core ML lowerings for {op}")
            LOWERINGS[op] = Lowering(fn, check)
        return fn
    return deco


def why_unsupported(node: Node, deployment: Deployment) -> str | None:
    """None when `node` lowers to MIL on `deployment`; otherwise why not (one short clause)."""
    low = LOWERINGS.get(node.op_type)
    if low is None:
        return f"Core ML has no mapping for {node.op_type} in aotc"
    for v in list(node.inputs) + list(node.outputs):
        if v is not None and v.dtype not in MIL_DTYPES:
            return f"{v.dtype} tensors have no Core ML type"
    return low.check(node, deployment) if low.check else None


def unsupported_nodes(graph: Graph, deployment: Deployment) -> list[tuple[Node, str]]:
    return [(n, why) for n in graph.nodes if (why := why_unsupported(n, deployment))]


def format_unsupported(found: list[tuple[Node, str]], deployment: Deployment) -> str:
    by_op: dict[str, list[tuple[Node, str]]] = {}
    for n, why in found:
        by_op.setdefault(n.op_type, []).append((n, why))
    parts = []
    for op, items in sorted(by_op.items()):
        names = ", ".join(f"{n.name!r} ({why})" for n, why in items)
        parts.append(f"{op} ×{len(items)}: {names}")
    return (f"The Core ML target ({deployment.name}) cannot map {len(found)} node(s) to MIL: " + "; ".join(parts)
            + ". Nothing was written. Choose another --coreml-target where the reason names one, or another "
            "--target.")


# MIL element types of aotc dtypes (int64 -> int32: Core ML computes indices and shapes in int32).
MIL_DTYPES = {DType.float32: "fp32", DType.float16: "fp16", DType.int32: "int32", DType.int64: "int32",
              DType.bool: "bool", DType.uint8: "uint8", DType.int8: "int8"}
# What Core ML's model interface can carry for a graph input/output of an aotc dtype.
IO_DTYPES = {DType.float32: "fp32", DType.float16: "fp16", DType.int32: "int32", DType.int64: "int32",
             DType.bool: "int32", DType.uint8: "int32", DType.int8: "int32"}
QUANTIZED = (DType.uint8, DType.int8)


def mil_name(text: str) -> str:
    """A MIL identifier for an aotc name (MIL names are C-like; '/', '.', ':' are common in ONNX names)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return s if s and not s[0].isdigit() else "v_" + s


class LoweringContext:
    """What a lowering reads: the MIL var (or NumPy constant) of each aotc value, the deployment, and helpers
    for names and constants."""

    def __init__(self, mb, deployment: Deployment):
        self.mb = mb
        self.deployment = deployment
        self.vars: dict[str, object] = {}
        self.float_coded: set[str] = set()   # aotc values (uint8/int8) held as float in MIL (iOS16)
        self._names: set[str] = set()

    # -- values ------------------------------------------------------------------------------------------
    def x(self, v: Value | None):
        """The MIL var of `v`, or for a constant its NumPy value in a MIL dtype (None stays None)."""
        if v is None:
            return None
        if v.const is not None:
            return const(v.const)
        return self.vars[v.name]

    def is_const(self, v: Value | None) -> bool:
        return v is not None and v.const is not None

    def name(self, node: Node, suffix: str = "") -> str:
        """A unique MIL op name derived from the aotc node's name."""
        base = mil_name(node.name + (f"_{suffix}" if suffix else ""))
        name, i = base, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def scalar(self, value, like: Value | None = None):
        """A scalar constant of `like`'s MIL type (float32 when absent)."""
        dt = MIL_DTYPES.get(like.dtype, "fp32") if like is not None else "fp32"
        return np.array(value, {"fp32": np.float32, "fp16": np.float16, "int32": np.int32}.get(dt, np.float32))


def const(a: np.ndarray) -> np.ndarray:
    """A NumPy constant in a dtype MIL has: int64 -> int32 (refusing values outside its range), float64 ->
    float32."""
    a = np.asarray(a)
    if a.dtype == np.int64 or a.dtype == np.uint64:
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise UnsupportedOnCoreMLError(f"an int64 constant of shape {list(a.shape)} holds values outside "
                                           "int32, Core ML's integer type")
        return a.astype(np.int32)
    if a.dtype == np.float64:
        return a.astype(np.float32)
    return a


def lower_graph(graph: Graph, deployment: Deployment):
    """The MIL Program of `graph` (a new one on every call: ct.convert mutates the program it converts)."""
    import coremltools as ct  # noqa: F401  (registers the MIL opsets)
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    io_types = {"fp32": types.fp32, "fp16": types.fp16, "int32": types.int32}
    placeholders = {mil_name(v.name): mb.placeholder(shape=tuple(v.shape) or (1,), dtype=io_types[IO_DTYPES[v.dtype]])
                    for v in graph.inputs}
    opset = deployment.coremltools_target()
    prog = Program()
    with Function(placeholders, opset_version=opset) as func:
        ctx = LoweringContext(mb, deployment)
        for v in graph.inputs:
            ctx.vars[v.name] = _input_var(ctx, v, func.inputs[mil_name(v.name)])
        for node in graph.nodes:
            outs = LOWERINGS[node.op_type].fn(ctx, node)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            coded = any(v is not None and v.name in ctx.float_coded for v in node.inputs)
            for value, var in zip(node.outputs, outs):
                if value is not None:
                    ctx.vars[value.name] = var
                    if coded and value.dtype in QUANTIZED:  # data movement keeps a float-coded tensor float
                        ctx.float_coded.add(value.name)
        func.set_outputs([_output_var(ctx, v) for v in graph.outputs])
    prog.add_function("main", func)
    return prog


def _input_var(ctx: LoweringContext, v: Value, var):
    mb = ctx.mb
    if not v.shape:
        var = mb.reshape(x=var, shape=np.zeros(0, np.int32), name=mil_name(v.name) + "_scalar")
    if v.dtype == DType.bool:
        return mb.cast(x=var, dtype="bool", name=mil_name(v.name) + "_bool")
    if v.dtype in QUANTIZED:  # held as float on every deployment target: MIL casts to no 8-bit type here
        ctx.float_coded.add(v.name)
        return mb.cast(x=var, dtype="fp32", name=mil_name(v.name) + "_coded")
    return var


def _output_var(ctx: LoweringContext, v: Value):
    """The program output for graph output `v`, named as in the graph, in a type Core ML can return."""
    mb = ctx.mb
    var = ctx.x(v)
    if isinstance(var, np.ndarray):
        var = mb.const(val=var)
    if v.dtype in QUANTIZED and v.name not in ctx.float_coded:
        var = mb.cast(x=var, dtype="fp32")  # uint8/int8 -> fp32 is exact; then int32 below
    if IO_DTYPES[v.dtype] != MIL_DTYPES[v.dtype] or v.name in ctx.float_coded:
        var = mb.cast(x=var, dtype="int32")
    if not v.shape:  # Core ML has no rank-0 model outputs: give [1]
        var = mb.reshape(x=var, shape=np.array([1], np.int32))
    if var.name != mil_name(v.name):
        var = mb.identity(x=var, name=mil_name(v.name))
    return var

"""ONNX → aotc IR.

The importer fixes every dynamic dimension (from the model or from
`input_shapes`), turns constant ONNX inputs that are really parameters
(Reshape's shape, Slice's starts, ...) into attributes, folds every node whose
inputs are all constants (which removes the Shape/Gather/Concat/Range shape
subgraphs exporters emit), and inlines `If` nodes whose condition folds.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .dtypes import DType, UnsupportedDTypeError
from .errors import AotcError, ModelLoadError, ShapeError, UnsupportedOpsError
from .ir import Graph, Value
from .onnx_checks import MAX_DIM, attribute_value, check_constant_node, check_dims, check_text_fields, if_branch
from .ops import get_op, is_registered
from .ops.quant import keeps_quantized_weight
from .verifier import verify

MIN_OPSET, MAX_OPSET = 11, 21
# Folding a constant expression bigger than this would bloat weights.bin; the node stays.
FOLD_LIMIT_ELEMENTS = 1 << 22

# ONNX inputs (by position) that aotc holds as attributes, because a static
# graph needs them known at compile time.
INPUTS_AS_ATTRS: dict[str, dict[int, str]] = {
    "Reshape": {1: "shape"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Expand": {1: "shape"},
    "Tile": {1: "repeats"},
    "Split": {1: "split"},
    "Pad": {1: "pads", 2: "value", 3: "axes"},
    "Clip": {1: "min", 2: "max"},
    "ConstantOfShape": {0: "shape"},
    "Trilu": {1: "k"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Dropout": {1: "ratio", 2: "training_mode"},
    **{op: {1: "axes"} for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                   "ReduceL2", "ReduceSumSquare")},
}

# ONNX attributes with no effect on inference, or already implied by aotc's op.
IGNORED_ATTRS: dict[str, set[str]] = {
    "BatchNormalization": {"momentum", "spatial"},
    "Dropout": {"seed"},
    "Cast": {"saturate", "round_mode"},
}

# Ops handled by the importer itself rather than by the op registry.
IMPORTER_OPS = {"Constant", "If", "CastLike"}  # CastLike becomes a Cast to the second input's dtype


AOTC_DOMAIN = "ai.aotc"  # aotc's own (fused) ops, as the exporter writes them


def supported_onnx_ops() -> set[str]:
    """Op keys the importer accepts: ONNX ops aotc defines, aotc's own ops in their domain, and the other
    vendors' ops aotc defines (onnxruntime's com.microsoft QOperator ops) in theirs."""
    from .ops import get_op, registered_ops
    onnx_ops = {n for n in registered_ops() if get_op(n).onnx_op and not get_op(n).domain}
    own = {f"{AOTC_DOMAIN}::{n}" for n in registered_ops() if not get_op(n).onnx_op}
    vendor = {f"{get_op(n).domain}::{n}" for n in registered_ops() if get_op(n).domain}  # com.microsoft QLinear*
    return onnx_ops | own | vendor | IMPORTER_OPS


# -- loading the file --------------------------------------------------------
def read_onnx_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse a model file without touching external data; clear errors for
    missing, truncated and non-ONNX files."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"Model file {str(path)!r} does not exist. Check the path (it is resolved from "
                             f"{os.getcwd()!r}).")
    if path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a directory, not a model file. Pass the .onnx file inside it.")
    data = path.read_bytes()
    hint = ("Re-export the model, or check that the download or copy finished (compare its size and checksum "
            "with the original).")
    if not data:
        raise ModelLoadError(f"Model file {str(path)!r} is empty. {hint}")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{str(path)!r} is not a readable ONNX model ({len(data)} bytes; the protobuf "
                             f"parser says: {str(e).strip() or type(e).__name__}). The file may be truncated or "
                             f"not an ONNX file at all. {hint}") from e
    if not model.opset_import or not model.graph.node or model.ir_version <= 0:
        raise ModelLoadError(f"{str(path)!r} parsed, but it is not a usable ONNX model (ir_version "
                             f"{model.ir_version}, {len(model.opset_import)} opset imports, "
                             f"{len(model.graph.node)} nodes). The file may be truncated or not an ONNX file. {hint}")
    check_text_fields(model)
    return model


def _external_tensor_bytes(t: onnx.TensorProto, base_dir: Path) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    base = base_dir.resolve()
    if "\0" in loc:
        raise ModelLoadError(f"Initializer {t.name!r} names external data file {loc!r}, which contains a NUL "
                             "character; the model file is damaged.")
    target = (base / loc).resolve()
    if not loc or os.path.isabs(loc) or os.path.commonpath([base, target]) != str(base):
        raise ModelLoadError(
            f"Initializer {t.name!r} points at external data {loc!r}, which lies outside the model's folder "
            f"{str(base)!r}. aotc only reads external data next to the model (a model must not read arbitrary "
            "files); move the data file beside the .onnx file and fix the location.")
    if not target.is_file():
        raise ModelLoadError(f"Initializer {t.name!r} needs external data file {loc!r}, which is not in "
                             f"{str(base)!r}. Copy it next to the model.")
    offset, length = (_external_int(info, k, t.name) for k in ("offset", "length"))
    with open(target, "rb") as f:
        f.seek(offset or 0)
        raw = f.read(-1 if length is None else length)
    if length is not None and len(raw) != length:
        raise ModelLoadError(f"External data file {loc!r} for initializer {t.name!r} is truncated "
                             f"(wanted {length} bytes at offset {offset}, got {len(raw)}).")
    return raw


def _external_int(info: Mapping[str, str], key: str, tensor: str) -> int | None:
    if key not in info:
        return None
    text = info[key]
    if not text.isdigit() or int(text) > 1 << 46:
        raise ModelLoadError(f"Initializer {tensor!r}: external data {key} {text!r} is not a whole number from 0 "
                             "to 2^46; the model file is damaged.")
    return int(text)


def tensor_to_numpy(t: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        if base_dir is None:
            raise ModelLoadError(f"Initializer {t.name!r} uses external data but the model was not loaded from a file.")
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.raw_data = _external_tensor_bytes(t, base_dir)
        del copy.external_data[:]
        copy.data_location = onnx.TensorProto.DEFAULT
        t = copy
    try:
        DType.from_onnx(t.data_type)
    except UnsupportedDTypeError as e:
        raise AotcError(f"Tensor {t.name!r}: {e}. Convert it in the exporter.") from None
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelLoadError(f"Tensor {t.name!r} could not be decoded ({e}); the model file is damaged.") from e
    # np.ascontiguousarray would turn a 0-d (scalar) tensor into shape (1,); np.require keeps the rank.
    return np.require(arr, requirements="C")


# -- the importer --------------------------------------------------------------
def _walk_nodes(graph: onnx.GraphProto):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(a.g)
            for g in a.graphs:
                yield from _walk_nodes(g)


def find_unsupported_ops(model: onnx.ModelProto) -> tuple[dict[str, list[str]], Counter]:
    supported = supported_onnx_ops()
    names: dict[str, list[str]] = defaultdict(list)
    counts: Counter = Counter()
    for n in _walk_nodes(model.graph):
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        if key not in supported:
            counts[key] += 1
            names[key].append(n.name or f"<unnamed {n.op_type}>")
    return dict(names), counts


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x128' -> (1, 128); '' or 'scalar' -> ()."""
    text = text.strip()
    if text in ("", "scalar"):
        return ()
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ShapeError(f"Cannot read shape {text!r}: write dimensions separated by 'x', e.g. 1x128.") from None
    if any(d < 0 for d in dims):
        raise ShapeError(f"Shape {text!r} has a negative dimension.")
    if any(d > MAX_DIM for d in dims):
        raise ShapeError(f"Shape {text!r} has a dimension above 2^40, more than any tensor aotc can hold.")
    return dims


def graph_input_protos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def declared_dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    """Dimensions as the file declares them: ints, or the dim_param name ('?' if unnamed)."""
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        else:
            dims.append(d.dim_param or "?")
    return dims


def resolve_input_shapes(model: onnx.ModelProto, given: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Every input's static shape: from `given` (an input's name -> its dims, or a named dimension -> its one
    size, e.g. {"batch": (4,)} for every dim_param "batch"), else as the model declares it."""
    protos = graph_input_protos(model)
    names = [p.name for p in protos]
    dim_names = sorted({d for p in protos for d in declared_dims(p) if isinstance(d, str) and d != "?"})
    by_dim = {k: v for k, v in given.items() if k not in names and k in dim_names}
    unknown = [n for n in given if n not in names and n not in by_dim]
    if unknown:
        named = f"; its named dimensions are {', '.join(map(repr, dim_names))}" if dim_names else ""
        raise ShapeError(f"--input-shape names {', '.join(map(repr, unknown))}, but the model's inputs are "
                         f"{', '.join(map(repr, names))}{named}.")
    bad = [k for k, v in by_dim.items() if len(tuple(v)) != 1]
    if bad:
        raise ShapeError(f"--input-shape {bad[0]}=... names a dimension, which takes one size (e.g. {bad[0]}=4).")
    shapes, missing, conflicts = {}, [], []
    for p in protos:
        dims = [by_dim[d][0] if isinstance(d, str) and d in by_dim else d for d in declared_dims(p)]
        if p.name in given:
            want = _given_dims(p.name, given[p.name])
            if len(want) != len(dims) or any(isinstance(d, int) and d != w for d, w in zip(dims, want)):
                conflicts.append(f"{p.name!r} is declared [{', '.join(map(str, dims))}] but --input-shape gives "
                                 f"{'x'.join(map(str, want)) or 'scalar'}")
            shapes[p.name] = want
        elif all(isinstance(d, int) for d in dims):
            check_dims(dims, f"Model input {p.name!r}")
            shapes[p.name] = tuple(dims)  # type: ignore[arg-type]
        else:
            example = "x".join(str(d) if isinstance(d, int) else "N" for d in dims)
            missing.append(f"{p.name!r} [{', '.join(map(str, dims))}] (e.g. --input-shape {p.name}={example})")
    if conflicts:
        raise ShapeError("Input shapes conflict with the model: " + "; ".join(conflicts) + ".")
    if missing:
        raise ShapeError("aotc compiles for static shapes, and these inputs have dynamic dimensions with no "
                         "size given: " + "; ".join(missing) + ". Pass --input-shape NAME=DIMS for each "
                         "(input_shapes= in the Python API).")
    return shapes


def _given_dims(name: str, dims: Sequence[int]) -> tuple[int, ...]:
    """Shapes passed to the API are checked like --input-shape: whole numbers from 0 to 2^40."""
    if isinstance(dims, (str, bytes)) or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                                 for d in dims):
        raise ShapeError(f"The shape given for input {name!r} ({dims!r}) is not a sequence of whole numbers.")
    if any(not 0 <= d <= MAX_DIM for d in dims):
        raise ShapeError(f"The shape given for input {name!r} ({'x'.join(map(str, dims))}) has a dimension "
                         "outside 0..2^40.")
    return tuple(int(d) for d in dims)


class _Importer:
    def __init__(self, model: onnx.ModelProto, base_dir: Path | None):
        self.model = model
        self.base_dir = base_dir
        self.graph = Graph(model.graph.name or "main")
        self.env: dict[str, Value | None] = {"": None}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    # values ----------------------------------------------------------------
    def lookup(self, name: str, node: onnx.NodeProto) -> Value | None:
        if name not in self.env:
            raise ModelLoadError(f"Node {node.name!r} ({node.op_type}) reads value {name!r}, which no earlier "
                                 "node, input or initializer defines. The model is malformed.")
        return self.env[name]

    def const(self, name: str, data: np.ndarray) -> Value:
        data = np.asarray(data)
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        v = self.graph.add_const(name, data)
        self.env[name] = v
        return v

    def require_const(self, v: Value | None, node: onnx.NodeProto, what: str) -> np.ndarray | None:
        if v is None:
            return None
        if v.const is None and keeps_quantized_weight(v.producer.op_type if v.producer else "",
                                                      v.producer.inputs if v.producer else []) \
                and all(i is None or i.const is not None for i in v.producer.inputs):
            # a quantized constant parameter (onnxruntime's QDQ quantizes Pad's fill value): its value
            n = v.producer
            return n.op.run([i.const if i is not None else None for i in n.inputs], n.attrs)[0]
        if v.const is None:
            raise ShapeError(
                f"Node {node.name!r} ({node.op_type}): its {what} input is computed from the model's inputs, "
                f"but aotc needs it known at compile time. This usually means a shape still depends on an input; "
                f"fix all input shapes with --input-shape.")
        return v.const

    # nodes -----------------------------------------------------------------
    def emit(self, op_type: str, inputs: list[Value | None], attrs: dict[str, Any], node: onnx.NodeProto,
             out_names: Sequence[str]) -> None:
        op = get_op(op_type)
        where = f"node {node.name!r} ({node.op_type})"
        try:
            attrs = op.normalize_attrs(attrs, node.name)
            lo, hi = op.num_inputs
            while len(inputs) > lo and inputs[-1] is None:
                inputs = inputs[:-1]
            if not lo <= len(inputs) <= hi:
                raise ShapeError(f"{len(inputs)} inputs, aotc's {op_type} takes {lo}..{hi}")
            empty = [i for i, v in enumerate(inputs[:lo]) if v is None and i not in op.optional_inputs]
            if empty:
                raise ShapeError(f"required input(s) #{', #'.join(map(str, empty))} are empty")
            infos = op.infer(inputs, attrs)
        except AotcError as e:
            if not str(e).startswith(f"Node {node.name!r}"):  # name the node, keep the error's class
                e.args = (f"In {where}: {e}",)  # (rebuilding it would rerun subclasses' message builders)
            raise e from None
        used = [i for i, n in enumerate(out_names) if n]
        if used and max(used) >= len(infos):
            raise AotcError(f"In {where}: output #{max(used)} is used, but aotc's {op_type} produces only "
                            f"{len(infos)} output(s) (e.g. training-mode outputs are not supported).")
        all_const = all(v is not None and v.const is not None for v in inputs)
        small = sum(int(np.prod(s, dtype=np.int64)) for s, _ in infos) <= FOLD_LIMIT_ELEMENTS
        if op_type in ("Shape", "Size") or (all_const and small and not keeps_quantized_weight(op_type, inputs)):
            # Shape and Size only read the (static) shape: a zero-strided stand-in has it.
            args = [v.const if v is None or v.const is not None else
                    np.broadcast_to(np.zeros((), v.dtype.numpy), v.shape) for v in inputs]
            results = op.run(args, attrs)
            for name, arr in zip(out_names, results):
                if name:
                    self.const(name, arr)
            return
        n = self.graph.add_node(op_type, inputs, attrs, name=node.name or node.op_type,
                                output_names=list(out_names), num_outputs=max(len(out_names), 1))
        for name, v in zip(out_names, n.outputs):
            if name:
                self.env[name] = v

    def onnx_attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        out = {}
        ignored = IGNORED_ATTRS.get(node.op_type, set())
        for a in node.attribute:
            if a.name in ignored or a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                continue
            if a.name in out:
                raise ModelLoadError(f"Node {node.name!r} ({node.op_type}) has attribute {a.name!r} twice.")
            val = attribute_value(a, node)
            if isinstance(val, onnx.TensorProto):
                val = tensor_to_numpy(val, self.base_dir)
            out[a.name] = val
        return out

    def import_node(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if op == "Constant":
            return self.import_constant(node)
        if op == "If":
            return self.import_if(node)
        inputs = [self.lookup(n, node) for n in node.input]
        attrs = self.onnx_attrs(node)
        for idx, attr in INPUTS_AS_ATTRS.get(op, {}).items():
            if idx < len(inputs):
                val = self.require_const(inputs[idx], node, attr)
                if val is not None:
                    # Scalar parameters (Clip's min, Trilu's k, ...) also arrive as 1-element 1-D tensors,
                    # which onnxruntime accepts; they must become numbers, not 1-element lists.
                    scalar = val.ndim == 0 or (val.size == 1 and attr in ("min", "max", "k", "ratio",
                                                                         "training_mode"))
                    attrs[attr] = val if attr == "value" else val.item() if scalar else val.reshape(-1).tolist()
                inputs[idx] = None
        inputs = [v for i, v in enumerate(inputs) if i not in INPUTS_AS_ATTRS.get(op, {})]
        if op == "Cast":
            attrs["to"] = self.cast_target(node, attrs.get("to"))
        elif op == "CastLike":
            if len(inputs) != 2 or any(v is None for v in inputs):
                raise ModelLoadError(f"Node {node.name!r} (CastLike) needs two inputs (the tensor and one of the "
                                     f"target type); it has {sum(v is not None for v in inputs)}.")
            op, inputs, attrs = "Cast", inputs[:1], {"to": inputs[1].dtype.value}
        elif op == "Split" and attrs.get("split") is None and attrs.get("num_outputs") is None:
            # Before opset 18 a Split without sizes splits evenly into as many parts as it has outputs.
            attrs["num_outputs"] = len(node.output)
        elif op == "Dropout":
            if attrs.pop("training_mode", 0):
                raise AotcError(f"Node {node.name!r} (Dropout) runs in training mode; export the model in eval "
                                "mode (model.eval()).")
        elif op == "ConstantOfShape" and "value" in attrs:
            attrs["value"] = np.asarray(attrs["value"])
        elif op in ("Softmax", "LogSoftmax") and self.opset < 13:
            return self.import_legacy_softmax(node, inputs, attrs)
        elif op == "BatchNormalization" and attrs.pop("training_mode", 0):
            raise AotcError(f"Node {node.name!r} (BatchNormalization) runs in training mode; export the model "
                            "in eval mode (model.eval()).")
        self.emit(op, inputs, attrs, node, list(node.output))

    @staticmethod
    def cast_target(node: onnx.NodeProto, to: Any) -> str:
        if not isinstance(to, int):
            raise ModelLoadError(f"Node {node.name!r} (Cast) needs an INT attribute 'to' (an ONNX element type); "
                                 f"it has {'none' if to is None else repr(to)}.")
        try:
            return DType.from_onnx(to).value
        except UnsupportedDTypeError as e:
            raise UnsupportedDTypeError(f"the target type of node {node.name!r} (Cast), {e.what},") from None

    # The Constant kinds aotc reads, with the attribute type ONNX gives each.
    CONSTANT_KINDS = {"value": (onnx.AttributeProto.TENSOR, None),
                      "value_float": (onnx.AttributeProto.FLOAT, np.float32),
                      "value_floats": (onnx.AttributeProto.FLOATS, np.float32),
                      "value_int": (onnx.AttributeProto.INT, np.int64),
                      "value_ints": (onnx.AttributeProto.INTS, np.int64)}

    def import_constant(self, node: onnx.NodeProto) -> None:
        a = check_constant_node(node)
        if a.name not in self.CONSTANT_KINDS:
            raise AotcError(f"Constant node {node.name!r} holds a {a.name or '(nameless attribute)'}, which aotc does "
                            f"not support (it reads {', '.join(self.CONSTANT_KINDS)}).")
        kind, dtype = self.CONSTANT_KINDS[a.name]
        if a.type != kind:
            raise ModelLoadError(f"Constant node {node.name!r}: {a.name} must be of type "
                                 f"{onnx.AttributeProto.AttributeType.Name(kind)}, the file declares "
                                 f"{onnx.AttributeProto.AttributeType.Name(a.type)}.")
        val = attribute_value(a, node)
        arr = tensor_to_numpy(val, self.base_dir) if dtype is None else np.asarray(val, dtype=dtype)
        self.const(node.output[0], arr)

    def import_legacy_softmax(self, node, inputs, attrs) -> None:
        """Opset < 13 Softmax flattens to 2-D at `axis` (default 1) before normalizing."""
        x = inputs[0]
        axis = attrs.get("axis", 1) % max(x.rank, 1)
        if axis == x.rank - 1:
            return self.emit(node.op_type, [x], {"axis": -1}, node, list(node.output))
        flat = self.graph.add_node("Flatten", [x], {"axis": axis}, name=f"{node.name}/flatten").outputs[0]
        sm = self.graph.add_node(node.op_type, [flat], {"axis": -1}, name=node.name).outputs[0]
        self.emit("Reshape", [sm], {"shape": list(x.shape)}, node, list(node.output))

    def import_if(self, node: onnx.NodeProto) -> None:
        branches = {b: if_branch(node, b) for b in ("then_branch", "else_branch")}  # both must be well formed
        cond = self.lookup(node.input[0], node)
        if cond is None or cond.const is None:
            raise AotcError(
                f"Node {node.name!r} (If) branches on a value computed from the model's inputs. aotc compiles "
                "static graphs: only an If whose condition is known at compile time can be inlined. Export "
                "the model with data-dependent branches written as torch.where, or trace it with aotc's "
                "frontend, which rewrites Python if/else on tensors into where.")
        if cond.const.size != 1:
            raise ShapeError(f"Node {node.name!r} (If): the condition must hold one value; it has shape "
                             f"{list(cond.const.shape)}.")
        branch = "then_branch" if bool(np.asarray(cond.const).reshape(-1)[0]) else "else_branch"
        sub = branches[branch]
        for t in sub.initializer:
            self.const(t.name, tensor_to_numpy(t, self.base_dir))
        for n in sub.node:
            if not n.name:
                n.name = f"{node.name}/{branch}/{n.op_type}"
            self.import_node(n)
        for out_name, sub_out in zip(node.output, sub.output):
            if sub_out.name not in self.env:
                raise ModelLoadError(f"Node {node.name!r} (If): its {branch} returns {sub_out.name!r}, which no node "
                                     "of the branch (nor the outer graph) defines.")
            self.env[out_name] = self.env[sub_out.name]

    # the whole graph -------------------------------------------------------
    def run(self, input_shapes: Mapping[str, Sequence[int]]) -> Graph:
        g = self.model.graph
        shapes = resolve_input_shapes(self.model, input_shapes)
        for vi in graph_input_protos(self.model):
            tt = vi.type.tensor_type
            try:
                dtype = DType.from_onnx(tt.elem_type)
            except UnsupportedDTypeError as e:
                raise AotcError(f"Model input {vi.name!r}: {e}.") from None
            self.env[vi.name] = self.graph.add_input(vi.name, shapes[vi.name], dtype)
        for t in g.initializer:
            self.const(t.name, tensor_to_numpy(t, self.base_dir))
        for node in _topological(g):
            self.import_node(node)
        for o in g.output:
            v = self.env.get(o.name)
            if v is None:
                raise ModelLoadError(f"Model output {o.name!r} is not produced by any node.")
            if v.producer is None:
                # An output that folded to a constant (or is an input) still needs a node computing it.
                freed = v.const is not None and v.name == o.name
                if v.const is not None:
                    del self.graph.initializers[v.name]
                    v.name = self.graph.unique_name(f"{o.name}__const")
                    self.graph.initializers[v.name] = v
                v = self.graph.add_node("Identity", [v], name=f"{o.name}/output", output_names=[o.name]).outputs[0]
                if freed:  # the constant gave up the output's name, but unique_name still counts it as taken
                    v.name = o.name
            elif v.name != o.name:
                # The output aliases a value named otherwise (an inlined If branch's result): users fetch
                # outputs by the model's names, so the value takes that name.
                v.name = self.graph.unique_name(o.name)
            self.graph.outputs.append(v)
        self.graph.remove_unused()
        verify(self.graph)
        return self.graph


def _topological(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """ONNX requires topological order, but some tools write nodes out of order."""
    produced = {o for n in g.node for o in n.output if o}
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, order = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            outer = _outer_refs(n)
            if all(i in available or i not in produced for i in list(n.input) + outer):
                order.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ModelLoadError(f"The model's graph has a cycle through node(s) "
                                 f"{', '.join(repr(n.name) for n in rest[:5])}.")
        pending = rest
    return order


def _outer_refs(n: onnx.NodeProto) -> list[str]:
    refs = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            inner = {o for m in a.g.node for o in m.output} | {t.name for t in a.g.initializer}
            refs += [i for m in _walk_nodes(a.g) for i in m.input if i and i not in inner]
    return refs


def check_model(model: onnx.ModelProto) -> None:
    """Fail fast on what no amount of importing can fix: opsets and op coverage."""
    if not MIN_OPSET <= _default_opset(model) <= MAX_OPSET:
        raise AotcError(f"The model uses ONNX opset {_default_opset(model)}; aotc imports opsets "
                        f"{MIN_OPSET}–{MAX_OPSET}. Re-export with opset_version in that range, or convert it with "
                        "onnx.version_converter.")
    unsupported, counts = find_unsupported_ops(model)
    if unsupported:
        raise UnsupportedOpsError(unsupported, dict(counts))


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def load_onnx(model: str | os.PathLike | onnx.ModelProto,
              input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import an ONNX model (a path or a ModelProto) into a static, verified IR graph."""
    if isinstance(model, onnx.ModelProto):
        proto, base_dir = model, None
        check_text_fields(proto)
    else:
        proto, base_dir = read_onnx_model(model), Path(model).parent
    check_model(proto)
    return _Importer(proto, base_dir).run(input_shapes or {})

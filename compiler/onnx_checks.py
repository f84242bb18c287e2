"""Checks on an ONNX ModelProto at the import boundary, before any of it is interpreted.

The importer trusts what these establish: every name is text, every attribute holds a
value of the type it declares, dimensions are in range, and the nodes the importer
handles itself (Constant, If) have the structure ONNX prescribes. A file that breaks one
of them is refused with a ModelLoadError naming the node and what is wrong.
"""
from __future__ import annotations

from typing import Any

import onnx
from google.protobuf.descriptor import FieldDescriptor
from onnx import AttributeProto

from .errors import ModelLoadError

# Dimensions above this are refused: the runtime's limit on one dimension (docs/reliability.md),
# and far below where an element count or byte size computed from a few of them overflows int64.
MAX_DIM = 1 << 40


# String fields that name things (as opposed to doc strings and metadata values, which are free text).
# aotc quotes names in its one-paragraph errors, so a name may not hold a line break or other control character.
NAME_FIELDS = {"name", "op_type", "domain", "input", "output", "dim_param"}


def check_text_fields(model: onnx.ModelProto) -> None:
    """Protobuf hands back a string field that is not valid UTF-8 as bytes; every name aotc
    prints, sorts or compares must be text, and a name must be one line."""
    bad = _first_bad_text(model, "model")
    if bad:
        raise ModelLoadError(f"The model file holds a name that is not valid UTF-8 text or contains control "
                             f"characters (at {bad}). The file is damaged or was not written by an ONNX exporter; "
                             "re-export it.")


def _first_bad_text(msg, where: str) -> str | None:
    for fd, value in msg.ListFields():
        if fd.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue  # numbers and raw bytes (large initializers) are not walked
        items = list(value) if fd.is_repeated else [value]
        if fd.type == FieldDescriptor.TYPE_STRING:
            if any(isinstance(v, bytes) or fd.name in NAME_FIELDS and not v.isprintable() for v in items):
                return f"{where}.{fd.name}"
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            for i, item in enumerate(items):
                bad = _first_bad_text(item, f"{where}.{fd.name}" + (f"[{i}]" if fd.is_repeated else ""))
                if bad:
                    return bad
    return None


# The value field each attribute type stores its value in (onnx.helper.get_attribute_value reads
# fields by the declared type and returns garbage, or raises, when they disagree).
_FIELD_OF_TYPE = {
    AttributeProto.FLOAT: "f", AttributeProto.INT: "i", AttributeProto.STRING: "s", AttributeProto.TENSOR: "t",
    AttributeProto.GRAPH: "g", AttributeProto.FLOATS: "floats", AttributeProto.INTS: "ints",
    AttributeProto.STRINGS: "strings", AttributeProto.GRAPHS: "graphs",
}


def attribute_value(a: AttributeProto, node: onnx.NodeProto) -> Any:
    """The attribute's value by its declared type: float, int, str, TensorProto, GraphProto or a list."""
    where = f"Node {node.name!r} ({node.op_type}): attribute {a.name!r}"
    field = _FIELD_OF_TYPE.get(a.type)
    if field is None:
        type_name = AttributeProto.AttributeType.Name(a.type) if a.type in AttributeProto.AttributeType.values() \
            else str(a.type)
        raise ModelLoadError(f"{where} has type {type_name}, which aotc does not read (it reads FLOAT, INT, "
                             "STRING, TENSOR, GRAPH and their lists).")
    if a.type == AttributeProto.TENSOR and not a.HasField("t") or a.type == AttributeProto.GRAPH and not a.HasField("g"):
        raise ModelLoadError(f"{where} is declared {AttributeProto.AttributeType.Name(a.type)} but holds no value.")
    value = getattr(a, field)
    if a.type == AttributeProto.STRING:
        return _text(value, where)
    if a.type == AttributeProto.STRINGS:
        return [_text(v, where) for v in value]
    return list(value) if a.type in (AttributeProto.FLOATS, AttributeProto.INTS, AttributeProto.GRAPHS) else value


def _text(value: bytes, where: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ModelLoadError(f"{where} is not valid UTF-8 text ({value[:20]!r}).") from None


def check_dims(dims, where: str) -> None:
    for d in dims:
        if not 0 <= d <= MAX_DIM:
            raise ModelLoadError(f"{where} has dimension {d}; aotc accepts dimensions from 0 to 2^40.")


def check_constant_node(node: onnx.NodeProto) -> AttributeProto:
    """ONNX: a Constant has no inputs, one output and exactly one value_* attribute."""
    if len(node.attribute) != 1 or len(node.output) != 1 or not node.output[0] or node.input:
        raise ModelLoadError(
            f"Constant node {node.name!r} has {len(node.input)} input(s), {len(node.output)} output(s) and "
            f"{len(node.attribute)} attribute(s); ONNX requires none, one and exactly one (its value).")
    return node.attribute[0]


def if_branch(node: onnx.NodeProto, branch: str) -> onnx.GraphProto:
    """The branch graph of an If node, with one output per output of the node."""
    found = [a for a in node.attribute if a.name == branch]
    if len(found) != 1 or found[0].type != AttributeProto.GRAPH or not found[0].HasField("g"):
        raise ModelLoadError(f"If node {node.name!r} needs exactly one graph attribute {branch!r}; it has "
                             f"{len(found)} attribute(s) of that name"
                             f"{'' if not found else ' of type ' + AttributeProto.AttributeType.Name(found[0].type)}.")
    if len(node.input) != 1 or not node.input[0]:
        raise ModelLoadError(f"If node {node.name!r} has {len(node.input)} inputs; ONNX requires one (the condition).")
    sub = found[0].g
    if len(sub.output) != len(node.output):
        raise ModelLoadError(f"If node {node.name!r}: its {branch} has {len(sub.output)} output(s) but the node has "
                             f"{len(node.output)}; they must match one to one.")
    return sub

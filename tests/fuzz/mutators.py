"""Mutations of a valid ONNX model, for fuzzing the importer.

Structural mutations edit the ModelProto (nodes, edges, attributes, dtypes, dims,
subgraphs, opsets); byte mutations edit its serialized form. Every mutation takes a
`random.Random` and returns a short description, so a case is replayed from
(seed, index) alone and its report says what was done.
"""
from __future__ import annotations

import random
from typing import Callable

import onnx
from onnx import AttributeProto, TensorProto

# Values chosen to hit boundaries: zero, negative, int32/int64 edges, sizes that overflow.
EDGE_INTS = [0, -1, 1, 2, 3, -2, 7, 1 << 31, -(1 << 31), (1 << 63) - 1, -(1 << 63), 1 << 40, 1 << 62, 255, 65536]
EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38, -3.4e38, float("nan"), float("inf"), float("-inf"), 0.5]
EDGE_STRINGS = [b"", b"NOTSET", b"SAME_UPPER", b"\xff\xfe", b"\x00", b"constant", b"nearest", "é".encode(), b"x" * 300]


def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))] if seq else None


def _all_graphs(g: onnx.GraphProto):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH or a.HasField("g"):
                yield from _all_graphs(a.g)
            for sub in a.graphs:
                yield from _all_graphs(sub)


def _any_graph(m: onnx.ModelProto, rng: random.Random) -> onnx.GraphProto:
    graphs = list(_all_graphs(m.graph))
    # subgraphs are rare in the corpus; favour them when present so If/Loop damage is common
    return graphs[0] if len(graphs) == 1 or rng.random() < 0.5 else _pick(rng, graphs[1:])


def _all_nodes(m: onnx.ModelProto):
    return [n for g in _all_graphs(m.graph) for n in g.node]


def _value_names(g: onnx.GraphProto) -> list[str]:
    names = [i.name for i in g.input] + [t.name for t in g.initializer]
    return names + [o for n in g.node for o in n.output]


# -- nodes and edges -------------------------------------------------------------
def drop_node(m, rng):
    g = _any_graph(m, rng)
    if not g.node:
        return "drop_node: none"
    i = rng.randrange(len(g.node))
    desc = f"drop_node {g.node[i].op_type} #{i}"
    del g.node[i]
    return desc


def duplicate_node(m, rng):
    g = _any_graph(m, rng)
    if not g.node:
        return "duplicate_node: none"
    i = rng.randrange(len(g.node))
    g.node.insert(rng.randrange(len(g.node) + 1), g.node[i])
    return f"duplicate_node {g.node[i].op_type} #{i}"


def move_node(m, rng):
    g = _any_graph(m, rng)
    if len(g.node) < 2:
        return "move_node: none"
    i = rng.randrange(len(g.node))
    n = onnx.NodeProto()
    n.CopyFrom(g.node[i])
    del g.node[i]
    g.node.insert(rng.randrange(len(g.node) + 1), n)
    return f"move_node {n.op_type} #{i}"


def rewire_input(m, rng):
    """A dangling edge, an omitted input, a self-loop or another existing value."""
    g = _any_graph(m, rng)
    nodes = [n for n in g.node if n.input]
    n = _pick(rng, nodes)
    if n is None:
        return "rewire_input: none"
    k = rng.randrange(len(n.input))
    choice = rng.choice(["dangling", "empty", "self", "other"])
    n.input[k] = {"dangling": "no_such_value", "empty": "", "self": _pick(rng, list(n.output)) or "",
                  "other": _pick(rng, _value_names(g)) or ""}[choice]
    return f"rewire_input {n.op_type}.input[{k}] -> {choice}"


def change_arity(m, rng):
    g = _any_graph(m, rng)
    n = _pick(rng, list(g.node))
    if n is None:
        return "change_arity: none"
    field = rng.choice(["input", "output"])
    seq = getattr(n, field)
    if seq and rng.random() < 0.5:
        del seq[rng.randrange(len(seq))]
        return f"change_arity {n.op_type}: drop an {field}"
    seq.append(_pick(rng, _value_names(g) + ["", "extra"]) or "")
    return f"change_arity {n.op_type}: add an {field}"


def rename_output(m, rng):
    g = _any_graph(m, rng)
    n = _pick(rng, [n for n in g.node if n.output])
    if n is None:
        return "rename_output: none"
    k = rng.randrange(len(n.output))
    n.output[k] = rng.choice(["", "renamed", _pick(rng, _value_names(g)) or "x"])
    return f"rename_output {n.op_type}.output[{k}]"


def change_op_type(m, rng):
    from aotc.compiler.onnx_import import supported_onnx_ops
    n = _pick(rng, _all_nodes(m))
    if n is None:
        return "change_op_type: none"
    old = n.op_type
    key = rng.choice(sorted(supported_onnx_ops()) + ["Loop", "Scan", "NoSuchOp", ""])
    domain, _, op = key.rpartition("::")
    n.op_type, n.domain = op, domain
    if rng.random() < 0.1:
        n.domain = rng.choice(["ai.onnx", "com.microsoft", "ai.aotc"])
    return f"change_op_type {old} -> {n.domain + '::' if n.domain else ''}{n.op_type}"


# -- graph inputs, outputs, initializers -----------------------------------------
def graph_io(m, rng):
    g = _any_graph(m, rng)
    field = rng.choice(["input", "output", "initializer", "value_info"])
    seq = getattr(g, field)
    action = rng.choice(["drop", "duplicate", "rename"])
    if not seq:
        return f"graph_io {field}: none"
    i = rng.randrange(len(seq))
    if action == "drop":
        del seq[i]
    elif action == "duplicate":
        seq.add().CopyFrom(seq[i])
    else:
        seq[i].name = rng.choice(["", "renamed", _pick(rng, _value_names(g)) or "x"])
    return f"graph_io {action} {field}[{i}]"


def _tensor_types(m):
    out = []
    for g in _all_graphs(m.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            out.append(vi.type.tensor_type)
    return out


def wrong_dtype(m, rng):
    """A type that disagrees with the data: on a graph input/output or an initializer."""
    new = rng.choice(list(range(0, 26)) + [99, -1])
    if rng.random() < 0.5 and m.graph.initializer:
        t = _pick(rng, list(m.graph.initializer))
        t.data_type = new
        return f"wrong_dtype initializer {t.name} -> {new}"
    tt = _pick(rng, _tensor_types(m))
    if tt is None:
        return "wrong_dtype: none"
    tt.elem_type = new
    return f"wrong_dtype value_info -> {new}"


def damage_dims(m, rng):
    """Huge, negative, zero or symbolic dims on a declared shape or an initializer."""
    value = rng.choice(EDGE_INTS + ["param", "drop", "add"])
    if rng.random() < 0.4 and m.graph.initializer:
        t = _pick(rng, list(m.graph.initializer))
        if value == "drop" and t.dims:
            del t.dims[rng.randrange(len(t.dims))]
        elif isinstance(value, int) and t.dims:
            t.dims[rng.randrange(len(t.dims))] = value
        else:
            t.dims.append(rng.choice(EDGE_INTS))
        return f"damage_dims initializer {t.name}: {value}"
    tt = _pick(rng, _tensor_types(m))
    if tt is None:
        return "damage_dims: none"
    dims = tt.shape.dim
    if value == "drop" and dims:
        del dims[rng.randrange(len(dims))]
    elif value == "add" or not dims:
        dims.add().dim_value = rng.choice(EDGE_INTS)
    elif value == "param":
        dims[rng.randrange(len(dims))].dim_param = rng.choice(["N", "", "batch"])
    else:
        dims[rng.randrange(len(dims))].dim_value = value
    return f"damage_dims value_info: {value}"


def damage_initializer(m, rng):
    inits = [t for g in _all_graphs(m.graph) for t in g.initializer]
    t = _pick(rng, inits)
    if t is None:
        return "damage_initializer: none"
    what = rng.choice(["truncate", "extend", "to_fields", "external", "segment", "clear"])
    if what == "truncate" and t.raw_data:
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data))]
    elif what == "extend":
        t.raw_data = t.raw_data + bytes(rng.randrange(1, 9))
    elif what == "to_fields":
        t.float_data.extend([1.0] * rng.randrange(1, 4))
        t.int64_data.extend([7] * rng.randrange(0, 3))
    elif what == "external":
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", rng.choice(["w.bin", "../../etc/passwd", "", "/etc/hostname", "\x00"])),
                     ("offset", rng.choice(["0", "-5", "x", str(1 << 62)])), ("length", rng.choice(["4", "-1", "q"]))):
            e = t.external_data.add()
            e.key, e.value = k, v
    elif what == "segment":
        t.segment.begin, t.segment.end = 0, 1
    else:
        t.ClearField("raw_data")
    return f"damage_initializer {t.name}: {what}"


# -- attributes ------------------------------------------------------------------
_ATTR_TYPES = [AttributeProto.FLOAT, AttributeProto.INT, AttributeProto.STRING, AttributeProto.TENSOR,
               AttributeProto.GRAPH, AttributeProto.FLOATS, AttributeProto.INTS, AttributeProto.STRINGS,
               AttributeProto.TENSORS, AttributeProto.GRAPHS, AttributeProto.SPARSE_TENSOR, AttributeProto.UNDEFINED]


def _attr_node(m, rng):
    return _pick(rng, [n for n in _all_nodes(m) if n.attribute])


def _some_attribute(m, rng):
    """A node that has attributes, and one of them (None, None if no node has any)."""
    n = _attr_node(m, rng)
    return (n, _pick(rng, list(n.attribute))) if n is not None else (None, None)


def attribute_structure(m, rng):
    n = _attr_node(m, rng) if rng.random() < 0.8 else _pick(rng, _all_nodes(m))
    if n is None:
        return "attribute_structure: none"
    action = rng.choice(["drop", "duplicate", "rename", "add"]) if n.attribute else "add"
    if action == "add":
        a = n.attribute.add()
        a.name = rng.choice(["axis", "perm", "to", "value", "then_branch", "bogus", ""])
        a.type = AttributeProto.INT
        a.i = rng.choice(EDGE_INTS)
        return f"attribute add {n.op_type}.{a.name}"
    i = rng.randrange(len(n.attribute))
    name = n.attribute[i].name
    if action == "drop":
        del n.attribute[i]
    elif action == "duplicate":
        n.attribute.add().CopyFrom(n.attribute[i])
    else:
        n.attribute[i].name = rng.choice(["renamed", "", "axis", "axes", "keepdims"])
    return f"attribute {action} {n.op_type}.{name}"


def attribute_type(m, rng):
    """The declared type changes; the value moves to (or stays out of) the matching field."""
    n, a = _some_attribute(m, rng)
    if n is None:
        return "attribute_type: none"
    old, new = a.type, rng.choice(_ATTR_TYPES)
    if rng.random() < 0.6:  # a well-formed attribute of the wrong kind
        name = a.name
        val = {AttributeProto.FLOAT: 1.5, AttributeProto.INT: rng.choice(EDGE_INTS), AttributeProto.STRING: b"abc",
               AttributeProto.FLOATS: [1.0, 2.0], AttributeProto.INTS: [rng.choice(EDGE_INTS)] * rng.randrange(0, 4),
               AttributeProto.STRINGS: [b"a"], AttributeProto.TENSOR: onnx.helper.make_tensor("t", 1, [1], [1.0]),
               AttributeProto.GRAPH: onnx.helper.make_graph([], "empty", [], [])}.get(new)
        if val is not None:
            if val == []:  # make_attribute cannot tell the type of an empty list
                a.CopyFrom(AttributeProto(name=name, type=AttributeProto.INTS))
            else:
                a.CopyFrom(onnx.helper.make_attribute(name, val))
            return f"attribute_type {n.op_type}.{name}: {old} -> {new} (value)"
    a.type = new
    return f"attribute_type {n.op_type}.{a.name}: {old} -> {new} (type field only)"


def attribute_value(m, rng):
    n, a = _some_attribute(m, rng)
    if n is None:
        return "attribute_value: none"
    if a.type == AttributeProto.INT:
        a.i = rng.choice(EDGE_INTS)
    elif a.type == AttributeProto.FLOAT:
        a.f = rng.choice(EDGE_FLOATS)
    elif a.type == AttributeProto.STRING:
        a.s = rng.choice(EDGE_STRINGS)
    elif a.type == AttributeProto.INTS:
        del a.ints[:]
        a.ints.extend(rng.choice(EDGE_INTS) for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 9])))
    elif a.type == AttributeProto.FLOATS:
        del a.floats[:]
        a.floats.extend(rng.choice(EDGE_FLOATS) for _ in range(rng.choice([0, 1, 2, 5])))
    elif a.type == AttributeProto.TENSOR:
        a.t.data_type = rng.choice([1, 6, 7, 9, 8, 16, 0, 30])
        if rng.random() < 0.5:
            del a.t.dims[:]
            a.t.dims.extend(rng.choice(EDGE_INTS[:5]) for _ in range(rng.randrange(0, 3)))
    else:
        return f"attribute_value {n.op_type}.{a.name}: type {a.type} untouched"
    return f"attribute_value {n.op_type}.{a.name}"


# -- subgraphs -------------------------------------------------------------------
def damage_subgraph(m, rng):
    """If/Loop: a branch removed, swapped for a non-graph, or given more/fewer/renamed outputs."""
    hosts = [n for n in _all_nodes(m) if any(a.type == AttributeProto.GRAPH for a in n.attribute)]
    n = _pick(rng, hosts)
    if n is None:
        return "damage_subgraph: none"
    a = _pick(rng, [a for a in n.attribute if a.type == AttributeProto.GRAPH])
    what = rng.choice(["drop_branch", "not_a_graph", "drop_output", "extra_output", "rename_output",
                       "empty_graph", "drop_sub_node", "outer_ref", "cond_from_input"])
    if what == "drop_branch":
        n.attribute.remove(a)
    elif what == "not_a_graph":
        a.type = AttributeProto.INT
        a.ClearField("g")
        a.i = 1
    elif what == "drop_output" and a.g.output:
        del a.g.output[rng.randrange(len(a.g.output))]
    elif what == "extra_output":
        a.g.output.add().CopyFrom(a.g.output[0] if a.g.output else onnx.ValueInfoProto(name="x"))
    elif what == "rename_output" and a.g.output:
        a.g.output[rng.randrange(len(a.g.output))].name = rng.choice(["nowhere", "", "x"])
    elif what == "empty_graph":
        a.g.CopyFrom(onnx.helper.make_graph([], "empty", [], []))
    elif what == "drop_sub_node" and a.g.node:
        del a.g.node[rng.randrange(len(a.g.node))]
    elif what == "outer_ref" and a.g.node:
        a.g.node[0].input.append(rng.choice(["no_such_outer", n.output[0] if n.output else "y"]))
    elif what == "cond_from_input" and n.input and m.graph.input:
        n.input[0] = m.graph.input[0].name
    return f"damage_subgraph {n.op_type}.{a.name}: {what}"


# -- model level -----------------------------------------------------------------
def change_opset(m, rng):
    what = rng.choice(["version", "version", "drop", "duplicate", "domain"])
    if what == "version" and m.opset_import:
        m.opset_import[0].version = rng.choice([0, 1, 7, 10, 11, 12, 13, 14, 17, 18, 20, 21, 22, 99, -1, 1 << 62])
    elif what == "drop" and m.opset_import:
        del m.opset_import[0]
    elif what == "duplicate" and m.opset_import:
        d = m.opset_import.add()
        d.CopyFrom(m.opset_import[0])
        d.version = rng.choice([1, 13, 21])
    else:
        d = m.opset_import.add()
        d.domain, d.version = rng.choice(["ai.aotc", "com.microsoft", "ai.onnx", ""]), rng.choice([1, 17])
    m.ir_version = rng.choice([m.ir_version] * 4 + [0, 1, 3, 10, 99, -1])
    return f"change_opset {what}"


STRUCTURAL: list[Callable[[onnx.ModelProto, random.Random], str]] = [
    drop_node, duplicate_node, move_node, rewire_input, change_arity, rename_output, change_op_type,
    graph_io, wrong_dtype, damage_dims, damage_initializer, attribute_structure, attribute_type,
    attribute_value, damage_subgraph, change_opset,
]


# -- bytes -----------------------------------------------------------------------
def mutate_bytes(data: bytes, rng: random.Random, other: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    what = rng.choice(["flip", "flip", "set", "insert", "delete", "truncate", "duplicate", "splice"])
    if not b:
        return bytes(b), "bytes: empty"
    if what == "flip":
        for _ in range(rng.randrange(1, 9)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif what == "set":
        for _ in range(rng.randrange(1, 5)):
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    elif what == "insert":
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 17)))
    elif what == "delete":
        i = rng.randrange(len(b))
        del b[i:i + rng.randrange(1, 33)]
    elif what == "truncate":
        del b[rng.randrange(len(b)):]
    elif what == "duplicate":
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randrange(1, 65))
        k = rng.randrange(len(b) + 1)
        b[k:k] = b[i:j]
    else:
        i = rng.randrange(len(b))
        j = rng.randrange(len(other) + 1)
        b = b[:i] + bytearray(other[j:j + rng.randrange(1, 256)]) + b[i:]
    return bytes(b), f"bytes {what}"

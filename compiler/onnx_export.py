"""aotc IR → ONNX.

Writes a self-contained model that onnxruntime runs: the attributes aotc holds
for static parameters go back to being constant inputs where the chosen opset
wants them (the inverse of the importer's INPUTS_AS_ATTRS), and ops that are
not ONNX (aotc's fused ops) go to the `ai.aotc` domain.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .dtypes import DType
from .ir import Graph, Node
from .onnx_import import AOTC_DOMAIN, INPUTS_AS_ATTRS
from .ops import get_op
from .ops.registry import TENSOR


DEFAULT_OPSET = 17
# Ops that exist in the default domain only from this opset on.
MIN_OPSET_FOR_OP = {"Gelu": 20, "LayerNormalization": 17}


def _is_onnx_op(op_type: str) -> bool:
    return get_op(op_type).onnx_op


def _attr_is_input(op_type: str, attr: str, opset: int) -> bool:
    """Whether ONNX at `opset` takes this parameter as an input (else an attribute)."""
    if op_type.startswith("Reduce") and attr == "axes":
        return opset >= (13 if op_type == "ReduceSum" else 18)
    if op_type in ("Squeeze", "Unsqueeze") or (op_type == "Split" and attr == "split"):
        return opset >= 13
    return True


def min_opset(graph: Graph) -> int:
    """The lowest opset that has every op of `graph`."""
    return max([0] + [MIN_OPSET_FOR_OP.get(n.op_type, 0) for n in graph.nodes])


def export_opset(graph: Graph) -> int:
    return max(DEFAULT_OPSET, min_opset(graph))


class _Exporter:
    def __init__(self, graph: Graph, opset: int):
        self.graph = graph
        self.opset = opset
        self.initializers: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.uses_custom_domain = False
        self.vendor_domains: set[str] = set()  # com.microsoft, for its QOperator ops

    def const_input(self, node: Node, attr: str, value: Any, dtype) -> str:
        name = f"{node.name}/{attr}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def param_dtype(self, node: Node, attr: str):
        """The dtype ONNX requires for a parameter that travels as an input."""
        if attr in ("min", "max", "value"):
            return node.inputs[0].dtype.numpy  # Clip bounds and Pad's value match the data
        if attr in ("scales", "roi"):
            return np.float32
        if attr == "ratio":
            return np.float32
        if attr == "training_mode":
            return np.bool_
        return np.int64

    def schema_attrs(self, op_type: str) -> set[str]:
        return set(onnx.defs.get_schema(op_type, self.opset, "").attributes)

    def export_node(self, node: Node) -> None:
        op_type, attrs = node.op_type, dict(node.attrs)
        inputs = [v.name if v is not None else "" for v in node.inputs]
        if op_type == "Split":
            # Explicit sizes work at every opset, whatever form the IR holds.
            attrs["split"] = [o.shape[attrs["axis"] % node.inputs[0].rank] for o in node.outputs]
            attrs["num_outputs"] = None
        param_inputs = INPUTS_AS_ATTRS.get(op_type, {})
        if param_inputs:
            slots: dict[int, str] = {}
            for idx, attr in param_inputs.items():
                if attr in attrs and _attr_is_input(op_type, attr, self.opset):
                    val = attrs.pop(attr)
                    if val is not None:
                        slots[idx] = self.const_input(node, attr, val, self.param_dtype(node, attr))
            if op_type == "ConstantOfShape":
                inputs = [slots[0]]
            else:
                top = max(slots, default=0)
                inputs = inputs[:1] + [slots.get(i, "") for i in range(1, top + 1)] + inputs[1:]
        if op_type == "Cast":
            attrs["to"] = DType(attrs["to"]).onnx
        if op_type == "Reshape" and not attrs.get("allowzero"):
            attrs.pop("allowzero", None)
        if op_type == "LayerNormalization" and attrs.get("stash_type") == 1:
            attrs.pop("stash_type")
        domain = get_op(op_type).domain
        if domain:
            self.vendor_domains.add(domain)
        elif not _is_onnx_op(op_type):
            domain, self.uses_custom_domain = AOTC_DOMAIN, True
        op = get_op(op_type)
        known = self.schema_attrs(op_type) if not domain else None
        onnx_attrs = {}
        for k, v in attrs.items():
            if v is None:
                continue
            if known is not None and k not in known:
                # aotc's op is a superset across opsets; an attribute this opset lacks must hold its default.
                if op.attrs[k].default is not None and v == op.attrs[k].default:
                    continue
                raise ValueError(f"node {node.name!r}: {op_type} at opset {self.opset} cannot express {k}={v!r}")
            if op.attrs.get(k) is not None and op.attrs[k].kind == TENSOR:
                v = numpy_helper.from_array(np.asarray(v), f"{node.name}/{k}")
            onnx_attrs[k] = v
        self.nodes.append(helper.make_node(op_type, inputs, [o.name for o in node.outputs], name=node.name,
                                           domain=domain, **onnx_attrs))

    def run(self) -> onnx.ModelProto:
        g = self.graph
        for v in g.initializers.values():
            self.initializers.append(numpy_helper.from_array(v.const, v.name))
        for n in g.nodes:
            self.export_node(n)

        def info(v):
            return helper.make_tensor_value_info(v.name, v.dtype.onnx, list(v.shape))

        value_info = [info(o) for n in g.nodes for o in n.outputs if o not in g.outputs]
        graph = helper.make_graph(self.nodes, g.name, [info(v) for v in g.inputs], [info(v) for v in g.outputs],
                                  initializer=self.initializers, value_info=value_info)
        opsets = [helper.make_opsetid("", self.opset)]
        if self.uses_custom_domain:
            opsets.append(helper.make_opsetid(AOTC_DOMAIN, 1))
        opsets += [helper.make_opsetid(d, 1) for d in sorted(self.vendor_domains)]
        from . import __version__
        model = helper.make_model(graph, opset_imports=opsets, producer_name="aotc", producer_version=_aotc_version())
        model.ir_version = 8 if self.opset <= 18 else 9 if self.opset <= 20 else 10
        return model


def to_onnx(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """Build an ONNX ModelProto for `graph` at `opset` (raised to the lowest opset that has every op used);
    without one, at opset 17 or that lowest opset."""
    return _Exporter(graph, max(opset, min_opset(graph)) if opset else export_opset(graph)).run()


def save_onnx(graph: Graph, path: str | os.PathLike, opset: int | None = None) -> None:
    """Write `graph` as an ONNX file, atomically (a failed write leaves no file)."""
    model = to_onnx(graph, opset)
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    try:
        onnx.save_model(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _aotc_version() -> str:
    from . import __version__
    return __version__

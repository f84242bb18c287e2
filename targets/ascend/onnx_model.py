"""The IR graph as the ONNX model handed to ATC: exported at the target's opset, then cleaned with
onnx-graphsurgeon (constants folded, dead nodes removed, nodes in topological order), deterministically."""
from __future__ import annotations

import onnx

from aotc.compiler.ir import Graph
from aotc.compiler.onnx_export import to_onnx
from aotc.compiler.optional_dependencies import require


def atc_onnx_model(graph: Graph, opset: int) -> onnx.ModelProto:
    """`graph` at ONNX `opset` (the exporter raises it only for ops newer than `opset`, which the target's
    decompose_for_opset pass has already rewritten), cleaned by onnx-graphsurgeon."""
    gs = require("onnx_graphsurgeon", "The ascend target", extra="ascend", package="onnx-graphsurgeon")
    exported = to_onnx(graph, opset)
    cleaned = gs.import_onnx(exported)
    # fold_shapes=False: graphsurgeon 0.6.1 folds Shape(x) of a static x to x's whole shape, ignoring
    # Shape-15's start/end (a wrong constant; tests/test_target_ascend.py has the case). Shapes of static
    # inputs are constant-folded by aotc's own fold_constants pass instead.
    cleaned.fold_constants(fold_shapes=False).cleanup().toposort()
    model = gs.export_onnx(cleaned)
    # graphsurgeon writes its own producer and the newest IR version its onnx knows; keep aotc's, which
    # matches the opset (ATC parses with the protobuf schema of ONNX 1.12, IR version 8).
    model.ir_version = exported.ir_version
    model.producer_name, model.producer_version = exported.producer_name, exported.producer_version
    del model.opset_import[:]
    model.opset_import.extend(o for o in exported.opset_import)
    onnx.checker.check_model(model)
    return model


def model_bytes(model: onnx.ModelProto) -> bytes:
    """The serialized model; protobuf writes fields in number order, so equal models give equal bytes."""
    return model.SerializeToString(deterministic=True)

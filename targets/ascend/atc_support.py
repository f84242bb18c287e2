"""Which ONNX nodes ATC's parser accepts, from the recorded table atc_onnx_ops.json.

ATC looks a default-domain node up as `ai.onnx::<the model's opset>::<OpType>`, exactly: an op registered
at opsets 8-18 passes in an opset-15 model, LayerNormalization (registered at 17 and 18 only) does not.
record_atc_ops.py regenerates the table from the operator plugins' public sources.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import onnx

from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph
from aotc.compiler.onnx_import import AOTC_DOMAIN
from aotc.compiler.ops import get_op

TABLE = Path(__file__).with_name("atc_onnx_ops.json")
OPSETS = range(11, 19)  # opsets aotc exports for ATC: Clip/Pad/Resize take inputs from 11; nothing is registered above 18

# Why ATC lacks an op, where there is more to say than "not registered".
HINTS = {
    "QuantizeLinear": "INT8 for Ascend goes through CANN's AMCT, not ONNX Q/DQ nodes: compile without --quantize "
                      "(targets/ascend/README.md)",
    "DequantizeLinear": "INT8 for Ascend goes through CANN's AMCT, not ONNX Q/DQ nodes: compile without --quantize "
                        "(targets/ascend/README.md)",
}


class AtcUnsupportedError(AotcError):
    """The model has nodes ATC's ONNX parser does not register (each is named)."""


@lru_cache(maxsize=1)
def atc_table() -> dict:
    return json.loads(TABLE.read_text())


def registered_opsets(op_type: str) -> list[int]:
    return atc_table()["ops"].get(op_type, {}).get("opsets", [])


def why_unsupported(op_type: str, domain: str, opset: int) -> str | None:
    """None when ATC parses a node of this op type and domain in a model of `opset`; else why not."""
    if domain not in ("", "ai.onnx"):
        return f"domain {domain!r} is not ONNX's (an aotc fused op left undecomposed)"
    have = registered_opsets(op_type)
    if opset in have:
        return None
    where = f"registered only at opsets {_ranges(have)}" if have else "registered at no opset"
    return f"ATC's parser has no ai.onnx::{opset}::{op_type} ({where})" + \
        (f"; {HINTS[op_type]}" if op_type in HINTS else "")


def _ranges(opsets: list[int]) -> str:
    parts, start = [], None
    for i, v in enumerate(opsets):
        start = v if start is None else start
        if i + 1 == len(opsets) or opsets[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def default_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if len(versions) != 1:  # ATC reports E16005 for a model without exactly one
        raise AtcUnsupportedError(f"The ONNX model has {len(versions)} opset_import entries for the default domain; "
                                  "ATC needs exactly one.")
    return versions[0]


def check_nodes(nodes, opset: int, more_problems=()) -> None:
    """Raise one AtcUnsupportedError naming every node ATC cannot parse at `opset` (name, op type, why).
    nodes: (name, op type, domain) triples."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for name, op_type, domain in nodes:
        why = why_unsupported(op_type, domain, opset)
        if why:
            by_reason.setdefault((op_type, why), []).append(name)
    problems = [f"{op} ×{len(names)} ({', '.join(repr(n) for n in names)}): {why}"
                for (op, why), names in sorted(by_reason.items())] + list(more_problems)
    if problems:
        raise AtcUnsupportedError(f"ATC cannot take this model at ONNX opset {opset}: " + "; ".join(problems)
                                  + ". Nothing was written. The table of what ATC registers is "
                                  "targets/ascend/atc_onnx_ops.json.")


def check_graph(graph: Graph, opset: int) -> None:
    """The IR graph's nodes, before export (an op that ONNX lacks at `opset` cannot even be exported)."""
    check_nodes([(n.name, n.op_type, "" if get_op(n.op_type).onnx_op else AOTC_DOMAIN) for n in graph.nodes], opset)


def check_model(model: onnx.ModelProto) -> None:
    """The exported model's nodes (what ATC will read), and every graph input or output without a static shape."""
    unknown = [f"{v.name!r} has no static shape (fix it with --input-shape)"
               for v in [*model.graph.input, *model.graph.output]
               if not all(d.HasField("dim_value") and d.dim_value > 0 for d in v.type.tensor_type.shape.dim)]
    check_nodes([(n.name, n.op_type, n.domain) for n in model.graph.node], default_opset(model), unknown)

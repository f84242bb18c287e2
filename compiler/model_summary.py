"""What `aotc inspect` reports about a model: its interface, op histogram,
parameters, FLOPs and the ops aotc cannot handle, as one JSON-able dict."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import AotcError, UnsupportedOpsError
from .user_files import file_sha256
from .ir import Graph
from .onnx_import import (_default_opset, _Importer, declared_dims, find_unsupported_ops, graph_input_protos,
                          read_onnx_model, check_model)
from .dtypes import DType, UnsupportedDTypeError


def graph_flops(graph: Graph) -> tuple[int, dict[str, int]]:
    per_op: Counter = Counter()
    for n in graph.nodes:
        per_op[n.op_type] += n.op.flops(n.inputs, n.outputs, n.attrs)
    return sum(per_op.values()), dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def _dtype_name(elem_type: int) -> str:
    try:
        return DType.from_onnx(elem_type).value
    except UnsupportedDTypeError:
        import onnx
        if elem_type in onnx.TensorProto.DataType.values():
            return onnx.TensorProto.DataType.Name(elem_type).lower()
        return f"unknown element type {elem_type}"  # a damaged file: the report still describes it


def summarize_onnx(path: str | os.PathLike, input_shapes: Mapping[str, Sequence[int]] | None = None
                   ) -> tuple[dict[str, Any], AotcError | None]:
    """The report, and the error (if any) that stops the model from compiling.

    Problems with the model itself (missing file, not ONNX) raise; problems
    that a report can still describe (unsupported ops, dynamic shapes) are
    returned beside a partial report.
    """
    path = Path(path)
    model = read_onnx_model(path)
    hist = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node)
    report: dict[str, Any] = {
        "model": {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path),
                  "producer": f"{model.producer_name} {model.producer_version}".strip(),
                  "ir_version": model.ir_version, "opset": _default_opset(model)},
        "inputs": [{"name": p.name, "dtype": _dtype_name(p.type.tensor_type.elem_type), "shape": declared_dims(p)}
                   for p in graph_input_protos(model)],
        "outputs": [{"name": p.name, "dtype": _dtype_name(p.type.tensor_type.elem_type), "shape": declared_dims(p)}
                    for p in model.graph.output],
        "nodes": len(model.graph.node),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quantization": quantization_summary(model),
    }
    unsupported, counts = find_unsupported_ops(model)
    report["unsupported_ops"] = {op: {"count": counts[op], "nodes": names[:5]} for op, names in sorted(unsupported.items())}
    error: AotcError | None = None
    try:
        check_model(model)
        graph = _Importer(model, path.parent).run(input_shapes or {})
    except AotcError as e:
        error = e if not isinstance(e, UnsupportedOpsError) else UnsupportedOpsError(unsupported, dict(counts))
        report["static_graph"] = None
        return report, error
    flops, per_op = graph_flops(graph)
    report["inputs"] = [{"name": v.name, "dtype": v.dtype.value, "shape": list(v.shape)} for v in graph.inputs]
    report["outputs"] = [{"name": v.name, "dtype": v.dtype.value, "shape": list(v.shape)} for v in graph.outputs]
    report["static_graph"] = {
        "nodes": len(graph.nodes),
        "op_histogram": graph.op_histogram(),
        "parameters": graph.parameter_count(),
        "parameter_bytes": graph.parameter_bytes(),
        "flops": flops,
        "flops_by_op": per_op,
    }
    return report, error


QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
                 # onnxruntime's com.microsoft QOperator ops (compiler/ops/qoperator_ms.py)
                 "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool",
                 "QLinearAveragePool", "QLinearConcat", "QGemm")


def quantization_summary(model) -> dict[str, Any] | None:
    """Whether the model is pre-quantized (QAT / QDQ export, QOperator ops) and how: Q/DQ counts, pairs
    (a DequantizeLinear reading a QuantizeLinear), per-tensor vs per-channel DequantizeLinear, the quantized
    dtypes of activations and weights, QOperator op counts. None for a float model."""
    import onnx
    from onnx import numpy_helper
    nodes = list(model.graph.node)
    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in nodes if n.op_type == "Constant" and n.attribute
                   and n.attribute[0].type == onnx.AttributeProto.TENSOR})
    q = [n for n in nodes if n.op_type == "QuantizeLinear"]
    dq = [n for n in nodes if n.op_type == "DequantizeLinear"]
    qop = Counter(n.op_type for n in nodes if n.op_type in QOPERATOR_OPS)
    if not q and not dq and not qop:
        return None
    weight_q = {n.output[0] for n in q if n.input[0] in consts}  # a float weight quantized in the graph (torch)
    q_out = {n.output[0] for n in q}
    per_channel = sum(1 for n in dq if n.input[1] in consts and numpy_helper.to_array(consts[n.input[1]]).size > 1)

    def dtypes(ns):  # the zero point's dtype (uint8 when omitted); a zero point computed in the graph: not known
        return sorted({_dtype_name(consts[n.input[2]].data_type) if len(n.input) > 2 and n.input[2] else "uint8"
                       for n in ns if len(n.input) <= 2 or not n.input[2] or n.input[2] in consts})
    weights = [n for n in dq if n.input[0] in consts or n.input[0] in weight_q]
    return {"quantize_linear": len(q), "dequantize_linear": len(dq), "qdq_pairs": sum(n.input[0] in q_out for n in dq),
            "per_channel": per_channel, "per_tensor": len(dq) - per_channel,
            "activation_dtypes": dtypes([n for n in q if n.output[0] not in weight_q]),
            "weight_dtypes": dtypes(weights), "weights": len(weights), "qoperator_ops": dict(sorted(qop.items()))}


def _format_quantization(qs: dict[str, Any]) -> str:
    ops = ", ".join(f"{k} x{v}" for k, v in qs["qoperator_ops"].items())
    return (f"quantized  pre-quantized: {qs['qdq_pairs']} Q/DQ pairs ({qs['quantize_linear']} QuantizeLinear, "
            f"{qs['dequantize_linear']} DequantizeLinear: {qs['per_channel']} per-channel, {qs['per_tensor']} "
            f"per-tensor); activations {'/'.join(qs['activation_dtypes']) or '-'}, {qs['weights']} weights "
            f"{'/'.join(qs['weight_dtypes']) or '-'}" + (f"; QOperator ops {ops}" if ops else "")
            + "; aotc fuses them into int8 ops with the model's scales")


def _si(n: float, unit: str = "") -> str:
    for k, s in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= k:
            return f"{n / k:.2f} {s}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def format_report(r: dict[str, Any]) -> str:
    m = r["model"]
    lines = [f"model      {m['path']}  ({_si(m['bytes'], 'B')}, opset {m['opset']}, {m['producer'] or 'unknown producer'})",
             f"sha256     {m['sha256']}"]

    def io(kind, items):
        for it in items:
            dims = "x".join(map(str, it["shape"])) or "scalar"
            lines.append(f"{kind:<10} {it['name']}: {it['dtype']}[{dims}]")

    io("input", r["inputs"])
    io("output", r["outputs"])
    if r.get("quantization"):
        lines.append(_format_quantization(r["quantization"]))
    s = r.get("static_graph")
    if s:
        lines.append(f"parameters {s['parameters']:,} ({_si(s['parameter_bytes'], 'B')})")
        total = max(s["flops"], 1)
        top = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(s["flops_by_op"].items())[:4])
        lines.append(f"compute    {_si(s['flops'], 'FLOP')} per run ({top})")
    lines.append(f"ops        {r['nodes']} nodes in the file" + (f", {s['nodes']} after static-shape folding" if s else ""))
    width = max((len(k) for k in r["op_histogram"]), default=0)
    for op, n in r["op_histogram"].items():
        after = s["op_histogram"].get(op, 0) if s else None
        mark = "  UNSUPPORTED" if op in r["unsupported_ops"] else ""
        lines.append(f"  {op:<{width}}  {n:>5}" + (f"  -> {after:>5}" if after is not None else "") + mark)
    if r["unsupported_ops"]:
        lines.append("unsupported: " + "; ".join(f"{op} ×{u['count']} ({', '.join(u['nodes'][:3])})"
                                                  for op, u in r["unsupported_ops"].items()))
    return "\n".join(lines)

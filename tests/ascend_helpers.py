"""Shared by the ascend target tests: compile an IR graph into an Ascend bundle, run the bundle's model.onnx
with onnxruntime and compare with compiler.interpret; check every node against the recorded ATC table."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx

from aotc import compiler
from x86_helpers import assert_close

ROOT = Path(__file__).resolve().parent.parent
ATC_TABLE = ROOT / "targets" / "ascend" / "atc_onnx_ops.json"
SOC = "Ascend310P3"


def assert_atc_registered(model_path: Path) -> onnx.ModelProto:
    """Every node of the model is a default-domain op that the recorded ATC table registers at the model's
    opset (read from the JSON here, not through the target's own check)."""
    model = onnx.load(str(model_path))
    ops = json.loads(ATC_TABLE.read_text())["ops"]
    (opset,) = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert [o.domain for o in model.opset_import] == [""], model.opset_import
    bad = [(n.name, n.op_type) for n in model.graph.node
           if n.domain not in ("", "ai.onnx") or opset not in ops.get(n.op_type, {}).get("opsets", [])]
    assert not bad, f"nodes ATC does not register at opset {opset}: {bad}"
    for v in [*model.graph.input, *model.graph.output]:
        assert all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim), f"{v.name} is not static"
    return model


def compile_ascend(graph: compiler.Graph, out_dir: Path, passes="none", **target_options) -> Path:
    import aotc
    options = {"soc_version": SOC, **target_options}
    digest = hashlib.sha256((str(graph) + repr(sorted(options.items())) + repr(passes)).encode()).hexdigest()[:10]
    return aotc.compile(graph, out_dir / f"{graph.name}-{digest}", target="ascend", target_options=options,
                        passes=passes).path


def check_graph(graph: compiler.Graph, feeds: dict, out_dir: Path, rtol=1e-5, atol=1e-5, **target_options) -> dict:
    """Compile `graph` for ascend, check model.onnx against the ATC table, and compare onnxruntime on it with
    aotc's interpreter; returns onnxruntime's outputs."""
    from aotc.targets.ascend.loader import reference_run
    want = compiler.interpret(graph, feeds)
    bundle = compile_ascend(graph, out_dir, **target_options)
    assert_atc_registered(bundle / "model.onnx")
    got = reference_run(bundle, feeds)
    for name, ref in want.items():
        assert_close(np.asarray(got[name]), ref, f"{graph.name} output {name}", rtol, atol)
    return got

"""Whole models as Ascend bundles: MiniLM-L6, EfficientNet-Lite0 and the GPT-2-style block, compiled with the
default pipeline (fused ops decomposed again for ATC); every node of model.onnx registered in the recorded
ATC table at the export opset, and onnxruntime on model.onnx matching aotc's interpreter on the source model
(max error relative to the output's largest magnitude ≤ 1e-5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from ascend_helpers import assert_atc_registered, compile_ascend
from models import export_minilm, minilm_feeds

pytestmark = pytest.mark.slow

MAX_REL_ERR = 1e-5


def check_model(path: Path, feeds: dict, out_dir: Path, input_shapes=None) -> dict:
    import aotc
    from aotc.targets.ascend.loader import reference_run
    bundle = aotc.compile(str(path), out_dir / path.stem, target="ascend",
                          target_options={"soc_version": "Ascend910B1"}, input_shapes=input_shapes).path
    model = assert_atc_registered(bundle / "model.onnx")
    graph = compiler.load_onnx(path, input_shapes=input_shapes)
    want = compiler.interpret(graph, feeds)
    got = reference_run(bundle, feeds)
    errs = {}
    for name, ref in want.items():
        errs[name] = float(np.abs(got[name] - ref).max() / max(np.abs(ref).max(), 1e-30))
        assert errs[name] <= MAX_REL_ERR, f"{path.name} {name}: relative error {errs[name]:.3g}"
    info = {"errors": errs, "ops": sorted({n.op_type for n in model.graph.node}), "nodes": len(model.graph.node)}
    print(f"{path.name}: {info}")  # shown with -s: the numbers the docs quote
    return info


def test_minilm(model_cache, tmp_path):
    info = check_model(export_minilm(model_cache, "legacy", "eager"), minilm_feeds(), tmp_path)
    assert "LayerNormalization" not in info["ops"] and "Erf" in info["ops"]  # decomposed for opset 15


def test_efficientnet_lite0(model_cache, tmp_path):
    from test_model_x86 import efficientnet_lite0_onnx
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    info = check_model(efficientnet_lite0_onnx(model_cache), {"x": x}, tmp_path)
    assert "Conv" in info["ops"]


def test_gpt2_block(model_cache, tmp_path):
    from test_model_gpt2 import export_gpt2, token_ids
    info = check_model(export_gpt2(model_cache, "legacy17"), {"ids": token_ids()}, tmp_path)
    assert "LayerNormalization" not in info["ops"]

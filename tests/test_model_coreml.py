"""Whole models through the coreml target (default pipeline, fp32 / fp16 / int8), the saved packages
evaluated by the NumPy MIL evaluator (on macOS also by Core ML) against aotc's interpreter:

- MiniLM-L6 on 64 real sentences: fp32 within 1e-4 relative; fp16 and int8 mean-pooled embeddings against
  the fp32 interpreter's (mean cosine >= 0.999 fp16, >= 0.99 int8);
- EfficientNet-Lite0 (real weights) on 36 crops of two real photos: fp32 within 1e-4 relative; fp16 and
  int8 top-1 agreement with fp32;
- the GPT-2-style block (tests/test_model_gpt2.py) in fp32, iOS16 (matmul chain) and iOS18 (fused attention).

The package sizes printed here are the ones in targets/coreml/README.md."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from coreml_helpers import compile_coreml, run_everywhere
from models import export_minilm

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))


def package_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in (bundle / "model.mlpackage").rglob("*") if p.is_file())


def rel_err(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _compile(model, out: Path, precision: str, deployment="iOS16", **options) -> Path:
    import aotc
    key = f"{Path(model).stem}-{deployment}-{precision}-{options.get('quantize', 'float')}"
    if not (out / key / "manifest.json").exists():
        aotc.compile(model, out / key, target="coreml", target_options={"coreml_target": deployment,
                                                                        "precision": precision}, **options)
    return out / key


# -- MiniLM-L6 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(model_cache, tmp_path_factory):
    from test_quant_models import BATCH, CALIBRATION_SENTENCES, SEQ, TEST_SENTENCES, _batches
    path = export_minilm(model_cache, "legacy", "eager", dynamic=True)
    shapes = {"input_ids": (BATCH, SEQ), "attention_mask": (BATCH, SEQ)}
    graph = compiler.load_onnx(path, input_shapes=shapes)
    test = _batches(TEST_SENTENCES[:16])  # 16 real sentences: the NumPy evaluator of MiniLM is the slow part
    return {"path": path, "shapes": shapes, "graph": graph, "test": test, "cal": _batches(CALIBRATION_SENTENCES),
            "out": tmp_path_factory.mktemp("coreml-minilm")}


def _embeddings(run, feeds_list):
    from minilm import mean_pool
    return np.concatenate([mean_pool(run(f), f["attention_mask"]) for f in feeds_list])


@pytest.mark.parametrize("precision,quantize", [("fp32", None), ("fp16", None), ("fp32", "int8"), ("fp16", "int8")])
def test_minilm(minilm, precision, quantize):
    options = {"input_shapes": minilm["shapes"]}
    if quantize:
        options.update(quantize="int8", calibration=minilm["cal"])
    deployment = "iOS17" if quantize and precision == "fp16" else "iOS16"
    bundle = _compile(minilm["path"], minilm["out"], precision, deployment, **options)
    test = minilm["test"]
    ref = _embeddings(lambda f: compiler.interpret(minilm["graph"], f)["last_hidden_state"], test)
    for how, _ in run_everywhere(bundle, test[0]):
        got = _embeddings(lambda f: dict(run_everywhere(bundle, f))[how]["last_hidden_state"], test)
        cos = (ref * got).sum(1)
        size = package_bytes(bundle)
        print(f"\nMiniLM-L6 coreml {deployment} {precision} {quantize or 'float'} ({how}): mean cosine "
              f"{cos.mean():.6f}, min {cos.min():.6f} over {len(cos)} sentences; package {size / 1e6:.1f} MB")
        if quantize:
            assert cos.mean() >= 0.99 and cos.min() >= 0.97
            assert size < (62e6 if precision == "fp32" else 40e6)  # float: 90 MB fp32, 45 MB fp16
        elif precision == "fp16":
            assert cos.mean() >= 0.999
        else:
            hidden = dict(run_everywhere(bundle, test[0]))[how]["last_hidden_state"]
            want = compiler.interpret(minilm["graph"], test[0])["last_hidden_state"]
            assert rel_err(hidden, want) <= 1e-4
    ops = json.loads((bundle / "manifest.json").read_text())["coreml"]
    assert ops["inputs"][0]["coreml_name"] == "input_ids" and ops["outputs"][0]["coreml_name"] == "last_hidden_state"


def test_minilm_rebuild_is_byte_identical(minilm, tmp_path):
    import aotc
    a = aotc.compile(minilm["path"], tmp_path / "a", target="coreml", input_shapes=minilm["shapes"]).path
    b = aotc.compile(minilm["path"], tmp_path / "b", target="coreml", input_shapes=minilm["shapes"]).path
    for f in sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


# -- EfficientNet-Lite0 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def effnet(model_cache, tmp_path_factory):
    pytest.importorskip("PIL")
    from test_model_x86 import efficientnet_lite0_onnx
    from test_quant_models import calibration_images, photo_test_set
    path = efficientnet_lite0_onnx(model_cache)
    graph = compiler.load_onnx(path)
    test = photo_test_set()
    fp32 = np.concatenate([compiler.interpret(graph, f)["y"] for f in test])
    return {"path": path, "test": test, "fp32": fp32, "cal": calibration_images(),
            "out": tmp_path_factory.mktemp("coreml-effnet")}


@pytest.mark.parametrize("precision,quantize", [("fp32", None), ("fp16", None), ("fp16", "int8")])
def test_efficientnet_lite0(effnet, precision, quantize):
    options = {"quantize": "int8", "calibration": effnet["cal"]} if quantize else {}
    deployment = "iOS17" if quantize else "iOS16"
    bundle = _compile(effnet["path"], effnet["out"], precision, deployment, **options)
    for how, _ in run_everywhere(bundle, effnet["test"][0]):
        got = np.concatenate([dict(run_everywhere(bundle, f))[how]["y"] for f in effnet["test"]])
        agree = float(np.mean(got.argmax(1) == effnet["fp32"].argmax(1)))
        size = package_bytes(bundle)
        print(f"\nEfficientNet-Lite0 coreml {deployment} {precision} {quantize or 'float'} ({how}): top-1 "
              f"agreement with fp32 {agree:.3f} on {len(got)} photo crops, max relative error "
              f"{rel_err(got, effnet['fp32']):.2e}; package {size / 1e6:.2f} MB")
        if precision == "fp32":
            assert rel_err(got, effnet["fp32"]) <= 1e-4
        elif quantize:
            assert agree >= 0.75
            assert size < 5.5e6  # 4.6M parameters as int8 (fp16: 9.4 MB)
        else:
            assert agree >= 0.95


# -- GPT-2-style block -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("deployment", ["iOS16", "iOS18"])
def test_gpt2_block(model_cache, tmp_path, deployment):
    from test_model_gpt2 import export_gpt2, token_ids
    path = export_gpt2(model_cache, "legacy17")
    graph = compiler.load_onnx(path)
    feeds = {"ids": token_ids()}
    want = compiler.interpret(graph, feeds)["logits"]
    bundle = _compile(path, tmp_path, "fp32", deployment)
    for how, got in run_everywhere(bundle, feeds):
        assert rel_err(got["logits"], want) <= 1e-4, how
    from aotc.targets.coreml.mil_eval import MilPackage
    ops = MilPackage(bundle / "model.mlpackage").op_types
    assert ("scaled_dot_product_attention" in ops) == (deployment == "iOS18")


def test_pruned_minilm_compiles(minilm, tmp_path):
    """Head pruning (after fusion) leaves Attention ops with fewer heads: they lower like any other."""
    import aotc
    # Named heads (no scoring: drift scoring of 72 heads in the interpreter took minutes here, and which heads
    # go does not matter to the lowering).
    spec = "0:1,0:7,1:3,2:0,2:11,3:5,4:2,5:9"
    bundle = aotc.compile(minilm["path"], tmp_path / "pruned", target="coreml", input_shapes=minilm["shapes"],
                          prune_heads_spec=spec, target_options={"precision": "fp32"}).path
    from aotc.api import CompileOptions, build_pass_manager, load_model, run_pipeline
    from coreml_helpers import evaluate
    opts = CompileOptions(input_shapes=minilm["shapes"], prune_heads_spec=spec)
    pruned, _ = load_model(minilm["path"], opts)
    run_pipeline(pruned, build_pass_manager(opts))
    heads = [n.attrs["num_heads"] for n in pruned.nodes if n.op_type == "Attention"]
    assert sum(heads) < 6 * 12, heads
    feeds = minilm["test"][0]
    want = compiler.interpret(pruned, feeds)["last_hidden_state"]
    assert rel_err(evaluate(bundle, feeds)["last_hidden_state"], want) <= 1e-4

"""all-MiniLM-L6-v2 exported by both torch exporters, with eager and sdpa
attention, imported and interpreted by aotc, against onnxruntime and torch."""
import numpy as np
import pytest

from aotc import compiler
from models import export_minilm, load_minilm, minilm_feeds
from oracle import ort_run

pytestmark = pytest.mark.slow
VARIANTS = [(e, a) for e in ("legacy", "dynamo") for a in ("eager", "sdpa")]


@pytest.mark.parametrize("exporter,attn", VARIANTS)
def test_minilm_matches_onnxruntime(model_cache, exporter, attn):
    path = export_minilm(model_cache, exporter, attn)
    graph = compiler.load_onnx(path)
    feeds = minilm_feeds()
    got = compiler.interpret(graph, feeds)["last_hidden_state"]
    want = ort_run(str(path), feeds)["last_hidden_state"]
    assert got.shape == (1, 128, 384)
    err = np.abs(got - want).max()
    assert err <= 1e-4, f"max abs error {err}"
    # The static graph keeps the model's real compute and drops the shape plumbing.
    hist = graph.op_histogram()
    assert hist["MatMul"] == 48 and "Shape" not in hist and "ConstantOfShape" not in hist


def test_minilm_matches_eager_torch(model_cache):
    import torch
    path = export_minilm(model_cache, "legacy", "eager")
    feeds = minilm_feeds(seed=3)
    got = compiler.interpret(compiler.load_onnx(path), feeds)["last_hidden_state"]
    with torch.no_grad():
        want = load_minilm("eager")(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_dynamic_axes_fixed_by_input_shapes(model_cache):
    path = export_minilm(model_cache, "legacy", "eager", dynamic=True)
    graph = compiler.load_onnx(path, input_shapes={"input_ids": (2, 64), "attention_mask": (2, 64)})
    assert graph.outputs[0].shape == (2, 64, 384)
    feeds = minilm_feeds(batch=2, seq=64, seed=1)
    got = compiler.interpret(graph, feeds)["last_hidden_state"]
    want = ort_run(str(path), feeds)["last_hidden_state"]
    assert np.abs(got - want).max() <= 1e-4

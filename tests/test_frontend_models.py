"""Real models traced through aotc's frontend (not exported to an ONNX file first) match
eager torch before and after the default pass pipeline, and fuse as their ONNX exports do:
all-MiniLM-L6-v2 (transformers, eager and SDPA attention) and the GPT-2-style decoder of
test_model_gpt2 (the user's own code, so every method is converted)."""
import numpy as np
import pytest
import torch

from aotc import compiler
from models import load_minilm, minilm_feeds
from aotc.passes import PassManager

pytestmark = pytest.mark.slow


def eager(model, feeds):
    with torch.no_grad():
        return model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_minilm_traced_matches_eager_before_and_after_the_pipeline(attn):
    minilm = load_minilm(attn)
    example = minilm_feeds(seed=0)
    graph = compiler.trace(minilm, {k: torch.from_numpy(v) for k, v in example.items()})
    assert [v.name for v in graph.inputs] == ["input_ids", "attention_mask"]
    assert graph.outputs[0].shape == (1, 128, 384)
    feeds = [minilm_feeds(seed=s) for s in (3, 4)]
    for f in feeds:  # other inputs than the example, with other padding
        err = np.abs(compiler.interpret(graph, f)["output"] - eager(minilm, f)).max()
        assert err <= 1e-4, f"max abs error {err}"
    PassManager(None, verify_each=True).run(graph)
    hist = graph.op_histogram()
    assert hist["Attention"] == 6 and "Softmax" not in hist and "MatMul" not in hist
    for f in feeds:
        err = np.abs(compiler.interpret(graph, f)["output"] - eager(minilm, f)).max()
        assert err <= 1e-4, f"max abs error {err} after the pipeline"
    assert minilm.training is False  # tracing left the module's mode alone


def test_minilm_through_the_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    factory = tmp_path / "minilm_factory.py"
    factory.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                       "from models import load_minilm\n\ndef make():\n    return load_minilm('eager')\n")
    out = tmp_path / "minilm.onnx"
    res = subprocess.run([sys.executable, "-m", "aotc.cli", "trace", f"{factory}:make", "--example-input",
                          "input_ids=1x128:int64", "--example-input", "attention_mask=1x128:int64", "-o", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    graph = compiler.load_onnx(out)
    f = minilm_feeds(seed=5)
    err = np.abs(compiler.interpret(graph, f)["output"] - eager(load_minilm("eager"), f)).max()
    assert err <= 1e-4


def test_gpt2_block_traced_and_fused():
    from test_model_gpt2 import build_model, token_ids
    model = build_model(("tril", "triu"))
    ids = token_ids()
    graph = compiler.trace(model, (torch.from_numpy(ids),))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).numpy()
    assert np.abs(compiler.interpret(graph, {"ids": ids})["output"] - want).max() <= 1e-4
    PassManager(None, verify_each=True).run(graph)
    hist = graph.op_histogram()
    assert hist["Attention"] == 2 and hist["SkipLayerNormalization"] == 4 and "Softmax" not in hist
    other = token_ids(seed=1)
    with torch.no_grad():
        want = model(torch.from_numpy(other)).numpy()
    assert np.abs(compiler.interpret(graph, {"ids": other})["output"] - want).max() <= 1e-4


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_transformers_gpt2_causal_and_padding_masks(attn):
    """transformers' GPT-2 (a small random config: no download) builds causal and padding masks
    in library code; traced with one padding pattern, the graph is right for another."""
    from transformers import GPT2Config, GPT2Model
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=64)
    gpt2 = GPT2Model._from_config(cfg, attn_implementation=attn).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt2 = gpt2

        def forward(self, ids, mask):
            return self.gpt2(input_ids=ids, attention_mask=mask).last_hidden_state

    model = LastHidden().eval()
    ids = torch.randint(0, 500, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0
    graph = compiler.trace(model, (ids, mask))
    other_mask = torch.ones(2, 16, dtype=torch.int64)
    other_mask[0, 5:] = 0
    for m in (mask, other_mask, torch.ones(2, 16, dtype=torch.int64)):
        with torch.no_grad():
            want = model(ids, m).numpy()
        got = compiler.interpret(graph, {"ids": ids.numpy(), "mask": m.numpy()})["output"]
        assert np.abs(got - want).max() <= 1e-5

"""A GPT-2-style decoder (2 layers, d 64, 4 heads, vocab 1000, seq 32) built
here in torch with seeded random weights, exported by both torch exporters,
imported and interpreted by aotc, and compared with onnxruntime and eager torch.

The blocks exercise what real decoders export to: token + position
embeddings (Gather, Range), LayerNormalization (or its opset-13
decomposition), a fused qkv Linear split into heads (Split, Reshape,
Transpose), a causal mask (Trilu + masked_fill, triu + where, or an arange
comparison + where), Softmax, the tanh GELU written out and as
nn.GELU(approximate="tanh"), and residual adds.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from aotc import compiler
from oracle import ort_run

torch = pytest.importorskip("torch")
nn = torch.nn

# Tracing warnings are about the seq-dependent mask, which the dynamic-axes variant checks for real.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

VOCAB, N_POS, D, HEADS, LAYERS, BATCH, SEQ = 1000, 64, 64, 4, 2, 2, 32
MAX_ABS_ERROR = 1e-4


class GeluTanhFormula(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class Block(nn.Module):
    def __init__(self, gelu: nn.Module, mask: str):
        super().__init__()
        self.mask = mask
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.fc_out = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.gelu = gelu

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // HEADS))
        if self.mask == "tril":  # Trilu + masked_fill (-> Equal + Where)
            keep = torch.tril(torch.ones(t, t, device=x.device))
            att = att.masked_fill(keep == 0, float("-inf"))
        elif self.mask == "triu":  # Trilu + where
            future = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
            att = torch.where(future, torch.full_like(att, -1e9), att)
        else:  # "arange": Trilu needs opset 14, so opset 13 compares positions
            i = torch.arange(t, device=x.device)
            att = torch.where(i[:, None] >= i[None, :], att, torch.tensor(float("-inf")))
        y = torch.softmax(att, dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc_out(self.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, masks: tuple[str, str]):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, D), nn.Embedding(N_POS, D)
        self.blocks = nn.ModuleList([Block(GeluTanhFormula(), masks[0]),
                                     Block(nn.GELU(approximate="tanh"), masks[1])])
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_model(masks: tuple[str, str]) -> TinyGPT:
    torch.manual_seed(0)
    model = TinyGPT(masks)
    with torch.no_grad():  # LayerNorm's default 1/0 affine would hide a mix-up of scale and bias
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.add_(0.1 * torch.randn_like(mod.weight))
                mod.bias.add_(0.1 * torch.randn_like(mod.bias))
    return model.eval()


def token_ids(batch=BATCH, seq=SEQ, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, seq), dtype=np.int64)


# variant: (exporter kwargs, masks, dynamic axes)
VARIANTS = {
    "legacy17": (dict(dynamo=False, opset_version=17), ("tril", "triu"), False),
    "legacy13": (dict(dynamo=False, opset_version=13), ("arange", "arange"), False),
    "legacy17-dynamic": (dict(dynamo=False, opset_version=17), ("tril", "triu"), True),
    "dynamo": (dict(dynamo=True, external_data=False), ("tril", "triu"), False),
}


def _source_digest() -> str:
    """Cached exports are keyed by this file's model code, so editing the model re-exports."""
    src = "".join(inspect.getsource(obj) for obj in (GeluTanhFormula, Block, TinyGPT, build_model))
    return hashlib.sha256(src.encode()).hexdigest()[:10]


def export_gpt2(cache: Path, variant: str) -> Path:
    kwargs, masks, dynamic = VARIANTS[variant]
    path = cache / f"gpt2-{variant}-{_source_digest()}-torch{torch.__version__}.onnx"
    if path.exists():
        return path
    model = build_model(masks)
    ids = torch.from_numpy(token_ids())
    extra = {}
    if dynamic:
        extra["dynamic_axes"] = {"ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")  # no half-written file under the final name
    torch.onnx.export(model, (ids,), str(tmp), input_names=["ids"], output_names=["logits"], **kwargs, **extra)
    os.replace(tmp, path)
    return path


def onnx_op_histogram(model: onnx.ModelProto) -> Counter:
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return Counter(n.op_type for n in nodes)


def eager_logits(variant: str, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return build_model(VARIANTS[variant][1])(torch.from_numpy(ids)).numpy()


def max_err(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gpt2_matches_onnxruntime_and_torch(model_cache, variant):
    path = export_gpt2(model_cache, variant)
    proto = onnx.load(str(path))
    hist = onnx_op_histogram(proto)
    # The export really masks causally: a Trilu (opset >= 14; the dynamo exporter folds it into a constant
    # mask) or the arange comparison, applied with Where.
    assert hist["Where"] == LAYERS, hist
    if variant.startswith("legacy17"):
        assert hist["Trilu"] == LAYERS, hist
    if variant == "legacy13":
        assert hist["GreaterOrEqual"] == LAYERS and "LayerNormalization" not in hist, hist
    if variant.endswith("dynamic"):
        assert hist["Shape"] > 0 and hist["Range"] > 0, hist  # the shape plumbing aotc must fold

    ids = token_ids()
    graph = compiler.load_onnx(str(path), input_shapes={"ids": ids.shape} if variant.endswith("dynamic") else None)
    got = compiler.interpret(graph, {"ids": ids})["logits"]
    assert got.shape == (BATCH, SEQ, VOCAB) and got.dtype == np.float32

    ours = graph.op_histogram()
    assert ours["MatMul"] + ours.get("Gemm", 0) == 1 + LAYERS * 6, ours  # 4 Linear + 2 attention per layer, head
    assert ours["Softmax"] == LAYERS and ours["Where"] == LAYERS, ours
    for folded in ("Shape", "ConstantOfShape", "Range", "Trilu", "Unsqueeze", "Concat"):
        assert folded not in ours, f"{folded} should have been folded at import: {ours}"

    err_ort = max_err(got, ort_run(str(path), {"ids": ids})["logits"])
    err_torch = max_err(got, eager_logits(variant, ids))
    assert err_ort <= MAX_ABS_ERROR, f"{variant}: max abs error vs onnxruntime {err_ort}"
    assert err_torch <= MAX_ABS_ERROR, f"{variant}: max abs error vs eager torch {err_torch}"
    # Not a degenerate model: the logits vary, and causality holds (changing the last token changes only
    # the last position's logits).
    assert got.std() > 0.1
    ids2 = ids.copy()
    ids2[:, -1] = (ids2[:, -1] + 1) % VOCAB
    got2 = compiler.interpret(graph, {"ids": ids2})["logits"]
    assert max_err(got2[:, :-1], got[:, :-1]) <= 1e-6
    assert max_err(got2[:, -1], got[:, -1]) > 1e-3


@pytest.mark.parametrize("batch,seq", [(1, 16), (3, 64)])
def test_gpt2_dynamic_axes_other_shapes(model_cache, batch, seq):
    """One dynamic export, fixed to other batch/sequence sizes at import."""
    path = export_gpt2(model_cache, "legacy17-dynamic")
    ids = token_ids(batch, seq, seed=batch)
    graph = compiler.load_onnx(str(path), input_shapes={"ids": (batch, seq)})
    assert graph.inputs[0].shape == (batch, seq)
    got = compiler.interpret(graph, {"ids": ids})["logits"]
    assert max_err(got, ort_run(str(path), {"ids": ids})["logits"]) <= MAX_ABS_ERROR
    assert max_err(got, eager_logits("legacy17-dynamic", ids)) <= MAX_ABS_ERROR

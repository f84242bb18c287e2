"""Pre-quantized models as users bring them, shared by tests/test_prequantized*.py and
bench/bench_prequantized_x86.py: onnxruntime `quantize_static` (QDQ and QOperator formats) of
MiniLM-L6 and EfficientNet-Lite0 with real calibration data, and torch.ao QAT models (a small
CNN, a small transformer block) trained for a few steps and exported with their fake-quant
nodes as QuantizeLinear/DequantizeLinear pairs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def ort_quantize_static(src: Path, out: Path, calibration: list[dict], **options) -> Path:
    """onnxruntime.quantization.quantize_static(src) -> out (cached), per-channel int8 weights and uint8
    activations unless `options` say otherwise."""
    if out.exists():
        return out
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration)

        def get_next(self):
            return next(self.it, None)
    kw = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
              weight_type=QuantType.QInt8)
    kw.update(options)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.onnx")
    quantize_static(str(src), str(tmp), Reader(), **kw)
    os.replace(tmp, out)
    return out


def minilm_qdq(cache: Path, batch: int = 1, seq: int = 128) -> Path:
    """MiniLM-L6 QDQ as transformer deployments quantize it (and as TensorRT places Q/DQ): the inputs of the
    dense projections (MatMul with a constant weight), weights per channel; the attention core and the MatMul
    outputs stay float. Calibrated on the 32 calibration sentences."""
    import onnx
    from test_quant_models import CALIBRATION_SENTENCES  # (first: it puts examples/ on sys.path)
    from minilm import tokenize
    from models import export_minilm
    src = export_minilm(cache, "legacy", "eager", dynamic=True)
    model = onnx.load(str(src), load_external_data=False)
    consts = {t.name for t in model.graph.initializer}
    core = [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in consts for i in n.input)]
    cal = [tokenize(CALIBRATION_SENTENCES[i:i + batch], seq) for i in range(0, 32, batch)]
    return ort_quantize_static(src, cache / f"{src.stem}-qdq-matmul-b{batch}s{seq}.onnx", cal,
                               op_types_to_quantize=["MatMul"], nodes_to_exclude=core,
                               extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]})


def efficientnet_qdq(cache: Path) -> Path:
    """EfficientNet-Lite0 with onnxruntime's quantize_static defaults (every op it can quantize, QDQ format),
    calibrated on 8 photo crops."""
    from test_model_x86 import efficientnet_lite0_onnx
    from test_quant_models import calibration_images
    src = efficientnet_lite0_onnx(cache)
    return ort_quantize_static(src, cache / f"{src.stem}-qdq.onnx", calibration_images())


# -- torch.ao QAT ------------------------------------------------------------------------------------------
def _activation_fake_quant(**_):
    """(A qconfig factory: the keywords torch passes are not needed.) uint8 per tensor, affine (0..255: what ONNX QuantizeLinear saturates to; the exporter has no
    reduce_range). Plain FakeQuantize: the default qconfigs' fused observer op has no ONNX export."""
    import torch
    import torch.ao.quantization as tq
    return tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                           qscheme=torch.per_tensor_affine)


def _weight_fake_quant(**_):
    """int8 per output channel, symmetric (zero point 0)."""
    import torch
    import torch.ao.quantization as tq
    return tq.FakeQuantize(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                           dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)


def _train_qat(model, make_batch, loss_fn, steps: int = 30):
    import torch
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        x, y = make_batch()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.eval()


def qat_cnn_onnx(out: Path) -> tuple[Path, np.ndarray]:
    """A small CNN (conv-bn-relu x2 with a residual, pooling, linear) trained with torch.ao QAT (eager mode,
    the x86 qconfig: uint8 activations, per-channel symmetric int8 weights) for a few steps on synthetic data,
    exported with its fake-quant nodes as Q/DQ pairs. Returns (path, an input)."""
    import torch
    import torch.ao.quantization as tq
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
            self.conv2, self.bn2, self.relu2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
            self.conv3 = nn.Conv2d(16, 32, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.relu1(self.bn1(self.conv1(self.quant(x))))
            x = self.relu2(self.bn2(self.conv2(x)))
            x = self.conv3(x)
            return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))

    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    if out.exists():
        return out, x
    torch.manual_seed(0)
    model = Net().train()
    model.qconfig = tq.QConfig(activation=_activation_fake_quant, weight=_weight_fake_quant)
    tq.fuse_modules_qat(model, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]], inplace=True)
    tq.prepare_qat(model, inplace=True)
    g = torch.Generator().manual_seed(0)
    _train_qat(model, lambda: (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)),
               nn.functional.cross_entropy)
    model.apply(tq.disable_observer)
    _export(model, torch.from_numpy(x), out, ["x"], ["y"])
    return out, x


def qat_transformer_onnx(out: Path) -> tuple[Path, np.ndarray]:
    """A small transformer encoder block (self-attention with 4 heads, LayerNorm, GELU MLP) with fake-quant
    on the inputs and weights of its four dense layers (torch.ao FakeQuantize modules, uint8 activations,
    per-channel symmetric int8 weights, as QAT toolkits place them), trained a few steps, exported as Q/DQ."""
    import torch
    import torch.ao.quantization as tq
    from torch import nn

    class QLinear(nn.Linear):
        def __init__(self, i, o):
            super().__init__(i, o)
            self.x_fq, self.w_fq = _activation_fake_quant(), _weight_fake_quant()

        def forward(self, x):
            return nn.functional.linear(self.x_fq(x), self.w_fq(self.weight), self.bias)

    class Block(nn.Module):
        def __init__(self, e=64, h=4):
            super().__init__()
            self.h, self.d = h, e // h
            self.q, self.k, self.v, self.o = QLinear(e, e), QLinear(e, e), QLinear(e, e), QLinear(e, e)
            self.ln1, self.ln2 = nn.LayerNorm(e), nn.LayerNorm(e)
            self.fc1, self.fc2 = QLinear(e, 4 * e), QLinear(4 * e, e)

        def heads(self, t):
            b, s, _ = t.shape
            return t.reshape(b, s, self.h, self.d).transpose(1, 2)

        def forward(self, x):
            b, s, e = x.shape
            a = torch.softmax(self.heads(self.q(x)) @ self.heads(self.k(x)).transpose(-1, -2) / self.d ** 0.5, -1)
            x = self.ln1(x + self.o((a @ self.heads(self.v(x))).transpose(1, 2).reshape(b, s, e)))
            return self.ln2(x + self.fc2(nn.functional.gelu(self.fc1(x))))

    x = np.random.default_rng(2).standard_normal((2, 16, 64)).astype(np.float32)
    if out.exists():
        return out, x
    torch.manual_seed(0)
    model = Block().train()
    g = torch.Generator().manual_seed(0)
    target = torch.randn(64, 64, generator=g) / 8
    _train_qat(model, lambda: ((t := torch.randn(8, 16, 64, generator=g)), t @ target), nn.functional.mse_loss)
    model.apply(tq.disable_observer)
    _export(model, torch.from_numpy(x), out, ["x"], ["y"])
    return out, x


def _export(model, x, out: Path, inputs, outputs) -> None:
    import torch
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(tmp), input_names=inputs, output_names=outputs, dynamo=False,
                          opset_version=17)
    os.replace(tmp, out)

"""Whole models compiled for arm64-neon (default pass pipeline: fused
attention, matmuls, convs) and run once, batch 1, by the bundle's aotc_runner
under qemu-aarch64, against onnxruntime on the same ONNX file: MiniLM-L6 and
EfficientNet-Lite0 with its real weights."""
from __future__ import annotations

import numpy as np
import pytest

from arm64_helpers import TOL, needs_arm64
from models import export_minilm, minilm_feeds
from oracle import ort_run

pytestmark = [pytest.mark.slow, needs_arm64]


def compile_fused(model_path, out):
    import aotc
    return aotc.compile(model_path, out, target="arm64-neon").path


def test_minilm_bundle_under_qemu_matches_onnxruntime(model_cache, tmp_path):
    from aotc.targets.arm64.qemu import run_bundle
    path = export_minilm(model_cache, "legacy", "eager")
    bundle = compile_fused(path, tmp_path / "minilm")
    feeds = minilm_feeds(seed=0)
    got, stats = run_bundle(bundle, feeds, threads=1)
    want = ort_run(str(path), feeds)["last_hidden_state"]
    err = float(np.abs(got["last_hidden_state"] - want).max())
    print(f"MiniLM-L6 arm64-neon under qemu: max abs error {err:.3g}, {stats['mean_ms']:.0f} ms per run")
    assert err <= TOL, f"max abs error {err:.3g}"


def test_efficientnet_lite0_bundle_under_qemu_matches_onnxruntime(model_cache, tmp_path):
    from test_model_x86 import efficientnet_lite0_onnx
    from aotc.targets.arm64.qemu import run_bundle
    path = efficientnet_lite0_onnx(model_cache)
    bundle = compile_fused(path, tmp_path / "effnet")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got, stats = run_bundle(bundle, {"x": x}, threads=1)
    want = ort_run(str(path), {"x": x})["y"]
    err = float(np.abs(got["y"] - want).max())
    print(f"EfficientNet-Lite0 arm64-neon under qemu: max abs error {err:.3g}, {stats['mean_ms']:.0f} ms per run")
    assert err <= TOL, f"max abs error {err:.3g}"
    assert int(got["y"].argmax()) == int(want.argmax())


def test_int8_minilm_bundle_under_qemu_matches_the_x86_int8_bundle(model_cache, tmp_path):
    """The int8 MiniLM-L6 (sdot GEMMs incl. QuantizedAttention's projections, float attention core and
    LayerNorms), one batch under qemu, against
    the x86-avx512 (VNNI) bundle of the same quantized graph and the reference interpreter."""
    from aotc import compiler
    from aotc.passes.quantization import quantize_graph
    from aotc.passes.quantization.quantize import output_error
    from aotc.passes import PassManager
    from aotc.targets.arm64.qemu import run_bundle
    import aotc
    from test_quant_models import BATCH, CALIBRATION_SENTENCES, SEQ, TEST_SENTENCES, _batches
    from x86_helpers import has_avx512
    g = compiler.load_onnx(export_minilm(model_cache, "legacy", "eager", dynamic=True),
                           input_shapes={"input_ids": (BATCH, SEQ), "attention_mask": (BATCH, SEQ)})
    PassManager(None).run(g)
    quantize_graph(g, calibration=_batches(CALIBRATION_SENTENCES))
    assert g.op_histogram()["QuantizedMatMul"] + 3 * g.op_histogram().get("QuantizedAttention", 0) == 36
    bundle = aotc.compile(g, tmp_path / "minilm-int8-arm", target="arm64-neon", passes="none",
                          target_options={"cpu_features": ["dotprod"]}).path
    feeds = _batches(TEST_SENTENCES[:BATCH])[0]
    got, stats = run_bundle(bundle, feeds, threads=1)
    want = compiler.interpret(g, feeds)
    err = output_error(got, want)
    print(f"int8 MiniLM-L6 arm64-neon+dotprod under qemu: 1 - cos vs interpreter {err:.2g}, "
          f"{stats['mean_ms']:.0f} ms per run ({BATCH}x{SEQ} tokens)")
    assert err < 1e-3
    if has_avx512() and "avx512_vnni" in open("/proc/cpuinfo").read():
        from aotc import runtime_stub
        x86 = runtime_stub.load(aotc.compile(g, tmp_path / "minilm-int8-x86", target="x86-avx512",
                                             passes="none").path).run(feeds)
        name = g.outputs[0].name
        diff = float(np.abs(got[name] - x86[name]).max())
        print(f"  vs the x86-avx512 int8 bundle: 1 - cos {output_error(got, x86):.2g}, max abs diff {diff:.3g}")
        assert output_error(got, x86) < 1e-3

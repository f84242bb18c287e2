"""QuantizedConv kernels of the x86-avx512 target (targets/cpu/lower_quant_conv.py) against the reference
kernel: with scale 1 and no bias the output is float32(acc), so the integer accumulation must match exactly;
the float epilogue to float32 rounding; requantized outputs to one step."""
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import compile_and_run, has_avx512

pytestmark = pytest.mark.skipif(not (has_avx512() and "avx512_vnni" in Path("/proc/cpuinfo").read_text()),
                                reason="needs an x86-64 CPU with AVX-512 VNNI")
R = np.random.default_rng(7)


def qconv_graph(x_shape, w_shape, xz=77, xs=1.0, ws=None, bias=False, res=False, act="none", requant=None,
                **conv):
    m = w_shape[0]
    g = compiler.Graph(f"qconv_{'x'.join(map(str, x_shape))}_{'x'.join(map(str, w_shape))}")
    x = g.add_input("x", x_shape, DType.uint8)
    ins = [x, g.add_const("xs", np.array(xs, np.float32)), g.add_const("xz", np.array(xz, np.uint8)),
           g.add_const("w", R.integers(-127, 128, w_shape).astype(np.int8)),
           g.add_const("ws", np.ones(m, np.float32) if ws is None else ws)]
    ins.append(g.add_const("b", R.standard_normal(m).astype(np.float32)) if bias else None)
    attrs = {"activation": act, **conv}
    y_shape = compiler.Graph("probe")  # shape from the op's own inference, through a float-output probe node
    probe = y_shape.add_node("QuantizedConv", [y_shape.add_input("x", x_shape, DType.uint8)] +
                             [y_shape.add_const(v.name, v.const) for v in ins[1:5]], attrs).outputs[0]
    ins.append(g.add_input("r", probe.shape, DType.float32) if res else None)
    if requant:
        ins += [g.add_const("ys", np.array(requant[0], np.float32)), g.add_const("yz", np.array(requant[1], np.uint8))]
    while ins[-1] is None:
        ins.pop()
    g.outputs = list(g.add_node("QuantizedConv", ins, attrs, name="qconv").outputs)
    feeds = {"x": R.integers(0, 256, x_shape).astype(np.uint8)}
    if res:
        feeds["r"] = R.standard_normal(probe.shape).astype(np.float32)
    return g, feeds


EXACT_CASES = {
    # pointwise (VNNI GEMM): pixels a multiple of 16 or not, channels a multiple of 4 or not, odd M
    "pw_28x28": ((1, 32, 28, 28), (48, 32, 1, 1), {}),
    "pw_7x7_c30": ((2, 30, 7, 7), (24, 30, 1, 1), {}),
    "pw_14x14_m20": ((1, 112, 14, 14), (20, 112, 1, 1), {}),
    "pw_k1152": ((1, 1152, 7, 7), (64, 1152, 1, 1), {}),
    # direct (flat rows): depthwise strided, asymmetric padding, dilated, batch 2, non-square kernels
    "dw3_s1": ((1, 16, 14, 14), (16, 1, 3, 3), {"group": 16, "pads": [1, 1, 1, 1]}),
    "dw5_s2_asym": ((1, 8, 15, 15), (8, 1, 5, 5), {"group": 8, "strides": [2, 2], "pads": [1, 1, 2, 2]}),
    "dw3_dil2_b2": ((2, 4, 20, 36), (4, 1, 3, 3), {"group": 4, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "dw7x2_s1x2": ((1, 4, 11, 9), (4, 1, 2, 7), {"group": 4, "strides": [1, 2], "pads": [0, 3, 1, 3]}),
    # the stem, grouped and dilated, strided pointwise, K > 514 (int32 sums)
    "stem_s2": ((1, 3, 32, 32), (16, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    "dense3_int32": ((1, 64, 9, 9), (8, 64, 3, 3), {"pads": [1, 1, 1, 1]}),  # K = 576 > 514: int32 sums
    "grouped_dil": ((1, 8, 12, 12), (8, 2, 3, 3), {"group": 4, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "pw_strided": ((1, 16, 10, 10), (16, 16, 1, 1), {"strides": [2, 2]}),
}


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
def test_qconv_accumulation_is_exact(tmp_path, case):
    x_shape, w_shape, conv = EXACT_CASES[case]
    g, feeds = qconv_graph(x_shape, w_shape, xz=131, **conv)
    want = compiler.interpret(g, feeds)["qconv:0"]
    got = compile_and_run(g, feeds, tmp_path)["qconv:0"]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case,act,res", [("pw_7x7_c30", "clip", False), ("pw_28x28", "none", True),
                                          ("dw5_s2_asym", "relu", False), ("dw3_s1", "none", True)])
def test_qconv_float_epilogue(tmp_path, case, act, res):
    x_shape, w_shape, conv = EXACT_CASES[case]
    ws = R.uniform(0.001, 0.01, w_shape[0]).astype(np.float32)
    g, feeds = qconv_graph(x_shape, w_shape, xs=0.02, ws=ws, bias=True, res=res, act=act, **conv)
    if act == "clip":
        g.nodes[-1].attrs.update(act_alpha=0.0, act_beta=6.0)
    want = compiler.interpret(g, feeds)["qconv:0"]
    got = compile_and_run(g, feeds, tmp_path)["qconv:0"]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("case", ["pw_14x14_m20", "dw5_s2_asym", "stem_s2"])
def test_qconv_requantized_output(tmp_path, case):
    x_shape, w_shape, conv = EXACT_CASES[case]
    ws = R.uniform(0.001, 0.01, w_shape[0]).astype(np.float32)
    g, feeds = qconv_graph(x_shape, w_shape, xs=0.02, ws=ws, bias=True, act="clip", requant=(0.05, 3), **conv)
    g.nodes[-1].attrs.update(act_alpha=0.0, act_beta=6.0)
    want = compiler.interpret(g, feeds)["qconv:0"]
    got = compile_and_run(g, feeds, tmp_path)["qconv:0"]
    assert got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert len(np.unique(want)) > 20  # the requantized range is actually exercised, not saturated


@pytest.mark.parametrize("zp", [30, 128])
def test_qconv_requantization_is_exact_at_ties_and_saturation(tmp_path, zp):
    """A pointwise conv without activation, requantized with y_scale 2 (1/y_scale is exact): every odd sum is a
    .5 tie (half to even), the large sums saturate at both ends, so the kernel must equal the reference bit
    for bit. (The epilogue without an activation was the one TVM left unvectorized, targets/cpu/int8_common.py.)"""
    g, feeds = qconv_graph((1, 32, 12, 12), (24, 32, 1, 1), xz=131, requant=(2.0, zp))
    g.nodes[-1].inputs[3].const = R.integers(-2, 3, (24, 32, 1, 1)).astype(np.int8)  # sums in the output range
    want = compiler.interpret(g, feeds)["qconv:0"]
    got = compile_and_run(g, feeds, tmp_path)["qconv:0"]
    np.testing.assert_array_equal(got, want)
    assert (want == 0).any() and (want == 255).any() and len(np.unique(want)) > 100


def test_requantizing_epilogue_is_vectorized_by_tvm():
    """The requantization expression (clamp, round half to even, zero point, 8-bit cast) inside a loop the
    schedule vectorizes must stay a vector loop after TVM's lowering: T.nearbyint made TVM scalarize the whole
    loop, and LLVM then re-vectorized the wrong axis (gathers, byte extracts: 4x slower epilogues)."""
    import tvm
    from tvm import te
    from aotc.targets.base import get_target
    from aotc.targets.cpu.int8_common import quantize_expr
    tgt = get_target("x86-avx512").tvm_target()
    acc = te.placeholder((8, 64), "int32", name="acc")
    scale = te.placeholder((8,), "float32", name="scale")
    for qdtype, zp in (("uint8", 3), ("int8", -5)):
        y = te.compute((8, 64), lambda i, j: quantize_expr(acc[i, j].astype("float32") * scale[i], 0.05, zp, qdtype,
                                                           reciprocal=True), name="Y")
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([acc, scale, y])}))
        sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("Y"))[-1], [None, 16])[-1])
        mod = tvm.tirx.transform.BindTarget(tgt.with_host(tgt))(sch.mod)
        lowered = tvm.tirx.get_tir_pipeline("s_tir")[0](mod).script()
        assert f'"{qdtype}x16"' in lowered and "_s in" not in lowered, lowered


def test_qconv_int8_activations_run_in_float(tmp_path):
    """vpdpbusd takes u8 x s8: a QuantizedConv on int8 activations has no VNNI kernel, so fit_to_target runs
    it in float (DequantizeLinear -> FusedConv), says which node and why, and the result matches the reference."""
    import aotc
    from aotc import runtime_stub
    g, _ = qconv_graph((1, 8, 8, 8), (8, 8, 1, 1))
    g.nodes[-1].inputs[2].const = np.array(0, np.int8)
    g.inputs[0].dtype = DType.int8
    g.nodes[-1].inputs[2].dtype = DType.int8
    feeds = {"x": np.random.default_rng(1).integers(-128, 128, (1, 8, 8, 8)).astype(np.int8)}
    want = compiler.interpret(g, feeds)
    bundle = aotc.compile(g, tmp_path / "b", target="x86-avx512", passes="none")
    report = next(p["report"] for p in bundle.manifest["passes"] if p["name"] == "fit_to_target")
    assert [(c["node"], c["op"]) for c in report["changed"]] == [(g.nodes[-1].name, "QuantizedConv")]
    assert "int8 activations" in report["changed"][0]["why"]
    got = runtime_stub.load(bundle.path).run(feeds)
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-4 * float(np.abs(w).max()))


@pytest.mark.slow
def test_int8_efficientnet_bundle_matches_the_interpreter(model_cache, tmp_path):
    """The whole int8 EfficientNet-Lite0 (49 QuantizedConv: VNNI pointwise, direct depthwise/stem; the VNNI
    classifier with N = 1000) as an x86 bundle, against the reference interpreter on the same quantized graph.
    Requantized activations may move by one step where float rounding differs (FMA, 1/y_scale), so the logits
    are compared by cosine and class, not bit for bit."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("PIL")
    from aotc import runtime_stub
    from aotc.passes.quantization import quantize_graph
    from aotc.passes import PassManager
    import aotc
    from test_model_x86 import efficientnet_lite0_onnx
    from test_quant_models import calibration_images, photo_test_set
    g = compiler.load_onnx(efficientnet_lite0_onnx(model_cache))
    PassManager(None).run(g)
    quantize_graph(g, calibration=calibration_images())
    assert g.op_histogram()["QuantizedConv"] == 49
    model = runtime_stub.load(aotc.compile(g, tmp_path / "effnet-int8", target="x86-avx512", passes="none").path)
    for feeds in photo_test_set()[::12]:
        want = compiler.interpret(g, feeds)["y"].reshape(-1)
        got = model.run(feeds)["y"].reshape(-1)
        assert got.argmax() == want.argmax()
        assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) > 0.999

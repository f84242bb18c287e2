"""The coreml target: every case of the shared op table (tests/op_cases.py) compiled alone into a bundle
(model.mlpackage), the saved package evaluated by the NumPy MIL evaluator (and on macOS by Core ML's predict)
and compared with aotc's reference interpreter; fp16 and int8; the deployment targets' differences; the compile-time errors; determinism; the
loader off macOS."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import op_cases
from aotc import compiler
from aotc.compiler.dtypes import DType
from coreml_helpers import ON_MACOS, check_graph, compile_coreml, evaluate
from x86_helpers import build_graph

R = np.random.default_rng(1234)


def f32(*shape, lo=None):
    x = R.standard_normal(shape).astype(np.float32)
    return np.abs(x) + lo if lo is not None else x


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("coreml-ops")


# -- the shared op table (tests/op_cases.py), each case at the default deployment target (iOS16) --------
# Options a case needs on this target: GatherND's batch_dims is an iOS17 op.
CASE_OPTIONS = {"gathernd-batch-dims": {"coreml_target": "iOS17"}}
# Cases of the shared table this target refuses, each with the reason its one-paragraph error gives.
REFUSED = {"move-pad-edge-leading-axis": "MIL pads in edge mode only the last two axes",
           "pool-7-MaxPool": "MIL pooling has no dilations"}


@pytest.mark.parametrize("case", op_cases.CASES, ids=op_cases.case_id)
def test_op(case, out_dir):
    options = CASE_OPTIONS.get(case.id, {})
    op_cases.run(case, lambda g, feeds: check_graph(g, feeds, out_dir, case.rtol, case.atol, **options), REFUSED)


def attention_graph(masks: str, **kw):
    return op_cases.attention_graph(op_cases.Data(7), masks, **kw)


@pytest.mark.parametrize("deployment", ["iOS16", "iOS18"])
@pytest.mark.parametrize("masks", ["none", "add", "keep", "both"])
def test_attention_uses_mil_attention_from_ios18(masks, deployment, out_dir):
    g, feeds = attention_graph(masks)
    bundle = check_graph(g, feeds, out_dir, coreml_target=deployment)
    ops = _mil_ops(bundle)
    assert ("scaled_dot_product_attention" in ops) == (deployment == "iOS18"), ops


def test_cross_attention_finite_fill(out_dir):
    """A finite mask_fill replaces masked scores (a fully masked row averages V): MIL's attention only adds a
    mask, so iOS18 keeps the matmul/softmax chain here."""
    g, feeds = attention_graph("both", mask_fill=-1e4, nan_to_zero=0, cross=True)
    for deployment in ("iOS17", "iOS18"):
        assert "scaled_dot_product_attention" not in _mil_ops(check_graph(g, feeds, out_dir, coreml_target=deployment))
    g, feeds = attention_graph("keep", cross=True)
    assert "scaled_dot_product_attention" in _mil_ops(check_graph(g, feeds, out_dir, coreml_target="iOS18"))


def _mil_ops(bundle) -> list[str]:
    from aotc.targets.coreml.mil_eval import MilPackage
    return MilPackage(bundle / "model.mlpackage").op_types


# -- fp16 ----------------------------------------------------------------------------------------------
def _fp16_close(got, want, what):
    """fp16 storage between ops: a relative error of a few fp16 ulps (2**-11) of the output's scale."""
    scale = float(np.abs(want).max()) or 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err < 8e-3, f"{what}: max error {err:.2e} of the output's scale"


@pytest.mark.parametrize("case", ["fused_matmul_gelu", "conv_relu6", "layernorm", "softmax", "attention_ios18",
                                  "pool", "resize_linear"])
def test_fp16_keeps_io_float32_and_is_close(case, out_dir):
    consts, attrs, deployment = [], {}, "iOS16"
    if case == "fused_matmul_gelu":
        op, inputs = "FusedMatMul", [("a", f32(2, 16, 48))]
        consts, attrs = [("w", f32(48, 64) * 0.2), ("b", f32(64))], {"activation": "gelu"}
    elif case == "conv_relu6":
        op, inputs = "FusedConv", [("x", f32(1, 8, 14, 14))]
        consts = [("w", f32(16, 8, 3, 3) * 0.3), ("b", f32(16))]
        attrs = {"pads": [1, 1, 1, 1], "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}
    elif case == "layernorm":
        op, inputs, consts = "LayerNormalization", [("x", f32(2, 16, 384) * 2 + 1)], [("s", f32(384)), ("b", f32(384))]
    elif case == "softmax":
        op, inputs, attrs = "Softmax", [("x", f32(2, 3, 128) * 4)], {"axis": -1}
    elif case == "pool":
        op, inputs, attrs = "AveragePool", [("x", f32(1, 4, 11, 11))], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    elif case == "resize_linear":
        op, inputs, attrs = "Resize", [("x", f32(1, 3, 6, 6))], {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]}
    if case == "attention_ios18":
        g, feeds = attention_graph("both")
        deployment = "iOS18"
    else:
        g, feeds = build_graph(op, inputs, attrs, consts), dict(inputs)
    want = compiler.interpret(g, feeds)
    bundle = compile_coreml(g, out_dir, coreml_target=deployment, precision="fp16")
    from aotc.targets.coreml.mil_eval import MilPackage
    pkg = MilPackage(bundle / "model.mlpackage")
    assert "cast" in pkg.op_types  # fp32 in, fp16 inside, fp32 out
    for out in pkg.spec.description.output:
        assert out.type.multiArrayType.dataType == coreml_float32()
    got = evaluate(bundle, feeds)
    for name, ref in want.items():
        _fp16_close(got[name], ref, f"{case} {name}")


def coreml_float32():
    from coremltools.proto import FeatureTypes_pb2
    return FeatureTypes_pb2.ArrayFeatureType.FLOAT32


# -- int8 ----------------------------------------------------------------------------------------------
def _quantized_matmul_graph(requantize: bool, act="relu", residual=False):
    k, n = 48, 40
    g = compiler.Graph("qmatmul")
    x = g.add_input("x", (2, 8, k), DType.float32)
    xs, xz = g.add_const("xs", np.array(0.02, np.float32)), g.add_const("xz", np.array(128, np.uint8))
    q = g.add_node("QuantizeLinear", [x, xs, xz], name="quantize_x").outputs[0]
    w = g.add_const("w", R.integers(-127, 128, (k, n)).astype(np.int8))
    ws = g.add_const("ws", (R.random(n) * 0.01 + 0.001).astype(np.float32))
    ins = [q, xs, xz, w, ws, g.add_const("bias", f32(n))]
    if residual:
        ins.append(g.add_input("r", (2, 8, n), DType.float32))
    if requantize:
        ins += [None] * (7 - len(ins)) + [g.add_const("ys", np.array(0.05, np.float32)),
                                          g.add_const("yz", np.array(100, np.uint8))]
    y = g.add_node("QuantizedMatMul", ins, {"activation": act}, name="qmm").outputs[0]
    if requantize:
        y = g.add_node("DequantizeLinear", [y, ins[7], ins[8]], name="dequantize_y").outputs[0]
    g.outputs = [y]
    feeds = {"x": f32(2, 8, k), "r": f32(2, 8, n)}
    return g, {i.name: feeds[i.name] for i in g.inputs}


def _quantized_conv_graph(requantize: bool):
    g = compiler.Graph("qconv")
    x = g.add_input("x", (1, 8, 9, 9), DType.float32)
    xs, xz = g.add_const("xs", np.array(0.03, np.float32)), g.add_const("xz", np.array(120, np.uint8))
    q = g.add_node("QuantizeLinear", [x, xs, xz]).outputs[0]
    w = g.add_const("w", R.integers(-127, 128, (8, 1, 3, 3)).astype(np.int8))
    ws = g.add_const("ws", (R.random(8) * 0.01 + 0.001).astype(np.float32))
    ins = [q, xs, xz, w, ws, g.add_const("bias", f32(8)), None]
    if requantize:
        ins += [g.add_const("ys", np.array(0.04, np.float32)), g.add_const("yz", np.array(0, np.uint8))]
    attrs = {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2], "activation": "clip", "act_alpha": 0.0,
             "act_beta": 6.0}
    y = g.add_node("QuantizedConv", [i for i in ins if i is not None] if not requantize else ins, attrs).outputs[0]
    if requantize:
        y = g.add_node("DequantizeLinear", [y, ins[7], ins[8]]).outputs[0]
    g.outputs = [y]
    return g, {"x": f32(1, 8, 9, 9) * 2}


def _int8_close(got, want, what, steps=1.0, step=0.05):
    """The reference scales the exact int32 sum once; Core ML scales each operand, then sums: float rounding
    apart, and where a value lands on a rounding tie of a requantization, one quantization step."""
    err = np.abs(got - want)
    assert float(err.max()) <= steps * step + 1e-4, f"{what}: max error {err.max():.3g}"
    assert float(np.mean(err > 1e-4)) < 0.01, f"{what}: {np.mean(err > 1e-4):.2%} of values differ"


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
@pytest.mark.parametrize("requantize", [False, True])
def test_quantized_matmul(deployment, requantize, out_dir):
    for act, residual in (("relu", False), ("gelu", True), ("none", False)):
        g, feeds = _quantized_matmul_graph(requantize, act, residual)
        want = compiler.interpret(g, feeds)[g.outputs[0].name]
        bundle = compile_coreml(g, out_dir, coreml_target=deployment)
        _int8_close(evaluate(bundle, feeds)[g.outputs[0].name], want, f"{act} {residual} {deployment}")
        ops = _mil_ops(bundle)
        assert "constexpr_affine_dequantize" in ops
        assert ("quantize" in ops) == (deployment == "iOS17"), ops  # run-time activation quantization


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
@pytest.mark.parametrize("requantize", [False, True])
def test_quantized_conv(deployment, requantize, out_dir):
    g, feeds = _quantized_conv_graph(requantize)
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    bundle = compile_coreml(g, out_dir, coreml_target=deployment)
    _int8_close(evaluate(bundle, feeds)[g.outputs[0].name], want, deployment, step=0.04)


def test_int8_weights_are_stored_as_int8(out_dir):
    """The package's weight blob holds the int8 weights themselves (a quarter of the float bytes)."""
    from aotc.targets.coreml.mil_eval import MilPackage
    g, feeds = _quantized_matmul_graph(False)
    pkg = MilPackage(compile_coreml(g, out_dir) / "model.mlpackage")
    op = next(o for o in pkg.ops if o.type == "constexpr_affine_dequantize")
    data = pkg.value(op.attributes["quantized_data"])
    assert data.dtype == np.int8
    np.testing.assert_array_equal(data, g.initializers["w"].const.T)


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
def test_int8_embedding_table(deployment, out_dir):
    """--quantize int8's embedding: Gather of int8 rows, Cast, Mul by the gathered row scales; the table is
    stored as int8 in the package."""
    g = compiler.Graph("int8_embedding")
    ids = g.add_input("ids", (2, 7), DType.int64)
    table = g.add_const("table", R.integers(-127, 128, (50, 16)).astype(np.int8))
    scales = g.add_const("scales", (R.random((50, 1)) * 0.01).astype(np.float32))
    rows = g.add_node("Gather", [table, ids], {"axis": 0}).outputs[0]
    rows = g.add_node("Cast", [rows], {"to": "float32"}).outputs[0]
    s = g.add_node("Gather", [scales, ids], {"axis": 0}).outputs[0]
    g.outputs = [g.add_node("Mul", [rows, s]).outputs[0]]
    bundle = check_graph(g, {"ids": R.integers(-50, 50, (2, 7))}, out_dir, coreml_target=deployment)
    assert "constexpr_affine_dequantize" in _mil_ops(bundle)


def test_quantize_dequantize_per_tensor(out_dir):
    g = compiler.Graph("qdq")
    x = g.add_input("x", (3, 40), DType.float32)
    s, z = g.add_const("s", np.array(0.05, np.float32)), g.add_const("z", np.array(7, np.int8))
    q = g.add_node("QuantizeLinear", [x, s, z]).outputs[0]
    g.outputs = [q, g.add_node("DequantizeLinear", [q, s, z]).outputs[0]]
    x = f32(3, 40) * 4
    x[0, :4] = [0.025, -0.075, 100.0, -100.0]  # ties (half to even) and saturation
    for deployment in ("iOS16", "iOS17"):
        check_graph(g, {"x": x}, out_dir, coreml_target=deployment)


# -- compile-time errors, options, determinism, the loader -----------------------------------------------
def test_unmappable_nodes_are_all_named_and_nothing_is_written(tmp_path):
    import aotc
    from aotc.targets.coreml.lowering import UnsupportedOnCoreMLError
    g = compiler.Graph("needs_missing_ops")
    x = g.add_input("x", (1, 4, 6, 6), DType.float32)
    a = g.add_node("ToBlockedLayout", [x], {"block": 4}, name="to_blocked").outputs[0]
    b = g.add_node("FromBlockedLayout", [a], {"channels": 4}, name="from_blocked").outputs[0]
    c = g.add_node("MaxPool", [b], {"kernel_shape": [2, 2], "dilations": [2, 2]}, name="dilated_pool").outputs[0]
    d = g.add_node("GatherND", [c, g.add_const("i", np.zeros((1, 1), np.int64))], {"batch_dims": 1},
                   name="batched_gather").outputs[0]
    g.outputs = [d]
    out = tmp_path / "bundle"
    with pytest.raises(UnsupportedOnCoreMLError) as e:
        aotc.compile(g, out, target="coreml", passes="none")
    msg = str(e.value)
    for part in ("4 node(s)", "ToBlockedLayout ×1", "'to_blocked'", "FromBlockedLayout ×1", "'from_blocked'",
                 "MaxPool ×1: 'dilated_pool' (MIL pooling has no dilations)", "'batched_gather'",
                 "batch_dims from iOS17"):
        assert part in msg, (part, msg)
    assert isinstance(e.value, compiler.AotcError)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_every_registered_op_has_a_lowering_or_is_layout_internal():
    from aotc.compiler.ops import ops_targets_see, registered_ops
    from aotc.targets.coreml.rules import LOWERINGS
    cpu_only = {"BlockedConv", "BlockedMaxPool", "ToBlockedLayout", "FromBlockedLayout"}  # the CPU targets' NCHWc layout
    # decomposed or run in float by the target pass before lowering
    fit_to_target = {"QuantizedAttention", "QuantizedAdd", "QuantizedGlobalAveragePool"}
    no_kernel_yet = {"DynamicQuantizeLinear"}  # scales computed at run time: a CPU kernel only (x86, arm64)
    missing = [op for op in ops_targets_see()
               if op not in LOWERINGS and op not in cpu_only | fit_to_target | no_kernel_yet]
    assert not missing, f"registered ops without a Core ML lowering: {missing}"
    assert not set(LOWERINGS) - set(registered_ops())


@pytest.mark.parametrize("deployment,precision", [("iOS16", "fp16"), ("iOS17", "fp32"), ("iOS18", "fp16")])
def test_rebuilds_are_byte_identical(deployment, precision, tmp_path):
    """coremltools writes random UUIDs into Manifest.json and the date into the model: both normalized."""
    g, feeds = _quantized_matmul_graph(True)
    a = compile_coreml(g, tmp_path / "a", coreml_target=deployment, precision=precision)
    b = compile_coreml(g, tmp_path / "b", coreml_target=deployment, precision=precision)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    spec = (a / "model.mlpackage/Data/com.apple.CoreML/model.mlmodel").read_bytes()
    assert b"conversion_date" not in spec
    manifest = json.loads((a / "model.mlpackage/Manifest.json").read_text())
    assert len(manifest["itemInfoEntries"]) == 2 and manifest["rootModelIdentifier"] in manifest["itemInfoEntries"]


def test_package_reloads_with_coremltools_and_keeps_io(tmp_path):
    """coremltools reads the saved package back (spec and weights); names, shapes and spec versions kept."""
    import coremltools as ct
    g, feeds = attention_graph("add")
    for deployment, version in (("iOS16", 7), ("macOS14", 8), ("iOS18", 9)):
        bundle = compile_coreml(g, tmp_path, coreml_target=deployment)
        model = ct.models.MLModel(str(bundle / "model.mlpackage"), skip_model_load=True)
        spec = model.get_spec()
        assert spec.specificationVersion == version
        assert [(i.name, list(i.type.multiArrayType.shape)) for i in spec.description.input] == \
            [("x", [2, 16, 64]), ("add", [2, 1, 1, 16])]
        assert [o.name for o in spec.description.output] == [g.outputs[0].name.replace(":", "_")]
        assert spec.description.metadata.userDefined["com.github.apple.coremltools.version"] == ct.__version__


def test_int64_bool_inputs_and_outputs_cross_as_int32(out_dir):
    g = compiler.Graph("io_types")
    ids = g.add_input("ids", (2, 5), DType.int64)
    flag = g.add_input("flag", (2, 5), DType.bool)
    doubled = g.add_node("Add", [ids, ids], name="doubled").outputs[0]
    g.outputs = [doubled, g.add_node("Not", [flag], name="negated").outputs[0]]
    bundle = check_graph(g, {"ids": np.arange(10).reshape(2, 5) - 3, "flag": R.random((2, 5)) < 0.5}, out_dir)
    io = json.loads((bundle / "manifest.json").read_text())["coreml"]
    assert [(d["name"], d["dtype"], d["coreml_dtype"]) for d in io["inputs"]] == \
        [("ids", "int64", "int32"), ("flag", "bool", "int32")]


def test_options_and_defaults():
    from aotc.targets.base import UnknownTargetError, get_target
    t = get_target("coreml")
    assert (t.deployment.name, t.precision) == ("iOS16", "fp16")  # Core ML's default precision
    assert t.capabilities.level == "graph"
    t = get_target("coreml", coreml_target="macOS15", precision="fp32")
    assert (t.deployment.opset, t.precision) == (18, "fp32")
    with pytest.raises(UnknownTargetError, match="--coreml-target 'iOS15'"):
        get_target("coreml", coreml_target="iOS15")


def test_cli_help_lists_the_options():
    import subprocess
    r = subprocess.run([sys.executable, "-m", "aotc.cli", "targets"], capture_output=True, text=True)
    assert r.returncode == 0 and "coreml" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "aotc.cli", "compile", "--help"], capture_output=True, text=True,
                       env={**__import__("os").environ, "COLUMNS": "200"})
    assert "--coreml-target" in r.stdout and "--precision" in r.stdout and "fp16" in r.stdout


def test_cli_error_exit_code_2_names_the_nodes(tmp_path):
    """An ONNX model with an op the target cannot map: exit 2, one message, nothing written."""
    import subprocess

    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], strides=[2, 2],
                            name="pool_dilated")
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 13)]), path)
    r = subprocess.run([sys.executable, "-m", "aotc.cli", "compile", str(path), "-o", str(tmp_path / "out"),
                        "--target", "coreml", "--coreml-target", "iOS17"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "'pool_dilated'" in r.stderr and "MIL pooling has no dilations" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(ON_MACOS, reason="on macOS the loader runs Core ML")
def test_loader_off_macos_says_it_needs_macos(out_dir):
    import aotc
    from aotc.targets.base import CannotRunHereError
    bundle = compile_coreml(build_graph("Relu", [("x", f32(2, 3))]), out_dir)
    with pytest.raises(CannotRunHereError, match="needs macOS"):
        aotc.load(bundle).run({"x": f32(2, 3)})


def test_missing_coremltools_names_the_extra(monkeypatch):
    from aotc.targets.coreml.package import CoreMLToolsMissingError, import_coremltools
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(CoreMLToolsMissingError, match=r"\[coreml\] extra"):
        import_coremltools()


# -- the evaluator is a real check ------------------------------------------------------------------------
def test_evaluator_reads_weights_like_coremltools(out_dir):
    """Blob records read by mil_eval equal what coremltools' own blob reader returns."""
    from coremltools.libmilstoragepython import _BlobStorageReader
    from aotc.targets.coreml.mil_eval import MilPackage
    g = build_graph("MatMul", [("a", f32(3, 32))], consts=[("w", f32(32, 24))])
    for precision, read in (("fp32", "read_float_data"), ("fp16", "read_fp16_data")):
        pkg = MilPackage(compile_coreml(g, out_dir, precision=precision) / "model.mlpackage")
        reader = _BlobStorageReader(str(pkg.spec_path.parent / "weights" / "weight.bin"))
        blobs = [o.attributes["val"] for o in pkg.ops if o.type == "const" and o.attributes["val"].HasField(
            "blobFileValue")]
        assert blobs
        for v in blobs:
            mine = pkg.value(v).reshape(-1)
            theirs = np.asarray(getattr(reader, read)(v.blobFileValue.offset))
            np.testing.assert_array_equal(mine.view(np.uint16) if precision == "fp16" else mine, theirs)


def test_evaluator_notices_a_wrong_package(out_dir, tmp_path):
    """A weight changed in the saved package (not in the graph) makes the comparison fail."""
    import shutil
    g = build_graph("MatMul", [("a", f32(3, 32))], consts=[("w", f32(32, 24))])
    feeds = {"a": f32(3, 32)}
    bundle = compile_coreml(g, out_dir)
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    blob = broken / "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(blob.read_bytes())
    data[-4:] = np.float32(1e3).tobytes()
    blob.write_bytes(bytes(data))
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    np.testing.assert_allclose(evaluate(bundle, feeds)[g.outputs[0].name], want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(evaluate(broken, feeds)[g.outputs[0].name], want, rtol=1e-3, atol=1e-3)

"""The ascend target: every op aotc registers, compiled alone into an Ascend bundle whose model.onnx must be
registered in ATC's recorded table at the export opset and must match aotc's interpreter when onnxruntime
runs it; fused ops and the decompositions (Gelu, LayerNormalization at opset < 17); the errors (ops ATC
lacks, all named, nothing written); byte-identical rebuilds; build_om.sh and a fake `atc` on PATH; the
loader's CannotRunHereError and `aotc run --reference`."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from aotc import compiler
from ascend_helpers import ROOT, SOC, assert_atc_registered, check_graph, compile_ascend
from aotc.compiler.dtypes import DType
from x86_helpers import build_graph

R = np.random.default_rng(2024)


def f32(*shape, lo=None):
    x = R.standard_normal(shape).astype(np.float32)
    return np.abs(x) + lo if lo is not None else x


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ascend-ops")


def check_op(op_type, inputs, out_dir, attrs=None, consts=(), rtol=1e-5, atol=1e-5, num_outputs=None, **opts):
    g = build_graph(op_type, inputs, attrs, consts, num_outputs)
    return check_graph(g, dict(inputs), out_dir, rtol, atol, **opts)


# -- one case per op (and per interesting attribute); ids name the op first ----------------------------------
def _cases():
    b = R.random((3, 17)) < 0.5
    xs = f32(4, 32)
    xs[0, :3] = [np.nan, np.inf, -np.inf]
    cases = [(op, op, [("x", f32(3, 5, 37) * 3)], {}, ()) for op in
             ["Neg", "Abs", "Relu", "Exp", "Tanh", "Erf", "Sigmoid", "Floor", "Ceil", "Sin", "Cos", "Sign", "Softplus",
              "HardSwish", "Identity", "Dropout", "Gelu"]]
    cases += [(op, op, [("x", f32(4, 64, lo=0.1))], {}, ()) for op in ["Log", "Sqrt", "Reciprocal"]]
    cases += [
        ("Gelu-tanh", "Gelu", [("x", f32(2, 8, 48) * 3)], {"approximate": "tanh"}, ()),
        ("LeakyRelu", "LeakyRelu", [("x", f32(2, 8, 48))], {"alpha": 0.2}, ()),
        ("Elu", "Elu", [("x", f32(2, 8, 48))], {"alpha": 0.7}, ()),
        ("HardSigmoid", "HardSigmoid", [("x", f32(2, 8, 48))], {"alpha": 0.3, "beta": 0.4}, ()),
        ("Clip", "Clip", [("x", f32(2, 8, 48))], {"min": -0.5, "max": 0.7}, ()),
        ("Clip-max-only", "Clip", [("x", f32(2, 8, 48) * 8)], {"max": 6.0}, ()),
        ("Not", "Not", [("c", b)], {}, ()),
        ("IsNaN", "IsNaN", [("x", xs)], {}, ()),
        ("IsInf", "IsInf", [("x", xs)], {"detect_negative": 0}, ()),
        ("Where", "Where", [("c", R.random((4, 1)) < 0.5), ("x", f32(4, 32)), ("y", f32(32))], {}, ()),
        ("Cast-int64-float", "Cast", [("x", R.integers(-50, 50, (3, 21)))], {"to": "float32"}, ()),
        ("Cast-float-int32", "Cast", [("x", f32(3, 21) * 40)], {"to": "int32"}, ()),
        ("Cast-bool-float", "Cast", [("x", b)], {"to": "float32"}, ()),
        ("Reshape", "Reshape", [("x", f32(2, 2, 12))], {"shape": [4, -1]}, ()),
        ("Flatten", "Flatten", [("x", f32(2, 3, 4, 5))], {"axis": 2}, ()),
        ("Squeeze", "Squeeze", [("x", f32(3, 1, 7))], {"axes": [1]}, ()),
        ("Unsqueeze", "Unsqueeze", [("x", f32(3, 7))], {"axes": [0, 3]}, ()),
        ("Transpose", "Transpose", [("x", f32(2, 16, 12, 8))], {"perm": [0, 2, 1, 3]}, ()),
        ("Slice", "Slice", [("x", f32(4, 6, 9))], {"starts": [1, -1], "ends": [3, 0], "axes": [0, 2],
                                                   "steps": [1, -2]}, ()),
        ("Expand", "Expand", [("x", f32(4, 1))], {"shape": [2, 4, 6]}, ()),
        ("Tile", "Tile", [("x", f32(2, 3, 5))], {"repeats": [2, 1, 3]}, ()),
        ("Trilu", "Trilu", [("x", f32(2, 6, 6))], {"upper": 0, "k": 1}, ()),
        ("Pad-constant", "Pad", [("x", f32(2, 5, 6))], {"pads": [0, 1, 2, 0, 2, 1],
                                                        "value": np.array(1.5, np.float32)}, ()),
        ("Pad-reflect", "Pad", [("x", f32(2, 5, 6))], {"pads": [0, 2, 2, 0, 1, 3], "mode": "reflect"}, ()),
        ("Pad-edge", "Pad", [("x", f32(2, 5, 6))], {"pads": [1, 0, 1, 2, 0, 3], "mode": "edge"}, ()),
        ("Gather", "Gather", [("x", f32(3, 9, 4)), ("i", np.array([2, -1, 0, 8], np.int64))], {"axis": 1}, ()),
        ("GatherElements", "GatherElements", [("x", f32(4, 6)), ("i", R.integers(-6, 6, (4, 3)))], {"axis": 1}, ()),
        ("GatherND", "GatherND", [("x", f32(3, 4, 5)), ("i", np.array([[1, 2], [0, -1]], np.int64))], {}, ()),
        ("Concat", "Concat", [("a", f32(2, 3, 5)), ("b", f32(2, 1, 5))], {"axis": 1}, ()),
        ("Softmax", "Softmax", [("x", f32(2, 3, 128) * 4)], {"axis": -1}, ()),
        ("LogSoftmax", "LogSoftmax", [("x", f32(4, 7))], {"axis": 0}, ()),
        ("LayerNormalization", "LayerNormalization", [("x", f32(2, 16, 64) * 2 + 1)], {"axis": -1, "epsilon": 1e-5},
         [("scale", f32(64)), ("bias", f32(64))]),
        ("LayerNormalization-axis1-nobias", "LayerNormalization", [("x", f32(3, 5, 6) * 2 + 1)],
         {"axis": 1, "epsilon": 1e-5}, [("scale", f32(5, 6))]),
        ("GlobalAveragePool", "GlobalAveragePool", [("x", f32(2, 24, 7, 7))], {}, ()),
        ("GlobalMaxPool", "GlobalMaxPool", [("x", f32(2, 24, 7, 7))], {}, ()),
        ("MatMul", "MatMul", [("a", f32(1, 12, 64))], {}, [("w", f32(64, 32) * 0.1)]),
        ("MatMul-batched", "MatMul", [("a", f32(2, 3, 16, 8)), ("b", f32(3, 8, 32))], {}, ()),
        ("Gemm", "Gemm", [("a", f32(5, 64))], {"transB": 1, "alpha": 0.5, "beta": 2.0},
         [("w", f32(48, 64) * 0.1), ("c", f32(1, 48))]),
        ("Conv", "Conv", [("x", f32(1, 8, 12, 12))], {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]},
         [("w", f32(12, 4, 3, 3) * 0.3), ("b", f32(12))]),
        ("Conv-depthwise-s2", "Conv", [("x", f32(1, 16, 15, 15))], {"group": 16, "strides": [2, 2]},
         [("w", f32(16, 1, 5, 5) * 0.3)]),
        ("Conv-same-upper", "Conv", [("x", f32(1, 4, 9, 9))], {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
         [("w", f32(6, 4, 3, 3) * 0.3)]),
        ("ConvTranspose", "ConvTranspose", [("x", f32(1, 8, 7, 7))], {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                                                      "output_padding": [1, 1]},
         [("w", f32(8, 4, 4, 4) * 0.3), ("b", f32(4))]),
        ("BatchNormalization", "BatchNormalization", [("x", f32(2, 6, 5, 5))], {"epsilon": 1e-3},
         [("s", f32(6)), ("b", f32(6)), ("m", f32(6)), ("v", f32(6, lo=0.5))]),
        ("InstanceNormalization", "InstanceNormalization", [("x", f32(2, 3, 8, 16) * 3 + 5)], {"epsilon": 1e-3},
         [("scale", f32(3)), ("bias", f32(3))]),
        ("LRN", "LRN", [("x", f32(2, 8, 6, 16) * 2)], {"size": 5}, ()),
        ("MaxPool", "MaxPool", [("x", f32(1, 4, 11, 11))], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                            "pads": [1, 1, 1, 1]}, ()),
        ("MaxPool-ceil", "MaxPool", [("x", f32(1, 4, 11, 11))], {"kernel_shape": [2, 2], "strides": [2, 2],
                                                                 "ceil_mode": 1}, ()),
        ("AveragePool", "AveragePool", [("x", f32(1, 4, 11, 11))], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                                    "pads": [1, 1, 1, 1], "count_include_pad": 1}, ()),
        ("Resize-nearest", "Resize", [("x", f32(1, 3, 6, 6))], {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]},
         ()),
        ("Resize-linear", "Resize", [("x", f32(1, 3, 6, 6))], {"mode": "linear", "sizes": [1, 3, 4, 9],
                                                               "coordinate_transformation_mode": "align_corners"}, ()),
        ("Resize-cubic", "Resize", [("x", f32(1, 3, 6, 6))], {"mode": "cubic", "scales": [1.0, 1.0, 2.0, 2.0]}, ()),
        ("ArgMax", "ArgMax", [("x", np.round(f32(4, 6, 5) * 2))], {"axis": 1, "keepdims": 1}, ()),
        ("ArgMin", "ArgMin", [("x", np.round(f32(4, 6, 5) * 2))], {"axis": -1, "keepdims": 0,
                                                                   "select_last_index": 1}, ()),
    ]
    for op in ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]:
        a, c = f32(2, 3, 40), f32(3, 1)
        if op == "Pow":
            a = np.abs(a) + 0.1
        if op in ("Equal", "LessOrEqual", "GreaterOrEqual"):
            c = a[0, :, :1].copy()  # ties
        cases.append((op, op, [("a", a), ("b", c)], {}, ()))
    cases += [(f"{op}-int64", op, [("a", R.integers(-50, 50, (4, 33))), ("b", R.integers(1, 7, (33,)))], {}, ())
              for op in ["Add", "Mul", "Sub"]]
    b = f32(16) * 9
    b[np.abs(b) < 1] = 3
    cases += [("Mod-fmod", "Mod", [("a", f32(3, 16) * 40), ("b", b)], {"fmod": 1}, ()),
              ("Mod-int64", "Mod", [("a", R.integers(-50, 50, (4, 33))), ("b", R.integers(1, 7, (33,)))], {}, ())]
    cases += [(op, op, [("a", R.random((5, 20)) < 0.5), ("b", R.random((20,)) < 0.5)], {}, ())
              for op in ["And", "Or", "Xor"]]
    cases += [(op, op, [("a", f32(3, 16)), ("b", f32(16)), ("c", f32(3, 1))], {}, ())
              for op in ["Min", "Max", "Sum", "Mean"]]
    for op in ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare", "ReduceProd"]:
        x = (R.uniform(0.7, 1.4, (3, 4, 10)) * R.choice([-1, 1], (3, 4, 10))).astype(np.float32)
        cases.append((op, op, [("x", x)], {"axes": [1, 2], "keepdims": 1}, ()))
        cases.append((f"{op}-axis0", op, [("x", x)], {"axes": [0], "keepdims": 0}, ()))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op(case, out_dir):
    _, op, inputs, attrs, consts = case
    check_op(op, inputs, out_dir, attrs, consts)


def test_split(out_dir):
    check_op("Split", [("x", f32(2, 10, 3))], out_dir, {"axis": 1, "split": [3, 7]}, num_outputs=2)


def test_shape_size_range_constant_of_shape(out_dir):
    """The shape ops: folded to constants by onnx-graphsurgeon where their inputs are static, and still right."""
    g = compiler.Graph("shape_ops")
    x = g.add_input("x", (4, 6), DType.float32)
    s = g.add_node("Shape", [x], {"start": -1}).outputs[0]
    n = g.add_node("Size", [x]).outputs[0]
    sf = g.add_node("Cast", [g.add_node("Mul", [s, n]).outputs[0]], {"to": "float32"}).outputs[0]
    r = g.add_node("Range", [g.add_const(k, np.array(v, np.float32)) for k, v in
                             (("start", 0.5), ("limit", 3.5), ("delta", 0.5))]).outputs[0]
    c = g.add_node("ConstantOfShape", [], {"shape": [4, 6], "value": np.array([2.5], np.float32)}).outputs[0]
    y = g.add_node("Add", [g.add_node("Mul", [x, sf]).outputs[0], c]).outputs[0]
    g.outputs = [y, g.add_node("Mul", [r, g.add_const("two", np.array(2.0, np.float32))]).outputs[0]]
    check_graph(g, {"x": f32(4, 6)}, out_dir)


# -- fused ops (what the default pipeline produces), decomposed for ATC ----------------------------------------
@pytest.mark.parametrize("act", ["none", "gelu", "gelu_tanh", "clip", "hardswish", "silu", "relu", "sigmoid"])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_matmul(act, residual, out_dir):
    g = compiler.Graph("fused_matmul")
    a = g.add_input("a", (2, 16, 48), DType.float32)
    r = g.add_input("r", (2, 16, 64), DType.float32) if residual else None
    attrs = {"activation": act, "act_alpha": 0.0 if act == "clip" else None,
             "act_beta": 6.0 if act == "clip" else None, "residual_before_activation": 0}
    node = g.add_node("FusedMatMul", [a, g.add_const("w", f32(48, 64) * 0.2), g.add_const("b", f32(64))]
                      + ([r] if r is not None else []), attrs)
    g.outputs = list(node.outputs)
    check_graph(g, {"a": f32(2, 16, 48), **({"r": f32(2, 16, 64)} if residual else {})}, out_dir)


@pytest.mark.parametrize("before", [0, 1])
def test_fused_conv(before, out_dir):
    g = compiler.Graph("fused_conv")
    x = g.add_input("x", (1, 8, 14, 14), DType.float32)
    r = g.add_input("r", (1, 8, 14, 14), DType.float32)
    node = g.add_node("FusedConv", [x, g.add_const("w", f32(8, 1, 3, 3) * 0.3), g.add_const("b", f32(8)), r],
                      {"group": 8, "pads": [1, 1, 1, 1], "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0,
                       "residual_before_activation": before})
    g.outputs = list(node.outputs)
    check_graph(g, {"x": f32(1, 8, 14, 14), "r": f32(1, 8, 14, 14)}, out_dir)


def test_skip_layernorm(out_dir):
    g = build_graph("SkipLayerNormalization", [("a", f32(2, 16, 64)), ("b", f32(2, 16, 64))], {"epsilon": 1e-5},
                    consts=[("scale", f32(64)), ("beta", f32(64))])
    check_graph(g, {"a": f32(2, 16, 64), "b": f32(2, 16, 64)}, out_dir)


@pytest.mark.parametrize("masks", ["none", "both"])
def test_attention(masks, out_dir):
    b, s, e, h, d = 2, 16, 64, 4, 16
    g = compiler.Graph("attention")
    x = g.add_input("x", (b, s, e), DType.float32)
    ws = [g.add_const(f"w{i}", f32(e, h * d) * 0.2) for i in range(3)]
    bs = [g.add_const(f"b{i}", f32(h * d)) for i in range(3)]
    add = g.add_input("add", (b, 1, 1, s), DType.float32) if masks == "both" else None
    keep = g.add_input("keep", (b, 1, s, s), DType.bool) if masks == "both" else None
    g.outputs = list(g.add_node("Attention", [x, x, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], add, keep],
                                {"num_heads": h, "head_dim": d, "scale": d ** -0.5, "nan_to_zero": 1}).outputs)
    feeds = {"x": f32(b, s, e)}
    if masks == "both":
        feeds["add"] = np.where(R.random((b, 1, 1, s)) < 0.2, -1e4, 0).astype(np.float32)
        keep_mask = R.random((b, 1, s, s)) < 0.8
        keep_mask[0, 0, 3] = False  # a fully masked row: NaN in the softmax, zeroed by nan_to_zero
        feeds["keep"] = keep_mask
    check_graph(g, feeds, out_dir)


@pytest.mark.parametrize("opset", [11, 13, 17, 18])
def test_other_export_opsets(opset, out_dir):
    """--onnx-opset: the same checks at the other opsets ATC registers; at 17 and 18 LayerNormalization stays
    one node (ATC registers it there)."""
    import onnx
    g = build_graph("LayerNormalization", [("x", f32(2, 8, 32))], {"epsilon": 1e-5},
                    consts=[("scale", f32(32)), ("bias", f32(32))])
    y = g.outputs[0]
    g.outputs = list(g.add_node("ReduceSum", [g.add_node("Squeeze", [g.add_node(
        "Unsqueeze", [y], {"axes": [0]}).outputs[0]], {"axes": [0]}).outputs[0]], {"axes": [1], "keepdims": 0}).outputs)
    check_graph(g, {"x": f32(2, 8, 32)}, out_dir, onnx_opset=opset)
    bundle = compile_ascend(g, out_dir, onnx_opset=opset)
    model = onnx.load(str(bundle / "model.onnx"))
    assert model.opset_import[0].version == opset
    assert ("LayerNormalization" in {n.op_type for n in model.graph.node}) == (opset >= 17)


# -- coverage: every registered op is checked above or refused below -------------------------------------------
LAYOUT_ONLY = {"BlockedConv", "BlockedMaxPool", "ToBlockedLayout", "FromBlockedLayout"}   # x86's NCHWc layout pass makes these
QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "QuantizedMatMul", "QuantizedConv", "QuantizedAttention", "QuantizedAdd",
             "QuantizedGlobalAveragePool"}


def test_every_registered_op_is_covered():
    """A new op in compiler.ops gets an ascend case here (or a stated reason), not a surprise in a user's compile."""
    from aotc.compiler.ops import ops_targets_see
    covered = {c[1] for c in CASES} | {"Split", "Shape", "Size", "Range", "ConstantOfShape", "FusedMatMul",
                                       "FusedConv", "SkipLayerNormalization", "Attention"}
    missing = set(ops_targets_see()) - covered - LAYOUT_ONLY - QUANTIZED - {"DynamicQuantizeLinear"}  # a CPU kernel only
    assert not missing, f"registered ops without an ascend test case: {sorted(missing)}"


# -- errors ------------------------------------------------------------------------------------------------------
def test_ops_atc_lacks_are_all_named_and_nothing_is_written(tmp_path):
    """QuantizeLinear/DequantizeLinear (ATC registers neither) and an x86 layout op: one error naming each node,
    its op type and why; nothing written; exit 2."""
    from aotc.targets.ascend.atc_support import AtcUnsupportedError
    import aotc
    g = compiler.Graph("needs_missing_ops")
    x = g.add_input("x", (1, 16, 4, 4), DType.float32)
    s, z = g.add_const("s", np.array(0.1, np.float32)), g.add_const("z", np.array(0, np.int8))
    q = g.add_node("QuantizeLinear", [x, s, z], name="quant_a").outputs[0]
    dq = g.add_node("DequantizeLinear", [q, s, z], name="dequant_a").outputs[0]
    blocked = g.add_node("ToBlockedLayout", [dq], {"block": 8}, name="to_blocked").outputs[0]
    g.outputs = list(g.add_node("FromBlockedLayout", [blocked], {"channels": 16}, name="from_blocked").outputs)
    out = tmp_path / "bundle"
    with pytest.raises(AtcUnsupportedError) as e:
        aotc.compile(g, out, target="ascend", target_options={"soc_version": SOC}, passes="none")
    msg = str(e.value)
    for part in ("'quant_a'", "'dequant_a'", "'to_blocked'", "'from_blocked'", "QuantizeLinear ×1",
                 "ai.onnx::15::DequantizeLinear", "registered at no opset", "AMCT", "ai.aotc"):
        assert part in msg, (part, msg)
    assert isinstance(e.value, compiler.AotcError) and e.value.exit_code == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_quantize_int8_is_refused_naming_the_qdq_nodes(tmp_path):
    """--quantize int8: aotc's int8 ops run in float with Q/DQ around them, which ATC cannot parse; the error
    names them and points at AMCT."""
    from aotc.targets.ascend.atc_support import AtcUnsupportedError
    import aotc
    g = compiler.Graph("mlp")
    x = g.add_input("x", (4, 32), DType.float32)
    h = g.add_node("MatMul", [x, g.add_const("w1", f32(32, 32) * 0.2)], name="fc1").outputs[0]
    g.outputs = list(g.add_node("Relu", [h], name="act").outputs)
    with pytest.raises(AtcUnsupportedError, match=r"QuantizeLinear.*AMCT"):
        aotc.compile(g, tmp_path / "b", target="ascend", target_options={"soc_version": SOC}, quantize="int8",
                     calibration={"x": f32(8, 4, 32)})
    assert not (tmp_path / "b").exists()


def test_cli_error_exit_2_and_option_checks(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    # A standard ONNX op aotc imports but ATC registers at no opset: Gelu exported as-is cannot happen (it is
    # decomposed), so use opset 11 + HardSwish (registered from 14 on).
    node = helper.make_node("HardSwish", ["x"], ["y"], name="hs_node")
    model = helper.make_model(helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                          [1, 8])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])]),
                              opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, tmp_path / "m.onnx")
    cli = [sys.executable, "-m", "aotc", "compile", str(tmp_path / "m.onnx"), "--target", "ascend", "-o",
           str(tmp_path / "out"), "--passes", "none"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cli + ["--soc-version", SOC, "--onnx-opset", "13"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "'hs_node'" in p.stderr and "ai.onnx::13::HardSwish" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()
    p = subprocess.run(cli, capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "needs --soc-version" in p.stderr, p.stderr
    p = subprocess.run(cli + ["--soc-version", "Ascend 310"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "not an Ascend chip name" in p.stderr, p.stderr
    p = subprocess.run(cli + ["--soc-version", SOC, "--onnx-opset", "19"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "11-18" in p.stderr, p.stderr
    p = subprocess.run(cli + ["--soc-version", SOC, "--precision", "fp32"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "--precision_mode=force_fp32" in (tmp_path / "out" / "build_om.sh").read_text()


# -- the bundle ----------------------------------------------------------------------------------------------
def _gelu_graph():
    g = build_graph("Gelu", [("x", f32(2, 4, 8))], {})
    return g


def test_bundle_files_and_atc_command(tmp_path):
    import json
    bundle = compile_ascend(_gelu_graph(), tmp_path)
    names = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert names == ["build_om.sh", "driver/CMakeLists.txt", "driver/aotc_ascend.cpp", "driver/aotc_runner.c",
                     "driver/aotc_runtime.h", "driver/glibc_compat.h", "manifest.json", "model.onnx"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    argv = manifest["ascend"]["atc_command"]
    assert argv == ["atc", "--model=model.onnx", "--framework=5", "--output=model", f"--soc_version={SOC}",
                    "--input_shape=x:2,4,8", "--precision_mode=force_fp16"]
    assert "atc --model=model.onnx --framework=5 --output=model --soc_version=Ascend310P3 --input_shape=x:2,4,8 " \
           "--precision_mode=force_fp16" in (bundle / "build_om.sh").read_text()
    assert manifest["target"]["onnx_opset"] == 15 and manifest["ascend"]["model_om"] is False
    assert [p["name"] for p in manifest["passes"]] == ["fit_to_target", "decompose_for_opset"]
    assert (bundle / "driver" / "aotc_runtime.h").read_bytes() == (ROOT / "runtime_stub" / "aotc_runtime.h").read_bytes()


def test_rebuilds_are_byte_identical(tmp_path):
    g = build_graph("LayerNormalization", [("x", f32(2, 8, 32))], {"epsilon": 1e-5},
                    consts=[("scale", f32(32)), ("bias", f32(32))])
    trees = []
    for i in range(2):
        import aotc
        b = aotc.compile(g.copy(), tmp_path / f"b{i}", target="ascend", target_options={"soc_version": SOC},
                         passes="none").path
        trees.append({str(p.relative_to(b)): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1]


def test_atc_on_path_is_run_and_adds_model_om(tmp_path, monkeypatch):
    """A stand-in `atc` (records its arguments, writes model.om): aotc compile runs exactly build_om.sh's
    command in a folder holding model.onnx, and the bundle gains model.om; a failing atc is one clear error."""
    fake = tmp_path / "bin" / "atc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ -f model.onnx ] || exit 3\nprintf '%s\\n' \"$@\" > model.om\n"
                    "[ -z \"$FAIL_ATC\" ] || { echo 'E19010: No parser is registered' >&2; exit 1; }\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    bundle = compile_ascend(_gelu_graph(), tmp_path)
    import json
    argv = json.loads((bundle / "manifest.json").read_text())["ascend"]["atc_command"]
    assert (bundle / "model.om").read_text().splitlines() == argv[1:]
    monkeypatch.setenv("FAIL_ATC", "1")
    from aotc.targets.ascend.atc_command import AtcRunError
    with pytest.raises(AtcRunError, match="E19010"):
        compile_ascend(_gelu_graph(), tmp_path / "failing")
    assert not (tmp_path / "failing").exists()


# -- running ---------------------------------------------------------------------------------------------------
def test_run_here_says_what_is_missing_and_reference_runs(tmp_path, monkeypatch):
    import aotc
    from aotc.targets.base import CannotRunHereError
    monkeypatch.delenv("ASCEND_HOME_PATH", raising=False)
    g = _gelu_graph()
    bundle = compile_ascend(g, tmp_path)
    with pytest.raises(CannotRunHereError, match=r"ASCEND_HOME_PATH.*model\.om.*--reference"):
        aotc.load(bundle).run({"x": f32(2, 4, 8)})
    x = f32(2, 4, 8)
    np.savez(tmp_path / "in.npz", x=x)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ASCEND_HOME_PATH", None)
    run = [sys.executable, "-m", "aotc", "run", str(bundle), "-i", str(tmp_path / "in.npz")]
    p = subprocess.run(run, capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Cannot run the Ascend bundle" in p.stderr, p.stderr
    p = subprocess.run(run + ["--reference", "-o", str(tmp_path / "out.npz")], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "reference run (ascend)" in p.stderr, p.stderr
    want = compiler.interpret(g, {"x": x})[g.outputs[0].name]
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")[g.outputs[0].name], want, rtol=1e-5, atol=1e-6)


def test_reference_is_refused_for_a_target_without_one(tmp_path):
    from aotc.targets.base import UnknownTargetError, reference_runner_for
    with pytest.raises(UnknownTargetError, match="has no reference run.*ascend"):
        reference_runner_for({"target": {"name": "x86-avx512"}})


def test_recorded_table_says_where_it_comes_from():
    """The table names its sources (repositories and commits) and holds what ATC's documentation and parser
    sources agree on: LayerNormalization only at 17-18, no Gelu, no Q/DQ, nothing standard above 18."""
    import json
    table = json.loads((ROOT / "targets" / "ascend" / "atc_onnx_ops.json").read_text())
    repos = {s["repository"] for s in table["sources"]}
    assert repos == {f"https://github.com/hicann/{r}" for r in ("ops-nn", "ops-math", "ops-cv")}
    assert all(len(s["commit"]) == 40 for s in table["sources"])
    ops = table["ops"]
    assert ops["LayerNormalization"]["opsets"] == [17, 18]
    assert "Gelu" not in ops and "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    import onnx
    assert max(max(e["opsets"]) for op, e in ops.items() if onnx.defs.has(op)) == 18  # Ascend* ops go to 22
    assert all(15 in ops[op]["opsets"] for op in ("Conv", "MatMul", "Softmax", "Erf", "ReduceMean", "Where"))

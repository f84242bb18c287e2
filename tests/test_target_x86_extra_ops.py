"""The x86-avx512 lowerings of targets/cpu/lower_extra_ops.py (ConvTranspose, InstanceNormalization, LRN,
ReduceProd, Shape, Size, ConstantOfShape, Range): each op compiled alone into a bundle, run by the thin
runtime and compared with aotc's reference interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import assert_close, build_graph, check_op, compile_and_run, needs_avx512

pytestmark = needs_avx512

R = np.random.default_rng(4321)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("x86-extra-ops")


def run_graph(g: compiler.Graph, feeds: dict, out_dir, rtol=1e-5, atol=1e-5):
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir)
    for name, ref in want.items():
        assert_close(got[name], ref, f"{g.name} output {name}", rtol, atol)
    return got


# -- ConvTranspose ---------------------------------------------------------------------------------
CONV_T = [
    ("plain_3x3", (1, 4, 6, 6), (4, 5, 3, 3), {}),
    ("stride2_pads", (2, 6, 5, 7), (6, 8, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("stride2_outpad", (1, 8, 7, 7), (8, 4, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                                    "output_padding": [1, 1]}),
    ("stride3_asym", (1, 3, 4, 5), (3, 2, 2, 3), {"strides": [3, 2], "pads": [0, 1, 2, 0],
                                                  "output_padding": [2, 1]}),
    ("dilated", (1, 4, 6, 6), (4, 6, 3, 3), {"dilations": [2, 2], "pads": [1, 2, 1, 0]}),
    ("dilated_strided", (1, 4, 5, 5), (4, 4, 3, 3), {"dilations": [2, 1], "strides": [2, 2]}),
    ("grouped", (1, 8, 6, 6), (8, 3, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 1, 0, 0]}),
    ("depthwise", (1, 16, 8, 8), (16, 1, 4, 4), {"group": 16, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("pointwise", (1, 16, 8, 8), (16, 32, 1, 1), {}),
    ("pointwise_stride2", (1, 8, 5, 5), (8, 16, 1, 1), {"strides": [2, 2]}),
    ("big_pads_crop", (1, 4, 6, 6), (4, 4, 3, 3), {"pads": [3, 3, 3, 3]}),
    ("same_upper", (1, 4, 5, 5), (4, 6, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("output_shape", (1, 4, 5, 5), (4, 6, 3, 3), {"strides": [2, 2], "output_shape": [10, 10]}),
    ("wide_16", (1, 16, 16, 16), (16, 32, 2, 2), {"strides": [2, 2]}),
    ("conv1d", (2, 4, 9), (4, 6, 5), {"strides": [2], "pads": [2, 1], "output_padding": [1]}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONV_T, ids=[c[0] for c in CONV_T])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose(name, x_shape, w_shape, attrs, bias, out_dir):
    g = attrs.get("group", 1)
    consts = [("w", f32(*w_shape) * 0.3)] + ([("b", f32(w_shape[1] * g))] if bias else [])
    got = check_op("ConvTranspose", [("x", f32(*x_shape))], out_dir, attrs, consts=consts, rtol=1e-4, atol=1e-4)
    assert np.abs(next(iter(got.values()))).max() > 0.1  # not trivially zero


def test_conv_transpose_dynamic_weight_is_refused(tmp_path):
    import aotc
    from aotc.targets.cpu.lowering import UnsupportedOnTargetError
    g = build_graph("ConvTranspose", [("x", f32(1, 2, 4, 4)), ("w", f32(2, 3, 3, 3))])
    with pytest.raises(UnsupportedOnTargetError, match="non-constant ConvTranspose weight"):
        aotc.compile(g, tmp_path / "b", target="x86-avx512", passes="none").path


# -- InstanceNormalization ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 8, 16), (1, 5, 7, 7), (3, 4, 33), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("const_params", [True, False])
def test_instance_norm(shape, const_params, out_dir):
    c = shape[1]
    x = f32(*shape) * 3 + 5  # an offset mean: a one-pass variance would cancel badly
    scale, bias = f32(c), f32(c)
    if const_params:
        check_op("InstanceNormalization", [("x", x)], out_dir, {"epsilon": 1e-3},
                 consts=[("scale", scale), ("bias", bias)], rtol=1e-5, atol=1e-5)
    else:
        check_op("InstanceNormalization", [("x", x), ("scale", scale), ("bias", bias)], out_dir,
                 {"epsilon": 1e-5}, rtol=1e-5, atol=1e-5)


# -- LRN -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,attrs", [
    ((2, 8, 6, 16), {"size": 5}),                                          # defaults, beta 0.75 (sqrt path)
    ((1, 7, 5, 5), {"size": 4, "alpha": 0.02, "beta": 0.6, "bias": 2.0}),  # even size, powf path
    ((1, 6, 32), {"size": 3, "alpha": 0.5, "beta": 0.5, "bias": 1.0}),      # 1-D spatial, odd size
    ((1, 5, 4, 8), {"size": 2, "alpha": 1.0, "beta": 1.0, "bias": 0.5}),   # even size, beta 1
    ((1, 3, 4, 4), {"size": 9, "alpha": 0.3}),                             # window wider than C
    ((2, 4, 3, 3), {"size": 1, "alpha": 0.1, "beta": 0.75}),
])
def test_lrn(shape, attrs, out_dir):
    check_op("LRN", [("x", f32(*shape) * 2)], out_dir, attrs, rtol=1e-5, atol=1e-6)


# -- ReduceProd --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axes,keepdims", [
    ((3, 4, 40), [2], 1), ((3, 64), [-1], 0), ((2, 3, 5, 7), [2, 3], 0), ((3, 4, 40), [1, 2], 1),
    ((5, 6, 7), [0], 1), ((5, 6, 7), [0, 2], 0), ((5, 6, 7), [1], 0), ((4, 6), None, 0), ((4, 6), None, 1),
])
def test_reduce_prod(shape, axes, keepdims, out_dir):
    # Magnitudes near 1 (mixed signs, an exact zero) so long products neither overflow nor vanish.
    x = (R.uniform(0.7, 1.4, shape) * R.choice([-1, 1], shape)).astype(np.float32)
    x.reshape(-1)[3] = 0.0
    attrs = {"keepdims": keepdims} | ({"axes": axes} if axes is not None else {})
    check_op("ReduceProd", [("x", x)], out_dir, attrs, rtol=1e-5, atol=1e-6)


def test_reduce_prod_noop_with_empty_axes(out_dir):
    check_op("ReduceProd", [("x", f32(3, 5))], out_dir, {"noop_with_empty_axes": 1}, rtol=0, atol=0)


# -- shape-computing ops -------------------------------------------------------------------------------
def test_shape_and_size_of_a_graph_input(out_dir):
    """Shape/Size read only the static shape: a graph input's shape is a compile-time constant."""
    g = compiler.Graph("shape_size")
    x = g.add_input("x", (2, 3, 5, 7), DType.float32)
    s = g.add_node("Shape", [x], name="shape_all").outputs[0]
    s2 = g.add_node("Shape", [x], {"start": 1, "end": -1}, name="shape_mid").outputs[0]
    n = g.add_node("Size", [x], name="size").outputs[0]
    g.outputs = [s, s2, n]
    got = run_graph(g, {"x": f32(2, 3, 5, 7)}, out_dir)
    np.testing.assert_array_equal(got[s.name], [2, 3, 5, 7])
    np.testing.assert_array_equal(got[s2.name], [3, 5])
    assert got[n.name].shape == () and int(got[n.name]) == 210


def test_shape_feeding_arithmetic(out_dir):
    """A Shape result used by a kernel downstream (Cast + Mul with the data)."""
    g = compiler.Graph("shape_math")
    x = g.add_input("x", (4, 6), DType.float32)
    s = g.add_node("Shape", [x], {"start": -1}).outputs[0]
    sf = g.add_node("Cast", [s], {"to": "float32"}).outputs[0]
    g.outputs = list(g.add_node("Mul", [x, sf]).outputs)
    feeds = {"x": f32(4, 6)}
    got = run_graph(g, feeds, out_dir)
    np.testing.assert_allclose(got[g.outputs[0].name], feeds["x"] * 6, rtol=1e-6)


@pytest.mark.parametrize("shape,value", [
    ([3, 40], None), ([2, 3, 17], np.array([2.5], np.float32)), ([5, 8], np.array([-7], np.int64)),
    ([4, 33], np.array([3], np.int32)), ([6], np.array([True])), ([2, 0, 3], np.array([1.0], np.float32)),
])
def test_constant_of_shape(shape, value, out_dir):
    g = compiler.Graph("const_of_shape")
    attrs = {"shape": shape} | ({"value": value} if value is not None else {})
    c = g.add_node("ConstantOfShape", [], attrs).outputs[0]
    x = g.add_input("x", tuple(shape), c.dtype)
    g.outputs = [c] + list(g.add_node("Add" if c.dtype != DType.bool else "Or", [x, c]).outputs)
    feeds = {"x": (R.standard_normal(shape) * 10).astype(c.dtype.numpy) if c.dtype != DType.bool
             else R.random(shape) < 0.5}
    got = run_graph(g, feeds, out_dir, rtol=0, atol=0)
    want_fill = value.reshape(-1)[0] if value is not None else 0.0
    assert (got[c.name] == want_fill).all() and got[c.name].shape == tuple(shape)


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (0, 10, 1, np.int64), (7, -5, -3, np.int64), (2, 17, 4, np.int32),
    (0.5, 3.0, 0.25, np.float32), (1.0, -2.2, -0.3, np.float32), (0.1, 0.95, 0.07, np.float32),
    (3, 3, 1, np.int64),                                                      # empty
    # Longer than RANGE_CONST_MAX_ELEMENTS: computed by a kernel, not copied from weights.bin.
    (-5, 70000 * 3 - 5, 3, np.int64), (1, 200001, 2, np.int32), (0.25, 0.25 + 70000 * 0.1, 0.1, np.float32),
    (-3.0, 20000.0, 0.3, np.float32),
])
def test_range(start, limit, delta, dtype, out_dir):
    g = compiler.Graph("range")
    ins = [g.add_const(n, np.array(v, dtype)) for n, v in (("start", start), ("limit", limit), ("delta", delta))]
    r = g.add_node("Range", ins).outputs[0]
    g.outputs = [r]
    got = run_graph(g, {}, out_dir, rtol=0, atol=0)[r.name]
    assert got.shape == (len(np.arange(start, limit, delta)),)


def test_range_kernel_path_keeps_weights_small(tmp_path):
    """A long Range is computed by a kernel: weights.bin does not hold its 400 KB."""
    import aotc
    from aotc.targets.cpu.lower_extra_ops import RANGE_CONST_MAX_ELEMENTS
    g = compiler.Graph("long_range")
    ins = [g.add_const(n, np.array(v, np.float32)) for n, v in (("s", 0.0), ("l", 100000.0), ("d", 1.0))]
    g.outputs = list(g.add_node("Range", ins).outputs)
    assert g.outputs[0].size > RANGE_CONST_MAX_ELEMENTS
    bundle = aotc.compile(g, tmp_path / "b", target="x86-avx512", passes="none").path
    assert (bundle / "weights.bin").stat().st_size < 4096


def test_onnx_import_folds_shape_ops_and_keeps_big_ones(out_dir, tmp_path):
    """What the ONNX importer hands the target: Shape/Size (and small ConstantOfShape/Range) are folded
    into constants, a ConstantOfShape over the fold limit stays a node and is lowered (a fill kernel)."""
    import onnx
    from onnx import TensorProto, helper
    from aotc.compiler.onnx_import import FOLD_LIMIT_ELEMENTS
    big = [2, FOLD_LIMIT_ELEMENTS // 2 + 64]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
        helper.make_node("Mul", ["x", "c"], ["y"]),
        helper.make_node("Constant", [], ["bs"], value=helper.make_tensor("bs", TensorProto.INT64, [2], big)),
        helper.make_node("ConstantOfShape", ["bs"], ["big"],
                         value=helper.make_tensor("v2", TensorProto.FLOAT, [1], [-1.5])),
    ]
    model = helper.make_model(helper.make_graph(
        nodes, "shape_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("big", TensorProto.FLOAT, big)]),
        opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    g = compiler.load_onnx(path)
    assert sorted(n.op_type for n in g.nodes) == ["ConstantOfShape", "Mul"]
    feeds = {"x": f32(3, 4)}
    got = run_graph(g, feeds, out_dir, rtol=0, atol=0)
    assert (got["big"] == -1.5).all() and got["big"].shape == tuple(big)
    np.testing.assert_array_equal(got["y"], feeds["x"] * 2)


# -- 1-D Conv (found by the model zoo: Whisper; Mod, found by Swin, is in tests/op_cases.py) -----------------------------------------
CONV_1D = [
    ("whisper_stem", (1, 8, 40), (12, 8, 3), None, {"pads": [1, 1]}),
    ("stride2_bias", (2, 6, 33), (8, 6, 3), (8,), {"pads": [1, 1], "strides": [2]}),
    ("grouped_dilated", (1, 8, 30), (8, 2, 5), (8,), {"group": 4, "dilations": [2], "pads": [4, 0]}),
    ("same_upper", (1, 4, 17), (16, 4, 4), None, {"auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,b_shape,attrs", CONV_1D, ids=[c[0] for c in CONV_1D])
def test_conv_1d_runs_as_2d(name, x_shape, w_shape, b_shape, attrs, tmp_path):
    """fit_to_target rewrites a 1-D Conv into the 2-D one over a map of height 1 (the CPU kernels are 2-D;
    without the rewrite the compile fails naming the Conv)."""
    import aotc
    from aotc import runtime_stub
    consts = [("w", f32(*w_shape))] + ([("b", f32(*b_shape))] if b_shape else [])
    g = build_graph("Conv", [("x", f32(*x_shape))], attrs, consts=consts)
    feeds = {"x": f32(*x_shape)}
    want = compiler.interpret(g, feeds)
    bundle = aotc.compile(g, tmp_path / name, target="x86-avx512")
    got = runtime_stub.load(bundle.path).run(feeds)
    for k, ref in want.items():
        assert_close(got[k], ref, f"1-D Conv {name}", 1e-5, 1e-5)

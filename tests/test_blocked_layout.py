"""The channel-blocked (NCHWc) convolution path: the layout ops' reference
kernels against plain NCHW ones, the `nchwc_layout` pass against the graph it
rewrites, and the x86 kernels against the reference interpreter — including
channel counts that leave padding channels and activations that are not zero
at zero (so a kernel that forgot the padding semantics would show)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from aotc.compiler.ops import get_op
from aotc.compiler.ops.layout import from_blocked, to_blocked
from aotc.passes.blocked_layout import nchwc_layout
from x86_helpers import compile_and_run, needs_avx512

R = np.random.default_rng(7)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def run_op(op_type, inputs, attrs):
    op = get_op(op_type)
    return op.run(inputs, op.normalize_attrs(attrs))[0]


# -- reference kernels ------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [3, 16, 24, 40])
def test_blocked_round_trip_zero_pads(c):
    x = f32(2, c, 5, 7)
    xb = run_op("ToBlockedLayout", [x], {"block": 16})
    assert xb.shape == (2, -(-c // 16), 5, 7, 16)
    np.testing.assert_array_equal(xb[:, c // 16, :, :, c % 16:], 0) if c % 16 else None
    np.testing.assert_array_equal(xb[0, 0, 1, 2, :min(c, 16)], x[0, :min(c, 16), 1, 2])
    np.testing.assert_array_equal(run_op("FromBlockedLayout", [xb], {"channels": c}), x)


CASES = [  # name, input NCHW shape, weight shape, conv attrs, blocked input
    ("pointwise", (1, 24, 6, 6), (40, 24, 1, 1), {}, True),
    ("depthwise_s2_asym", (1, 24, 9, 9), (24, 1, 5, 5), {"group": 24, "strides": [2, 2], "pads": [1, 2, 2, 1]}, True),
    ("full_3x3", (2, 20, 7, 7), (18, 20, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ("stem_nchw", (1, 3, 11, 11), (20, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}, False),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs,blocked_in", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("act", ["none", "sigmoid"])
def test_blocked_conv_reference_matches_fused_conv(name, x_shape, w_shape, attrs, blocked_in, act):
    x, w, b = f32(*x_shape), f32(*w_shape), f32(w_shape[0])
    fattrs = {**attrs, "activation": act}
    want = run_op("FusedConv", [x, w, b], fattrs)
    xin = to_blocked(x, 16) if blocked_in else x
    got = run_op("BlockedConv", [xin, w, b], {**fattrs, "block": 16})
    # Two float32 kernels that sum the 180-term products in different orders (BLAS-dependent): agreement to a
    # few ulps of the largest output, not of each (near-zero) value.
    np.testing.assert_allclose(from_blocked(got, w_shape[0]), want, rtol=1e-6, atol=2e-6 * float(np.abs(want).max()))
    # Padding output channels hold act(0): zero weights and bias there.
    m = w_shape[0]
    if m % 16:
        np.testing.assert_allclose(got[:, m // 16, ..., m % 16:], 0.5 if act == "sigmoid" else 0.0)


def test_blocked_conv_rejects_grouped_and_bad_blocks():
    g = compiler.Graph("bad")
    x = g.add_input("x", (1, 2, 5, 5, 16), DType.float32)
    with pytest.raises(compiler.AotcError, match="depthwise"):
        g.add_node("BlockedConv", [x, g.add_const("w", f32(8, 16, 3, 3))], {"group": 2, "block": 16})
    with pytest.raises(compiler.AotcError, match="not blocked by 8"):
        g.add_node("BlockedConv", [x, g.add_const("w2", f32(8, 32, 1, 1))], {"block": 8})


# -- the pass ---------------------------------------------------------------------------------------
def mbconv_graph(c=24, e=72, m=24, hw=10):
    """A MobileNet-style block: padded stem, expand, depthwise (explicit Pad, stride 2), project with a
    residual, then a non-convolution consumer and a convolution output that is also a graph output."""
    g = compiler.Graph("mbconv")
    x = g.add_input("x", (1, 3, 2 * hw, 2 * hw), DType.float32)
    s = g.add_node("Conv", [x, g.add_const("ws", f32(c, 3, 3, 3) * 0.3), g.add_const("bs", f32(c))],
                   {"strides": [2, 2], "pads": [1, 1, 1, 1]}, name="stem").outputs[0]
    s = g.add_node("Relu", [s], name="stem_relu").outputs[0]
    ex = g.add_node("FusedConv", [s, g.add_const("we", f32(e, c, 1, 1) * 0.3), g.add_const("be", f32(e))],
                    {"activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}, name="expand").outputs[0]
    p = g.add_node("Pad", [ex], {"pads": [0, 0, 1, 1, 0, 0, 2, 2]}, name="pad").outputs[0]
    dw = g.add_node("FusedConv", [p, g.add_const("wd", f32(e, 1, 3, 3) * 0.3), g.add_const("bd", f32(e))],
                    {"group": e, "strides": [1, 1], "activation": "sigmoid"}, name="dw").outputs[0]
    pr = g.add_node("FusedConv", [dw, g.add_const("wp", f32(m, e, 1, 1) * 0.3), g.add_const("bp", f32(m))],
                    {}, name="project").outputs[0]
    y = g.add_node("FusedConv", [pr, g.add_const("wq", f32(m, m, 1, 1) * 0.3), None, pr],
                   {"activation": "relu"}, name="with_residual").outputs[0]
    pool = g.add_node("GlobalAveragePool", [y], name="pool").outputs[0]
    g.outputs = [pool, pr]
    return g


def test_pass_keeps_results_names_and_converts_only_at_edges():
    g = mbconv_graph()
    feeds = {"x": f32(1, 3, 20, 20)}
    want = compiler.interpret(g, feeds)
    n = nchwc_layout(g, block=16)
    compiler.verify(g)
    assert n == 7
    hist = g.op_histogram()
    # The stem reads NCHW; its Relu and the pool run on the blocked tensors (the pool as a mean over the
    # spatial axes), so nothing converts to the blocked layout; the Pad is folded into the depthwise conv;
    # `project` (a graph output) and the pool convert back.
    assert hist.get("BlockedConv") == 5 and hist.get("Pad") is None
    assert hist.get("ToBlockedLayout") is None and hist.get("FromBlockedLayout") == 2
    assert hist.get("Relu") == 1 and hist.get("ReduceMean") == 1
    names = {nd.name for nd in g.nodes if nd.op_type == "BlockedConv"}
    assert names == {"stem", "expand", "dw", "project", "with_residual"}
    got = compiler.interpret(g, feeds)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_pass_leaves_grouped_and_dynamic_weight_convs():
    g = compiler.Graph("grouped")
    x = g.add_input("x", (1, 8, 6, 6), DType.float32)
    w = g.add_input("w", (8, 8, 1, 1), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("wg", f32(12, 4, 3, 3))], {"group": 2}).outputs[0]
    b = g.add_node("Conv", [x, w]).outputs[0]
    g.outputs = [a, b]
    assert nchwc_layout(g, block=16) == 0
    assert g.op_histogram() == {"Conv": 2}


# -- x86 kernels ------------------------------------------------------------------------------------
def nchw_target():
    from aotc.targets.cpu.target import X86_AVX512
    return dataclasses.replace(X86_AVX512, conv_block=0)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("x86-blocked")


@needs_avx512
def test_mbconv_block_on_x86_matches_interpreter_in_both_layouts(out_dir):
    g = mbconv_graph()
    feeds = {"x": f32(1, 3, 20, 20)}
    want = compiler.interpret(g, feeds)
    blocked = compile_and_run(g, feeds, out_dir)
    plain = compile_and_run(g, feeds, out_dir / "nchw", target=nchw_target())
    for k in want:
        np.testing.assert_allclose(blocked[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)
        np.testing.assert_allclose(plain[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)


KERNELS = [  # the three BlockedConv kernels at sizes whose tiles do not divide evenly, and padding channels
    ("pointwise_odd_blocks", (1, 40, 7, 9), (56, 40, 1, 1), {}),
    ("pointwise_big_map", (1, 16, 40, 40), (48, 16, 1, 1), {}),
    ("pointwise_padded_block_group", (1, 24, 7, 7), (80, 24, 1, 1), {}),  # 5 blocks in tiles of 3
    ("pointwise_long_reduction", (1, 280, 7, 7), (40, 280, 1, 1), {}),  # input channels in blocks of 6x16
    ("depthwise_3x3_s1", (1, 40, 13, 13), (40, 1, 3, 3), {"group": 40, "pads": [1, 1, 1, 1]}),
    ("depthwise_5x5_s2_dilated", (1, 32, 17, 17), (32, 1, 5, 5),
     {"group": 32, "strides": [2, 2], "pads": [2, 2, 2, 2], "dilations": [1, 2]}),
    ("full_3x3_s2", (1, 24, 11, 11), (40, 24, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("pointwise_stride2", (1, 32, 8, 8), (16, 32, 1, 1), {"strides": [2, 2]}),
    # 15x15 = 225 pixels: a 7-pixel tile computes 231, the last tile reading pixel 224 again
    ("pointwise_padded_pixels", (1, 48, 15, 15), (48, 48, 1, 1), {}),
    ("pointwise_padded_pixels_long", (1, 256, 15, 15), (40, 256, 1, 1), {}),  # the K-blocked schedule
    # wide depthwise windows read a zero-bordered copy of the input (ConvNeXt's 7x7, PP-OCR's 5x5 on 15x15)
    ("depthwise_7x7_bordered", (1, 24, 14, 14), (24, 1, 7, 7), {"group": 24, "pads": [3, 3, 3, 3]}),
    ("depthwise_5x5_narrow_tile", (1, 32, 15, 15), (32, 1, 5, 5), {"group": 32, "pads": [2, 1, 2, 3]}),
    # a 7x7 map with a long reduction: input channel blocks outside the rows (direct_k_blocks)
    ("full_3x3_tiny_map_k_blocked", (1, 256, 7, 7), (48, 256, 3, 3), {"pads": [1, 1, 1, 1]}),
]


def test_direct_convs_block_the_input_channels_only_on_tiny_maps():
    from aotc.targets.cpu.lower_blocked import direct_k_blocks
    assert direct_k_blocks(49, 32, 9, [1, 1], 3, 16) == 1  # ResNet's 512 -> 512 3x3 on 7x7
    assert direct_k_blocks(49, 16, 9, [1, 1], 3, 16) == 1  # the test case above
    assert direct_k_blocks(196, 16, 9, [1, 1], 3, 16) == 0  # 14x14: the plain schedule was faster
    assert direct_k_blocks(49, 32, 9, [2, 2], 3, 16) == 0  # strided
    assert direct_k_blocks(49, 4, 9, [1, 1], 3, 16) == 0  # a short reduction's panel fits anyway


def test_pointwise_tiles_fit_the_registers_and_pad_little():
    from aotc.targets.cpu.conv_tiles import pointwise_pixels, pointwise_tile
    assert pointwise_tile(49, 5) == (7, 3)  # 5 output blocks computed as 6: one padding block
    for p in (49, 196, 784, 3136, 12544, 63):
        for mb in range(1, 90):
            mr, nb = pointwise_tile(p, mb)
            padded = -(-mb // nb) * nb
            assert p % mr == 0 and mr * nb <= 24 + 4 and (padded - mb) * 4 <= padded, (p, mb, mr, nb)
    # Maps no tile divides (PP-OCR's 15x15 and 30x30) compute a few padding pixels rather than take 3x1 / 6x1.
    for p, mb in ((225, 24), (900, 12), (225, 23), (30, 4)):
        mr, nb = pointwise_tile(p, mb)
        work = pointwise_pixels(p, mr) * -(-mb // nb) * nb
        assert mr * nb >= 14 and mr * nb <= 28 and (work - p * mb) * 8 <= work, (p, mb, mr, nb)


@needs_avx512
@pytest.mark.parametrize("name,x_shape,w_shape,attrs", KERNELS, ids=[k[0] for k in KERNELS])
@pytest.mark.parametrize("epilogue", ["plain", "hardswish_residual"])
def test_blocked_conv_kernels(name, x_shape, w_shape, attrs, epilogue, out_dir):
    g = compiler.Graph(f"blocked_{name}_{epilogue}")
    x = g.add_input("x", x_shape, DType.float32)
    w = g.add_const("w", f32(*w_shape) * 0.3)
    b = g.add_const("b", f32(w_shape[0]))
    out_shape = get_op("Conv").infer([x, w, b], get_op("Conv").normalize_attrs(attrs))[0][0]
    feeds = {"x": f32(*x_shape)}
    if epilogue == "plain":
        y = g.add_node("Conv", [x, w, b], attrs, name="conv").outputs[0]
    else:
        r = g.add_input("r", out_shape, DType.float32)
        feeds["r"] = f32(*out_shape)
        y = g.add_node("FusedConv", [x, w, b, r], {**attrs, "activation": "hardswish",
                                                   "residual_before_activation": 1}, name="conv").outputs[0]
    g.outputs = [g.add_node("Relu", [y], name="consumer").outputs[0]]  # a conv chain edge: FromBlocked runs
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


POOLS = [  # ResNet's stem pool, ceil mode past the end, dilation, a pool on a map with padding channels
    ("resnet_3x3_s2", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 24),
    ("ceil_2x2_s2", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 16),
    ("dilated_3x3", {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 1, 2, 1]}, 20),
]


@needs_avx512
@pytest.mark.parametrize("name,attrs,channels", POOLS, ids=[p[0] for p in POOLS])
def test_blocked_max_pool_between_convs(name, attrs, channels, out_dir):
    """conv -> MaxPool -> conv -> (Sigmoid, a residual Add, a per-channel gate Mul) stays blocked end to end,
    and agrees with the interpreter on the unrewritten graph (a NaN in the input propagates as MaxPool's)."""
    g, feeds = pool_chain_graph(name, attrs, channels)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def pool_chain_graph(name, attrs, channels):
    """The graph of test_blocked_max_pool_between_convs and its feeds (x with a NaN)."""
    g = compiler.Graph(f"pool_{name}")
    x = g.add_input("x", (1, 8, 11, 11), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("w1", f32(channels, 8, 3, 3) * 0.3), g.add_const("b1", f32(channels))],
                   {"pads": [1, 1, 1, 1]}, name="conv1").outputs[0]
    p = g.add_node("MaxPool", [a], attrs, name="pool").outputs[0]
    c = g.add_node("Conv", [p, g.add_const("w2", f32(channels, channels, 1, 1) * 0.3)], {}, name="conv2").outputs[0]
    s = g.add_node("Sigmoid", [c], name="act").outputs[0]
    r = g.add_node("Add", [s, p], name="residual").outputs[0]
    gate = g.add_const("gate", f32(1, channels, 1, 1))
    y = g.add_node("Mul", [r, gate], name="gate_mul").outputs[0]
    g.outputs = [g.add_node("Conv", [y, g.add_const("w3", f32(4, channels, 1, 1))], {}, name="head").outputs[0]]
    feeds = {"x": f32(1, 8, 11, 11)}
    feeds["x"][0, 2, 5, 5] = np.nan
    return g, feeds


def test_pass_runs_pools_and_elementwise_blocked():
    g = compiler.Graph("chain")
    x = g.add_input("x", (1, 8, 9, 9), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("w1", f32(20, 8, 3, 3)), g.add_const("b1", f32(20))],
                   {"pads": [1, 1, 1, 1]}).outputs[0]
    p = g.add_node("MaxPool", [a], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}).outputs[0]
    d = g.add_node("Div", [p, g.add_const("six", np.full((1, 20, 1, 1), 6.0, np.float32))]).outputs[0]
    z = g.add_node("Div", [d, g.add_input("den", (1, 20, 5, 5), DType.float32)]).outputs[0]  # 0/0 risk: stays
    g.outputs = [g.add_node("Conv", [z, g.add_const("w2", f32(4, 20, 1, 1))]).outputs[0]]
    feeds = {"x": f32(1, 8, 9, 9), "den": f32(1, 20, 5, 5)}
    want = compiler.interpret(g, feeds)
    nchwc_layout(g, block=16)
    compiler.verify(g)
    hist = g.op_histogram()
    assert hist.get("BlockedMaxPool") == 1 and hist.get("Div") == 2 and hist.get("MaxPool") is None
    div_inputs = [n.inputs[0].rank for n in g.nodes if n.op_type == "Div"]
    assert sorted(div_inputs) == [4, 5]  # the constant divisor's Div runs blocked, the tensor divisor's does not
    got = compiler.interpret(g, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


RESIZES = [  # an FPN's 2x nearest upsampling, linear by sizes, a non-integer downscale of an odd map
    ("nearest_2x", {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]}),
    ("linear_sizes", {"mode": "linear", "sizes": [1, 20, 13, 17]}),
    ("nearest_half_asymmetric", {"mode": "nearest", "scales": [1.0, 1.0, 0.5, 0.5],
                                 "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    ("cubic_tf_half_pixel", {"mode": "cubic", "scales": [1.0, 1.0, 1.5, 1.5],
                             "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
]


def resize_chain_graph(name, attrs):
    """conv -> Resize -> (+ conv of the resized map) -> conv: the Resize between blocked convolutions."""
    g = compiler.Graph(f"resize_{name}")
    x = g.add_input("x", (1, 8, 9, 9), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("w1", f32(20, 8, 3, 3) * 0.3), g.add_const("b1", f32(20))],
                   {"pads": [1, 1, 1, 1]}, name="conv1").outputs[0]
    r = g.add_node("Resize", [a], attrs, name="resize").outputs[0]
    c = g.add_node("Conv", [r, g.add_const("w2", f32(20, 20, 1, 1) * 0.3)], {}, name="conv2").outputs[0]
    s = g.add_node("Add", [c, r], name="residual").outputs[0]
    g.outputs = [g.add_node("Conv", [s, g.add_const("w3", f32(4, 20, 1, 1))], {}, name="head").outputs[0]]
    return g, {"x": f32(1, 8, 9, 9)}


@pytest.mark.parametrize("name,attrs", RESIZES, ids=[r[0] for r in RESIZES])
def test_pass_runs_spatial_resize_blocked(name, attrs):
    g, feeds = resize_chain_graph(name, attrs)
    want = compiler.interpret(g, feeds)
    nchwc_layout(g, block=16)
    compiler.verify(g)
    resizes = [n for n in g.nodes if n.op_type == "Resize"]
    assert len(resizes) == 1 and resizes[0].inputs[0].rank == 5
    assert g.op_histogram().get("FromBlockedLayout") == 1  # only the network's output leaves the layout
    got = compiler.interpret(g, feeds)
    for k in want:  # the blocked and NCHW reference convolutions sum in different orders
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())


def test_pass_leaves_channel_resize_and_crop_and_resize():
    g, _ = resize_chain_graph("crop", {"mode": "linear", "sizes": [1, 20, 5, 5], "roi": [0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9],
                                       "coordinate_transformation_mode": "tf_crop_and_resize"})
    nchwc_layout(g, block=16)
    assert [n.inputs[0].rank for n in g.nodes if n.op_type == "Resize"] == [4]  # extrapolation would fill lanes
    g = compiler.Graph("channel_resize")
    x = g.add_input("x", (1, 8, 9, 9), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("w1", f32(20, 8, 3, 3))], {"pads": [1, 1, 1, 1]}).outputs[0]
    r = g.add_node("Resize", [a], {"mode": "nearest", "scales": [1.0, 2.0, 1.0, 1.0]}).outputs[0]
    g.outputs = [g.add_node("Conv", [r, g.add_const("w2", f32(4, 40, 1, 1))]).outputs[0]]
    nchwc_layout(g, block=16)
    assert [n.inputs[0].rank for n in g.nodes if n.op_type == "Resize"] == [4]


@needs_avx512
@pytest.mark.parametrize("name,attrs", RESIZES, ids=[r[0] for r in RESIZES])
def test_blocked_resize_between_convs_on_x86(name, attrs, out_dir):
    g, feeds = resize_chain_graph(name, attrs)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def convnext_block_graph(c):
    """ConvNeXt's block: depthwise 7x7, to channels-last, LayerNorm, Linear, GELU, Linear, back to NCHW,
    residual Add, then the next convolution."""
    g = compiler.Graph(f"convnext_block_{c}")
    x = g.add_input("x", (1, c, 9, 9), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("w0", f32(c, c, 1, 1) * 0.3)], {}, name="stem").outputs[0]
    d = g.add_node("Conv", [a, g.add_const("dw", f32(c, 1, 7, 7) * 0.2), g.add_const("db", f32(c))],
                   {"group": c, "pads": [3, 3, 3, 3]}, name="dwconv").outputs[0]
    t = g.add_node("Transpose", [d], {"perm": [0, 2, 3, 1]}, name="to_nhwc").outputs[0]
    ln = g.add_node("LayerNormalization", [t, g.add_const("ls", f32(c)), g.add_const("lb", f32(c))],
                    {"axis": -1, "epsilon": 1e-6}, name="ln").outputs[0]
    h = g.add_node("MatMul", [ln, g.add_const("w1", f32(c, 2 * c) * 0.2)], name="pw1").outputs[0]
    h = g.add_node("Gelu", [h], name="gelu").outputs[0]
    h = g.add_node("MatMul", [h, g.add_const("w2", f32(2 * c, c) * 0.2)], name="pw2").outputs[0]
    back = g.add_node("Transpose", [h], {"perm": [0, 3, 1, 2]}, name="to_nchw").outputs[0]
    r = g.add_node("Add", [back, a], name="residual").outputs[0]
    g.outputs = [g.add_node("Conv", [r, g.add_const("w3", f32(4, c, 1, 1))], {}, name="head").outputs[0]]
    return g, {"x": f32(1, c, 9, 9)}


def test_pass_moves_channels_last_blocks_by_whole_vectors():
    g, feeds = convnext_block_graph(32)
    want = compiler.interpret(g, feeds)
    nchwc_layout(g, block=16)
    compiler.verify(g)
    hist = g.op_histogram()
    # no single-float layout conversion is left inside the block: only the output leaves the blocked layout
    assert hist.get("ToBlockedLayout") == 1 and hist.get("FromBlockedLayout") == 1, hist  # the input, the output
    assert sorted(n.inputs[0].rank for n in g.nodes if n.op_type == "Transpose") == [5, 5]
    assert [n.inputs[0].rank for n in g.nodes if n.op_type == "Add"] == [5]
    got = compiler.interpret(g, feeds)
    for k in want:  # the blocked and NCHW reference convolutions sum in different orders
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())


def test_pass_keeps_single_float_transposes_for_partial_channel_blocks():
    g, feeds = convnext_block_graph(20)
    want = compiler.interpret(g, feeds)
    nchwc_layout(g, block=16)
    assert all(n.inputs[0].rank == 4 for n in g.nodes if n.op_type == "Transpose")
    got = compiler.interpret(g, feeds)
    for k in want:  # the blocked and NCHW reference convolutions sum in different orders
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())


@needs_avx512
@pytest.mark.parametrize("c", [32, 20])
def test_convnext_block_on_x86(c, out_dir):
    g, feeds = convnext_block_graph(c)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def concat_graph(c1, c2):
    """Two convolutions of one input concatenated along channels (a feature pyramid's merge), then a conv."""
    g = compiler.Graph(f"concat_{c1}_{c2}")
    x = g.add_input("x", (1, 8, 9, 9), DType.float32)
    a = g.add_node("Conv", [x, g.add_const("wa", f32(c1, 8, 3, 3) * 0.3)], {"pads": [1, 1, 1, 1]}, name="a").outputs[0]
    b = g.add_node("Conv", [x, g.add_const("wb", f32(c2, 8, 1, 1) * 0.3)], {}, name="b").outputs[0]
    r = g.add_node("Relu", [b], name="relu").outputs[0]
    cat = g.add_node("Concat", [a, r], {"axis": 1}, name="merge").outputs[0]
    g.outputs = [g.add_node("Conv", [cat, g.add_const("wh", f32(4, c1 + c2, 1, 1))], {}, name="head").outputs[0]]
    return g, {"x": f32(1, 8, 9, 9)}


@pytest.mark.parametrize("c1,c2,blocked", [(16, 32, True), (20, 16, False)])
def test_pass_concatenates_whole_channel_blocks_blocked(c1, c2, blocked):
    g, feeds = concat_graph(c1, c2)
    want = compiler.interpret(g, feeds)
    nchwc_layout(g, block=16)
    compiler.verify(g)
    assert [n.inputs[0].rank for n in g.nodes if n.op_type == "Concat"] == [5 if blocked else 4]
    got = compiler.interpret(g, feeds)
    for k in want:  # the blocked and NCHW reference convolutions sum in different orders
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())


@needs_avx512
def test_blocked_concat_on_x86(out_dir):
    g, feeds = concat_graph(16, 32)
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def test_padded_reads_stay_in_bounds_after_simplification():
    """A select evaluates both values, so the clamped read must survive TVM's simplifier: given the select's
    condition as comparisons it proved the clamp redundant and dropped it, and the 5x5 depthwise kernels read
    up to two rows before and after their input (stale arena bytes made PP-OCR's classifier 5x slower)."""
    import re

    from tvm import te
    from tvm import tirx as T

    from aotc.targets.cpu.conv_tiles import padded_read
    from aotc.targets.cpu.schedules import prim_func
    X = te.placeholder((1, 2, 3, 8, 16), "float32", name="X")
    rh = te.reduce_axis((0, 5), "rh")
    Y = te.compute((1, 2, 3, 8, 16), lambda n, c, i, j, l: te.sum(
        padded_read(X, (n, c), i + rh - 2, j - 1, (l,), 3, 8, T.const(0.0, "float32")), axis=[rh]), name="Y")
    text = prim_func([X, Y]).script()
    reads = re.findall(r"X\[[^\]]*\]", text)
    assert reads and all("T.min(T.max(" in r for r in reads), reads

"""INT8 ops: QuantizeLinear/DequantizeLinear against onnxruntime, round-trip
error bounds, and the int8 compute ops against an independent integer
reference written here with plain NumPy int64 arithmetic."""
import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.ir import Graph
from aotc.compiler.ops import get_op
from aotc.passes.quantization.params import activation_qparams, quantize_weight
from oracle import check_single_op

R = np.random.default_rng(1234)


# -- QuantizeLinear / DequantizeLinear: ONNX semantics, checked by onnxruntime ----------------------------
TIES = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 1e6, -1e6, 0.0, -0.0], np.float32)


@pytest.mark.parametrize("zp", [np.uint8(0), np.uint8(131), np.int8(0), np.int8(-7)])
def test_quantize_linear_per_tensor_matches_onnxruntime(zp):
    x = np.concatenate([TIES, (R.standard_normal(300) * 40).astype(np.float32)]).reshape(4, 78)
    # scale 1: exact .5 ties (round half to even) and saturation on both ends
    for scale in (np.float32(1.0), np.float32(0.37)):
        check_single_op("QuantizeLinear", [("x", x)], consts=[("s", scale), ("z", np.array(zp))])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_linear_per_axis_matches_onnxruntime(axis):
    x = (R.standard_normal((3, 5, 7)) * 10).astype(np.float32)
    n = x.shape[axis]
    scales = R.uniform(0.02, 0.3, n).astype(np.float32)
    check_single_op("QuantizeLinear", [("x", x)], attrs={"axis": axis},
                    consts=[("s", scales), ("z", R.integers(-20, 20, n).astype(np.int8))], opset=13)


def test_quantize_linear_without_zero_point_is_uint8():
    x = (R.standard_normal((2, 9)) * 50).astype(np.float32)
    got = check_single_op("QuantizeLinear", [("x", x)], consts=[("s", np.float32(0.5))])
    assert got["y0"].dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_dequantize_linear_matches_onnxruntime(dtype):
    info = np.iinfo(dtype)
    q = R.integers(info.min, info.max + 1, (6, 4, 5)).astype(dtype)
    check_single_op("DequantizeLinear", [("q", q)], consts=[("s", np.float32(0.0123)), ("z", np.array(3, dtype))])
    check_single_op("DequantizeLinear", [("q", q)], attrs={"axis": 1},
                    consts=[("s", R.uniform(0.01, 1, 4).astype(np.float32)), ("z", np.arange(4).astype(dtype))])


def test_dequantize_linear_int32_bias_matches_onnxruntime():
    q = R.integers(-2 ** 30, 2 ** 30, (3, 8)).astype(np.int32)
    check_single_op("DequantizeLinear", [("q", q)], consts=[("s", np.float32(1e-5))])


# -- round trip --------------------------------------------------------------------------------------------
def test_activation_round_trip_error_is_at_most_half_a_step():
    x = R.uniform(-3.0, 11.0, 10000).astype(np.float32)
    scale, zp = activation_qparams(x.min(), x.max())
    q = get_op("QuantizeLinear").run([x, scale, zp], {"axis": 1})[0]
    y = get_op("DequantizeLinear").run([q, scale, zp], {"axis": 1})[0]
    # inside the range: |x - y| <= scale / 2 (+ float32 rounding of the arithmetic)
    assert np.abs(x - y).max() <= scale / 2 * (1 + 1e-5) + 1e-6
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    # real zero is exactly representable
    assert get_op("DequantizeLinear").run([get_op("QuantizeLinear").run([np.zeros(1, np.float32), scale, zp],
                                                                        {"axis": 1})[0], scale, zp], {"axis": 1})[0][0] == 0


def test_activation_range_always_contains_zero():
    s, z = activation_qparams(2.0, 6.0)   # all positive: lo widens to 0
    assert z == 0 and np.isclose(s, 6.0 / 255)
    s, z = activation_qparams(-5.0, -1.0)  # all negative: hi widens to 0
    assert z == 255 and np.isclose(s, 5.0 / 255)
    s, z = activation_qparams(-1.0, 3.0)
    assert z == round(1.0 / (4.0 / 255)) == 64


def test_weight_round_trip_per_channel():
    w = (R.standard_normal((64, 48)) * np.logspace(-3, 1, 48)).astype(np.float32)  # channels on very different scales
    q, s = quantize_weight(w, axis=1)
    assert q.dtype == np.int8 and s.shape == (48,) and q.min() >= -127
    assert (np.abs(q).max(axis=0) == 127).all()  # every channel uses the full range
    y = q.astype(np.float32) * s
    assert (np.abs(w - y) <= s / 2 * (1 + 1e-5)).all()  # per-channel error bound: half a step of that channel
    qc, sc = quantize_weight(w.T.copy(), axis=0)  # conv layout: output channels first
    np.testing.assert_array_equal(qc, q.T)
    np.testing.assert_array_equal(sc, s)


def test_all_zero_weight_channel():
    w = np.zeros((4, 3), np.float32)
    w[:, 1] = [1, -2, 0.5, 0]
    q, s = quantize_weight(w, axis=1)
    assert s[0] == 1.0 and (q[:, 0] == 0).all() and q[1, 1] == -127


# -- int8 compute ops: exact against an int64 reference --------------------------------------------------
def ref_requantize(y: np.ndarray, ys, yz) -> np.ndarray:
    q = np.rint(y / np.float32(ys)).astype(np.int64) + int(yz)
    return np.clip(q, 0, 255).astype(np.uint8)


def ref_matmul_int64(x, xz, w):
    """Σ_k (x - xz) * w with explicit int64 loops over k (no BLAS)."""
    xc = x.astype(np.int64) - int(xz)
    acc = np.zeros(x.shape[:-1] + (w.shape[1],), np.int64)
    for k in range(w.shape[0]):
        acc += xc[..., k:k + 1] * w[k].astype(np.int64)
    return acc


def ref_epilogue(acc, xs, ws, bias, res=None, act="none", channel_axis=-1):
    shape = [1] * acc.ndim
    shape[channel_axis] = ws.size
    s = (np.float32(xs) * ws.astype(np.float32)).astype(np.float32).reshape(shape)
    y = acc.astype(np.float32) * s
    if bias is not None:
        y = y + bias.reshape(shape)
    if act == "relu":
        y = np.maximum(y, np.float32(0))
    if res is not None:
        y = y + res
    return y.astype(np.float32)


def _qmm_inputs(shape, k, n, xz=117):
    x = R.integers(0, 256, shape + (k,)).astype(np.uint8)
    w = R.integers(-127, 128, (k, n)).astype(np.int8)
    xs = np.array(0.0173, np.float32)
    ws = R.uniform(0.001, 0.05, n).astype(np.float32)
    bias = R.standard_normal(n).astype(np.float32)
    return x, xs, np.array(xz, np.uint8), w, ws, bias


@pytest.mark.parametrize("shape,k,n", [((7,), 33, 5), ((2, 9), 384, 16), ((1, 3, 4), 1536, 8)])
def test_quantized_matmul_float_epilogue_exact(shape, k, n):
    x, xs, xz, w, ws, bias = _qmm_inputs(shape, k, n)
    got = get_op("QuantizedMatMul").run([x, xs, xz, w, ws, bias], get_op("QuantizedMatMul").normalize_attrs({}))[0]
    want = ref_epilogue(ref_matmul_int64(x, xz, w), xs, ws, bias)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_quantized_matmul_extreme_values_do_not_overflow():
    """All-255 activations with zero point 0 against all-(-127) weights, K = 4096: |acc| ~ 1.3e8."""
    k = 4096
    x = np.full((2, k), 255, np.uint8)
    w = np.full((k, 3), -127, np.int8)
    op = get_op("QuantizedMatMul")
    got = op.run([x, np.array(1.0, np.float32), np.array(0, np.uint8), w, np.ones(3, np.float32)],
                 op.normalize_attrs({}))[0]
    assert (got == np.float32(-255 * 127 * k)).all()


def test_quantized_matmul_requantized_relu_residual_exact():
    x, xs, xz, w, ws, bias = _qmm_inputs((4, 6), 64, 12)
    res = R.standard_normal((4, 6, 12)).astype(np.float32)
    ys, yz = np.array(0.05, np.float32), np.array(9, np.uint8)
    op = get_op("QuantizedMatMul")
    attrs = op.normalize_attrs({"activation": "relu"})
    got = op.run([x, xs, xz, w, ws, bias, res, ys, yz], attrs)[0]
    want = ref_requantize(ref_epilogue(ref_matmul_int64(x, xz, w), xs, ws, bias, res, "relu"), ys, yz)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def ref_conv_int64(x, xz, w, stride, pad, dil, group):
    """Direct 2-D convolution with int64 loops; padding is the zero point (real 0)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.full((n, c, h + 2 * pad, wd + 2 * pad), int(xz), np.int64)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    xp -= int(xz)
    oh = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    acc = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for oc in range(m):
        g = oc // mg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i * dil:i * dil + stride * (oh - 1) + 1:stride,
                           j * dil:j * dil + stride * (ow - 1) + 1:stride]
                acc[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j].astype(np.int64))
    return acc


@pytest.mark.parametrize("c,m,k,stride,pad,dil,group", [
    (3, 8, 3, 2, 1, 1, 1),     # a stem conv
    (8, 8, 5, 1, 2, 1, 8),     # depthwise 5x5
    (12, 6, 3, 1, 2, 2, 3),    # grouped, dilated
    (16, 24, 1, 1, 0, 1, 1),   # pointwise
])
def test_quantized_conv_exact(c, m, k, stride, pad, dil, group):
    x = R.integers(0, 256, (2, c, 11, 9)).astype(np.uint8)
    w = R.integers(-127, 128, (m, c // group, k, k)).astype(np.int8)
    xs, xz = np.array(0.02, np.float32), np.array(201, np.uint8)
    ws = R.uniform(0.001, 0.05, m).astype(np.float32)
    bias = R.standard_normal(m).astype(np.float32)
    op = get_op("QuantizedConv")
    attrs = op.normalize_attrs({"strides": [stride] * 2, "pads": [pad] * 4, "dilations": [dil] * 2, "group": group,
                                "activation": "relu"})
    acc = ref_conv_int64(x, xz, w, stride, pad, dil, group)
    got = op.run([x, xs, xz, w, ws, bias], attrs)[0]
    np.testing.assert_array_equal(got, ref_epilogue(acc, xs, ws, bias, act="relu", channel_axis=1))
    ys, yz = np.array(0.04, np.float32), np.array(0, np.uint8)
    got_q = op.run([x, xs, xz, w, ws, bias, None, ys, yz], attrs)[0]
    np.testing.assert_array_equal(got_q, ref_requantize(ref_epilogue(acc, xs, ws, bias, act="relu", channel_axis=1),
                                                        ys, yz))


def test_quantized_attention_projections_exact():
    b, s, e, h, d = 2, 5, 16, 2, 8
    x = R.integers(0, 256, (b, s, e)).astype(np.uint8)
    xs, xz = np.array(0.03, np.float32), np.array(128, np.uint8)
    ws = [R.integers(-127, 128, (e, h * d)).astype(np.int8) for _ in range(3)]
    ss = [R.uniform(0.001, 0.02, h * d).astype(np.float32) for _ in range(3)]
    bs = [R.standard_normal(h * d).astype(np.float32) for _ in range(3)]
    mask = np.where(R.random((b, 1, 1, s)) < 0.3, np.float32(-1e4), np.float32(0))
    op = get_op("QuantizedAttention")
    attrs = op.normalize_attrs({"num_heads": h, "head_dim": d, "scale": 1 / np.sqrt(d)})
    got = op.run([x, xs, xz, x, xs, xz, ws[0], ss[0], bs[0], ws[1], ss[1], bs[1], ws[2], ss[2], bs[2], mask, None],
                 attrs)[0]
    # projections by the integer reference, then the float Attention core on the dequantized projections
    proj = [ref_epilogue(ref_matmul_int64(x, xz, w), xs, sc, bb) for w, sc, bb in zip(ws, ss, bs)]
    q, k, v = (p.reshape(b, s, h, d).transpose(0, 2, 1, 3) for p in proj)
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d)) + mask
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = (p @ v).transpose(0, 2, 1, 3).reshape(b, s, h * d)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# -- the ops in graphs: inference, verifier, ONNX export -------------------------------------------------
def test_quantized_ops_in_a_graph_verify_and_export(tmp_path):
    from aotc.compiler.onnx_export import save_onnx
    g = Graph()
    x = g.add_input("x", (2, 8), compiler.DType.uint8)
    xs, xz = g.add_const("xs", np.array(0.1, np.float32)), g.add_const("xz", np.array(3, np.uint8))
    w = g.add_const("w", R.integers(-127, 128, (8, 4)).astype(np.int8))
    ws = g.add_const("ws", np.full(4, 0.01, np.float32))
    y = g.add_node("QuantizedMatMul", [x, xs, xz, w, ws], {"activation": "relu"}).outputs[0]
    dq = g.add_node("QuantizeLinear", [y, xs, xz]).outputs[0]
    g.outputs = [g.add_node("DequantizeLinear", [dq, xs, xz]).outputs[0]]
    compiler.verify(g)
    save_onnx(g, tmp_path / "q.onnx")
    back = compiler.load_onnx(tmp_path / "q.onnx")
    feeds = {"x": R.integers(0, 256, (2, 8)).astype(np.uint8)}
    np.testing.assert_array_equal(compiler.interpret(back, feeds)[back.outputs[0].name],
                                  compiler.interpret(g, feeds)[g.outputs[0].name])


def test_quantized_matmul_rejects_bad_operands():
    from aotc.compiler.errors import ShapeError
    g = Graph()
    x = g.add_input("x", (2, 8), compiler.DType.float32)
    xs, xz = g.add_const("xs", np.array(0.1, np.float32)), g.add_const("xz", np.array(3, np.uint8))
    w = g.add_const("w", np.zeros((8, 4), np.int8))
    ws = g.add_const("ws", np.full(4, 0.01, np.float32))
    with pytest.raises(ShapeError, match="activation must be uint8 or int8"):
        g.add_node("QuantizedMatMul", [x, xs, xz, w, ws])
    xq = g.add_input("xq", (2, 8), compiler.DType.uint8)
    with pytest.raises(ShapeError, match="both y_scale and y_zero_point"):
        g.add_node("QuantizedMatMul", [xq, xs, xz, w, ws, None, None, xs])
    with pytest.raises(ShapeError, match="weight scale"):
        g.add_node("QuantizedMatMul", [xq, xs, xz, w, g.add_const("bad", np.ones(3, np.float32))])

"""Differential tests of the CNN op family (compiler/ops/nn.py) against
onnxruntime: every case is a single-op ONNX model with randomized shapes and
attributes (seeded, so a failure reproduces), imported by aotc and run in its
interpreter. Weights, pads, scales and sizes are initializers, as in real models."""
import zlib

import numpy as np
import pytest
from oracle import check_single_op, single_op_model

from aotc import compiler
from aotc.compiler.errors import AotcError

SEEDS = range(24)


def rng_for(*key):
    """A generator seeded by the test's own key (crc32, not hash(): str hashes vary per process)."""
    return np.random.default_rng([zlib.crc32(k.encode()) if isinstance(k, str) else k for k in key])


def normal(r, shape):
    return r.standard_normal(shape).astype(np.float32)


# -- Conv ----------------------------------------------------------------------
def conv_case(seed):
    r = rng_for("conv", seed)
    nsp = [1, 2, 2, 2, 3][seed % 5]
    group_kind = ["plain", "depthwise", "grouped"][seed % 3]
    g = {"plain": 1, "depthwise": int(r.integers(2, 6)), "grouped": int(r.integers(2, 4))}[group_kind]
    cg = 1 if group_kind == "depthwise" else int(r.integers(1, 4))
    mg = int(r.integers(1, 4))
    kernel = [int(r.integers(1, 4 if nsp == 3 else 6)) for _ in range(nsp)]
    strides = [int(r.integers(1, 4)) for _ in range(nsp)]
    dils = [int(r.integers(1, 3)) for _ in range(nsp)]
    auto_pad = ["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"][int(r.integers(0, 5))]
    if auto_pad.startswith("SAME"):
        dils = [1] * nsp  # onnxruntime's Conv rejects dilations with SAME_* auto_pad
    ek = [(k - 1) * d + 1 for k, d in zip(kernel, dils)]
    sp = [int(r.integers(e, e + (6 if nsp == 3 else 12))) for e in ek]
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dils, "group": g}
    if auto_pad == "NOTSET":
        attrs["pads"] = [int(r.integers(0, k + 1)) for k in kernel] + [int(r.integers(0, k + 1)) for k in kernel]
    else:
        attrs["auto_pad"] = auto_pad
    n = int(r.integers(1, 3))
    x = normal(r, (n, g * cg, *sp))
    w = normal(r, (g * mg, cg, *kernel))
    consts = [("w", w)] + ([("b", normal(r, (g * mg,)))] if r.random() < 0.7 else [])
    return x, attrs, consts


@pytest.mark.parametrize("seed", SEEDS)
def test_conv(seed):
    x, attrs, consts = conv_case(seed)
    check_single_op("Conv", [("x", x)], attrs, consts=consts, opset=[11, 13, 17, 18][seed % 4])


def test_conv_weight_as_graph_input():
    """Conv with W fed at run time (not an initializer) is still one Conv node."""
    r = np.random.default_rng(7)
    check_single_op("Conv", [("x", normal(r, (1, 4, 9, 8))), ("w", normal(r, (6, 2, 3, 3)))],
                    {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1]})


def test_conv_depthwise_efficientnet_shape():
    """The dominant layer of mobile nets: a 5x5 depthwise conv, stride 2, SAME-style pads."""
    r = np.random.default_rng(3)
    c = 40
    check_single_op("Conv", [("x", normal(r, (1, c, 28, 28)))], {"group": c, "pads": [1, 1, 2, 2], "strides": [2, 2]},
                    consts=[("w", normal(r, (c, 1, 5, 5))), ("b", normal(r, (c,)))])


# -- ConvTranspose ---------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_conv_transpose(seed):
    r = rng_for("convT", seed)
    nsp = [1, 2, 2, 3][seed % 4]
    g = [1, 1, 2, 3][int(r.integers(0, 4))]
    cg, mg = int(r.integers(1, 4)), int(r.integers(1, 4))
    kernel = [int(r.integers(1, 4 if nsp == 3 else 5)) for _ in range(nsp)]
    strides = [int(r.integers(1, 4)) for _ in range(nsp)]
    dils = [int(r.integers(1, 3)) for _ in range(nsp)]
    sp = [int(r.integers(1, 5 if nsp == 3 else 8)) for _ in range(nsp)]
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dils, "group": g}
    # output_padding must be smaller than the stride (onnxruntime; the spec also allows < dilation)
    opad = [int(r.integers(0, s)) for s in strides]
    full = [s * (i - 1) + o + (k - 1) * d + 1 for s, i, o, k, d in zip(strides, sp, opad, kernel, dils)]
    variant = ["pads", "pads", "output_shape", "auto_pad"][seed % 4]
    if variant == "pads":
        attrs["output_padding"] = opad
        attrs["pads"] = [int(r.integers(0, max(1, f // 3))) for f in full] + \
                        [int(r.integers(0, max(1, f // 3))) for f in full]
    elif variant == "output_shape":
        attrs["output_shape"] = [int(r.integers(max(1, f - 3), f + 1)) for f in full]
    else:
        attrs["auto_pad"] = ["SAME_UPPER", "SAME_LOWER"][seed % 8 // 4]
    n = int(r.integers(1, 3))
    x = normal(r, (n, g * cg, *sp))
    consts = [("w", normal(r, (g * cg, mg, *kernel)))] + ([("b", normal(r, (g * mg,)))] if seed % 3 else [])
    check_single_op("ConvTranspose", [("x", x)], attrs, consts=consts, opset=[11, 13, 17][seed % 3])


@pytest.mark.parametrize("how", [{"auto_pad": "SAME_UPPER"}, {"auto_pad": "SAME_LOWER"},
                                 {"output_shape": [10, 13]}, {"output_shape": [10, 13], "auto_pad": "SAME_UPPER"}])
def test_conv_transpose_odd_total_padding(how):
    """Kernel 3, stride 2: the padding to split is odd, so which side gets the extra one shows."""
    r = np.random.default_rng(5)
    check_single_op("ConvTranspose", [("x", normal(r, (1, 2, 5, 7)))], {"strides": [2, 2], **how},
                    consts=[("w", normal(r, (2, 3, 3, 3)))])


# -- BatchNormalization / InstanceNormalization / LRN -------------------------
@pytest.mark.parametrize("opset", [11, 14, 15])
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_batch_norm(opset, rank):
    r = rng_for("bn", opset, rank)
    shape = [int(r.integers(1, 3)), int(r.integers(1, 9))] + [int(r.integers(1, 7)) for _ in range(rank - 2)]
    c = shape[1]
    consts = [("scale", normal(r, (c,))), ("bias", normal(r, (c,))), ("mean", normal(r, (c,))),
              ("var", r.uniform(0.05, 3, c).astype(np.float32))]
    check_single_op("BatchNormalization", [("x", normal(r, shape))], {"epsilon": float(r.uniform(1e-5, 1e-2))},
                    consts=consts, opset=opset)


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_instance_norm(rank):
    r = rng_for("in", rank)
    shape = [2, 3] + [int(r.integers(2, 7)) for _ in range(rank - 2)]
    # A shifted input: the mean is large against the spread, the case that exposes one-pass variance.
    x = normal(r, shape) + 3
    check_single_op("InstanceNormalization", [("x", x)], {"epsilon": 1e-3},
                    consts=[("scale", normal(r, (3,))), ("bias", normal(r, (3,)))])


@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime takes odd sizes only
def test_lrn(size):
    r = rng_for("lrn", size)
    x = normal(r, (2, 7, 5, 4))
    check_single_op("LRN", [("x", x)], {"size": size, "alpha": float(r.uniform(1e-4, 1e-1)),
                                         "beta": float(r.uniform(0.5, 1)), "bias": float(r.uniform(1, 2))})


# -- pooling -------------------------------------------------------------------
def pool_case(kind, seed):
    r = rng_for(kind, seed)
    nsp = [1, 2, 2, 3][seed % 4]
    kernel = [int(r.integers(1, 4 if nsp == 3 else 5)) for _ in range(nsp)]
    strides = [int(r.integers(1, 4)) for _ in range(nsp)]
    auto_pad = ["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"][int(r.integers(0, 6))]
    dilate = kind == "MaxPool" or seed % 2  # AveragePool has dilations only from opset 19
    dils = [int(r.integers(1, 3)) if dilate else 1 for _ in range(nsp)]
    if auto_pad.startswith("SAME"):
        # onnxruntime's pools size SAME padding from the undilated kernel and fail on the negative
        # padding a kernel smaller than the stride gives; aotc follows the spec, so keep to the
        # cases where the two agree.
        dils = [1] * nsp
        strides = [min(s, k) for s, k in zip(strides, kernel)]
    attrs = {"kernel_shape": kernel, "strides": strides}
    if dilate:
        attrs["dilations"] = dils
    ek = [(k - 1) * d + 1 for k, d in zip(kernel, dils)]
    sp = [int(r.integers(e, e + 9)) for e in ek]
    if auto_pad == "NOTSET":
        # onnxruntime requires every pad to be smaller than the kernel
        attrs["pads"] = [int(r.integers(0, k)) for k in kernel] + [int(r.integers(0, k)) for k in kernel]
        attrs["ceil_mode"] = int(r.integers(0, 2))
    else:
        attrs["auto_pad"] = auto_pad
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(r.integers(0, 2))
    x = normal(r, (int(r.integers(1, 3)), int(r.integers(1, 4)), *sp))
    opset = (19 if dilate else [11, 19][seed % 2]) if kind == "AveragePool" else [11, 12, 18][seed % 3]
    return x, attrs, opset


@pytest.mark.parametrize("seed", range(24))
def test_max_pool(seed):
    x, attrs, opset = pool_case("MaxPool", seed)
    check_single_op("MaxPool", [("x", x)], attrs, opset=opset)


@pytest.mark.parametrize("seed", range(24))
def test_average_pool(seed):
    x, attrs, opset = pool_case("AveragePool", seed)
    check_single_op("AveragePool", [("x", x)], attrs, opset=opset)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_integer_pads_with_type_minimum(dtype):
    r = np.random.default_rng(1)
    info = np.iinfo(dtype)
    x = r.integers(info.min, info.max, (1, 2, 6, 7), endpoint=True).astype(dtype)
    check_single_op("MaxPool", [("x", x)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, opset=12)


def test_max_pool_rejects_indices_output():
    model = single_op_model("MaxPool", [("x", np.zeros((1, 1, 4, 4), np.float32))], {"kernel_shape": [2, 2]},
                            num_outputs=2)
    with pytest.raises(AotcError, match="output #1 is used"):
        compiler.load_onnx(model)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("rank", [3, 4, 5])
def test_global_pool(op, rank):
    r = rng_for(op, rank)
    shape = [2, 3] + [int(r.integers(1, 9)) for _ in range(rank - 2)]
    check_single_op(op, [("x", normal(r, shape))])


# -- Pad -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad(mode, seed):
    r = rng_for("pad", mode, seed)
    rank = int(r.integers(1, 5))
    shape = [int(r.integers(2, 7)) for _ in range(rank)]
    opset = 19 if mode == "wrap" else [11, 13, 18][seed % 3]
    use_axes = opset >= 18 and seed % 2 == 0
    axes = list(range(rank))
    if use_axes:
        axes = sorted(r.choice(rank, int(r.integers(1, rank + 1)), replace=False).tolist())
    if mode == "constant":
        pads = [int(r.integers(-1, 4)) for _ in range(2 * len(axes))]  # negative pads crop
    elif mode == "reflect":
        pads = [int(r.integers(0, shape[a])) for a in axes] * 2  # reflection needs pad < size
    else:
        pads = [int(r.integers(0, 4)) for _ in range(2 * len(axes))]
    consts = [("pads", np.array(pads, np.int64))]
    if mode == "constant" and seed % 3:
        consts.append(("value", np.array(r.standard_normal(), np.float32)))
    elif use_axes:
        consts.append(("value", None))
    if use_axes:
        # negative axes are legal and must be normalized
        consts.append(("axes", np.array([a - rank if seed % 4 == 0 else a for a in axes], np.int64)))
    check_single_op("Pad", [("x", normal(r, shape))], {"mode": mode}, consts=consts, opset=opset)


def test_pad_integer_tensor_with_value():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    check_single_op("Pad", [("x", x)], {"mode": "constant"},
                    consts=[("pads", np.array([1, 0, 0, 2], np.int64)), ("value", np.array(-7, np.int64))])


# -- Resize --------------------------------------------------------------------
def resize_inputs(opset, roi, scales, sizes, axes=None):
    """Resize's optional inputs in the form each opset takes: opset 11 needs roi
    and scales present (possibly empty), later opsets leave them out."""
    empty = np.array([], np.float32)
    if opset < 13:
        consts = [("roi", empty if roi is None else roi), ("scales", empty if scales is None else scales)]
    else:
        consts = [("roi", roi), ("scales", scales)]
    if sizes is not None:
        consts.append(("sizes", sizes))
    return consts


def resize_case(seed, mode, ctm):
    r = rng_for("resize", mode, ctm, seed)
    # onnxruntime interpolates linear/cubic only over the last two (or three, linear) axes
    if mode == "nearest":
        rank = int(r.integers(1, 5))
        resized = list(range(rank))
    elif mode == "linear":
        rank = [2, 4, 3, 5][seed % 4]
        resized = list(range(rank)) if rank in (2, 3) else list(range(rank - (2 if rank == 4 else 3), rank))
    else:
        rank = [2, 4][seed % 2]
        resized = list(range(rank - 2, rank))
    shape = [int(r.integers(1, 3)) for _ in range(rank)]
    for a in resized:
        shape[a] = int(r.integers(1, 9))
    opset = [11, 13, 18, 19][seed % 4]
    if ctm == "tf_half_pixel_for_nn":
        opset = [11, 13][seed % 2]
    if ctm == "half_pixel_symmetric":
        opset = 19
    axes = None
    if opset >= 18 and r.random() < 0.5:
        axes = resized
    per_axis = axes if axes is not None else list(range(rank))
    use_sizes = bool(r.integers(0, 2))
    if use_sizes:
        sizes = [int(r.integers(1, 2 * shape[a] + 3)) if a in resized else shape[a] for a in per_axis]
        scales = None
    else:
        # non-integer up- and down-scales; output sizes floor(in * scale) stay >= 1
        scales = [float(np.float32(r.choice([0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, r.uniform(0.6, 3.3)])))
                  if a in resized else 1.0 for a in per_axis]
        scales = [max(s, 1.0 / shape[a]) if a in resized else s for s, a in zip(scales, per_axis)]
        sizes = None
    roi = None
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if ctm == "tf_crop_and_resize":
        # every axis gets a crop window, also those with scale 1, whose roi is ignored
        starts = [float(r.uniform(-0.3, 0.4)) for _ in per_axis]
        ends = [float(r.uniform(0.6, 1.3)) for _ in per_axis]
        roi = np.array(starts + ends, np.float32)
        attrs["extrapolation_value"] = float(r.uniform(-2, 2))
    if axes is not None:
        attrs["axes"] = axes
    consts = resize_inputs(opset, roi,
                           None if scales is None else np.array(scales, np.float32),
                           None if sizes is None else np.array(sizes, np.int64))
    x = normal(r, shape)
    return x, attrs, consts, opset, r


NEAREST_CTMS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                "tf_crop_and_resize", "half_pixel_symmetric"]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("ctm", NEAREST_CTMS)
def test_resize_nearest(ctm, nearest_mode, seed):
    x, attrs, consts, opset, _ = resize_case(seed, "nearest", ctm)
    attrs["nearest_mode"] = nearest_mode
    check_single_op("Resize", [("x", x)], attrs, consts=consts, opset=opset)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
                                 "tf_crop_and_resize", "half_pixel_symmetric"])
def test_resize_linear(ctm, seed):
    x, attrs, consts, opset, _ = resize_case(seed, "linear", ctm)
    check_single_op("Resize", [("x", x)], attrs, consts=consts, opset=opset)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
                                 "tf_crop_and_resize"])
def test_resize_cubic(ctm, seed):
    x, attrs, consts, opset, r = resize_case(seed, "cubic", ctm)
    attrs["exclude_outside"] = seed % 2
    attrs["cubic_coeff_a"] = float(r.choice([-0.75, -0.5]))
    check_single_op("Resize", [("x", x)], attrs, consts=consts, opset=opset)


@pytest.mark.parametrize("ctm, nearest_mode, length_in, sizes, scales", [
    # float32 gives 3.4999998 for 1 / (2/7) and 3.5000002 for 9.5 / (19/7): both are the tie 3.5
    ("asymmetric", "round_prefer_ceil", 7, [1, 2], None),
    ("asymmetric", "round_prefer_ceil", 6, None, [1, 4 / 7]),
    ("tf_half_pixel_for_nn", "round_prefer_floor", 7, [1, 19], None),
    ("tf_half_pixel_for_nn", "round_prefer_ceil", 7, None, [1, 1 / 7]),
    # exact ties, and floor/ceil, which have no tolerance: 2.9999998 floors to 2
    ("asymmetric", "round_prefer_floor", 5, None, [1, 2.0]),
    ("half_pixel", "floor", 7, [1, 1], None),
])
def test_resize_nearest_ties_within_float_error(ctm, nearest_mode, length_in, sizes, scales):
    x = normal(np.random.default_rng(0), (1, length_in))
    check_single_op("Resize", [("x", x)], {"mode": "nearest", "coordinate_transformation_mode": ctm,
                                           "nearest_mode": nearest_mode},
                    consts=resize_inputs(13, None, None if scales is None else np.array(scales, np.float32),
                                         None if sizes is None else np.array(sizes, np.int64)), opset=13)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_scale_that_keeps_the_shape(mode):
    """scales 1.2 on a length-3 axis give length 3 again: the output is the input (onnxruntime),
    but the same scale on an axis resized alongside another one is applied."""
    r = np.random.default_rng(1)
    x = normal(r, (1, 1, 3, 3))
    for scales in ([1, 1, 1.2, 1.2], [1, 1, 1.5, 1.2]):
        check_single_op("Resize", [("x", x)], {"mode": mode, "coordinate_transformation_mode": "asymmetric"},
                        consts=resize_inputs(13, None, np.array(scales, np.float32), None), opset=13)


def test_resize_nearest_integer_tensor():
    x = np.arange(24, dtype=np.int32).reshape(1, 2, 3, 4)  # onnxruntime has no int64 Resize
    check_single_op("Resize", [("x", x)], {"mode": "nearest"},
                    consts=resize_inputs(13, None, np.array([1, 1, 1.7, 2.5], np.float32), None), opset=13)


@pytest.mark.parametrize("attrs, match", [
    ({"mode": "linear", "antialias": 1}, "antialias"),
    ({"mode": "nearest", "keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
])
def test_resize_unsupported_attributes_raise(attrs, match):
    x = np.zeros((1, 1, 4, 4), np.float32)
    model = single_op_model("Resize", [("x", x)], attrs,
                            consts=resize_inputs(18, None, None, np.array([1, 1, 6, 6], np.int64)), opset=18)
    with pytest.raises(AotcError, match=match):
        compiler.load_onnx(model)


# -- float16 ------------------------------------------------------------------
def _f16(r, shape):
    return r.standard_normal(shape).astype(np.float16)


FLOAT16_CASES = {
    "Conv": lambda r: ([("x", _f16(r, (1, 4, 8, 8)))], {"pads": [1, 0, 1, 2], "group": 2},
                       [("w", _f16(r, (6, 2, 3, 3))), ("b", _f16(r, (6,)))]),
    "ConvTranspose": lambda r: ([("x", _f16(r, (1, 4, 5, 5)))], {"strides": [2, 2]}, [("w", _f16(r, (4, 3, 3, 3)))]),
    "MaxPool": lambda r: ([("x", _f16(r, (1, 4, 8, 8)))], {"kernel_shape": [3, 3], "ceil_mode": 1, "strides": [2, 2]},
                          []),
    "AveragePool": lambda r: ([("x", _f16(r, (1, 4, 8, 8)))], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, []),
    "GlobalAveragePool": lambda r: ([("x", _f16(r, (1, 4, 8, 8)))], {}, []),
    "BatchNormalization": lambda r: ([("x", _f16(r, (1, 4, 8, 8)))], {},
                                     [("s", _f16(r, (4,))), ("b", _f16(r, (4,))), ("m", _f16(r, (4,))),
                                      ("v", np.abs(_f16(r, (4,))) + np.float16(0.1))]),
    "InstanceNormalization": lambda r: ([("x", _f16(r, (1, 4, 8, 8)))], {},
                                        [("s", _f16(r, (4,))), ("b", _f16(r, (4,)))]),
    "Resize": lambda r: ([("x", _f16(r, (1, 4, 4, 5)))], {"mode": "linear"},
                         [("roi", None), ("scales", np.array([1, 1, 2, 1.5], np.float32))]),
    "Pad": lambda r: ([("x", _f16(r, (1, 4, 4, 4)))], {"mode": "reflect"},
                      [("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))]),
}


@pytest.mark.parametrize("op", sorted(FLOAT16_CASES))
def test_float16(op):
    """float16 in, float16 out, computed in float32 (oracle.TOLERANCE['float16'])."""
    inputs, attrs, consts = FLOAT16_CASES[op](rng_for("f16", op))
    got = check_single_op(op, inputs, attrs, consts=consts)
    assert got["y0"].dtype == np.float16


# -- flops ---------------------------------------------------------------------
def test_conv_flops_count_multiply_add_as_two():
    model = single_op_model("Conv", [("x", np.zeros((1, 4, 8, 8), np.float32))], {"group": 2, "pads": [1, 1, 1, 1]},
                            consts=[("w", np.ones((6, 2, 3, 3), np.float32)), ("b", np.ones(6, np.float32))])
    g = compiler.load_onnx(model)
    (node,) = g.nodes
    # each of 6*8*8 outputs: 2*3*3 multiply-adds plus one bias add
    assert node.op.flops(node.inputs, node.outputs, node.attrs) == 6 * 8 * 8 * (2 * 2 * 9 + 1)

"""The CNN op family: Conv, ConvTranspose, BatchNormalization, the pooling
ops, Pad, Resize, InstanceNormalization and LRN.

Sliding-window ops share one geometry helper (`window_geometry`) and one
strided view (`_windows`), so Conv and the pools agree on what auto_pad,
dilations and ceil_mode mean. Kernels are vectorized over pixels: Conv is
im2col + one batched matmul per group, ConvTranspose a matmul followed by a
scatter-add per kernel tap, Resize one interpolation matrix per resized axis.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from .registry import FLOAT, FLOATS, INT, INTS, STRING, TENSOR, Attr, OpDef, as_out, norm_axis, register

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _wide(x: np.ndarray) -> np.ndarray:
    """float16/bfloat16 arithmetic is done in float32, as onnxruntime does."""
    return x.astype(np.float32) if x.dtype.kind == "f" and x.dtype.itemsize < 4 or x.dtype.name == "bfloat16" else x


def _per_axis(v, n: int, default: int, op: str, what: str) -> list[int]:
    if v is None or len(v) == 0:
        return [default] * n
    if len(v) != n:
        raise ShapeError(f"{op}: {what} {list(v)} has {len(v)} entries for {n} spatial axes.")
    return list(v)


def _check_spatial_input(x, op: str, min_rank: int = 3):
    if x.rank < min_rank:
        raise ShapeError(f"{op} needs an input of rank >= {min_rank} (N, C, spatial...), got {x.type_str}.")


def window_geometry(op: str, in_sp, kernel, attrs, ceil_mode: bool = False):
    """Output size and begin/end padding of a sliding window per spatial axis.

    Returns (out, strides, dilations, pads_begin, pads_end). With ceil_mode
    the last window may reach past pads_end; `_windows` pads for it."""
    n = len(in_sp)
    if len(kernel) != n:
        raise ShapeError(f"{op}: kernel_shape {list(kernel)} has {len(kernel)} entries for {n} spatial axes.")
    strides = _per_axis(attrs.get("strides"), n, 1, op, "strides")
    dils = _per_axis(attrs.get("dilations"), n, 1, op, "dilations")
    pads = attrs.get("pads") or [0] * (2 * n)
    if len(pads) != 2 * n:
        raise ShapeError(f"{op}: pads {list(pads)} must have {2 * n} entries (begin values, then end values).")
    if any(p < 0 for p in pads) or any(s < 1 for s in strides) or any(d < 1 for d in dils) or \
            any(k < 1 for k in kernel):
        raise ShapeError(f"{op}: pads must be >= 0 and kernel_shape, strides and dilations >= 1 "
                         f"(got kernel_shape {list(kernel)}, pads {list(pads)}, strides {strides}, dilations {dils}).")
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in AUTO_PADS:
        raise ShapeError(f"{op}: auto_pad {auto!r} is not one of {', '.join(AUTO_PADS)}.")
    out, pb, pe = [], [], []
    for i, (d, k, s, dl) in enumerate(zip(in_sp, kernel, strides, dils)):
        ek = (k - 1) * dl + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-d // s)
            need = max(0, (o - 1) * s + ek - d)
            b = need // 2 if auto == "SAME_UPPER" else (need + 1) // 2
            e = need - b
        elif auto == "VALID":
            b = e = 0
        else:
            b, e = pads[i], pads[i + n]
        span = d + b + e - ek
        if span < 0:
            raise ShapeError(f"{op}: the window ({ek} wide with dilation) is larger than spatial axis {i} "
                             f"({d} + padding {b}+{e}).")
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= d + b:  # a window may not start in the end padding (ONNX, PyTorch)
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
        pb.append(b)
        pe.append(e)
    return out, strides, dils, pb, pe


def _windows(x: np.ndarray, out, kernel, strides, dils, pb, fill) -> np.ndarray:
    """A strided view (N, C, *out, *kernel) of every window of `x` padded with `fill`: `pb` in front,
    and at the end as much as the last window reaches (explicit end pads beyond it are never read)."""
    n = len(out)
    ek = [(k - 1) * d + 1 for k, d in zip(kernel, dils)]
    end = [max(0, (o - 1) * s + e - b - dim) for o, s, e, b, dim in zip(out, strides, ek, pb, x.shape[2:])]
    if any(pb) or any(end):
        width = [(0, 0), (0, 0)] + list(zip(pb, end))
        x = np.pad(x, width, mode="constant", constant_values=fill)
    view = sliding_window_view(x, tuple(ek), axis=tuple(range(2, 2 + n)))
    index = ((slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides))
             + tuple(slice(None, None, d) for d in dils))
    return view[index]


# -- convolution ---------------------------------------------------------------
CONV_ATTRS = {"auto_pad": Attr(STRING, "NOTSET"), "dilations": Attr(INTS, None), "group": Attr(INT, 1),
              "kernel_shape": Attr(INTS, None), "pads": Attr(INTS, None), "strides": Attr(INTS, None)}


@register
class Conv(OpDef):
    """N-D convolution (1-D, 2-D, 3-D...), grouped and depthwise."""
    name = "Conv"
    attrs = CONV_ATTRS
    num_inputs = (2, 3)

    @staticmethod
    def geometry(x_shape, w_shape, attrs):
        kernel = list(w_shape[2:])
        if attrs["kernel_shape"] is not None and list(attrs["kernel_shape"]) != kernel:
            raise ShapeError(f"Conv: kernel_shape {attrs['kernel_shape']} differs from the weight's "
                             f"spatial shape {kernel}.")
        return (kernel,) + window_geometry("Conv", x_shape[2:], kernel, attrs)

    def infer(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        _check_spatial_input(x, "Conv")
        g = attrs["group"]
        if w.rank != x.rank:
            raise ShapeError(f"Conv: weight {w.type_str} must have the input's rank ({x.type_str}).")
        if g < 1 or x.shape[1] != w.shape[1] * g or w.shape[0] % g:
            raise ShapeError(f"Conv: input channels {x.shape[1]}, weight {list(w.shape)} and group {g} do not fit "
                             "(need C == W.shape[1] * group and M divisible by group).")
        if w.dtype != x.dtype:
            raise ShapeError(f"Conv needs X and W of one dtype, got {x.dtype} and {w.dtype}.")
        if len(inputs) > 2 and inputs[2] is not None and inputs[2].shape != (w.shape[0],):
            raise ShapeError(f"Conv: bias {inputs[2].type_str} must have shape [{w.shape[0]}].")
        _, out, *_ = self.geometry(x.shape, w.shape, attrs)
        return [((x.shape[0], w.shape[0], *out), x.dtype)]

    def run(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        kernel, out, strides, dils, pb, pe = self.geometry(x.shape, w.shape, attrs)
        n, c = x.shape[:2]
        m, g = w.shape[0], attrs["group"]
        cg, mg = c // g, m // g
        xs, ws = _wide(x), _wide(w)
        win = _windows(xs, out, kernel, strides, dils, pb, 0)  # (N, C, *O, *K)
        nsp = len(out)
        win = win.reshape((n, g, cg) + win.shape[2:])  # splitting C keeps it a view
        # im2col: (g, N*O, Cg*K), channel-major inside a row like W's layout.
        perm = (1, 0) + tuple(range(3, 3 + nsp)) + (2,) + tuple(range(3 + nsp, 3 + 2 * nsp))
        cols = win.transpose(perm).reshape(g, n * math.prod(out), cg * math.prod(kernel))
        wm = ws.reshape(g, mg, cg * math.prod(kernel)).transpose(0, 2, 1)
        y = np.matmul(cols, wm)  # (g, N*O, Mg)
        y = y.reshape((g, n, *out, mg))
        y = y.transpose((1, 0, nsp + 2) + tuple(range(2, 2 + nsp))).reshape((n, m, *out))
        if b is not None:
            y = y + _wide(b).reshape((m,) + (1,) * nsp)
        return [as_out(y, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        w = inputs[1]
        per_out = 2 * int(np.prod(w.shape[1:], dtype=np.int64))
        return outputs[0].size * per_out + (outputs[0].size if len(inputs) > 2 and inputs[2] is not None else 0)


@register
class ConvTranspose(OpDef):
    """The gradient of Conv with respect to its input; W is (C, M/group, *kernel)."""
    name = "ConvTranspose"
    attrs = {**CONV_ATTRS, "output_padding": Attr(INTS, None), "output_shape": Attr(INTS, None)}
    num_inputs = (2, 3)

    @staticmethod
    def geometry(x_shape, w_shape, attrs):
        op = "ConvTranspose"
        in_sp = x_shape[2:]
        n = len(in_sp)
        kernel = list(w_shape[2:])
        if attrs["kernel_shape"] is not None and list(attrs["kernel_shape"]) != kernel:
            raise ShapeError(f"{op}: kernel_shape {attrs['kernel_shape']} differs from the weight's "
                             f"spatial shape {kernel}.")
        strides = _per_axis(attrs["strides"], n, 1, op, "strides")
        dils = _per_axis(attrs["dilations"], n, 1, op, "dilations")
        opad = _per_axis(attrs["output_padding"], n, 0, op, "output_padding")
        pads = attrs["pads"] or [0] * (2 * n)
        if len(pads) != 2 * n:
            raise ShapeError(f"{op}: pads {list(pads)} must have {2 * n} entries.")
        auto = attrs["auto_pad"]
        if auto not in AUTO_PADS:
            raise ShapeError(f"{op}: auto_pad {auto!r} is not one of {', '.join(AUTO_PADS)}.")
        oshape = attrs["output_shape"]
        if oshape is not None:
            oshape = list(oshape)[-n:]  # the full (N, C, ...) form is accepted too
            if len(oshape) != n:
                raise ShapeError(f"{op}: output_shape {attrs['output_shape']} has fewer than {n} entries.")
        out, pb, pe = [], [], []
        for i, (d, k, s, dl, op_) in enumerate(zip(in_sp, kernel, strides, dils, opad)):
            full = s * (d - 1) + op_ + (k - 1) * dl + 1
            if oshape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
                o = oshape[i] if oshape is not None else d * s
                total = max(0, full - o)
                if oshape is None:
                    # A kernel smaller than the stride cannot reach input*stride without negative
                    # padding; onnxruntime then keeps the unpadded size, and so do we.
                    o = full - total
                # The larger half goes to the end for SAME_UPPER, to the beginning otherwise (ONNX spec).
                b = total // 2 if auto == "SAME_UPPER" else total - total // 2
                e = total - b
            else:
                b, e = (0, 0) if auto == "VALID" else (pads[i], pads[i + n])
                o = full - b - e
            if o < 1 or b < 0 or e < 0:
                raise ShapeError(f"{op}: spatial axis {i} gets output size {o} (pads {b}, {e}).")
            out.append(o)
            pb.append(b)
            pe.append(e)
        return kernel, out, strides, dils, pb

    def infer(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        _check_spatial_input(x, "ConvTranspose")
        g = attrs["group"]
        if w.rank != x.rank or g < 1 or w.shape[0] != x.shape[1] or x.shape[1] % g:
            raise ShapeError(f"ConvTranspose: input {x.type_str}, weight {w.type_str} and group {g} do not fit "
                             "(need W.shape[0] == C, divisible by group).")
        if w.dtype != x.dtype:
            raise ShapeError(f"ConvTranspose needs X and W of one dtype, got {x.dtype} and {w.dtype}.")
        m = w.shape[1] * g
        if len(inputs) > 2 and inputs[2] is not None and inputs[2].shape != (m,):
            raise ShapeError(f"ConvTranspose: bias {inputs[2].type_str} must have shape [{m}].")
        _, out, *_ = self.geometry(x.shape, w.shape, attrs)
        return [((x.shape[0], m, *out), x.dtype)]

    def run(self, inputs, attrs):
        x, w = inputs[0], inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        kernel, out, strides, dils, pb = self.geometry(x.shape, w.shape, attrs)
        n, c = x.shape[:2]
        g = attrs["group"]
        cg, mg = c // g, w.shape[1]
        m, nsp, in_sp = mg * g, len(out), x.shape[2:]
        xs, ws = _wide(x), _wide(w)
        # (g, N*I, Cg) @ (g, Cg, Mg*K): every input pixel's contribution to every tap.
        xm = xs.reshape((n, g, cg, -1)).transpose(1, 0, 3, 2).reshape(g, -1, cg)
        wm = ws.reshape(g, cg, mg * math.prod(kernel))
        contrib = np.matmul(xm, wm).reshape((g, n) + tuple(in_sp) + (mg,) + tuple(kernel))
        # Scatter-add each tap into a buffer covering the whole un-cropped output.
        extent = [max((d - 1) * s + (k - 1) * dl + 1, begin + o) for d, s, k, dl, begin, o in
                  zip(in_sp, strides, kernel, dils, pb, out)]
        y = np.zeros((n, g, mg) + tuple(extent), dtype=contrib.dtype)
        moved = np.moveaxis(contrib, 2 + nsp, 2)  # (g, N, Mg, *I, *K)
        moved = np.moveaxis(moved, 0, 1)  # (N, g, Mg, *I, *K)
        for tap in np.ndindex(*kernel):
            dst = tuple(slice(t * dl, t * dl + (d - 1) * s + 1, s) for t, dl, d, s in zip(tap, dils, in_sp, strides))
            y[(slice(None),) * 3 + dst] += moved[(Ellipsis,) + tap]
        crop = tuple(slice(begin, begin + o) for begin, o in zip(pb, out))
        y = y.reshape((n, m) + tuple(extent))[(slice(None), slice(None)) + crop]
        if b is not None:
            y = y + _wide(b).reshape((m,) + (1,) * nsp)
        return [as_out(y, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        x, w = inputs[0], inputs[1]
        return 2 * x.size * int(np.prod(w.shape[1:], dtype=np.int64)) + \
            (outputs[0].size if len(inputs) > 2 and inputs[2] is not None else 0)


# -- normalization -------------------------------------------------------------
def _channel_param(v, x, op: str, what: str):
    if v.shape != (x.shape[1],):
        raise ShapeError(f"{op}: {what} {v.type_str} must have shape [{x.shape[1]}] (one per channel of "
                         f"{x.type_str}).")


@register
class BatchNormalization(OpDef):
    """Inference-mode batch normalization with running statistics."""
    name = "BatchNormalization"
    attrs = {"epsilon": Attr(FLOAT, 1e-5)}
    num_inputs = (5, 5)

    def infer(self, inputs, attrs):
        x = inputs[0]
        _check_spatial_input(x, "BatchNormalization", 2)
        for v, what in zip(inputs[1:], ("scale", "B", "input_mean", "input_var")):
            _channel_param(v, x, "BatchNormalization", what)
        return [(x.shape, x.dtype)]

    def run(self, inputs, attrs):
        x, scale, bias, mean, var = inputs
        shape = (-1,) + (1,) * (x.ndim - 2)
        f = np.float32 if x.dtype.itemsize <= 4 else x.dtype
        k = (scale.astype(f) / np.sqrt(var.astype(f) + f(attrs["epsilon"]))).reshape(shape)
        y = (_wide(x) - mean.astype(f).reshape(shape)) * k + bias.astype(f).reshape(shape)
        return [as_out(y, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return 2 * outputs[0].size


@register
class InstanceNormalization(OpDef):
    name = "InstanceNormalization"
    attrs = {"epsilon": Attr(FLOAT, 1e-5)}
    num_inputs = (3, 3)

    def infer(self, inputs, attrs):
        x = inputs[0]
        _check_spatial_input(x, "InstanceNormalization")
        for v, what in zip(inputs[1:], ("scale", "B")):
            _channel_param(v, x, "InstanceNormalization", what)
        return [(x.shape, x.dtype)]

    def run(self, inputs, attrs):
        x, scale, bias = inputs
        axes = tuple(range(2, x.ndim))
        shape = (-1,) + (1,) * (x.ndim - 2)
        xd = x.astype(np.float64)  # statistics in float64: the reference should not add its own rounding
        mean = xd.mean(axis=axes, keepdims=True)
        var = np.square(xd - mean).mean(axis=axes, keepdims=True)
        y = (xd - mean) / np.sqrt(var + attrs["epsilon"]) * scale.astype(np.float64).reshape(shape) \
            + bias.astype(np.float64).reshape(shape)
        return [as_out(y, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return 5 * outputs[0].size


@register
class LRN(OpDef):
    """Local response normalization across channels."""
    name = "LRN"
    attrs = {"alpha": Attr(FLOAT, 1e-4), "beta": Attr(FLOAT, 0.75), "bias": Attr(FLOAT, 1.0), "size": Attr(INT)}

    def infer(self, inputs, attrs):
        _check_spatial_input(inputs[0], "LRN")
        if attrs["size"] < 1:
            raise ShapeError(f"LRN: size must be >= 1, got {attrs['size']}.")
        return [(inputs[0].shape, inputs[0].dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        size = attrs["size"]
        lo, hi = (size - 1) // 2, size // 2  # channels c-lo .. c+hi
        sq = np.square(_wide(x))
        width = [(0, 0)] * x.ndim
        width[1] = (lo, hi)
        sq = np.pad(sq, width)
        total = sliding_window_view(sq, size, axis=1).sum(axis=-1)
        y = _wide(x) / np.power(attrs["bias"] + attrs["alpha"] / size * total, attrs["beta"])
        return [as_out(y, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size * (2 * attrs["size"] + 4)


# -- pooling -------------------------------------------------------------------
POOL_ATTRS = {"auto_pad": Attr(STRING, "NOTSET"), "ceil_mode": Attr(INT, 0), "dilations": Attr(INTS, None),
              "kernel_shape": Attr(INTS), "pads": Attr(INTS, None), "strides": Attr(INTS, None)}


class Pool(OpDef):
    def geometry(self, x_shape, attrs):
        return window_geometry(self.name, x_shape[2:], attrs["kernel_shape"], attrs, bool(attrs["ceil_mode"]))

    def infer(self, inputs, attrs):
        x = inputs[0]
        _check_spatial_input(x, self.name)
        out, *_ = self.geometry(x.shape, attrs)
        return [((*x.shape[:2], *out), x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size * int(np.prod(attrs["kernel_shape"], dtype=np.int64))


@register
class MaxPool(Pool):
    """Only the values output: the importer rejects models that read Indices."""
    name = "MaxPool"
    attrs = {**POOL_ATTRS, "storage_order": Attr(INT, 0)}

    def run(self, inputs, attrs):
        x = inputs[0]
        out, strides, dils, pb, pe = self.geometry(x.shape, attrs)
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        win = _windows(x, out, attrs["kernel_shape"], strides, dils, pb, fill)
        return [as_out(win.max(axis=tuple(range(-len(out), 0))), x.dtype)]


@register
class AveragePool(Pool):
    name = "AveragePool"
    attrs = {**POOL_ATTRS, "count_include_pad": Attr(INT, 0)}

    def run(self, inputs, attrs):
        x = inputs[0]
        out, strides, dils, pb, pe = self.geometry(x.shape, attrs)
        kernel = attrs["kernel_shape"]
        k_axes = tuple(range(-len(out), 0))
        total = _windows(_wide(x), out, kernel, strides, dils, pb, 0).sum(axis=k_axes)
        # The divisor counts the taps on real input, plus (count_include_pad) those on explicit
        # padding; taps past the end padding, which only ceil_mode reaches, never count.
        sp = x.shape[2:]
        if attrs["count_include_pad"]:
            mask = np.ones((1, 1) + tuple(d + b + e for d, b, e in zip(sp, pb, pe)), np.float32)
            count = _windows(mask, out, kernel, strides, dils, [0] * len(sp), 0).sum(axis=k_axes)
        else:
            mask = np.ones((1, 1) + tuple(sp), np.float32)
            count = _windows(mask, out, kernel, strides, dils, pb, 0).sum(axis=k_axes)
        return [as_out(total / np.maximum(count, 1), x.dtype)]


class GlobalPool(OpDef):
    def infer(self, inputs, attrs):
        x = inputs[0]
        _check_spatial_input(x, self.name)
        return [(x.shape[:2] + (1,) * (x.rank - 2), x.dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        return [as_out(self.fn(_wide(x), axis=tuple(range(2, x.ndim)), keepdims=True), x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return inputs[0].size


@register
class GlobalAveragePool(GlobalPool):
    name = "GlobalAveragePool"
    fn = staticmethod(np.mean)


@register
class GlobalMaxPool(GlobalPool):
    name = "GlobalMaxPool"
    fn = staticmethod(np.max)


# -- Pad -----------------------------------------------------------------------
PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register
class Pad(OpDef):
    """`pads` lists begin values then end values for `axes` (default: every
    axis); negative pads crop. `value` is the constant fill as a tensor."""
    name = "Pad"
    attrs = {"pads": Attr(INTS), "mode": Attr(STRING, "constant"), "value": Attr(TENSOR, None),
             "axes": Attr(INTS, None)}

    @staticmethod
    def widths(shape, attrs) -> list[tuple[int, int]]:
        rank = len(shape)
        axes = list(range(rank)) if attrs["axes"] is None else [norm_axis(a, rank, "Pad") for a in attrs["axes"]]
        pads = attrs["pads"]
        if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
            raise ShapeError(f"Pad: pads {pads} must hold 2 values for each of the {len(axes)} padded axes "
                             f"{axes} (begin values, then end values).")
        widths = [(0, 0)] * rank
        for i, a in enumerate(axes):
            widths[a] = (pads[i], pads[i + len(axes)])
        return widths

    @staticmethod
    def zero_spatial_source(x):
        """(input, pads_begin, pads_end) when the value x is made by a zero, non-negative Pad of only the two
        spatial axes of a 4-D tensor (as TF-style exporters put before strided convolutions), else None: a
        convolution can read through such a Pad."""
        p = x.producer
        if p is None or p.op_type != "Pad" or p.attrs["mode"] != "constant":
            return None
        v = p.attrs["value"]
        if v is not None and v.size and float(v.reshape(-1)[0]) != 0.0:
            return None
        src = p.inputs[0]
        widths = Pad.widths(src.shape, p.attrs)
        if src.rank != 4 or any(widths[i] != (0, 0) for i in (0, 1)) or any(b < 0 or e < 0 for b, e in widths):
            return None
        return src, [widths[2][0], widths[3][0]], [widths[2][1], widths[3][1]]

    def infer(self, inputs, attrs):
        x = inputs[0]
        if attrs["mode"] not in PAD_MODES:
            raise ShapeError(f"Pad: mode {attrs['mode']!r} is not one of {', '.join(PAD_MODES)}.")
        widths = self.widths(x.shape, attrs)
        shape = tuple(d + b + e for d, (b, e) in zip(x.shape, widths))
        if any(d < 0 for d in shape):
            raise ShapeError(f"Pad: pads {attrs['pads']} crop {x.type_str} to a negative size.")
        if attrs["mode"] != "constant":
            for i, (d, (b, e)) in enumerate(zip(x.shape, widths)):
                if (b > 0 or e > 0) and d == 0:
                    raise ShapeError(f"Pad: {attrs['mode']} padding of empty axis {i}.")
        return [(shape, x.dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        widths = self.widths(x.shape, attrs)
        crop = tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None) for i, (b, e) in enumerate(widths))
        x = x[crop]
        grow = [(max(b, 0), max(e, 0)) for b, e in widths]
        mode = PAD_MODES[attrs["mode"]]
        if mode == "constant":
            v = attrs["value"]
            fill = 0 if v is None or v.size == 0 else v.reshape(-1)[0]
            y = np.pad(x, grow, mode="constant", constant_values=np.asarray(fill).astype(x.dtype))
        else:
            y = np.pad(x, grow, mode=mode)
        return [as_out(np.ascontiguousarray(y), x.dtype)]


# -- Resize --------------------------------------------------------------------
RESIZE_MODES = ("nearest", "linear", "cubic")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
# A nearest-mode coordinate this close to k + 0.5 is the tie k + 0.5 (float32 division
# lands one ulp either side of exact half-way points; onnxruntime uses the same tolerance).
NEAREST_TIE_TOLERANCE = 1e-6
COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn", "tf_crop_and_resize")


@register
class Resize(OpDef):
    """ONNX Resize (opsets 11-19): `roi`, `scales`, `sizes` are attributes
    (an empty list counts as absent, as in opset-11 models). Interpolation is
    separable: one (out x in) weight matrix, or a gather for nearest, per
    resized axis.

    Where the spec leaves room, aotc does what onnxruntime does, so that
    models agree with it bit for bit in nearest mode: coordinates are computed
    in float32 with onnxruntime's formulas; a coordinate within 1e-6 of a
    half-way point counts as a tie for round_prefer_floor/ceil (so 3.4999998,
    float32's 2 / (2/7), is the tie 3.5); an axis whose scale is exactly 1 is
    copied (its roi ignored); and an output shaped like the input is a copy
    of it, whatever the scales."""
    name = "Resize"
    attrs = {"roi": Attr(FLOATS, None), "scales": Attr(FLOATS, None), "sizes": Attr(INTS, None),
             "mode": Attr(STRING, "nearest"), "coordinate_transformation_mode": Attr(STRING, "half_pixel"),
             "nearest_mode": Attr(STRING, "round_prefer_floor"), "cubic_coeff_a": Attr(FLOAT, -0.75),
             "exclude_outside": Attr(INT, 0), "extrapolation_value": Attr(FLOAT, 0.0),
             "antialias": Attr(INT, 0), "axes": Attr(INTS, None),
             "keep_aspect_ratio_policy": Attr(STRING, "stretch")}

    @staticmethod
    def plan(shape, attrs):
        """(output shape, float32 scale per axis, roi (start, end) per axis)."""
        rank = len(shape)
        checks = [("mode", RESIZE_MODES), ("coordinate_transformation_mode", COORD_MODES),
                  ("nearest_mode", NEAREST_MODES)]
        for key, allowed in checks:
            if attrs[key] not in allowed:
                raise ShapeError(f"Resize: {key} {attrs[key]!r} is not supported (aotc knows {', '.join(allowed)}).")
        if attrs["antialias"]:
            raise ShapeError("Resize: antialias=1 is not supported by aotc; export with antialias off "
                             "(e.g. F.interpolate(..., antialias=False)).")
        axes = list(range(rank)) if attrs["axes"] is None else [norm_axis(a, rank, "Resize") for a in attrs["axes"]]
        if len(set(axes)) != len(axes):
            raise ShapeError(f"Resize: axes {attrs['axes']} repeat an axis.")
        scales = attrs["scales"] or None
        sizes = attrs["sizes"] or None
        if (scales is None) == (sizes is None):
            raise ShapeError("Resize needs exactly one of scales and sizes (known at compile time).")
        given = scales if scales is not None else sizes
        if len(given) != len(axes):
            raise ShapeError(f"Resize: {'scales' if scales else 'sizes'} {given} has {len(given)} entries for "
                             f"{len(axes)} axes of {list(shape)}.")
        out, scale = list(shape), [np.float32(1.0)] * rank
        if scales is not None:
            for a, s in zip(axes, scales):
                if s <= 0:
                    raise ShapeError(f"Resize: scale {s} must be positive.")
                scale[a] = np.float32(s)
                out[a] = int(np.floor(np.float32(s) * np.float32(shape[a])))
        else:
            if attrs["keep_aspect_ratio_policy"] != "stretch":
                raise ShapeError(f"Resize: keep_aspect_ratio_policy {attrs['keep_aspect_ratio_policy']!r} is not "
                                 "supported by aotc (only 'stretch'); pass explicit sizes instead.")
            for a, s in zip(axes, sizes):
                out[a] = int(s)
                scale[a] = np.float32(s) / np.float32(shape[a]) if shape[a] else np.float32(1.0)
        if any(d < 1 for d in out) or any(d < 1 for d in shape):
            raise ShapeError(f"Resize: {list(shape)} -> {out} has an empty axis.")
        roi = [(0.0, 1.0)] * rank
        if attrs["roi"] and attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
            r = attrs["roi"]
            if len(r) != 2 * len(axes):
                raise ShapeError(f"Resize: roi {r} must hold {2 * len(axes)} values (starts, then ends).")
            for i, a in enumerate(axes):
                roi[a] = (r[i], r[i + len(axes)])
        return tuple(out), scale, roi

    def infer(self, inputs, attrs):
        x = inputs[0]
        out, *_ = self.plan(x.shape, attrs)
        if attrs["mode"] != "nearest" and not x.dtype.is_float:
            raise ShapeError(f"Resize: {attrs['mode']} interpolation of {x.dtype} is not supported by aotc "
                             "(only nearest for integer tensors).")
        return [(out, x.dtype)]

    @staticmethod
    def source_coords(mode, length_in, length_out, scale, roi):
        """Where each output index samples the input, in float32 like onnxruntime."""
        f = np.float32
        x = np.arange(length_out, dtype=f)
        li, lo = f(length_in), f(length_out)
        if mode == "half_pixel":
            return (x + f(0.5)) / scale - f(0.5)
        if mode == "half_pixel_symmetric":  # onnxruntime finishes this one in double precision
            adjustment = lo / (scale * li)
            offset = li / f(2) * (f(1) - adjustment)
            return (np.float64(offset) + (x.astype(np.float64) + 0.5) / np.float64(scale) - 0.5).astype(f)
        if mode == "pytorch_half_pixel":
            return (x + f(0.5)) / scale - f(0.5) if length_out > 1 else np.zeros_like(x)
        if mode == "align_corners":
            return x * (li - f(1)) / (lo - f(1)) if length_out > 1 else np.zeros_like(x)
        if mode == "asymmetric":
            return x / scale
        if mode == "tf_half_pixel_for_nn":
            return (x + f(0.5)) / scale
        start, end = f(roi[0]), f(roi[1])
        if length_out > 1:  # tf_crop_and_resize
            return start * (li - f(1)) + x * (end - start) * (li - f(1)) / (lo - f(1))
        return np.full_like(x, 0.5 * np.float64(start + end) * np.float64(li - f(1)))

    @staticmethod
    def nearest_index(coords, nearest_mode, length_in):
        fl = np.floor(coords)
        frac = coords - fl
        tie = np.abs(frac - np.float32(0.5)) < NEAREST_TIE_TOLERANCE
        if nearest_mode == "round_prefer_floor":
            idx = np.where(tie, fl, np.where(frac > 0.5, fl + 1, fl))
        elif nearest_mode == "round_prefer_ceil":
            idx = np.where(tie, fl + 1, np.where(frac > 0.5, fl + 1, fl))
        elif nearest_mode == "floor":
            idx = fl
        else:
            idx = np.ceil(coords)
        return np.clip(idx, 0, length_in - 1).astype(np.int64)

    @staticmethod
    def weights(coords, attrs, length_in):
        """The (out, in) interpolation matrix for linear or cubic mode."""
        lo = len(coords)
        w = np.zeros((lo, length_in), np.float32)
        rows = np.arange(lo)
        if attrs["mode"] == "linear":
            c = np.clip(coords, 0, length_in - 1)
            i0 = np.minimum(np.floor(c).astype(np.int64), length_in - 1)
            i1 = np.minimum(i0 + 1, length_in - 1)
            t = (c - i0).astype(np.float32)
            np.add.at(w, (rows, i0), 1 - t)
            np.add.at(w, (rows, i1), t)
            return w
        a = np.float32(attrs["cubic_coeff_a"])
        fl = np.floor(coords)
        t = (coords - fl).astype(np.float32)
        dist = [t + 1, t, 1 - t, 2 - t]

        def kernel(d):
            d = np.abs(d)
            near = ((a + 2) * d - (a + 3)) * d * d + 1
            far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            return np.where(d <= 1, near, np.where(d < 2, far, 0)).astype(np.float32)

        taps = [fl.astype(np.int64) - 1 + j for j in range(4)]
        coeff = [kernel(d) for d in dist]
        if attrs["exclude_outside"]:
            coeff = [np.where((tap >= 0) & (tap < length_in), cf, 0).astype(np.float32) for tap, cf in zip(taps, coeff)]
            total = sum(coeff)
            coeff = [cf / np.where(total == 0, 1, total) for cf in coeff]
        for tap, cf in zip(taps, coeff):
            np.add.at(w, (rows, np.clip(tap, 0, length_in - 1)), cf)
        return w

    def run(self, inputs, attrs):
        x = inputs[0]
        out, scale, roi = self.plan(x.shape, attrs)
        if out == x.shape:
            return [x.copy()]
        ctm = attrs["coordinate_transformation_mode"]
        y = x if attrs["mode"] == "nearest" else _wide(x)
        valid = []  # per-axis masks of output positions inside the input (tf_crop_and_resize)
        for axis, (li, lo) in enumerate(zip(x.shape, out)):
            if scale[axis] == 1:
                continue
            coords = self.source_coords(ctm, li, lo, scale[axis], roi[axis])
            if ctm == "tf_crop_and_resize":
                inside = (coords >= 0) & (coords <= li - 1)
                valid.append(inside.reshape((-1,) + (1,) * (x.ndim - 1 - axis)))
            if attrs["mode"] == "nearest":
                y = np.take(y, self.nearest_index(coords, attrs["nearest_mode"], li), axis=axis)
            else:
                w = self.weights(coords, attrs, li).astype(y.dtype)
                y = np.moveaxis(np.tensordot(w, y, axes=([1], [axis])), 0, axis)
        if valid:
            mask = np.logical_and.reduce(np.broadcast_arrays(*valid))
            y = np.where(mask, y, np.asarray(attrs["extrapolation_value"]).astype(y.dtype))
        return [as_out(np.ascontiguousarray(y), x.dtype)]

    def flops(self, inputs, outputs, attrs):
        taps = {"nearest": 0, "linear": 2, "cubic": 4}[attrs["mode"]]
        return 2 * taps * outputs[0].size * len(inputs[0].shape)

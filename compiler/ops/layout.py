"""Channel-blocked ("NCHWc") image layout and the convolution over it.

A blocked tensor [N, ceil(C/c), H, W, c] keeps `c` consecutive channels of a
pixel in one vector (c = the target's float lanes): a depthwise or strided
convolution then reads whole vectors at any pixel offset, and a pointwise
convolution writes whole vectors of output channels, with no gathers and no
padding copies (onnxruntime's NchwcTransformer and oneDNN's nChw16c do the
same). Channels past C are padding; `ToBlockedLayout` fills them with zeros
and every op here defines what it writes there, so reference kernels and
compiled kernels agree on every element.

The target-specific pass `nchwc_layout` (passes/blocked_layout.py) produces
these ops; no importer does."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .fused import EPILOGUE_ATTRS, _check_activation, apply_epilogue
from .nn import CONV_ATTRS, POOL_ATTRS
from .registry import INT, Attr, OpDef, as_out, get_op, register


def blocks(channels: int, block: int) -> int:
    return -(-channels // block)


def to_blocked(x: np.ndarray, block: int) -> np.ndarray:
    """[N, C, H, W] -> [N, ceil(C/c), H, W, c], zero channels appended."""
    n, c = x.shape[:2]
    cb = blocks(c, block)
    pad = np.zeros((n, cb * block - c) + x.shape[2:], x.dtype)
    full = np.concatenate([x, pad], axis=1) if cb * block != c else x
    return np.ascontiguousarray(full.reshape((n, cb, block) + x.shape[2:]).transpose(0, 1, 3, 4, 2))


def from_blocked(x: np.ndarray, channels: int) -> np.ndarray:
    """[N, Cb, H, W, c] -> [N, C, H, W] (padding channels dropped)."""
    n, cb, h, w, c = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, cb * c, h, w)[:, :channels])


@register
class ToBlockedLayout(OpDef):
    """NCHW -> NCHWc with `block` channels per vector; channels past C are zeros."""
    name = "ToBlockedLayout"
    onnx_op = False
    attrs = {"block": Attr(INT)}

    def infer(self, inputs, attrs):
        x, b = inputs[0], attrs["block"]
        if x.rank != 4 or b < 1:
            raise ShapeError(f"ToBlockedLayout needs a 4-D NCHW input and block >= 1, got {x.type_str}, block {b}.")
        n, c, h, w = x.shape
        return [((n, blocks(c, b), h, w, b), x.dtype)]

    def run(self, inputs, attrs):
        return [to_blocked(inputs[0], attrs["block"])]

    def flops(self, inputs, outputs, attrs):
        return 0


@register
class FromBlockedLayout(OpDef):
    """NCHWc -> NCHW keeping the first `channels` channels."""
    name = "FromBlockedLayout"
    onnx_op = False
    attrs = {"channels": Attr(INT)}

    def infer(self, inputs, attrs):
        x, c = inputs[0], attrs["channels"]
        if x.rank != 5 or not (x.shape[1] - 1) * x.shape[4] < c <= x.shape[1] * x.shape[4]:
            raise ShapeError(f"FromBlockedLayout: {c} channels do not fit the blocked input {x.type_str}.")
        n, _, h, w, _ = x.shape
        return [((n, c, h, w), x.dtype)]

    def run(self, inputs, attrs):
        return [from_blocked(inputs[0], attrs["channels"])]

    def flops(self, inputs, outputs, attrs):
        return 0


@register
class BlockedConv(OpDef):
    """FusedConv with a blocked output [N, ceil(M/c), OH, OW, c] and either a blocked input
    [N, Cb, H, W, c] or a plain NCHW one (a network's first convolution, whose 3 channels would
    mostly be padding). W [M, C/group, kh, kw] and B [M] are FusedConv's; only group 1 and depthwise
    (group == C == M) are defined. The residual (input 3), when present, is blocked like the output.

    Padding channels: the result is FusedConv's on inputs whose padding channels hold what the blocked
    input holds and whose weights and bias are zero there, i.e. act(0) (+ residual) in padding outputs,
    which later convolutions multiply by zero weights and FromBlockedLayout drops."""
    name = "BlockedConv"
    onnx_op = False
    attrs = {**CONV_ATTRS, **EPILOGUE_ATTRS, "block": Attr(INT)}
    num_inputs = (2, 4)
    optional_inputs = frozenset({2})

    @staticmethod
    def padded(inputs, attrs):
        """The NCHW input, weight and bias FusedConv runs on (padding channels made explicit)."""
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        b, g = attrs["block"], attrs["group"]
        m = w.shape[0]
        mp = blocks(m, b) * b
        if x.ndim == 5:
            x = x.transpose(0, 1, 4, 2, 3).reshape(x.shape[0], x.shape[1] * b, x.shape[2], x.shape[3])
        cp = x.shape[1]
        if g == 1:
            wp = np.zeros((mp, cp) + w.shape[2:], w.dtype)
            wp[:m, :w.shape[1]] = w
            gp = 1
        else:  # depthwise: one group per (padded) channel
            wp = np.zeros((mp, 1) + w.shape[2:], w.dtype)
            wp[:m] = w
            gp = mp
        bp = np.zeros((mp,), w.dtype)
        if bias is not None:
            bp[:m] = bias
        return x, wp, bp, gp

    def infer(self, inputs, attrs):
        _check_activation(attrs)
        x, w = inputs[0], inputs[1]
        b, g = attrs["block"], attrs["group"]
        if x.rank == 5:
            if x.shape[4] != b:
                raise ShapeError(f"BlockedConv: input {x.type_str} is not blocked by {b}.")
            c_lo, c_hi = (x.shape[1] - 1) * b + 1, x.shape[1] * b
            spatial = x.shape[2:4]
        elif x.rank == 4:
            c_lo = c_hi = x.shape[1]
            spatial = x.shape[2:]
        else:
            raise ShapeError(f"BlockedConv needs a 4-D NCHW or 5-D blocked input, got {x.type_str}.")
        if w.rank != 4:
            raise ShapeError(f"BlockedConv: weight {w.type_str} must be 4-D.")
        m = w.shape[0]
        if g == 1:
            ok = c_lo <= w.shape[1] <= c_hi
        else:
            ok = x.rank == 5 and g == m and w.shape[1] == 1 and blocks(g, b) == x.shape[1]
        if not ok:
            raise ShapeError(f"BlockedConv: input {x.type_str}, weight {w.type_str} and group {g} do not fit "
                             "(group 1, or depthwise with group == channels).")
        c = w.shape[1] * g
        fake_x = type("V", (), {"shape": (x.shape[0], c) + tuple(spatial), "rank": 4, "dtype": x.dtype,
                                "type_str": x.type_str})()
        conv_attrs = {k: attrs[k] for k in CONV_ATTRS}
        (shape, dtype), = get_op("Conv").infer([fake_x, w] + list(inputs[2:3]), conv_attrs)
        out = (shape[0], blocks(m, b), shape[2], shape[3], b)
        if len(inputs) > 3 and inputs[3] is not None and inputs[3].shape != out:
            raise ShapeError(f"BlockedConv: residual {inputs[3].type_str} differs from the output {list(out)}.")
        return [(out, dtype)]

    def run(self, inputs, attrs):
        x, wp, bp, gp = self.padded(inputs, attrs)
        conv_attrs = {k: attrs[k] for k in CONV_ATTRS}
        conv_attrs["group"] = gp
        y = get_op("Conv").run([x, wp, bp], conv_attrs)[0]
        yb = to_blocked(y, attrs["block"])
        res = inputs[3] if len(inputs) > 3 else None
        return [as_out(apply_epilogue(yb, None, res, attrs), inputs[0].dtype)]

    def flops(self, inputs, outputs, attrs):
        """The useful work (as FusedConv counts it), not the padding channels' share."""
        w, y = inputs[1], outputs[0]
        real_outputs = y.size // (y.shape[1] * y.shape[4]) * w.shape[0]
        return real_outputs * (2 * int(np.prod(w.shape[1:])) + 2)


def _unblocked_all(x: np.ndarray) -> np.ndarray:
    """[N, Cb, H, W, c] -> [N, Cb*c, H, W], padding channels included."""
    n, cb, h, w, c = x.shape
    return x.transpose(0, 1, 4, 2, 3).reshape(n, cb * c, h, w)


@register
class BlockedMaxPool(OpDef):
    """MaxPool over a blocked tensor [N, Cb, H, W, c] -> [N, Cb, OH, OW, c]: every lane pooled on its own,
    padding channels included (the max of what they hold)."""
    name = "BlockedMaxPool"
    onnx_op = False
    attrs = {**POOL_ATTRS, "storage_order": Attr(INT, 0), "block": Attr(INT)}

    @staticmethod
    def _pool_attrs(attrs):
        return {k: v for k, v in attrs.items() if k != "block"}

    def infer(self, inputs, attrs):
        x, b = inputs[0], attrs["block"]
        if x.rank != 5 or x.shape[4] != b:
            raise ShapeError(f"BlockedMaxPool needs a [N, Cb, H, W, {b}] input, got {x.type_str}.")
        n, cb, h, w, _ = x.shape
        out, *_ = get_op("MaxPool").geometry((n, cb * b, h, w), attrs)
        return [((n, cb, *out, b), x.dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        y = get_op("MaxPool").run([_unblocked_all(x)], self._pool_attrs(attrs))[0]
        return [to_blocked(y, attrs["block"])]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size * int(np.prod(attrs["kernel_shape"], dtype=np.int64))

"""Fused ops produced by aotc's fusion passes. Each is an ordinary registered
op with a reference kernel built from the unfused ops' kernels, so a fused
graph runs in the interpreter and is checked against the unfused one."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .linalg import matmul_shape
from .nn import CONV_ATTRS
from .registry import FLOAT, INT, STRING, Attr, OpDef, as_out, broadcast_shapes, get_op, register

# Epilogue activations. (alpha, beta) carry Clip's (min, max), HardSigmoid's (alpha, beta), LeakyRelu's alpha.
ACTIVATIONS = ("none", "relu", "clip", "sigmoid", "hardsigmoid", "hardswish", "silu", "gelu", "gelu_tanh", "tanh",
               "leakyrelu")
EPILOGUE_ATTRS = {
    "activation": Attr(STRING, "none"),
    "act_alpha": Attr(FLOAT, None),
    "act_beta": Attr(FLOAT, None),
    "residual_before_activation": Attr(INT, 0),
}


def activation_as_op(kind: str, alpha, beta) -> tuple[str, dict]:
    """The unfused op (and attributes) an epilogue activation stands for."""
    return {
        "relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "hardswish": ("HardSwish", {}), "tanh": ("Tanh", {}),
        "clip": ("Clip", {"min": alpha, "max": beta}),
        "hardsigmoid": ("HardSigmoid", {"alpha": alpha, "beta": beta}),
        "leakyrelu": ("LeakyRelu", {"alpha": alpha}),
        "gelu": ("Gelu", {"approximate": "none"}), "gelu_tanh": ("Gelu", {"approximate": "tanh"}),
    }[kind]


def apply_activation(y: np.ndarray, attrs) -> np.ndarray:
    kind = attrs["activation"]
    if kind == "none":
        return y
    if kind == "silu":
        return y * get_op("Sigmoid").run([y], {})[0]
    op, a = activation_as_op(kind, attrs["act_alpha"], attrs["act_beta"])
    opdef = get_op(op)
    return opdef.run([y], opdef.normalize_attrs({k: v for k, v in a.items() if v is not None}))[0]


def apply_epilogue(y: np.ndarray, bias, residual, attrs) -> np.ndarray:
    if bias is not None:
        y = y + bias
    if residual is not None and attrs["residual_before_activation"]:
        y = y + residual
    y = apply_activation(y, attrs)
    if residual is not None and not attrs["residual_before_activation"]:
        y = y + residual
    return y


def _check_activation(attrs):
    if attrs["activation"] not in ACTIVATIONS:
        raise ShapeError(f"unknown epilogue activation {attrs['activation']!r} (known: {', '.join(ACTIVATIONS)}).")


@register
class FusedMatMul(OpDef):
    """act(A @ B + bias) (+ residual): inputs A, B, optional bias (broadcast), optional residual."""
    name = "FusedMatMul"
    onnx_op = False
    attrs = EPILOGUE_ATTRS
    num_inputs = (2, 4)

    def infer(self, inputs, attrs):
        _check_activation(attrs)
        a, b = inputs[0], inputs[1]
        shape = matmul_shape(a, b, where="FusedMatMul")
        for extra in inputs[2:]:
            if extra is not None and broadcast_shapes(shape, extra.shape, where="FusedMatMul epilogue") != shape:
                raise ShapeError(f"FusedMatMul: epilogue operand {extra.type_str} would change the output shape.")
        return [(shape, a.dtype)]

    def run(self, inputs, attrs):
        a, b = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        res = inputs[3] if len(inputs) > 3 else None
        y = get_op("MatMul").run([a, b], {})[0]
        return [as_out(apply_epilogue(y, bias, res, attrs), a.dtype)]

    def flops(self, inputs, outputs, attrs):
        return 2 * outputs[0].size * inputs[0].shape[-1] + outputs[0].size * (len(inputs) - 2 + 1)


@register
class FusedConv(OpDef):
    """act(Conv(X, W, B)) (+ residual), with Conv's attributes."""
    name = "FusedConv"
    onnx_op = False
    attrs = {**CONV_ATTRS, **EPILOGUE_ATTRS}
    num_inputs = (2, 4)

    def conv_attrs(self, attrs):
        return {k: attrs[k] for k in CONV_ATTRS}

    def infer(self, inputs, attrs):
        _check_activation(attrs)
        (shape, dtype), = get_op("Conv").infer(inputs[:3], self.conv_attrs(attrs))
        if len(inputs) > 3 and inputs[3] is not None and inputs[3].shape != shape:
            raise ShapeError(f"FusedConv: residual {inputs[3].type_str} differs from the output shape {list(shape)}.")
        return [(shape, dtype)]

    def run(self, inputs, attrs):
        y = get_op("Conv").run(inputs[:3], self.conv_attrs(attrs))[0]
        res = inputs[3] if len(inputs) > 3 else None
        return [as_out(apply_epilogue(y, None, res, attrs), inputs[0].dtype)]

    def flops(self, inputs, outputs, attrs):
        return get_op("Conv").flops(inputs[:3], outputs, self.conv_attrs(attrs)) + outputs[0].size


@register
class SkipLayerNormalization(OpDef):
    """s = a + b; y = LayerNorm(s) over the last axis. Outputs (y, s): s feeds later residuals."""
    name = "SkipLayerNormalization"
    onnx_op = False
    attrs = {"epsilon": Attr(FLOAT, 1e-5)}
    num_inputs = (3, 4)
    num_outputs = 2

    def infer(self, inputs, attrs):
        a, b = inputs[0], inputs[1]
        s = broadcast_shapes(a.shape, b.shape, where="SkipLayerNormalization")
        if s != a.shape:
            raise ShapeError("SkipLayerNormalization: the skip input must not change the main input's shape.")
        ln = get_op("LayerNormalization")
        (y, dt), = ln.infer([a] + list(inputs[2:]), ln.normalize_attrs({"axis": -1, "epsilon": attrs["epsilon"]}))
        return [(y, dt), (a.shape, a.dtype)]

    def run(self, inputs, attrs):
        a, b = inputs[0], inputs[1]
        s = as_out(a + b, a.dtype)
        ln = get_op("LayerNormalization")
        y = ln.run([s] + list(inputs[2:]), ln.normalize_attrs({"axis": -1, "epsilon": attrs["epsilon"]}))[0]
        return [y, s]

    def flops(self, inputs, outputs, attrs):
        return 9 * outputs[0].size


@register
class Attention(OpDef):
    """Multi-head scaled dot-product attention with its Q/K/V projections.

    Inputs: x_q [B,Sq,E], x_kv [B,Skv,E], Wq [E,H*D], bq?, Wk [E,H*D], bk?, Wv [E,H*D], bv?,
    add_mask? (additive, broadcast to [B,H,Sq,Skv]), keep_mask? (bool, False -> `mask_fill`).
    Output: the heads' results concatenated, [B,Sq,H*D] (the output projection stays outside, so
    head pruning can slice it). scores = (q @ kᵀ)·scale, then keep_mask, then add_mask, then Softmax;
    `nan_to_zero` reproduces exporters' guard for fully-masked rows.
    """
    name = "Attention"
    onnx_op = False
    optional_inputs = frozenset({3, 5, 7, 8, 9})
    attrs = {"num_heads": Attr(INT), "head_dim": Attr(INT), "scale": Attr(FLOAT),
             "mask_fill": Attr(FLOAT, float("-inf")), "nan_to_zero": Attr(INT, 0)}
    num_inputs = (10, 10)

    def infer(self, inputs, attrs):
        xq, xkv, wq, bq, wk, bk, wv, bv, add_mask, keep_mask = inputs
        h, d = attrs["num_heads"], attrs["head_dim"]
        if xq.rank != 3 or xkv.rank != 3 or xq.shape[0] != xkv.shape[0]:
            raise ShapeError(f"Attention: inputs must be [B,S,E], got {xq.type_str} and {xkv.type_str}.")
        for w, b, what in ((wq, bq, "q"), (wk, bk, "k"), (wv, bv, "v")):
            if w.shape != (xq.shape[2] if what == "q" else xkv.shape[2], h * d):
                raise ShapeError(f"Attention: W{what} {w.type_str} is not [E, num_heads*head_dim = {h * d}].")
            if b is not None and b.shape != (h * d,):
                raise ShapeError(f"Attention: b{what} {b.type_str} is not [{h * d}].")
        scores = (xq.shape[0], h, xq.shape[1], xkv.shape[1])
        for m, what in ((add_mask, "additive mask"), (keep_mask, "boolean mask")):
            if m is not None and broadcast_shapes(scores, m.shape, where=f"Attention {what}") != scores:
                raise ShapeError(f"Attention: {what} {m.type_str} does not broadcast to {list(scores)}.")
        return [((xq.shape[0], xq.shape[1], h * d), xq.dtype)]

    @staticmethod
    def heads(x, w, b, h, d):
        y = x @ w + (b if b is not None else 0)
        return y.reshape(x.shape[0], x.shape[1], h, d).transpose(0, 2, 1, 3)

    def run(self, inputs, attrs):
        xq, xkv, wq, bq, wk, bk, wv, bv, add_mask, keep_mask = inputs
        h, d = attrs["num_heads"], attrs["head_dim"]
        q, k, v = self.heads(xq, wq, bq, h, d), self.heads(xkv, wk, bk, h, d), self.heads(xkv, wv, bv, h, d)
        return [self.core(q, k, v, add_mask, keep_mask, attrs, xq.dtype)]

    @staticmethod
    def core(q, k, v, add_mask, keep_mask, attrs, dtype) -> np.ndarray:
        """Scores, masks, Softmax and ·V on heads [B,H,S,D]; the result merged to [B,Sq,H*D]. Shared with
        QuantizedAttention, whose projections differ but whose core is this one."""
        s = (q @ k.transpose(0, 1, 3, 2)) * np.float32(attrs["scale"])
        if keep_mask is not None:
            s = np.where(keep_mask, s, np.float32(attrs["mask_fill"]))
        if add_mask is not None:
            s = s + add_mask
        p = get_op("Softmax").run([as_out(s, dtype)], {"axis": -1})[0]
        if attrs["nan_to_zero"]:
            p = np.where(np.isnan(p), np.float32(0), p)
        b, h, sq, d = q.shape
        ctx = (p @ v).transpose(0, 2, 1, 3).reshape(b, sq, h * d)
        return as_out(ctx, dtype)

    def flops(self, inputs, outputs, attrs):
        xq, xkv = inputs[0], inputs[1]
        b, sq, e = xq.shape
        skv = xkv.shape[1]
        hd = attrs["num_heads"] * attrs["head_dim"]
        proj = 2 * b * (sq * e * hd + 2 * skv * e * hd)
        return proj + 4 * b * sq * skv * hd + 5 * b * attrs["num_heads"] * sq * skv

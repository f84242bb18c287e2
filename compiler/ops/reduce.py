"""Reductions (ReduceSum/Mean/Max/Min/Prod, ArgMax/ArgMin) and the
normalizing ops built on them (Softmax, LogSoftmax, LayerNormalization)."""
from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .registry import FLOAT, INT, INTS, Attr, OpDef, as_out, broadcast_shapes, norm_axis, register


def _wide(x):
    """Accumulate float16/bfloat16 in float32, as onnxruntime does."""
    return x.astype(np.float32) if x.dtype.kind == "f" and x.dtype.itemsize < 4 or x.dtype.name == "bfloat16" else x


class Reduce(OpDef):
    """axes=None reduces everything unless noop_with_empty_axes is set (ONNX semantics)."""

    attrs = {"axes": Attr(INTS, None), "keepdims": Attr(INT, 1), "noop_with_empty_axes": Attr(INT, 0)}

    def axes(self, rank, attrs):
        if not attrs["axes"]:
            return None if attrs["noop_with_empty_axes"] else tuple(range(rank))
        return tuple(sorted({norm_axis(a, rank, self.name) for a in attrs["axes"]}))

    def infer(self, inputs, attrs):
        x = inputs[0]
        axes = self.axes(x.rank, attrs)
        if axes is None:
            return [(x.shape, x.dtype)]
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [(shape, x.dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        axes = self.axes(x.ndim, attrs)
        # noop_with_empty_axes reduces over no axis, which still applies the elementwise part: ReduceSumSquare
        # gives x*x and ReduceL2 |x| (onnxruntime and onnx.reference agree), not a copy of x.
        out = self.fn(_wide(x), () if axes is None else axes, bool(attrs["keepdims"]))
        return [as_out(out, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return inputs[0].size


def _reduce(name: str, fn) -> None:
    register(type(name, (Reduce,), {"name": name, "fn": staticmethod(fn)}))


_reduce("ReduceSum", lambda x, ax, k: np.sum(x, axis=ax, keepdims=k))
_reduce("ReduceMean", lambda x, ax, k: np.mean(x, axis=ax, keepdims=k))
_reduce("ReduceMax", lambda x, ax, k: np.max(x, axis=ax, keepdims=k))
_reduce("ReduceMin", lambda x, ax, k: np.min(x, axis=ax, keepdims=k))
_reduce("ReduceProd", lambda x, ax, k: np.prod(x, axis=ax, keepdims=k))
_reduce("ReduceL2", lambda x, ax, k: np.sqrt(np.sum(x * x, axis=ax, keepdims=k)))
_reduce("ReduceSumSquare", lambda x, ax, k: np.sum(x * x, axis=ax, keepdims=k))


class ArgReduce(OpDef):
    attrs = {"axis": Attr(INT, 0), "keepdims": Attr(INT, 1), "select_last_index": Attr(INT, 0)}

    def infer(self, inputs, attrs):
        x = inputs[0]
        axis = norm_axis(attrs["axis"], x.rank, self.name)
        shape = tuple((1 if attrs["keepdims"] else None) if i == axis else d for i, d in enumerate(x.shape))
        return [(tuple(d for d in shape if d is not None), DType.int64)]

    def run(self, inputs, attrs):
        x = inputs[0]
        axis = attrs["axis"] % x.ndim
        if attrs["select_last_index"]:
            idx = x.shape[axis] - 1 - self.fn(np.flip(x, axis), axis=axis)
        else:
            idx = self.fn(x, axis=axis)
        if attrs["keepdims"]:
            idx = np.expand_dims(idx, axis)
        return [idx.astype(np.int64)]


@register
class ArgMax(ArgReduce):
    name = "ArgMax"
    fn = staticmethod(np.argmax)


@register
class ArgMin(ArgReduce):
    name = "ArgMin"
    fn = staticmethod(np.argmin)


@register
class Softmax(OpDef):
    """Softmax over one axis (ONNX opset >= 13 semantics; the importer rewrites older ones)."""
    name = "Softmax"
    attrs = {"axis": Attr(INT, -1)}

    def infer(self, inputs, attrs):
        x = inputs[0]
        norm_axis(attrs["axis"], x.rank, self.name)
        if not x.dtype.is_float:
            raise ShapeError(f"{self.name} needs a floating-point input, got {x.dtype}.")
        return [(x.shape, x.dtype)]

    @staticmethod
    def compute(x, axis):
        x = _wide(x)
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)

    def run(self, inputs, attrs):
        return [as_out(self.compute(inputs[0], attrs["axis"]), inputs[0].dtype)]

    def flops(self, inputs, outputs, attrs):
        return 4 * inputs[0].size


@register
class LogSoftmax(Softmax):
    name = "LogSoftmax"

    @staticmethod
    def compute(x, axis):
        x = _wide(x)
        s = x - np.max(x, axis=axis, keepdims=True)
        return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


@register
class LayerNormalization(OpDef):
    """Y = (X - mean) / sqrt(var + eps) * scale + bias over axes [axis, rank)."""
    name = "LayerNormalization"
    attrs = {"axis": Attr(INT, -1), "epsilon": Attr(FLOAT, 1e-5), "stash_type": Attr(INT, 1)}
    num_inputs = (2, 3)

    def infer(self, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        axis = norm_axis(attrs["axis"], x.rank, self.name)
        norm_shape = x.shape[axis:]
        for v, what in ((scale, "scale"), (inputs[2] if len(inputs) > 2 else None, "bias")):
            if v is not None and broadcast_shapes(v.shape, norm_shape, where=self.name) != tuple(norm_shape):
                raise ShapeError(f"LayerNormalization: {what} {v.type_str} does not broadcast to {list(norm_shape)}.")
        return [(x.shape, x.dtype)]

    def run(self, inputs, attrs):
        x, scale = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        axes = tuple(range(attrs["axis"] % x.ndim, x.ndim))
        xw = _wide(x)
        mean = xw.mean(axis=axes, keepdims=True)
        var = ((xw - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (xw - mean) / np.sqrt(var + attrs["epsilon"]) * _wide(scale)
        if bias is not None:
            y = y + _wide(bias)
        return [as_out(y, x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return 8 * inputs[0].size

"""Elementwise ops: unary math, binary arithmetic/comparison/logic with NumPy
broadcasting, Where, Cast, Clip and the activation family."""
from __future__ import annotations

import numpy as np
import scipy.special

from ..dtypes import DType
from ..errors import ShapeError
from .registry import (FLOAT, INT, STRING, Attr, OpDef, as_out, broadcast_shapes, register,
                       require_present)


class Unary(OpDef):
    """y = fn(x), same shape and dtype."""

    float_only = True

    def infer(self, inputs, attrs):
        x = inputs[0]
        if self.float_only and not x.dtype.is_float:
            raise ShapeError(f"{self.name} needs a floating-point input, got {x.dtype}.")
        return [(x.shape, x.dtype)]

    def fn(self, x, attrs):
        raise NotImplementedError

    def run(self, inputs, attrs):
        x = inputs[0]
        return [as_out(self.fn(x, attrs), x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size


def _unary(name: str, fn, float_only: bool = True, attrs: dict | None = None) -> None:
    register(type(name, (Unary,), {"name": name, "fn": staticmethod(fn), "float_only": float_only,
                                   "attrs": attrs or {}}))


def _f32(fn):
    """Evaluate in float32 or wider so float16/bfloat16 results are correctly rounded. inf and NaN results
    (log(0), sqrt(-1), exp overflow) are the ops' defined values, not errors: NumPy's warnings about them are
    silenced (constant folding printed them during `aotc compile -q` of T5's position buckets)."""
    def wrapped(x, a):
        wide = x.astype(np.float32) if x.dtype.itemsize < 4 else x
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            return fn(wide, a)
    return wrapped


_unary("Neg", lambda x, a: -x, float_only=False)
_unary("Abs", lambda x, a: np.abs(x), float_only=False)
_unary("Exp", _f32(lambda x, a: np.exp(x)))
_unary("Log", _f32(lambda x, a: np.log(x)))
_unary("Sqrt", _f32(lambda x, a: np.sqrt(x)))
_unary("Reciprocal", _f32(lambda x, a: 1.0 / x))
_unary("Tanh", _f32(lambda x, a: np.tanh(x)))
_unary("Erf", _f32(lambda x, a: scipy.special.erf(x)))
_unary("Sin", _f32(lambda x, a: np.sin(x)))
_unary("Cos", _f32(lambda x, a: np.cos(x)))
_unary("Floor", lambda x, a: np.floor(x))
_unary("Ceil", lambda x, a: np.ceil(x))
_unary("Sign", lambda x, a: np.sign(x), float_only=False)
_unary("Relu", lambda x, a: np.maximum(x, 0), float_only=False)
_unary("Sigmoid", _f32(lambda x, a: scipy.special.expit(x)))
_unary("LeakyRelu", _f32(lambda x, a: np.where(x >= 0, x, x * a["alpha"])), attrs={"alpha": Attr(FLOAT, 0.01)})
# expm1 only of the negative part: np.where evaluates both branches, and expm1 of a large x overflows.
_unary("Elu", _f32(lambda x, a: np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0)))),
       attrs={"alpha": Attr(FLOAT, 1.0)})
_unary("Softplus", _f32(lambda x, a: np.logaddexp(0, x)))
_unary("HardSigmoid", _f32(lambda x, a: np.clip(x * a["alpha"] + a["beta"], 0, 1)),
       attrs={"alpha": Attr(FLOAT, 0.2), "beta": Attr(FLOAT, 0.5)})
_unary("HardSwish", _f32(lambda x, a: x * np.clip(x / 6.0 + 0.5, 0, 1)))


def _gelu(x, a):
    if a["approximate"] == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))


_unary("Gelu", _f32(_gelu), attrs={"approximate": Attr(STRING, "none")})


@register
class Identity(Unary):
    name = "Identity"
    float_only = False

    def fn(self, x, attrs):
        return x.copy()

    def flops(self, inputs, outputs, attrs):
        return 0


@register
class Dropout(Identity):
    """Inference-mode Dropout: the identity (the ratio is kept for export)."""
    name = "Dropout"
    attrs = {"ratio": Attr(FLOAT, 0.5)}


@register
class Not(OpDef):
    name = "Not"

    def infer(self, inputs, attrs):
        if inputs[0].dtype != DType.bool:
            raise ShapeError(f"Not needs a bool input, got {inputs[0].dtype}.")
        return [(inputs[0].shape, DType.bool)]

    def run(self, inputs, attrs):
        return [np.logical_not(inputs[0])]


@register
class Clip(OpDef):
    """min/max are attributes (None = unbounded); ONNX passes them as optional inputs."""
    name = "Clip"
    attrs = {"min": Attr(FLOAT, None), "max": Attr(FLOAT, None)}

    def infer(self, inputs, attrs):
        return [(inputs[0].shape, inputs[0].dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        lo = -np.inf if attrs["min"] is None else attrs["min"]
        hi = np.inf if attrs["max"] is None else attrs["max"]
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            lo, hi = max(lo, info.min), min(hi, info.max)
        return [as_out(np.clip(x, lo, hi), x.dtype)]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size


@register
class Cast(OpDef):
    name = "Cast"
    attrs = {"to": Attr(STRING)}

    def infer(self, inputs, attrs):
        return [(inputs[0].shape, DType(attrs["to"]))]

    def run(self, inputs, attrs):
        to = DType(attrs["to"]).numpy
        x = inputs[0]
        if to.kind in "iu" and x.dtype.kind == "f":
            x = np.trunc(x)  # ONNX casts float->int by truncation (NumPy is platform-defined for NaN/overflow)
        # a float too big for float16/bfloat16 becomes inf, as ONNX says; NaN or inf to an integer is
        # platform-defined (no warning: T5's folded position buckets cast log(0) = -inf before masking it)
        with np.errstate(over="ignore", invalid="ignore"):
            return [x.astype(to)]


class Binary(OpDef):
    """c = a (op) b with NumPy broadcasting; both inputs share one dtype."""

    num_inputs = (2, 2)
    result_bool = False
    allowed = "any"  # "any", "float", "bool", "numeric"

    def infer(self, inputs, attrs):
        a, b = inputs
        if a.dtype != b.dtype and not (self.name == "Pow"):
            raise ShapeError(f"{self.name} needs inputs of one dtype, got {a.dtype} and {b.dtype}.")
        if self.allowed == "bool" and a.dtype != DType.bool:
            raise ShapeError(f"{self.name} needs bool inputs, got {a.dtype}.")
        shape = broadcast_shapes(a.shape, b.shape, where=self.name)
        return [(shape, DType.bool if self.result_bool else a.dtype)]

    def fn(self, a, b):
        raise NotImplementedError

    def run(self, inputs, attrs):
        a, b = inputs
        out = self.fn(a, b)
        return [as_out(out, np.bool_ if self.result_bool else a.dtype)]

    def flops(self, inputs, outputs, attrs):
        return 0 if self.result_bool else outputs[0].size


def _binary(name: str, fn, result_bool: bool = False, allowed: str = "any") -> None:
    register(type(name, (Binary,), {"name": name, "fn": staticmethod(fn), "result_bool": result_bool,
                                    "allowed": allowed}))


def _int_div(a, b):
    """ONNX integer Div truncates toward zero; NumPy's // floors."""
    if a.dtype.kind in "iu":
        q = np.floor_divide(a, b)
        fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return q + fix.astype(q.dtype)
    return np.divide(a, b)


def _pow(a, b):
    if a.dtype.kind == "f":
        wide = np.float32 if a.dtype.itemsize < 4 else a.dtype
        return np.power(a.astype(wide), b.astype(wide))
    # Integer bases: ONNX (onnxruntime) computes std::pow in double and truncates, so 4 ** 0.5 is 2 (casting
    # the exponent to int first gave 1) and 4 ** -1 is 0 (NumPy's integer power refuses negative exponents).
    return np.trunc(np.power(a.astype(np.float64), b.astype(np.float64)))


_binary("Add", np.add)
_binary("Sub", np.subtract)
_binary("Mul", np.multiply)
_binary("Div", _int_div)
_binary("Pow", _pow)
_binary("Equal", np.equal, result_bool=True)
_binary("Less", np.less, result_bool=True)
_binary("Greater", np.greater, result_bool=True)
_binary("LessOrEqual", np.less_equal, result_bool=True)
_binary("GreaterOrEqual", np.greater_equal, result_bool=True)
_binary("And", np.logical_and, result_bool=True, allowed="bool")
_binary("Or", np.logical_or, result_bool=True, allowed="bool")
_binary("Xor", np.logical_xor, result_bool=True, allowed="bool")


class Mod(Binary):
    """ONNX Mod. fmod=0 (integers only): the remainder takes the divisor's sign, Python's %; fmod=1: C's
    fmod, the dividend's sign (the only form ONNX allows for floats). Exporters emit it for shape arithmetic
    (Swin's window padding), which constant folding usually removes."""

    name = "Mod"
    attrs = {"fmod": Attr(INT, 0)}

    def infer(self, inputs, attrs):
        if not attrs["fmod"] and inputs[0].dtype.is_float:
            raise ShapeError("Mod of floating-point inputs needs fmod=1 (ONNX).")
        return super().infer(inputs, attrs)

    def run(self, inputs, attrs):
        a, b = inputs
        if attrs["fmod"]:
            out = np.fmod(a, b)
        else:
            with np.errstate(divide="ignore"):
                out = np.mod(a, b)
        return [as_out(out, a.dtype)]


register(Mod)


class Variadic(OpDef):
    """Min/Max/Sum/Mean over any number of broadcasting inputs."""

    num_inputs = (1, 1 << 16)

    def infer(self, inputs, attrs):
        require_present(inputs, self.name)
        dtypes = {v.dtype for v in inputs}
        if len(dtypes) != 1:
            raise ShapeError(f"{self.name} needs inputs of one dtype, got {', '.join(sorted(map(str, dtypes)))}.")
        return [(broadcast_shapes(*[v.shape for v in inputs], where=self.name), inputs[0].dtype)]

    def run(self, inputs, attrs):
        dtype = inputs[0].dtype
        if dtype.kind == "f" and dtype.itemsize < 4 or dtype.name == "bfloat16":
            # onnxruntime sums half types in float32: 60000 + 10000 - 20000 is 50000, not inf.
            inputs = [x.astype(np.float32) for x in inputs]
        out = inputs[0]
        for x in inputs[1:]:
            out = self.fn(out, x)
        if self.name == "Mean":
            out = out / len(inputs)
        return [as_out(np.broadcast_to(out, np.broadcast_shapes(*[x.shape for x in inputs])), dtype)]

    def flops(self, inputs, outputs, attrs):
        return outputs[0].size * max(len(inputs) - 1, 1)


def _variadic(name: str, fn) -> None:
    register(type(name, (Variadic,), {"name": name, "fn": staticmethod(fn)}))


_variadic("Min", np.minimum)
_variadic("Max", np.maximum)
_variadic("Sum", np.add)
_variadic("Mean", np.add)


@register
class Where(OpDef):
    name = "Where"
    num_inputs = (3, 3)

    def infer(self, inputs, attrs):
        c, x, y = inputs
        if c.dtype != DType.bool:
            raise ShapeError(f"Where's condition must be bool, got {c.dtype}.")
        if x.dtype != y.dtype:
            raise ShapeError(f"Where needs both branches of one dtype, got {x.dtype} and {y.dtype}.")
        return [(broadcast_shapes(c.shape, x.shape, y.shape, where="Where"), x.dtype)]

    def run(self, inputs, attrs):
        c, x, y = inputs
        return [as_out(np.where(c, x, y), x.dtype)]


class Predicate(OpDef):
    """bool = test(x) for float x."""

    def infer(self, inputs, attrs):
        return [(inputs[0].shape, DType.bool)]

    def run(self, inputs, attrs):
        return [self.fn(inputs[0].astype(np.float32) if inputs[0].dtype.itemsize < 4 else inputs[0], attrs)]


@register
class IsNaN(Predicate):
    name = "IsNaN"
    fn = staticmethod(lambda x, a: np.isnan(x))


@register
class IsInf(Predicate):
    name = "IsInf"
    attrs = {"detect_negative": Attr(INT, 1), "detect_positive": Attr(INT, 1)}
    fn = staticmethod(lambda x, a: (np.isposinf(x) & bool(a["detect_positive"]))
                      | (np.isneginf(x) & bool(a["detect_negative"])))

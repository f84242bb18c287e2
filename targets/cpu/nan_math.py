"""max, min and clamps that propagate NaN, for every kernel and epilogue of the CPU targets.

TVM's T.max/T.min on floats lower to instructions that return the other operand when one is NaN
(vmaxps, fmaxnm), so Relu(NaN) was 0 and MaxPool skipped NaNs, while ONNX, onnxruntime's elementwise
ops, PyTorch and aotc's reference kernels give NaN. Each helper costs a compare and a blend more than a
bare max, so hot paths that cannot see NaN keep T.max."""
from __future__ import annotations


# Written as compares and selects, which also give max/min for integers (T.isnan of an integer is false and
# folds away), so one form serves every dtype. (b != b would not do: TVM's simplifier folds it to false.)
def nan_max(a, b):
    """max(a, b), NaN if either is NaN."""
    from tvm import tirx as T
    return T.Select(T.isnan(b), b, T.Select(a < b, b, a))


def nan_min(a, b):
    """min(a, b), NaN if either is NaN."""
    from tvm import tirx as T
    return T.Select(T.isnan(b), b, T.Select(a > b, b, a))


def nan_flag(v):
    """1.0 where v is NaN, else 0.0 (float32): a plain max of these flags says whether a window held a NaN,
    so a max reduction can use the plain combiner (a NaN-propagating one made TVM's reduction loops ~80x
    slower) and still return NaN, through nan_where_flagged."""
    from tvm import tirx as T
    return T.Select(T.isnan(v), T.const(1.0, "float32"), T.const(0.0, "float32"))


def nan_where_flagged(flag, v):
    """NaN where the reduced nan_flag is set, else v."""
    from tvm import tirx as T
    return T.Select(flag > T.const(0.0, "float32"), T.const(float("nan"), "float32"), v)


def at_least(x, lo):
    """max(x, lo) for a bound lo that is not NaN: x when x is NaN (the comparison is false)."""
    from tvm import tirx as T
    return T.Select(x < lo, lo, x)


def at_most(x, hi):
    """min(x, hi) for a bound hi that is not NaN: x when x is NaN."""
    from tvm import tirx as T
    return T.Select(x > hi, hi, x)


def clamp(x, lo, hi):
    return at_most(at_least(x, lo), hi)


def reducer(kind: str):
    """A TE max/min reduction that propagates NaN (te.max/te.min skip it)."""
    from tvm import te
    from tvm import tirx as T
    if kind == "max":
        return te.comm_reducer(nan_max, lambda dt: T.const(float("-inf"), dt) if "float" in dt else T.min_value(dt),
                               name="nan_max")
    return te.comm_reducer(nan_min, lambda dt: T.const(float("inf"), dt) if "float" in dt else T.max_value(dt),
                           name="nan_min")

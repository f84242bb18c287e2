"""The per-op cases every target runs: one table of one-node graphs and small fused graphs, each with its
inputs and tolerances. A target's test file runs the table through its own check (compile for that target,
run or evaluate the bundle, compare with aotc's reference interpreter):

    @pytest.mark.parametrize("case", op_cases.CASES, ids=op_cases.case_id)
    def test_op(case, out_dir):
        op_cases.run(case, lambda g, feeds: check_graph(g, feeds, out_dir, case.rtol, case.atol), REFUSED)

Inputs come from an RNG seeded by the case's id, so a case's data is the same whichever other cases run
(xdist, -k). What a target cannot run is its own table of case ids (REFUSED), each with the reason its
compile error must give: a refusal is checked, never skipped."""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import build_graph


class Data:
    """Seeded inputs for one case."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def f32(self, *shape, lo=None) -> np.ndarray:
        x = self.rng.standard_normal(shape).astype(np.float32)
        return np.abs(x) + lo if lo is not None else x

    def ints(self, lo, hi, shape, dtype=np.int64) -> np.ndarray:
        return self.rng.integers(lo, hi, shape).astype(dtype)

    def bools(self, *shape, p=0.5) -> np.ndarray:
        return self.rng.random(shape) < p


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Data], tuple[compiler.Graph, dict]]
    rtol: float = 1e-5
    atol: float = 1e-5

    def build(self) -> tuple[compiler.Graph, dict]:
        """The graph and its feeds (by graph input name)."""
        return self.make(Data(zlib.crc32(self.id.encode())))


def case_id(case: Case) -> str:
    return case.id


def run(case: Case, check: Callable[[compiler.Graph, dict], object], refused: dict[str, str]) -> None:
    """check(graph, feeds); for a case in `refused`, the target's one-paragraph error naming the reason."""
    graph, feeds = case.build()
    if case.id in refused:
        with pytest.raises(compiler.AotcError, match=re.escape(refused[case.id])):
            check(graph, feeds)
    else:
        check(graph, feeds)


def op(case: str, op_type: str, inputs, attrs=None, consts=None, num_outputs=None, rtol=1e-5, atol=1e-5) -> Case:
    """A one-node case: `inputs(d)` / `consts(d)` give (name, array) pairs for graph inputs / constants."""
    def make(d: Data):
        ins = inputs(d)
        return build_graph(op_type, ins, attrs, consts(d) if consts else (), num_outputs), dict(ins)
    return Case(case, make, rtol, atol)


def graph_case(case: str, make, rtol=1e-5, atol=1e-5) -> Case:
    return Case(case, make, rtol, atol)


# -- elementwise -----------------------------------------------------------------------------------------
UNARY = ["Neg", "Abs", "Relu", "Exp", "Tanh", "Erf", "Sigmoid", "Floor", "Ceil", "Sin", "Cos", "Sign",
         "Softplus", "HardSwish", "Identity", "Dropout"]


def _unary_input(name):
    def inputs(d):
        x = d.f32(3, 5, 37) * 3
        if name == "Exp":  # underflow to 0 and a large finite result
            x[0, 0, :2] = [-100.0, 80.0]
        return [("x", x)]
    return inputs


def _binary_inputs(name):
    def inputs(d):
        a, b = d.f32(2, 3, 40), d.f32(3, 1)
        if name == "Pow":
            a = np.abs(a) + 0.1
        if name in ("Equal", "LessOrEqual", "GreaterOrEqual"):
            b = a[:, :, :1][0]  # ties
        return [("a", a), ("b", b)]
    return inputs


def _int64_operands(d):
    b = d.ints(1, 7, (33,)) * np.where(d.rng.random(33) < 0.5, -1, 1)
    return [("a", d.ints(-50, 50, (4, 33))), ("b", b)]


def _mod_operands(d, dtype):
    a = (d.f32(3, 37) * 40).astype(dtype)
    b = (d.f32(37) * 9).astype(dtype)
    b[np.abs(b) < 1] = 3
    return [("a", a), ("b", b)]


def _special_floats(d):
    x = d.f32(4, 32)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    return [("x", x)]


def _cast_input(src):
    def inputs(d):
        if src == "bool":
            return [("x", d.bools(3, 21))]
        x = (d.rng.standard_normal((3, 21)) * 40).astype(src)
        if src == "float32":
            x[0, :3] = 0.0
        return [("x", x)]
    return inputs


ELEMENTWISE = (
    [op(f"unary-{n}", n, _unary_input(n), rtol=2e-6, atol=2e-6) for n in UNARY]
    + [op(f"unary-{n}", n, lambda d: [("x", d.f32(4, 64, lo=0.1))], rtol=2e-6, atol=1e-6)
       for n in ("Log", "Sqrt", "Reciprocal")]
    + [op(f"unary-{n}-{i}", n, lambda d: [("x", d.f32(2, 8, 48) * 3)], attrs, rtol=2e-6, atol=2e-6)
       for i, (n, attrs) in enumerate([("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}),
                                       ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("Gelu", {}),
                                       ("Gelu", {"approximate": "tanh"}), ("Clip", {"min": -0.5, "max": 0.7}),
                                       ("Clip", {"max": 6.0})])]
    + [op(f"binary-{n}", n, _binary_inputs(n), rtol=2e-6, atol=2e-6)
       for n in ("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")]
    # Pow by a constant scalar: multiplies, sqrt or a reciprocal where the exponent allows, else powf
    + [op(f"pow-const-{e}", "Pow", (lambda e: lambda d: [("a", np.abs(d.f32(3, 45) * 2) + 0.1 if e in (0.5, 2.5)
                                                           else d.f32(3, 45) * 2)])(e),
          consts=(lambda e: lambda d: [("e", np.array(e, np.float32))])(e), rtol=2e-6, atol=2e-6)
       for e in (2.0, 3.0, 4.0, 0.5, -1.0, 1.0, 2.5)]
    # int64 Div truncates toward zero, as ONNX says
    + [op(f"binary-int64-{n}", n, _int64_operands) for n in ("Add", "Mul", "Div", "Sub")]
    # ONNX Mod: fmod=0 (integers) takes the divisor's sign, fmod=1 the dividend's
    + [op(f"mod-fmod{fmod}-{dtype.__name__}", "Mod", (lambda dtype: lambda d: _mod_operands(d, dtype))(dtype),
          {"fmod": fmod}) for fmod, dtype in [(0, np.int64), (1, np.int32), (1, np.float32)]]
    + [op(f"logic-{n}", n, lambda d: [("a", d.bools(5, 20)), ("b", d.bools(20))]) for n in ("And", "Or", "Xor")]
    + [op("not", "Not", lambda d: [("c", d.bools(3, 17))]),
       op("isnan", "IsNaN", _special_floats),
       op("isinf", "IsInf", _special_floats),
       op("isinf-positive-only", "IsInf", _special_floats, {"detect_negative": 0}),
       op("where", "Where", lambda d: [("c", d.bools(4, 1)), ("x", d.f32(4, 32)), ("y", d.f32(32))])]
    + [op(f"variadic-{n}", n, lambda d: [("a", d.f32(3, 16)), ("b", d.f32(16)), ("c", d.f32(3, 1))],
          rtol=2e-6, atol=2e-6) for n in ("Min", "Max", "Sum", "Mean")]
    + [op(f"cast-{src}-{to}", "Cast", _cast_input(src), {"to": to})
       for src, to in [("int64", "float32"), ("float32", "int32"), ("bool", "float32"), ("float32", "bool"),
                       ("int64", "int32"), ("int32", "int64")]]
)


# -- data movement ---------------------------------------------------------------------------------------
_MOVES = [
    ("reshape", "Reshape", {"shape": [4, -1]}, (2, 2, 12)),
    ("flatten", "Flatten", {"axis": 2}, (2, 3, 4, 5)),
    ("squeeze", "Squeeze", {"axes": [1]}, (3, 1, 7)),
    ("unsqueeze", "Unsqueeze", {"axes": [0, 3]}, (3, 7)),
    ("transpose-0213", "Transpose", {"perm": [0, 2, 1, 3]}, (2, 16, 12, 32)),
    ("transpose-reverse", "Transpose", {}, (5, 7, 3)),
    ("slice-negative-step", "Slice", {"starts": [1, -1], "ends": [3, 0], "axes": [0, 2], "steps": [1, -2]},
     (4, 6, 9)),
    ("slice-clamped-ends", "Slice", {"starts": [5, 0], "ends": [-100, 4], "axes": [2, 1], "steps": [-1, 3]},
     (4, 6, 9)),
    ("expand", "Expand", {"shape": [2, 4, 6]}, (4, 1)),
    ("tile", "Tile", {"repeats": [2, 1, 3]}, (2, 3, 5)),
    ("trilu-lower", "Trilu", {"upper": 0, "k": 1}, (2, 6, 6)),
    ("trilu-upper", "Trilu", {"upper": 1, "k": -1}, (3, 5, 7)),
    ("pad-constant", "Pad", {"pads": [0, 1, 2, 0, 2, 1], "value": np.array(1.5, np.float32)}, (2, 5, 6)),
    ("pad-reflect", "Pad", {"pads": [0, 0, 2, 0, 1, 3], "mode": "reflect"}, (2, 5, 6)),
    ("pad-reflect-middle-axis", "Pad", {"pads": [0, 2, 2, 0, 1, 3], "mode": "reflect"}, (2, 5, 6)),
    ("pad-edge", "Pad", {"pads": [0, 0, 1, 0, 0, 3], "mode": "edge"}, (2, 5, 6)),
    ("pad-edge-leading-axis", "Pad", {"pads": [1, 0, 1, 2, 0, 3], "mode": "edge"}, (2, 5, 6)),
    ("pad-negative", "Pad", {"pads": [0, -1, 2, 0, 1, -2]}, (2, 5, 6)),
]


def _gather_const_table(d):
    g = compiler.Graph("gather_const_table")
    t = g.add_const("table", d.f32(50, 24))
    i = g.add_input("idx", (2, 3), DType.int64)
    g.outputs = list(g.add_node("Gather", [t, i], {"axis": 0}).outputs)
    return g, {"idx": np.array([[0, 3, -1], [49, -50, 7]], np.int64)}


def _static_shape_ops(d):
    """Shape/Size (of a run-time input) and ConstantOfShape/Range: constants once shapes are static."""
    g = compiler.Graph("shape_ops")
    x = g.add_input("x", (3, 5, 2), DType.float32)
    s = g.add_node("Shape", [x], {"start": 1}).outputs[0]
    n = g.add_node("Size", [x]).outputs[0]
    c = g.add_node("ConstantOfShape", [], {"shape": [2, 3], "value": np.array([7], np.int64)}).outputs[0]
    r = g.add_node("Range", [g.add_const("a", np.array(1.0, np.float32)), g.add_const("b", np.array(4.0, np.float32)),
                             g.add_const("d", np.array(0.5, np.float32))]).outputs[0]
    y = g.add_node("Mul", [x, g.add_node("Cast", [n], {"to": "float32"}).outputs[0]]).outputs[0]
    g.outputs = [s, c, r, y]
    return g, {"x": d.f32(3, 5, 2)}


DATA_MOVEMENT = (
    [op(f"move-{case}", name, (lambda s: lambda d: [("x", d.f32(*s))])(shape), attrs)
     for case, name, attrs, shape in _MOVES]
    + [graph_case("gather-const-table", _gather_const_table),
       op("gather-axis1", "Gather", lambda d: [("x", d.f32(3, 9, 4)), ("i", np.array([2, -1, 0, 8], np.int32))],
          {"axis": 1}),
       op("gather-const-index-last-axis", "Gather", lambda d: [("x", d.f32(3, 9, 4))], {"axis": -1},
          consts=lambda d: [("i", np.array([[3, -4]], np.int64))]),
       op("gather-bool", "Gather", lambda d: [("x", d.bools(6, 3))],
          consts=lambda d: [("i", np.array([5, 0, -2], np.int64))]),
       op("gather-elements-axis1", "GatherElements", lambda d: [("x", d.f32(4, 6)), ("i", d.ints(-6, 6, (4, 3)))],
          {"axis": 1}),
       op("gather-elements-axis0", "GatherElements", lambda d: [("x", d.f32(5, 6)), ("i", d.ints(-5, 5, (3, 2)))],
          {"axis": 0}),
       op("gathernd", "GatherND", lambda d: [("x", d.f32(3, 4, 5)), ("i", np.array([[1, 2], [0, -1]], np.int64))]),
       op("gathernd-batch-dims", "GatherND", lambda d: [("x", d.f32(2, 4, 5)), ("i", np.array([[1], [3]], np.int64))],
          {"batch_dims": 1}),
       op("split", "Split", lambda d: [("x", d.f32(2, 10, 3))], {"axis": 1, "split": [3, 7]}, num_outputs=2),
       op("concat", "Concat", lambda d: [("a", d.f32(2, 3, 5)), ("b", d.f32(2, 1, 5)), ("c", d.f32(2, 4, 5))],
          {"axis": 1}),
       graph_case("static-shape-ops", _static_shape_ops)]
)


# -- reductions and normalization ------------------------------------------------------------------------
def _masked_rows(shape):
    def inputs(d):
        x = d.f32(*shape) * 4
        x[..., 0] = -3.4e38  # a masked position, as attention masks do
        return [("x", x)]
    return inputs


def _layernorm(shape, axis, bias):
    norm = shape[axis % len(shape):]
    return op(f"layernorm-{'x'.join(map(str, shape))}-axis{axis}{'-bias' if bias else ''}", "LayerNormalization",
              lambda d: [("x", d.f32(*shape) * 2 + 1)], {"axis": axis, "epsilon": 1e-5},
              consts=lambda d: [("scale", d.f32(*norm))] + ([("bias", d.f32(*norm))] if bias else []),
              rtol=1e-5, atol=1e-5)


def _ragged_row(d, name, nan_at):
    x = d.f32(3, 53) * (0.3 if name == "ReduceProd" else 1.0) + (1.0 if name == "ReduceProd" else 0.0)
    if nan_at is not None:
        x[1, nan_at] = np.nan
    return x


REDUCE_OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare"]
REDUCE_AXES = [([1, 2], 1), ([-1], 0), ([0], 1), ([0, 2], 0)]

REDUCTIONS = (
    # rows of whole vectors, short rows, and ragged ones (ViT's 197 tokens, Swin's 49, Whisper's 1500)
    [c for s in [(2, 3, 128), (4, 7), (3, 197), (2, 49), (2, 1500)] for c in (
        op(f"softmax-last-masked-{s[-1]}", "Softmax", _masked_rows(s), {"axis": -1}, rtol=1e-5, atol=1e-6),
        op(f"logsoftmax-last-{s[-1]}", "LogSoftmax", lambda d, s=s: [("x", d.f32(*s))], {"axis": -1}),
        op(f"softmax-axis0-{s[-1]}", "Softmax", lambda d, s=s: [("x", d.f32(*s))], {"axis": 0}, rtol=1e-5, atol=1e-6),
        op(f"logsoftmax-axis0-{s[-1]}", "LogSoftmax", lambda d, s=s: [("x", d.f32(*s))], {"axis": 0}))]
    + [_layernorm(*a) for a in [((2, 16, 384), -1, True), ((3, 5, 6), 1, False), ((4, 20), -1, True),
                                ((2, 5, 197), -1, True)]]
    # ragged rows: vector partials plus a scalar tail, combined by the same reducer; a NaN in either part must
    # win for Max/Min as in the reference
    + [op(f"{n}-ragged-row{'-nan' + str(nan_at) if nan_at is not None else ''}", n,
          (lambda n, nan_at: lambda d: [("x", _ragged_row(d, n, nan_at))])(n, nan_at), {"axes": [-1], "keepdims": 0})
       for n in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean") for nan_at in (None, 5, 51)]
    # a trailing width that is not a multiple of the vector length (40), and a single trailing axis
    + [op(f"{n}-axes{''.join(map(str, axes))}-keep{keep}", n, lambda d: [("x", d.f32(3, 4, 40))],
          {"axes": axes, "keepdims": keep}) for n in REDUCE_OPS for axes, keep in REDUCE_AXES]
    + [op(f"{n}-row64", n, lambda d: [("x", d.f32(3, 64))], {"axes": [-1], "keepdims": 0}) for n in REDUCE_OPS]
    # middle axes with a kept trailing axis of whole vectors (a mean over a blocked tensor's spatial axes)
    # (the second one big enough to run in parallel)
    + [op(f"{n}-middle-axes-lanes-{s[1]}", n, lambda d, s=s: [("x", d.f32(*s))], {"axes": [2, 3], "keepdims": 1})
       for n in ("ReduceMean", "ReduceMax", "ReduceSumSquare") for s in [(1, 3, 5, 6, 32), (1, 72, 3, 4, 32)]]
    + [op(f"ReduceProd-axes{''.join(map(str, axes))}-keep{keep}", "ReduceProd", lambda d: [("x", d.f32(3, 4, 6))],
          {"axes": axes, "keepdims": keep}) for axes, keep in REDUCE_AXES]
    # rounded inputs have ties, so first/last index matters
    + [op(f"{n}-axis{axis}-keep{keep}-last{last}", n, lambda d: [("x", np.round(d.f32(4, 6, 5) * 2))],
          {"axis": axis, "keepdims": keep, "select_last_index": last})
       for n in ("ArgMax", "ArgMin") for axis, keep, last in [(1, 1, 0), (0, 0, 1), (-1, 0, 0)]]
    + [op(f"{n}", n, lambda d: [("x", d.f32(2, 24, 7, 7))], rtol=1e-5, atol=1e-6)
       for n in ("GlobalAveragePool", "GlobalMaxPool")]
)


# -- GEMM family -----------------------------------------------------------------------------------------
def _shape_id(*shapes) -> str:
    return "_".join("x".join(map(str, s)) for s in shapes)


def _gemm_const(attrs, bias_shape):
    def consts(d):
        w = d.f32(48, 64) if attrs.get("transB") else d.f32(64, 48)
        return [("w", w * 0.1)] + ([("c", d.f32(*bias_shape))] if bias_shape else [])
    return op(f"gemm-const-{'-'.join(f'{k}{v}' for k, v in attrs.items()) or 'plain'}-bias{bias_shape}", "Gemm",
              lambda d: [("a", d.f32(5, 64))], attrs, consts)


GEMM = (
    [op(f"matmul-const-{_shape_id(a, b)}", "MatMul", lambda d, a=a: [("a", d.f32(*a))],
        consts=lambda d, b=b: [("w", d.f32(*b) * 0.1)])
     for a, b in [((1, 12, 384), (384, 64)), ((20, 33), (33, 40)), ((6, 64), (64, 1000)), ((2, 3, 5, 16), (16, 8))]]
    + [op(f"matmul-batched-{_shape_id(a, b)}", "MatMul", lambda d, a=a, b=b: [("a", d.f32(*a)), ("b", d.f32(*b))])
       for a, b in [((1, 4, 24, 32), (1, 4, 32, 24)), ((2, 3, 16, 8), (3, 8, 32)), ((5, 7), (7, 3)),
                    ((2, 10, 16), (16, 48))]]
    + [_gemm_const(attrs, bias) for attrs, bias in [({}, (48,)), ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (1, 48)),
                                                    ({"transB": 1}, None)]]
    # widths that are not a multiple of the vector length: zero-padded weight panels, only real columns stored
    + [op(f"gemm-width{n}-m{m}{'-bias' if bias else ''}", "Gemm", lambda d, m=m: [("a", d.f32(m, 64))], {},
          lambda d, n=n, bias=bias: [("w", d.f32(64, n) * 0.2)] + ([("c", d.f32(n))] if bias else []))
       for m, n in [(1, 1000), (5, 40), (3, 72)] for bias in (True, False)]
    # odd widths (GPT-2's 50,257-token vocabulary, PP-OCR's 6,625 classes) and tiny ones
    + [op(f"matmul-const-odd-width-{m}x{k}x{n}", "MatMul", lambda d, m=m, k=k: [("a", d.f32(m, k))],
          consts=lambda d, k=k, n=n: [("w", d.f32(k, n) * 0.1)])
       for m, k, n in [(3, 96, 50257), (40, 120, 6625), (1, 64, 3), (7, 16, 33), (2, 32, 21)]]
    # row counts with no good divisor (ViT's 197 tokens; primes): whole register tiles over padded rows
    + [op(f"matmul-rows-{_shape_id(a, b)}", "MatMul", lambda d, a=a: [("a", d.f32(*a))],
          consts=lambda d, b=b: [("w", d.f32(*b) * 0.1)]) for a, b in [((197, 96), (96, 80)), ((1, 13, 64), (64, 48))]]
    + [op(f"matmul-rows-batched-{_shape_id(a, b)}", "MatMul", lambda d, a=a, b=b: [("a", d.f32(*a)), ("b", d.f32(*b))])
       for a, b in [((2, 37, 32), (2, 32, 64)), ((11, 40), (40, 197))]]
    # a prime row count with an epilogue (bias): padded rows, only the real ones stored
    + [op(f"gemm-rows-{m}-bias-width{n}", "Gemm", lambda d, m=m: [("a", d.f32(m, 96))], {},
          lambda d, n=n: [("w", d.f32(96, n) * 0.1), ("c", d.f32(n))]) for m, n in [(197, 80), (13, 1000)]]
    # a run-time B of a ragged width (attention scores over 197 or 1500 positions)
    + [op(f"matmul-batched-ragged-{_shape_id(a, b)}", "MatMul",
          lambda d, a=a, b=b: [("a", d.f32(*a)), ("b", d.f32(*b))])
       for a, b in [((1, 3, 20, 64), (1, 3, 64, 197)), ((2, 5, 24), (24, 1500)), ((2, 2, 9, 16), (2, 1, 16, 49))]]
    + [op("gemm-dynamic-b-ragged-transposed", "Gemm", lambda d: [("a", d.f32(6, 16)), ("b", d.f32(197, 16))],
          {"transB": 1})]
    + [op("gemm-dynamic-b", "Gemm", lambda d: [("a", d.f32(8, 16)), ("b", d.f32(32, 16))], {"transB": 1}),
       op("gemm-dynamic-b-alpha", "Gemm", lambda d: [("a", d.f32(8, 16)), ("b", d.f32(32, 16))],
          {"transB": 1, "alpha": 0.25}),
       # C given at run time or not one value per column, with alpha and beta: scaled and added after the GEMM
       op("gemm-dynamic-b-runtime-c", "Gemm",
          lambda d: [("a", d.f32(8, 16)), ("b", d.f32(16, 32)), ("c", d.f32(8, 32))], {"alpha": 0.5, "beta": 1.5}),
       op("gemm-const-b-row-c", "Gemm", lambda d: [("a", d.f32(8, 16))], {"beta": 0.5},
          consts=lambda d: [("w", d.f32(16, 32) * 0.1), ("c", d.f32(8, 1))]),
       op("gemm-transposed-a-const-c", "Gemm", lambda d: [("a", d.f32(16, 8))], {"transA": 1, "alpha": 2.0},
          consts=lambda d: [("w", d.f32(16, 32) * 0.1), ("c", d.f32(32))])]
)


# -- CNN family ------------------------------------------------------------------------------------------
CONVS = [
    ("pointwise_wide", (1, 16, 16, 16), (32, 16, 1, 1), {}),
    ("pointwise_7x7", (1, 32, 7, 7), (64, 32, 1, 1), {}),
    ("depthwise_s1", (1, 8, 14, 14), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ("depthwise_s2_5x5", (1, 16, 15, 15), (16, 1, 5, 5), {"group": 16, "strides": [2, 2]}),
    ("stem_s2", (2, 3, 18, 18), (8, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("grouped_dilated", (1, 8, 12, 12), (12, 4, 3, 3), {"group": 2, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("same_upper", (1, 4, 9, 9), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same_lower", (1, 4, 8, 8), (6, 4, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ("conv1d", (2, 6, 20), (5, 6, 3), {"pads": [1, 2], "strides": [2]}),
]

CONV_TRANSPOSES = [
    ("plain_3x3", (1, 4, 6, 6), (4, 5, 3, 3), {}),
    ("stride2_pads", (2, 6, 5, 7), (6, 8, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("stride2_outpad", (1, 8, 7, 7), (8, 4, 4, 4), {"strides": [2, 2], "pads": [1, 1, 2, 2], "output_padding": [1, 1]}),
    ("grouped_dilated", (1, 6, 5, 5), (6, 2, 3, 3), {"group": 3, "dilations": [2, 2]}),
    # the CPU targets' sub-pixel rewrite: a 2x2/2 upsampler (PP-OCR's), a kernel shorter than the stride (phases
    # without taps), unequal strides with asymmetric pads
    ("upsample_2x2_s2", (1, 20, 6, 5), (20, 7, 2, 2), {"strides": [2, 2]}),
    ("kernel_below_stride", (1, 5, 4, 4), (5, 3, 2, 2), {"strides": [3, 3]}),
    ("strides_2x3_asym_pads", (1, 6, 5, 4), (6, 4, 3, 5), {"strides": [2, 3], "pads": [0, 2, 1, 1]}),
]


def conv_case(name, x_shape, w_shape, attrs, bias=True) -> Case:
    return op(f"conv-{name}{'-bias' if bias else ''}", "Conv", lambda d: [("x", d.f32(*x_shape))], attrs,
              lambda d: [("w", d.f32(*w_shape) * 0.3)] + ([("b", d.f32(w_shape[0]))] if bias else []),
              rtol=1e-4, atol=1e-4)


def _fused_conv(name, x_shape, w_shape, attrs):
    def make(d):
        g = compiler.Graph("fused_conv")
        x = g.add_input("x", x_shape, DType.float32)
        w = g.add_const("w", d.f32(*w_shape) * 0.3)
        b = g.add_const("b", d.f32(w_shape[0]))
        conv = g.add_node("Conv", [x, w, b], attrs).outputs[0]
        r = g.add_input("r", conv.shape, DType.float32)
        fa = {**attrs, "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}
        g.outputs = list(g.add_node("FusedConv", [x, w, b, r], fa).outputs)
        g.nodes = [n for n in g.nodes if n.op_type == "FusedConv"]  # the Conv only gave the output shape
        return g, {"x": d.f32(*x_shape), "r": d.f32(*conv.shape)}
    return graph_case(f"fused-conv-{name}", make, rtol=1e-4, atol=1e-4)


def _conv_transpose(name, x_shape, w_shape, attrs):
    m = w_shape[1] * attrs.get("group", 1)
    return op(f"conv-transpose-{name}", "ConvTranspose", lambda d: [("x", d.f32(*x_shape))], attrs,
              lambda d: [("w", d.f32(*w_shape) * 0.3), ("b", d.f32(m))], rtol=1e-4, atol=1e-4)


_POOLS = [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    # strided/padded windows (x86 reads stride phases of x with the padding filled in)
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ("AveragePool", {"kernel_shape": [2, 3], "strides": [3, 2], "ceil_mode": 1}),
]


def _maxpool_stem_nan(d):
    """ResNet's 3x3/2 max pool (padding -inf, not 0: every value negative must stay so) at a width of whole
    vectors, with a NaN that must win its windows as in the reference."""
    x = -np.abs(d.f32(1, 3, 32, 32)) - 1
    x[0, 1, 5, 7] = np.nan
    return [("x", x)]
_RESIZES = [
    {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]},
    {"mode": "nearest", "sizes": [1, 3, 7, 5], "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]},
    {"mode": "linear", "sizes": [1, 3, 4, 9], "coordinate_transformation_mode": "align_corners"},
    {"mode": "cubic", "scales": [1.0, 1.0, 2.0, 2.0]},
]
C = 6  # channels of the normalization cases

CNN = (
    [conv_case(*c, bias=bias) for c in CONVS for bias in (True, False)]
    + [_conv_transpose(*c) for c in CONV_TRANSPOSES]
    + [op("batchnorm", "BatchNormalization", lambda d: [("x", d.f32(2, C, 5, 5))], {"epsilon": 1e-3},
          lambda d: [("s", d.f32(C)), ("b", d.f32(C)), ("m", d.f32(C)), ("v", d.f32(C, lo=0.5))]),
       op("instancenorm", "InstanceNormalization", lambda d: [("x", d.f32(2, C, 5, 7) * 2 + 1)], {"epsilon": 1e-5},
          lambda d: [("s", d.f32(C)), ("b", d.f32(C))], rtol=1e-4, atol=1e-4),
       op("lrn", "LRN", lambda d: [("x", d.f32(2, 7, 4, 4))], {"size": 3, "alpha": 0.2, "beta": 0.6, "bias": 1.5})]
    + [op(f"pool-{i}-{n}", n, lambda d: [("x", d.f32(1, 4, 11, 11))], attrs) for i, (n, attrs) in enumerate(_POOLS)]
    + [op("maxpool-stem-negative-nan", "MaxPool", _maxpool_stem_nan,
          {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, rtol=1e-6, atol=1e-6)]
    + [op(f"resize-{i}-{attrs['mode']}", "Resize", lambda d: [("x", d.f32(1, 3, 6, 6))], attrs)
       for i, attrs in enumerate(_RESIZES)]
)


# -- fused ops (what the default pass pipeline produces) ---------------------------------------------------
FUSED_ACTIVATIONS = [("none", None, None), ("gelu", None, None), ("clip", 0.0, 6.0), ("hardswish", None, None),
                     ("silu", None, None), ("relu", None, None), ("gelu_tanh", None, None), ("sigmoid", None, None),
                     ("leakyrelu", 0.1, None), ("hardsigmoid", 0.2, 0.5), ("tanh", None, None)]


def _fused_matmul(act, alpha, beta, residual):
    def make(d):
        attrs = {"activation": act, "act_alpha": alpha, "act_beta": beta,
                 "residual_before_activation": int(residual == "before")}
        g = compiler.Graph("fused_matmul")
        ins = [g.add_input("a", (2, 16, 48), DType.float32), g.add_const("w", d.f32(48, 64) * 0.2),
               g.add_const("b", d.f32(64))]
        if residual != "none":
            ins.append(g.add_input("r", (2, 16, 64), DType.float32))
        g.outputs = list(g.add_node("FusedMatMul", ins, attrs).outputs)
        feeds = {"a": d.f32(2, 16, 48), "r": d.f32(2, 16, 64)}
        return g, {i.name: feeds[i.name] for i in g.inputs}
    return graph_case(f"fused-matmul-{act}-residual-{residual}", make, rtol=1e-5, atol=2e-5)


def _fused_matmul_dynamic_b(d):
    g = compiler.Graph("fused_matmul_dyn")
    a = g.add_input("a", (2, 3, 8, 16), DType.float32)
    b = g.add_input("b", (2, 3, 16, 32), DType.float32)
    r = g.add_input("r", (2, 3, 8, 32), DType.float32)
    g.outputs = list(g.add_node("FusedMatMul", [a, b, None, r], {"activation": "relu",
                                                                 "residual_before_activation": 1}).outputs)
    return g, {"a": d.f32(2, 3, 8, 16), "b": d.f32(2, 3, 16, 32), "r": d.f32(2, 3, 8, 32)}


def _fused_matmul_dynamic_b_ragged(d):
    g = compiler.Graph("fused_matmul_dyn_ragged")
    a = g.add_input("a", (2, 8, 16), DType.float32)
    b = g.add_input("b", (2, 16, 77), DType.float32)
    r = g.add_input("r", (2, 8, 77), DType.float32)
    g.outputs = list(g.add_node("FusedMatMul", [a, b, None, r], {"activation": "gelu",
                                                                 "residual_before_activation": 1}).outputs)
    return g, {"a": d.f32(2, 8, 16), "b": d.f32(2, 16, 77), "r": d.f32(2, 8, 77)}


def _attention_ragged_keys(sq, skv, self_attention):
    """Attention over a ragged number of keys (ViT's 197 tokens, Swin's 49-token windows), additive mask."""
    def make(d):
        h, hd = 2, 16
        e = h * hd
        g = compiler.Graph(f"attention_{sq}x{skv}")
        xq = g.add_input("xq", (1, sq, e), DType.float32)
        xkv = xq if self_attention else g.add_input("xkv", (1, skv, e), DType.float32)
        w = [g.add_const(n, d.f32(e, e) * 0.2 if n.startswith("w") else d.f32(e))
             for n in ("wq", "bq", "wk", "bk", "wv", "bv")]
        add = g.add_input("add_mask", (1, 1, sq, skv), DType.float32)
        g.outputs = list(g.add_node("Attention", [xq, xkv, *w, add, None],
                                    {"num_heads": h, "head_dim": hd, "scale": hd ** -0.5, "mask_fill": float("-inf"),
                                     "nan_to_zero": 0}).outputs)
        return g, {v.name: d.f32(*v.shape) for v in g.inputs}
    return graph_case(f"attention-ragged-keys-{sq}x{skv}", make)


def _skip_layernorm(b_shape):
    def make(d):
        a, b = d.f32(2, 16, 384), d.f32(*b_shape)
        g = build_graph("SkipLayerNormalization", [("a", a), ("b", b)], {"epsilon": 1e-5},
                        consts=[("scale", d.f32(384)), ("beta", d.f32(384))])
        return g, {"a": a, "b": b}
    return graph_case(f"skip-layernorm-b{_shape_id(b_shape)}", make)


def attention_graph(d: Data, masks: str, mask_fill=float("-inf"), nan_to_zero=1, cross=False, s=16, skv=12,
                    h=4, hd=16, scale=0.3):
    """Fused multi-head attention (b=2, s=16, e=64, 4 heads of 16): masks none/add/keep/both; `cross` attends
    to another sequence of 12. Longer sequences (`s`, `skv`) take the x86 one-kernel core (whole vectors of
    keys, query rows padded to whole tiles)."""
    b = 2
    e = h * hd
    skv = skv if cross else s
    g = compiler.Graph("attention")
    x = g.add_input("x", (b, s, e), DType.float32)
    kv = g.add_input("kv", (b, skv, e), DType.float32) if cross else x
    ws = [g.add_const(f"w{i}", d.f32(e, h * hd) * 0.2) for i in range(3)]
    bs = [g.add_const(f"b{i}", d.f32(h * hd)) for i in range(3)]
    add = g.add_input("add", (b, 1, 1, skv), DType.float32) if masks in ("add", "both") else None
    keep = g.add_input("keep", (b, 1, s, skv), DType.bool) if masks in ("keep", "both") else None
    node = g.add_node("Attention", [x, kv, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], add, keep],
                      {"num_heads": h, "head_dim": hd, "scale": scale, "nan_to_zero": nan_to_zero,
                       "mask_fill": mask_fill})
    g.outputs = list(node.outputs)
    feeds = {"x": d.f32(b, s, e), "kv": d.f32(b, skv, e)}
    if add is not None:
        feeds["add"] = np.where(d.rng.random((b, 1, 1, skv)) < 0.2, -1e4, 0).astype(np.float32)
    if keep is not None:
        k = d.bools(b, 1, s, skv, p=0.8)
        k[0, 0, 3] = False  # a fully masked row: NaN in the softmax, zeroed by nan_to_zero
        feeds["keep"] = k
    return g, {i.name: feeds[i.name] for i in g.inputs}


FUSED = (
    [_fused_matmul(*a, residual) for a in FUSED_ACTIVATIONS for residual in ("none", "after", "before")]
    + [graph_case("fused-matmul-dynamic-b", _fused_matmul_dynamic_b),
       graph_case("fused-matmul-dynamic-b-ragged", _fused_matmul_dynamic_b_ragged)]
    + [_fused_conv(*c) for c in CONVS]
    + [_skip_layernorm(s) for s in [(2, 16, 384), (384,)]]
    + [graph_case(f"attention-{m}", lambda d, m=m: attention_graph(d, m)) for m in ("none", "add", "keep", "both")]
    # a finite mask_fill replaces masked scores (a fully masked row averages V)
    + [graph_case("cross-attention-finite-fill",
                  lambda d: attention_graph(d, "both", mask_fill=-1e4, nan_to_zero=0, cross=True)),
       graph_case("cross-attention-keep", lambda d: attention_graph(d, "keep", cross=True))]
    + [_attention_ragged_keys(*a) for a in [(37, 37, True), (5, 50, False), (49, 49, True)]]
    # the one-kernel core: padded query rows, ragged keys, every mask kind, a fully masked row, d = 64
    + [graph_case(f"attention-core-{m}", lambda d, m=m: attention_graph(d, m, s=21, skv=37, cross=True))
       for m in ("none", "add", "keep", "both")]
    + [graph_case("attention-core-finite-fill",
                  lambda d: attention_graph(d, "both", mask_fill=-1e4, nan_to_zero=0, s=40)),
       # (scaled by 1/sqrt(d) as models do; the scores reach ~+-15 and exp amplifies their float32 rounding to
       # ~4e-4 relative in a few outputs, in the unfused kernels' summation order as well)
       graph_case("attention-core-d20", lambda d: attention_graph(d, "add", s=21, skv=37, cross=True, h=3, hd=20)),
       graph_case("attention-core-d64", lambda d: attention_graph(d, "keep", s=40, h=2, hd=64, scale=0.125),
                  rtol=1e-4, atol=1e-4)]
)

CASES = ELEMENTWISE + DATA_MOVEMENT + REDUCTIONS + GEMM + CNN + FUSED
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"

"""One small case per op family, for the CUDA target: every case is a one-node graph (as in the x86 op tests),
and `all_cases_graph` puts them side by side in one graph, so one compile (one TVM lowering, one nvcc run)
covers every op and bench/cuda_check.py checks every output on the GPU against the reference interpreter."""
from __future__ import annotations

import numpy as np

from aotc import compiler
from aotc.compiler.dtypes import DType

R = np.random.default_rng(1234)


def f32(*shape, lo=None):
    x = R.standard_normal(shape).astype(np.float32)
    return np.abs(x) + lo if lo is not None else x


def i64(lo, hi, *shape):
    return R.integers(lo, hi, shape).astype(np.int64)


UNARY = ["Neg", "Abs", "Relu", "Exp", "Tanh", "Erf", "Sigmoid", "Floor", "Ceil", "Sin", "Cos", "Sign", "Softplus",
         "HardSwish", "Identity", "Dropout", "Gelu", "Not", "IsNaN", "IsInf"]
POSITIVE = ["Log", "Sqrt", "Reciprocal"]
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]
REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"]


def cases() -> list[tuple]:
    """(id, op, inputs [(name, array)], attrs, consts [(name, array)], num_outputs)."""
    out = []
    add = lambda cid, op, ins, attrs=None, consts=(), n=None: out.append((cid, op, ins, attrs or {}, consts, n))  # noqa
    for op in UNARY:
        x = (R.random((3, 37)) < 0.5) if op == "Not" else f32(3, 5, 37) * 3
        add(op, op, [("x", x)])
    for op in POSITIVE:
        add(op, op, [("x", f32(4, 64, lo=0.1))])
    for op, attrs in [("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                      ("Clip", {"min": -0.5, "max": 0.7})]:
        add(op, op, [("x", f32(2, 8, 48) * 3)], attrs)
    for op in BINARY:
        a = np.abs(f32(2, 3, 40)) + 0.1 if op == "Pow" else f32(2, 3, 40)
        add(op, op, [("a", a), ("b", f32(3, 1))])
    b = f32(9) * 6
    b[np.abs(b) < 1] = 3
    add("Mod_fmod", "Mod", [("a", f32(4, 9) * 30), ("b", b)], {"fmod": 1})
    add("Mod_int", "Mod", [("a", i64(-50, 50, 4, 9)),
                           ("b", np.where(b.astype(np.int64) == 0, 3, b.astype(np.int64)))])
    for op in ("And", "Or", "Xor"):
        add(op, op, [("a", R.random((4, 9)) < 0.5), ("b", R.random((9,)) < 0.5)])
    add("Where", "Where", [("c", R.random((3, 8)) < 0.5), ("a", f32(3, 8)), ("b", f32(8))])
    for op in ("Max", "Min", "Sum", "Mean"):
        add(op, op, [("a", f32(2, 7)), ("b", f32(7)), ("c", f32(2, 1))])
    add("Cast", "Cast", [("x", f32(4, 9) * 50)], {"to": "int32"})
    for op, attrs, shape in [
            ("Reshape", {"shape": [4, -1]}, (2, 2, 12)), ("Flatten", {"axis": 2}, (2, 3, 4, 5)),
            ("Squeeze", {"axes": [1]}, (3, 1, 7)), ("Unsqueeze", {"axes": [0, 3]}, (3, 7)),
            ("Transpose", {"perm": [0, 2, 1, 3]}, (2, 16, 12, 32)),
            ("Slice", {"starts": [1, -1], "ends": [3, 0], "axes": [0, 2], "steps": [1, -2]}, (4, 6, 9)),
            ("Expand", {"shape": [2, 4, 6]}, (4, 1)), ("Tile", {"repeats": [2, 1, 3]}, (2, 3, 5)),
            ("Trilu", {"upper": 0, "k": 1}, (2, 6, 6)),
            ("Pad", {"pads": [0, 2, 2, 0, 1, 3], "mode": "reflect"}, (2, 5, 6))]:
        add(op, op, [("x", f32(*shape))], attrs)
    add("Gather", "Gather", [("x", f32(10, 6)), ("i", i64(-10, 10, 3, 4))], {"axis": 0})
    add("GatherElements", "GatherElements", [("x", f32(4, 6)), ("i", i64(-6, 6, 4, 3))], {"axis": 1})
    add("GatherND", "GatherND", [("x", f32(5, 4, 3)), ("i", i64(0, 4, 2, 2))])
    add("Split", "Split", [("x", f32(2, 10, 3))], {"axis": 1, "split": [3, 7]}, n=2)
    add("Concat", "Concat", [("a", f32(2, 3, 4)), ("b", f32(2, 5, 4))], {"axis": 1})
    add("Softmax", "Softmax", [("x", f32(4, 12, 128))], {"axis": -1})
    add("LogSoftmax", "LogSoftmax", [("x", f32(4, 100))], {"axis": -1})
    add("LayerNormalization", "LayerNormalization", [("x", f32(2, 16, 384))], {"axis": -1, "epsilon": 1e-5},
        consts=[("g", f32(384)), ("b", f32(384))])
    add("SkipLayerNormalization", "SkipLayerNormalization", [("a", f32(2, 16, 384)), ("b", f32(2, 16, 384))],
        {"epsilon": 1e-5}, consts=[("g", f32(384)), ("beta", f32(384))], n=2)
    for op in REDUCE:
        add(op, op, [("x", f32(3, 5, 40, lo=0.5) if op == "ReduceProd" else f32(3, 5, 40))],
            {"axes": [1], "keepdims": 1})
    for op in ("ArgMax", "ArgMin"):
        add(op, op, [("x", f32(3, 5, 7))], {"axis": 1, "keepdims": 0})
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        add(op, op, [("x", f32(2, 8, 7, 7))])
    add("MaxPool", "MaxPool", [("x", f32(1, 4, 9, 9))], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                         "pads": [1, 1, 1, 1]})
    add("AveragePool", "AveragePool", [("x", f32(1, 4, 8, 8))], {"kernel_shape": [2, 2], "strides": [2, 2]})
    add("MatMul", "MatMul", [("a", f32(2, 24, 96))], consts=[("b", f32(96, 80))])
    add("MatMul_dynamic", "MatMul", [("a", f32(2, 4, 16, 32)), ("b", f32(2, 4, 32, 16))])
    add("Gemm", "Gemm", [("a", f32(8, 64))], {"transB": 1, "alpha": 0.5, "beta": 2.0},
        consts=[("b", f32(48, 64)), ("c", f32(48))])
    add("FusedMatMul", "FusedMatMul", [("a", f32(2, 16, 64))], {"activation": "gelu"},
        consts=[("b", f32(64, 96)), ("bias", f32(96))])
    add("Conv", "Conv", [("x", f32(1, 8, 14, 14))], {"strides": [2, 2], "pads": [1, 1, 1, 1]},
        consts=[("w", f32(16, 8, 3, 3)), ("b", f32(16))])
    add("Conv_depthwise", "Conv", [("x", f32(1, 16, 12, 12))], {"group": 16, "pads": [1, 1, 1, 1]},
        consts=[("w", f32(16, 1, 3, 3))])
    add("FusedConv", "FusedConv", [("x", f32(1, 8, 10, 10))], {"activation": "relu", "pads": [1, 1, 1, 1]},
        consts=[("w", f32(8, 8, 3, 3)), ("b", f32(8))])
    add("ConvTranspose", "ConvTranspose", [("x", f32(1, 4, 5, 5))], {"strides": [2, 2]},
        consts=[("w", f32(4, 3, 3, 3))])
    add("BatchNormalization", "BatchNormalization", [("x", f32(2, 6, 5, 5))], {"epsilon": 1e-5},
        consts=[("s", f32(6)), ("b", f32(6)), ("m", f32(6)), ("v", f32(6, lo=0.5))])
    add("InstanceNormalization", "InstanceNormalization", [("x", f32(2, 4, 6, 6))], {"epsilon": 1e-3},
        consts=[("s", f32(4)), ("b", f32(4))])
    add("LRN", "LRN", [("x", f32(1, 8, 5, 5))], {"size": 3})
    add("Resize", "Resize", [("x", f32(1, 3, 6, 6))], {"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]})
    add("Range", "Range", [], consts=[("start", np.array(0.5, np.float32)), ("limit", np.array(3000.0, np.float32)),
                                      ("delta", np.array(0.25, np.float32))])
    add("ConstantOfShape", "ConstantOfShape", [], {"shape": [3, 4], "value": np.array([2.5], np.float32)})
    add("Shape", "Shape", [("x", f32(3, 4, 5))])
    add("Size", "Size", [("x", f32(3, 4, 5))])
    add("QuantizeLinear", "QuantizeLinear", [("x", f32(4, 32))],
        consts=[("s", np.array(0.02, np.float32)), ("z", np.array(3, np.int8))])
    add("DequantizeLinear", "DequantizeLinear", [("x", R.integers(-128, 127, (4, 32)).astype(np.int8))],
        consts=[("s", np.array(0.02, np.float32)), ("z", np.array(3, np.int8))])
    return out


def attention_node(g: compiler.Graph, prefix: str) -> list:
    """The Attention op with an additive mask (what the fusion passes make of MiniLM's attention)."""
    b, s, e, h, d = 2, 16, 64, 4, 16
    x = g.add_input(prefix + "x", (b, s, e), DType.float32)
    ws = [g.add_const(f"{prefix}w{i}", f32(e, h * d) * 0.2) for i in range(3)]
    bs = [g.add_const(f"{prefix}b{i}", f32(h * d)) for i in range(3)]
    add = g.add_input(prefix + "add", (b, 1, 1, s), DType.float32)
    node = g.add_node("Attention", [x, x, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], add, None],
                      {"num_heads": h, "head_dim": d, "scale": d ** -0.5}, name=prefix + "Attention")
    feeds = {x.name: f32(b, s, e), add.name: np.where(R.random((b, 1, 1, s)) < 0.2, -1e4, 0).astype(np.float32)}
    return list(node.outputs), feeds


def all_cases_graph() -> tuple[compiler.Graph, dict[str, np.ndarray], dict[str, str]]:
    """Every case side by side: (graph, feeds, output name -> case id)."""
    g = compiler.Graph("cuda_op_cases")
    feeds, owner = {}, {}
    for cid, op, ins, attrs, consts, n in cases():
        p = f"{cid}."
        vals = []
        for name, a in ins:
            v = g.add_input(p + name, a.shape, DType.from_numpy(a.dtype))
            feeds[v.name] = a
            vals.append(v)
        vals += [g.add_const(p + name, a) for name, a in consts]
        node = g.add_node(op, vals, attrs, name=p + op, num_outputs=n)
        for o in node.outputs:
            g.outputs.append(o)
            owner[o.name] = cid
    outs, f = attention_node(g, "Attention.")
    feeds.update(f)
    g.outputs += outs
    owner.update({o.name: "Attention" for o in outs})
    return g, feeds, owner

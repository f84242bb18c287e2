"""NaN and ±Inf through every max/min/clip-like kernel and activation epilogue, on both CPU targets
(issue #13 item 7: Relu mapped NaN to 0). Elementwise ops are checked against onnxruntime; pooling and
reductions against aotc's reference kernels (NumPy semantics, NaN propagates, as in PyTorch): onnxruntime's
CPU MaxPool/ReduceMax skip a NaN unless it comes first in the window, so they are no oracle for NaN."""
from __future__ import annotations

import numpy as np
import pytest

from aotc import compiler
from arm64_helpers import compile_arm, needs_arm64, run_arm
from oracle import ort_run, single_op_model
from x86_helpers import compile_and_run, needs_avx512


def special_values(shape, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3
    flat = x.reshape(-1)
    flat[::7] = np.nan
    flat[3::11] = np.inf
    flat[5::13] = -np.inf
    return x


X = special_values((1, 16, 8, 8))
B = special_values((1, 16, 8, 8), seed=1)
ELEMENTWISE = [
    ("Relu", [("x", X)], {}, []),
    ("LeakyRelu", [("x", X)], {"alpha": 0.1}, []),
    ("HardSigmoid", [("x", X)], {}, []),
    ("HardSwish", [("x", X)], {}, []),
    ("Clip", [("x", X)], {}, [("lo", np.float32(-1)), ("hi", np.float32(1))]),
    ("Max", [("x", X), ("b", B)], {}, []),
    ("Min", [("x", X), ("b", B)], {}, []),
    ("Elu", [("x", X)], {}, []),
    ("Softplus", [("x", X)], {}, []),
]
POOLING = [
    ("MaxPool", [("x", X)], {"kernel_shape": [2, 2], "strides": [2, 2]}, []),
    ("MaxPool", [("x", X)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, []),
    ("GlobalMaxPool", [("x", X)], {}, []),
    ("ReduceMax", [("x", X)], {"axes": [3], "keepdims": 1}, []),
    ("ReduceMin", [("x", X)], {"axes": [1], "keepdims": 0}, []),
]


def graph_of(op, ins, attrs, consts) -> compiler.Graph:
    """Imported from the ONNX model onnxruntime runs (Clip's bounds are inputs there, attributes in the IR)."""
    return compiler.load_onnx(single_op_model(op, ins, attrs, consts))


def want_of(op, ins, attrs, consts):
    if op in {c[0] for c in ELEMENTWISE}:
        with np.errstate(invalid="ignore"):
            return list(ort_run(single_op_model(op, ins, attrs, consts), dict(ins)).values())[0]
    return list(compiler.interpret(graph_of(op, ins, attrs, consts), dict(ins)).values())[0]


def check(got, want, what):
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN at other places"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=what)


def ids(cases):
    return [f"{c[0]}-{i}" for i, c in enumerate(cases)]


@needs_avx512
@pytest.mark.parametrize("op,ins,attrs,consts", ELEMENTWISE + POOLING, ids=ids(ELEMENTWISE + POOLING))
def test_special_values_x86(op, ins, attrs, consts, tmp_path):
    want = want_of(op, ins, attrs, consts)
    assert np.isnan(want).any()
    got = list(compile_and_run(graph_of(op, ins, attrs, consts), dict(ins), tmp_path).values())[0]
    check(got, want, op)


@needs_avx512
def test_relu_epilogue_of_a_fused_matmul_keeps_nan(tmp_path):
    """The epilogue path (MatMul + bias + Relu fused into one GEMM kernel) as well as the standalone op."""
    from aotc import runtime_stub
    import aotc
    r = np.random.default_rng(3)
    g = compiler.Graph("fused_relu")
    x = g.add_input("x", (16, 32), compiler.DType.float32)
    w = g.add_const("w", r.standard_normal((32, 64)).astype(np.float32))
    bias = g.add_const("bias", r.standard_normal(64).astype(np.float32))
    h = g.add_node("Add", [g.add_node("MatMul", [x, w]).outputs[0], bias]).outputs[0]
    g.outputs = list(g.add_node("Relu", [h], output_names=["y"]).outputs)
    feeds = {"x": special_values((16, 32))}
    want = compiler.interpret(g, feeds)["y"]
    b = aotc.compile(g, tmp_path / "fused", target="x86-avx512").path  # the default pipeline fuses
    assert "fusedmatmul" in (b / "driver.c").read_text()  # one fused kernel, the epilogue inside it
    check(runtime_stub.load(b).run(feeds)["y"], want, "MatMul+Add+Relu")


@needs_arm64
@pytest.mark.slow
def test_special_values_arm64(tmp_path):
    """All cases in one arm64 bundle run (qemu start-up dominates a single-op run)."""
    g = compiler.Graph("nan_arm64")
    feeds, wants = {}, {}
    for i, (op, ins, attrs, consts) in enumerate(ELEMENTWISE + POOLING):
        one = graph_of(op, ins, attrs, consts)
        vals = []
        for name, arr in ins:
            feeds[f"{name}{i}"] = arr
            vals.append(g.add_input(f"{name}{i}", arr.shape, compiler.DType.float32))
        node = one.nodes[0]
        vals += [g.add_const(f"{v.name}{i}", v.const) for v in node.inputs[len(ins):] if v is not None]
        g.outputs.append(g.add_node(op, vals, node.attrs, output_names=[f"y{i}_{op}"]).outputs[0])
        wants[f"y{i}_{op}"] = want_of(op, ins, attrs, consts)
    got = run_arm(compile_arm(g, tmp_path), feeds)
    for name, want in wants.items():
        check(got[name], want, name)

"""A per-tensor DequantizeLinear read element by element runs inside its reader's kernel
(targets/cpu/dequantize_reads.py), and a QuantizeLinear computes the Add/Sub/Mul/Div it alone reads
(onnxruntime's QDQ residual DQ(a), DQ(b) -> Add -> Q as one 8-bit-in, 8-bit-out kernel). The bundles are held
to the reference interpreter (the IR's NumPy kernels): the quantized outputs bit for bit over every pair of
8-bit inputs, and the kernel calls that are left are counted."""
from __future__ import annotations

import json

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import compile_and_run, needs_avx512

pytestmark = needs_avx512


def every_pair(dtype) -> tuple[np.ndarray, np.ndarray]:
    """All 65,536 (a, b) pairs of 8-bit values, as two [256, 256] tensors."""
    info = np.iinfo(dtype)
    v = np.arange(info.min, info.max + 1, dtype=np.int16).astype(dtype)
    return np.broadcast_to(v[:, None], (256, 256)).copy(), np.broadcast_to(v[None, :], (256, 256)).copy()


def run_bundle(g: compiler.Graph, feeds: dict, tmp_path) -> tuple[dict, list[str]]:
    """The bundle's outputs and the op of each kernel call it makes."""
    import aotc
    bundle = aotc.compile(g, tmp_path / g.name, target="x86-avx512", passes="none").path
    calls = [c["op"] for c in json.loads((bundle / "kernels.json").read_text())]
    got = compile_and_run(g, feeds, tmp_path)
    return got, calls


def dq(g, x, scale, zp, name):
    z = g.add_const(f"{name}_z", np.array(zp, dtype=x.dtype.numpy))
    return g.add_node("DequantizeLinear", [x, g.add_const(f"{name}_s", np.float32(scale)), z], name=name).outputs[0]


def q(g, x, scale, zp, dtype, name):
    z = g.add_const(f"{name}_z", np.array(zp, dtype=dtype))
    return g.add_node("QuantizeLinear", [x, g.add_const(f"{name}_s", np.float32(scale)), z], name=name).outputs[0]


# (scale a, scale b, output scale): sums on exact .5 ties of the output grid, and a model's odd scales (where a
# multiply-add contracted into an FMA would move outputs by a step)
SCALES = {"ties": (0.25, 0.75, 0.5), "odd": (0.0235, 0.0173, 0.0391)}
MUL_SCALES = {"ties": (0.25, 0.0625, 1.0), "odd": (0.0235, 0.0173, 0.0041)}


@pytest.mark.parametrize("scales", sorted(SCALES))
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qdq_binary_is_one_kernel_and_exact(tmp_path, op, dtype, scales):
    """DQ(a), DQ(b) -> op -> Q (EfficientNet's residual sums, onnxruntime's QDQ form of QLinearAdd): one kernel,
    equal to the interpreter for every pair of inputs, with saturation and ties rounded to even."""
    a, b = every_pair(dtype)
    zs = (131, 120, 128) if dtype == np.uint8 else (3, -8, 0)
    sa, sb, ys = (MUL_SCALES if op == "Mul" else SCALES)[scales]
    g = compiler.Graph(f"qdq_{op}_{np.dtype(dtype).name}_{scales}")
    xa = g.add_input("a", a.shape, DType.from_numpy(a.dtype))
    xb = g.add_input("b", b.shape, DType.from_numpy(b.dtype))
    s = g.add_node(op, [dq(g, xa, sa, zs[0], "dqa"), dq(g, xb, sb, zs[1], "dqb")], name="the_op").outputs[0]
    g.outputs = [q(g, s, ys, zs[2], dtype, "requant")]
    feeds = {"a": a, "b": b}
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    got, calls = run_bundle(g, feeds, tmp_path)
    assert calls == ["QuantizeLinear"]
    np.testing.assert_array_equal(got[g.outputs[0].name], want)
    info = np.iinfo(dtype)
    assert (want == info.min).any() and (want == info.max).any()  # saturates both ways


def skip_layernorm_of_dequantized(name: str, seed: int):
    """SkipLayerNormalization(x, DQ(q)) as MiniLM's pre-quantized layers have it: (graph without outputs, the
    node, feeds)."""
    R = np.random.default_rng(seed)
    g = compiler.Graph(name)
    x = g.add_input("x", (2, 16, 64), DType.float32)
    qv = g.add_input("q", (2, 16, 64), DType.uint8)
    ln = g.add_node("SkipLayerNormalization", [x, dq(g, qv, 0.031, 117, "dq"),
                                               g.add_const("gamma", R.standard_normal(64).astype(np.float32)),
                                               g.add_const("beta", R.standard_normal(64).astype(np.float32))],
                    {"epsilon": 1e-12}, name="ln", num_outputs=2)
    feeds = {"x": R.standard_normal((2, 16, 64)).astype(np.float32),
             "q": R.integers(0, 256, (2, 16, 64)).astype(np.uint8)}
    return g, ln, feeds


def test_dequantized_residual_of_skip_layernorm_is_read_as_8_bits(tmp_path):
    """MiniLM's pre-quantized layers: SkipLayerNormalization(x, DQ(q)) reads q; no DequantizeLinear kernel."""
    g, ln, feeds = skip_layernorm_of_dequantized("skipln_dq", 0)
    g.outputs = list(ln.outputs)
    want = compiler.interpret(g, feeds)
    got, calls = run_bundle(g, feeds, tmp_path)
    assert calls == ["SkipLayerNormalization"]
    for v in g.outputs:
        np.testing.assert_allclose(got[v.name], want[v.name], rtol=1e-5, atol=1e-5)
    # the residual stream itself (x + DQ(q)) is the same float32 sum the two kernels made
    np.testing.assert_array_equal(got[g.outputs[1].name], want[g.outputs[1].name])


def test_dequantize_still_runs_for_its_other_readers(tmp_path):
    """A DequantizeLinear that is also a graph output keeps its kernel; a float op that a QuantizeLinear does not
    read alone keeps its own; the readers that can still read the 8-bit source."""
    R = np.random.default_rng(1)
    g = compiler.Graph("dq_shared")
    qv = g.add_input("q", (3, 40), DType.uint8)
    y = g.add_input("y", (3, 40), DType.float32)
    d = dq(g, qv, 0.02, 100, "dq")
    relu = g.add_node("Relu", [d], name="relu").outputs[0]
    s = g.add_node("Add", [d, y], name="add").outputs[0]
    g.outputs = [d, relu, s, q(g, s, 0.05, 128, np.uint8, "requant")]
    feeds = {"q": R.integers(0, 256, (3, 40)).astype(np.uint8), "y": R.standard_normal((3, 40)).astype(np.float32)}
    want = compiler.interpret(g, feeds)
    got, calls = run_bundle(g, feeds, tmp_path)
    assert sorted(calls) == ["Add", "DequantizeLinear", "QuantizeLinear", "Relu"]
    for v in g.outputs:
        np.testing.assert_array_equal(got[v.name], want[v.name])


def dequantize_input(g: compiler.Graph, name: str, scale: float, zp: int) -> compiler.Graph:
    """`g` with its float input `name` replaced by DequantizeLinear of a uint8 input `name`_q."""
    g = g.copy()
    old = next(v for v in g.inputs if v.name == name)
    first_reader = next(n for n in g.nodes if any(v is old for v in n.inputs))
    q8 = g.add_input(f"{name}_q", old.shape, DType.uint8)
    with g.inserting_before(first_reader):
        new = dq(g, q8, scale, zp, f"{name}_dq")
    g.replace_all_uses(old, new)
    g.inputs = [v for v in g.inputs if v is not old]
    return g


def float_epilogue_graph(op: str) -> tuple[compiler.Graph, dict]:
    """FusedMatMul or FusedConv with a bias, ReLU and a float residual input `r`."""
    R = np.random.default_rng(2)
    g = compiler.Graph(f"{op}_residual")
    if op == "FusedMatMul":
        x_shape, w_shape, y_shape, attrs = (2, 24, 64), (64, 48), (2, 24, 48), {}
    else:
        x_shape, w_shape, y_shape, attrs = (1, 16, 10, 10), (8, 16, 3, 3), (1, 8, 10, 10), {"pads": [1, 1, 1, 1]}
    ins = [g.add_input("x", x_shape, DType.float32), g.add_const("w", R.standard_normal(w_shape).astype(np.float32)),
           g.add_const("b", R.standard_normal(y_shape[-1] if op == "FusedMatMul" else w_shape[0]).astype(np.float32)),
           g.add_input("r", y_shape, DType.float32)]
    g.outputs = list(g.add_node(op, ins, {"activation": "relu", **attrs}, name="fused").outputs)
    return g, {"x": R.standard_normal(x_shape).astype(np.float32)}


def quantized_epilogue_graph(case: str) -> tuple[compiler.Graph, dict]:
    from test_quant_conv_x86 import EXACT_CASES, qconv_graph
    from test_quant_x86 import qmm_graph
    R = np.random.default_rng(3)
    if case.startswith("qmm"):
        ws = R.uniform(0.001, 0.01, 64).astype(np.float32)
        return qmm_graph(8, 96, 64, xs=0.02, ws=ws, bias=True, res=True, act="gelu",
                         requant=(0.05, 120) if case == "qmm_requant" else None)
    x_shape, w_shape, conv = EXACT_CASES[{"qconv_pw": "pw_28x28", "qconv_direct": "dw3_s1"}[case]]
    ws = R.uniform(0.001, 0.01, w_shape[0]).astype(np.float32)
    return qconv_graph(x_shape, w_shape, xs=0.02, ws=ws, bias=True, res=True, act="relu", requant=(0.05, 3), **conv)


@pytest.mark.parametrize("case", ["qmm", "qmm_requant", "qconv_pw", "qconv_direct", "FusedMatMul", "FusedConv"])
def test_dequantized_epilogue_residual_is_read_as_8_bits(tmp_path, case):
    """A conv/matmul epilogue whose residual is DequantizeLinear(q) reads q: no DequantizeLinear kernel, and the
    output is bit for bit the one the same kernel gives on the dequantized float residual (which the kernel
    tests hold to the interpreter)."""
    g, feeds = (float_epilogue_graph(case) if case.startswith("Fused") else quantized_epilogue_graph(case))
    r_shape = next(v for v in g.inputs if v.name == "r").shape
    q8 = np.random.default_rng(4).integers(0, 256, r_shape).astype(np.uint8)
    scale, zp = 0.0173, 131
    g8 = dequantize_input(g, "r", scale, zp)
    g8.name = f"{g.name}_q"
    feeds8 = {**{k: v for k, v in feeds.items() if k != "r"}, "r_q": q8}
    r_float = (q8.astype(np.int32) - zp).astype(np.float32) * np.float32(scale)
    got8, calls = run_bundle(g8, feeds8, tmp_path)
    assert "DequantizeLinear" not in calls
    got = compile_and_run(g, {**feeds, "r": r_float}, tmp_path)
    out = g.outputs[0].name
    np.testing.assert_array_equal(got8[out], got[out])
    want = compiler.interpret(g8, feeds8)[out]
    if want.dtype == np.float32:
        np.testing.assert_allclose(got8[out], want, rtol=2e-5, atol=2e-5)
    else:
        assert np.abs(got8[out].astype(int) - want.astype(int)).max() <= 1


def test_skip_layernorm_writes_the_output_its_quantizer_alone_reads(tmp_path):
    """A pre-quantized transformer's SkipLayerNormalization -> QuantizeLinear (the next MatMul's input, whose
    residual the model reads back through DequantizeLinear): one kernel writing the uint8 output, bit for bit
    what the two kernels write (the same graph with the float output also read, which keeps both)."""
    g, ln, feeds = skip_layernorm_of_dequantized("skipln_q", 5)
    g.outputs = [q(g, ln.outputs[0], 0.021, 128, np.uint8, "requant"), ln.outputs[1]]
    both = g.copy()
    both.name = "skipln_q_float_read"
    both.outputs = both.outputs + [both.nodes[-2].outputs[0]]
    got, calls = run_bundle(g, feeds, tmp_path)
    got_two, calls_two = run_bundle(both, feeds, tmp_path)
    assert calls == ["SkipLayerNormalization"] and calls_two == ["SkipLayerNormalization", "QuantizeLinear"]
    out = g.outputs[0].name
    np.testing.assert_array_equal(got[out], got_two[out])
    want = compiler.interpret(g, feeds)[out]
    diff = np.abs(got[out].astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99 and len(np.unique(want)) > 100

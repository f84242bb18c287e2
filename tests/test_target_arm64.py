"""The arm64-neon target: ops and fused ops compiled into aarch64 bundles, run
by the bundle's own aotc_runner under qemu-aarch64 and compared with aotc's
reference interpreter; bundle contents, determinism, a CPU without dotprod,
and the error a missing cross compiler gives."""
from __future__ import annotations

import json

import numpy as np
import pytest

import op_cases
from aotc import compiler
from aotc.compiler.dtypes import DType
from arm64_helpers import compare, compile_arm, needs_arm64, run_arm
from x86_helpers import build_graph

pytestmark = needs_arm64

R = np.random.default_rng(4321)


def f32(*shape, lo=None):
    x = R.standard_normal(shape).astype(np.float32)
    return np.abs(x) + lo if lo is not None else x


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("arm64-ops")


def check_op(op_type, inputs, out_dir, attrs=None, consts=(), num_outputs=None, **tol):
    g = build_graph(op_type, inputs, attrs, consts, num_outputs)
    return compare(g, dict(inputs), out_dir, **tol)


def chain(name: str, x: np.ndarray, ops) -> tuple[compiler.Graph, dict]:
    """One graph applying each (op, attrs) to the input, every result an output: many ops, one bundle."""
    g = compiler.Graph(name)
    v = g.add_input("x", x.shape, DType.from_numpy(x.dtype))
    outs = []
    for i, (op, attrs) in enumerate(ops):
        outs += g.add_node(op, [v], attrs, name=f"{op}_{i}").outputs
    g.outputs = outs
    return g, {"x": x}


# -- elementwise (one bundle per family keeps qemu and LLVM time modest) --------------------------------
def test_unary_family(out_dir):
    ops = [(op, {}) for op in ("Neg", "Abs", "Relu", "Exp", "Tanh", "Erf", "Sigmoid", "Floor", "Sqrt", "Sign",
                              "HardSwish", "Softplus", "Gelu")]
    ops += [("LeakyRelu", {"alpha": 0.2}), ("Clip", {"min": -0.5, "max": 0.7}), ("Gelu", {"approximate": "tanh"})]
    x = f32(3, 5, 36) * 3
    x[0, 0, :2] = [-100.0, 80.0]
    g, feeds = chain("unary_family", x, ops)
    g.nodes[8].inputs[0] = g.add_node("Abs", [g.inputs[0]], name="abs_for_sqrt").outputs[0]  # Sqrt of |x|
    g.nodes = g.nodes[-1:] + g.nodes[:-1]
    compare(g, feeds, out_dir)


@pytest.mark.parametrize("op", ["Add", "Mul", "Div", "Sub", "Pow", "Less"])
def test_binary_broadcast(op, out_dir):
    a, b = f32(2, 3, 40), f32(3, 1)
    if op == "Pow":
        a = np.abs(a) + 0.1
    check_op(op, [("a", a), ("b", b)], out_dir)


def test_int64_where_cast(out_dir):
    a = R.integers(-50, 50, (4, 33)).astype(np.int64)
    check_op("Add", [("a", a), ("b", R.integers(1, 7, (33,)).astype(np.int64))], out_dir)
    check_op("Where", [("c", R.random((4, 1)) < 0.5), ("x", f32(4, 32)), ("y", f32(32))], out_dir)
    check_op("Cast", [("x", a)], out_dir, {"to": "float32"})


# -- data movement -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op,attrs,shape", [
    ("Reshape", {"shape": [4, -1]}, (2, 2, 12)),
    ("Transpose", {"perm": [0, 2, 1, 3]}, (2, 16, 12, 32)),
    ("Slice", {"starts": [1, -1], "ends": [3, 0], "axes": [0, 2], "steps": [1, -2]}, (4, 6, 9)),
    ("Pad", {"pads": [0, 1, 2, 0, 2, 1], "value": np.array(1.5, np.float32)}, (2, 5, 6)),
])
def test_data_movement(op, attrs, shape, out_dir):
    check_op(op, [("x", f32(*shape))], out_dir, attrs)


def test_gather_concat(out_dir):
    g = compiler.Graph("gather_const_table")
    t = g.add_const("table", f32(50, 24))
    i = g.add_input("idx", (2, 3), DType.int64)
    g.outputs = list(g.add_node("Gather", [t, i], {"axis": 0}).outputs)
    compare(g, {"idx": np.array([[0, 3, -1], [49, -50, 7]], np.int64)}, out_dir)
    check_op("Concat", [("a", f32(2, 3, 5)), ("b", f32(2, 1, 5)), ("c", f32(2, 4, 5))], out_dir, {"axis": 1})


# -- reductions and normalization -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 128), (4, 7)])
def test_softmax(shape, out_dir):
    x = f32(*shape) * 4
    x[..., 0] = -3.4e38
    check_op("Softmax", [("x", x)], out_dir, {"axis": -1})


def test_layernorm(out_dir):
    check_op("LayerNormalization", [("x", f32(2, 16, 384) * 2 + 1)], out_dir, {"axis": -1, "epsilon": 1e-5},
             consts=[("scale", f32(384)), ("bias", f32(384))])


def test_reduce_mean_and_global_pool(out_dir):
    check_op("ReduceMean", [("x", f32(3, 4, 40))], out_dir, {"axes": [1, 2], "keepdims": 1})
    check_op("GlobalAveragePool", [("x", f32(2, 24, 7, 7))], out_dir)


# -- GEMM family -------------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape,b_shape", [((1, 12, 384), (384, 64)), ((20, 33), (33, 40)), ((6, 64), (64, 1000))])
def test_matmul_const_weight(a_shape, b_shape, out_dir):
    check_op("MatMul", [("a", f32(*a_shape))], out_dir, consts=[("w", f32(*b_shape) * 0.1)])


@pytest.mark.parametrize("a_shape,b_shape", [((1, 4, 24, 32), (1, 4, 32, 24)), ((5, 7), (7, 3))])
def test_matmul_batched(a_shape, b_shape, out_dir):
    check_op("MatMul", [("a", f32(*a_shape)), ("b", f32(*b_shape))], out_dir)


# The shared rules for ragged shapes (issue 17's zoo) at NEON's 4 lanes: odd constant widths, a ragged
# runtime B (padded at run time), a prime row count (guarded last register tile).
@pytest.mark.parametrize("a_shape,b_shape,const_b", [((3, 40), (40, 101), True), ((13, 16), (16, 21), True),
                                                     ((2, 11, 8), (2, 8, 37), False)])
def test_matmul_ragged_shapes(a_shape, b_shape, const_b, out_dir):
    if const_b:
        check_op("MatMul", [("a", f32(*a_shape))], out_dir, consts=[("w", f32(*b_shape) * 0.1)])
    else:
        check_op("MatMul", [("a", f32(*a_shape)), ("b", f32(*b_shape))], out_dir)


def test_gemm(out_dir):
    check_op("Gemm", [("a", f32(5, 64))], out_dir, {"transB": 1, "alpha": 0.5, "beta": 2.0},
             consts=[("w", f32(48, 64) * 0.1), ("c", f32(1, 48))])


# -- CNN family ----------------------------------------------------------------------------------------
# The shared table's 2-D convolutions (tests/op_cases.py); each runs under qemu, so not the whole table.
CONVS = [c for c in op_cases.CONVS if c[0] in ("pointwise_wide", "pointwise_7x7", "depthwise_s1", "depthwise_s2_5x5",
                                               "stem_s2", "grouped_dilated")]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONVS, ids=[c[0] for c in CONVS])
def test_conv(name, x_shape, w_shape, attrs, out_dir):
    check_op("Conv", [("x", f32(*x_shape))], out_dir, attrs, consts=[("w", f32(*w_shape) * 0.3), ("b", f32(w_shape[0]))])


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", [CONVS[0], CONVS[2], CONVS[4]], ids=["pointwise", "depthwise", "stem"])
def test_fused_conv(name, x_shape, w_shape, attrs, out_dir):
    g = compiler.Graph("fused_conv")
    x = g.add_input("x", x_shape, DType.float32)
    w = g.add_const("w", f32(*w_shape) * 0.3)
    b = g.add_const("b", f32(w_shape[0]))
    conv = g.add_node("Conv", [x, w, b], attrs).outputs[0]
    r = g.add_input("r", conv.shape, DType.float32)
    fa = {**attrs, "activation": "clip", "act_alpha": 0.0, "act_beta": 6.0}
    g.outputs = list(g.add_node("FusedConv", [x, w, b, r], fa).outputs)
    g.nodes = [n for n in g.nodes if n.op_type == "FusedConv"]
    compare(g, {"x": f32(*x_shape), "r": f32(*conv.shape)}, out_dir)


def test_batchnorm_and_pools(out_dir):
    c = 6
    check_op("BatchNormalization", [("x", f32(2, c, 5, 5))], out_dir, {"epsilon": 1e-3},
             consts=[("s", f32(c)), ("b", f32(c)), ("m", f32(c)), ("v", f32(c, lo=0.5))])
    x = f32(1, 4, 11, 11)
    g, feeds = chain("pools", x, [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
        ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]})])
    compare(g, feeds, out_dir)


# -- fused ops (what the default pass pipeline produces) ------------------------------------------------
@pytest.mark.parametrize("act,residual", [("gelu", False), ("relu", True), ("clip", True)])
def test_fused_matmul(act, residual, out_dir):
    attrs = {"activation": act, "act_alpha": 0.0 if act == "clip" else None, "act_beta": 6.0 if act == "clip" else None,
             "residual_before_activation": 0}
    g = compiler.Graph("fused_matmul")
    a = g.add_input("a", (2, 16, 48), DType.float32)
    r = g.add_input("r", (2, 16, 64), DType.float32) if residual else None
    node = g.add_node("FusedMatMul", [a, g.add_const("w", f32(48, 64) * 0.2), g.add_const("b", f32(64))]
                      + ([r] if residual else []), attrs)
    g.outputs = list(node.outputs)
    compare(g, {"a": f32(2, 16, 48), **({"r": f32(2, 16, 64)} if residual else {})}, out_dir)


def test_skip_layernorm(out_dir):
    g = build_graph("SkipLayerNormalization", [("a", f32(2, 16, 384)), ("b", f32(384))], {"epsilon": 1e-5},
                    consts=[("scale", f32(384)), ("beta", f32(384))])
    compare(g, {"a": f32(2, 16, 384), "b": f32(384)}, out_dir)


@pytest.mark.parametrize("masks", ["none", "both"])
def test_attention(masks, out_dir):
    b, s, e, h, d = 2, 16, 64, 4, 16
    g = compiler.Graph("attention")
    x = g.add_input("x", (b, s, e), DType.float32)
    ws = [g.add_const(f"w{i}", f32(e, h * d) * 0.2) for i in range(3)]
    bs = [g.add_const(f"b{i}", f32(h * d)) for i in range(3)]
    add = g.add_input("add", (b, 1, 1, s), DType.float32) if masks == "both" else None
    keep = g.add_input("keep", (b, 1, s, s), DType.bool) if masks == "both" else None
    node = g.add_node("Attention", [x, x, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], add, keep],
                      {"num_heads": h, "head_dim": d, "scale": d ** -0.5, "nan_to_zero": 1})
    g.outputs = list(node.outputs)
    feeds = {"x": f32(b, s, e)}
    if masks == "both":
        feeds["add"] = np.where(R.random((b, 1, 1, s)) < 0.2, -1e4, 0).astype(np.float32)
        k = R.random((b, 1, s, s)) < 0.8
        k[0, 0, 3] = False
        feeds["keep"] = k
    compare(g, feeds, out_dir)


# -- the bundle ------------------------------------------------------------------------------------------
def small_model() -> tuple[compiler.Graph, dict]:
    g = compiler.Graph("arm_small_model")
    x = g.add_input("x", (8, 64), DType.float32)
    h = g.add_node("MatMul", [x, g.add_const("w1", f32(64, 128) * 0.1)]).outputs[0]
    h = g.add_node("Relu", [h]).outputs[0]
    h = g.add_node("MatMul", [h, g.add_const("w2", f32(128, 32) * 0.1)]).outputs[0]
    g.outputs = list(g.add_node("Softmax", [h], {"axis": -1}).outputs)
    return g, {"x": f32(8, 64)}


def test_bundle_manifest_contents_and_determinism(tmp_path):
    import aotc
    g, feeds = small_model()
    one = aotc.compile(g, tmp_path / "one", target="arm64-neon", passes="none").path
    two = aotc.compile(g, tmp_path / "two", target="arm64-neon", passes="none").path
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    for n in names:
        assert (one / n).read_bytes() == (two / n).read_bytes(), f"{n} differs between two compiles"
    man = json.loads((one / "manifest.json").read_text())
    assert man["target"]["name"] == "arm64-neon"
    assert man["target"]["cpu_features"] == ["neon"] and man["target"]["vector_lanes_f32"] == 4
    assert man["target"]["llvm"]["mtriple"] == "aarch64-linux-gnu"
    from aotc.targets.elf_glibc import bundle_glibc  # aarch64 ELF files are read as well
    # Every native file binds aarch64's first glibc ABI (runtime_stub/glibc_compat.h), the runner included.
    assert man["glibc"] == bundle_glibc({n: (one / n).read_bytes() for n in ("model.so", "libaotc_runtime.so",
                                                                            "aotc_runner")}) == "2.17"
    assert {"model.so", "weights.bin", "aotc_runner", "libaotc_runtime.so", "runner.c"} <= set(man["files"])
    for so in ("model.so", "libaotc_runtime.so", "aotc_runner"):
        head = (one / so).read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183, f"{so} is not aarch64"
    # Runs on an in-order ARMv8.0 core (no dotprod) and with two threads, same answer as the reference.
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    for cpu, threads in (("cortex-a53", 1), (None, 2)):
        got = run_arm(one, feeds, cpu=cpu, threads=threads)[g.outputs[0].name]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"cpu={cpu} threads={threads}")


def test_dotprod_target_and_features(tmp_path):
    from aotc.targets.arm64.target import arm64_target
    g, feeds = small_model()
    tgt = arm64_target(cpu_features=["+dotprod"], mcpu="cortex-a76")
    b = compile_arm(g, tmp_path, target=tgt)
    man = json.loads((b / "manifest.json").read_text())["target"]
    # cortex-a76 brings more than the +dotprod asked for: LLVM may use all of it, the manifest says so.
    assert man["cpu_features"] == ["neon", "dotprod", "fullfp16", "crc", "lse", "rdm", "aes", "sha2", "rcpc"]
    assert man["mcpu"] == "cortex-a76"
    assert man["llvm"]["mattr"] == ["+neon", "+dotprod"]
    got = run_arm(b, feeds, cpu="cortex-a76")[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-4, atol=1e-5)
    # An ARMv8.0 core has no sdot: the runtime refuses the bundle by name instead of dying of SIGILL.
    from aotc.targets.arm64.qemu import QemuRunError
    with pytest.raises(QemuRunError, match="needs CPU features this CPU does not have: dotprod, fullfp16, lse, "
                                           "rdm, rcpc[.]"):
        run_arm(b, feeds, cpu="cortex-a53")


def test_runtime_refuses_a_corrupted_bundle(tmp_path):
    from aotc.targets.arm64.qemu import QemuRunError
    g, feeds = small_model()
    b = compile_arm(g, tmp_path)
    w = bytearray((b / "weights.bin").read_bytes())
    w[0] ^= 1
    (b / "weights.bin").write_bytes(bytes(w))
    with pytest.raises(QemuRunError, match="corrupted: weights.bin"):
        run_arm(b, feeds)


def test_cli_compile_and_run(tmp_path):
    import subprocess
    import sys
    from aotc.compiler.onnx_export import save_onnx
    g, feeds = small_model()
    save_onnx(g, tmp_path / "small.onnx")
    np.savez(tmp_path / "in.npz", **feeds)
    aotc = [sys.executable, "-m", "aotc.cli"]
    subprocess.run(aotc + ["compile", str(tmp_path / "small.onnx"), "--target", "arm64-neon", "--cpu-features",
                           "+dotprod", "-o", str(tmp_path / "b"), "-q"], check=True, capture_output=True)
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["target"]["name"] == "arm64-neon" and man["target"]["cpu_features"] == ["neon", "dotprod"]
    subprocess.run(aotc + ["run", str(tmp_path / "b"), "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")],
                   check=True, capture_output=True)
    with np.load(tmp_path / "o.npz") as out:
        got = out[g.outputs[0].name]
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-4, atol=1e-5)


# -- the rest of the lowered ops, a few bundles of many nodes each ----------------------------------------
def multi(name: str, inputs: dict, nodes) -> tuple[compiler.Graph, dict]:
    """A graph of (op, input names, attrs[, num_outputs]) nodes over `inputs`; every result is an output."""
    g = compiler.Graph(name)
    vals = {n: g.add_input(n, a.shape, DType.from_numpy(a.dtype)) for n, a in inputs.items()}
    outs = []
    for i, (op, ins, attrs, *nout) in enumerate(nodes):
        node = g.add_node(op, [vals[n] for n in ins], attrs, name=f"{op}_{i}", num_outputs=nout[0] if nout else None)
        outs += node.outputs
    g.outputs = outs
    return g, inputs


def test_more_unary_and_row_ops(out_dir):
    ops = ["Ceil", "Cos", "Sin", "Identity", "Dropout", "Log", "Reciprocal"]
    nodes = [(op, ["x"], {}) for op in ops] + [
        ("Elu", ["x"], {"alpha": 0.7}), ("HardSigmoid", ["x"], {"alpha": 0.3, "beta": 0.4}),
        ("LogSoftmax", ["x"], {"axis": -1}),
        ("Split", ["x"], {"axis": 2, "split": [12, 24]}, 2)]
    compare(*multi("more_unary", {"x": f32(2, 5, 36, lo=0.1) * 2}, nodes), out_dir)


def test_more_reductions(out_dir):
    nodes = [(op, ["x"], {"axes": [2, 3], "keepdims": 0}) for op in
             ("ReduceL2", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceSumSquare")]
    nodes.append(("GlobalMaxPool", ["x"], {}))
    compare(*multi("more_reductions", {"x": f32(2, 24, 7, 7)}, nodes), out_dir)


def test_more_shape_ops(out_dir):
    nodes = [("Flatten", ["x"], {"axis": 2}), ("Squeeze", ["x"], {"axes": [1]}),
             ("Unsqueeze", ["x"], {"axes": [0, 3]}), ("Expand", ["x"], {"shape": [2, 3, 4, 8]}),
             ("Tile", ["x"], {"repeats": [2, 3, 1]}), ("Trilu", ["m"], {"upper": 0, "k": 1}),
             ("GatherElements", ["m", "ie"], {"axis": 1}), ("GatherND", ["t", "ind"], {})]
    inputs = {"x": f32(3, 1, 8), "m": f32(2, 6, 6), "ie": R.integers(-6, 6, (2, 6, 3)).astype(np.int64),
              "t": f32(3, 4, 5), "ind": np.array([[1, 2], [0, -1]], np.int64)}
    compare(*multi("more_shape", inputs, nodes), out_dir)


def test_comparisons_logic_variadic(out_dir):
    a, b = f32(3, 40), f32(40)
    b[:5] = a[0, :5]  # ties
    x = f32(4, 32)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    nodes = [(op, ["a", "b"], {}) for op in ("Equal", "Greater", "GreaterOrEqual", "LessOrEqual")]
    nodes += [(op, ["a", "b", "c"], {}) for op in ("Max", "Min", "Sum", "Mean")]
    nodes += [(op, ["p", "q"], {}) for op in ("And", "Or", "Xor")] + [("Not", ["p"], {})]
    nodes += [("IsNaN", ["x"], {}), ("IsInf", ["x"], {"detect_negative": 0})]
    nodes += [("Mod", ["m", "d"], {"fmod": 1}), ("Mod", ["mi", "di"], {"fmod": 0})]  # C's fmod; Python's %
    d = f32(40) * 9
    d[np.abs(d) < 1] = 3
    inputs = {"a": a, "b": b, "c": f32(3, 1), "p": R.random((5, 20)) < 0.5, "q": R.random((20,)) < 0.5, "x": x,
              "m": f32(3, 40) * 40, "d": d, "mi": R.integers(-50, 50, (3, 40)), "di": R.integers(1, 9, 40) *
              np.where(R.random(40) < 0.5, -1, 1)}
    compare(*multi("compare_logic", inputs, nodes), out_dir)


def test_resize_argreduce_any_axes(out_dir):
    nodes = [("Resize", ["x"], {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 2.0]}),
             ("Resize", ["x"], {"mode": "linear", "sizes": [1, 3, 4, 9], "coordinate_transformation_mode": "align_corners"}),
             ("Resize", ["x"], {"mode": "cubic", "scales": [1.0, 1.0, 2.0, 2.0]}),
             ("ArgMax", ["t"], {"axis": 1, "keepdims": 1, "select_last_index": 0}),
             ("ArgMin", ["t"], {"axis": 0, "keepdims": 0, "select_last_index": 1}),
             ("ReduceMean", ["r"], {"axes": [0, 2], "keepdims": 0}), ("ReduceMax", ["r"], {"axes": [1], "keepdims": 0})]
    inputs = {"x": f32(1, 3, 6, 6), "t": np.round(f32(4, 6, 5) * 2), "r": f32(5, 6, 7)}  # t has ties
    compare(*multi("resize_argreduce", inputs, nodes), out_dir)


def test_quantize_dequantize(out_dir):
    g = compiler.Graph("qdq")
    x = g.add_input("x", (4, 100), DType.float32)
    s, z = g.add_const("s", np.array(0.037, np.float32)), g.add_const("z", np.array(121, np.uint8))
    q = g.add_node("QuantizeLinear", [x, s, z], name="q").outputs[0]
    d = g.add_node("DequantizeLinear", [q, s, z], name="d").outputs[0]
    g.outputs = [q, d]
    xv = (R.standard_normal((4, 100)) * 5).astype(np.float32)
    xv[0, :6] = [0.5 * 0.037, 1.5 * 0.037, -0.5 * 0.037, 1e9, -1e9, 0.0]
    compare(g, {"x": xv}, out_dir)


def test_conv_transpose_norms_and_prod(out_dir):
    """The lowerings added for every op's x86 coverage run on NEON too."""
    ct = g_ct = compiler.Graph("conv_transpose")
    x = g_ct.add_input("x", (1, 4, 5, 5), DType.float32)
    w = g_ct.add_const("w", f32(4, 3, 3, 3) * 0.3)
    ct = g_ct.add_node("ConvTranspose", [x, w, g_ct.add_const("b", f32(3))],
                       {"strides": [2, 2], "pads": [1, 1, 0, 0], "output_padding": [1, 1]}).outputs[0]
    g_ct.outputs = [ct]
    compare(g_ct, {"x": f32(1, 4, 5, 5)}, out_dir, rtol=1e-4, atol=1e-4)
    nodes = [("InstanceNormalization", ["x", "s", "b"], {"epsilon": 1e-3}),
             ("LRN", ["x"], {"size": 3, "alpha": 1e-3, "beta": 0.75, "bias": 1.0}),
             ("ReduceProd", ["x"], {"axes": [3], "keepdims": 0})]
    compare(*multi("norms_prod", {"x": f32(2, 6, 5, 8) + 1.5, "s": f32(6), "b": f32(6)}, nodes), out_dir)


def test_shape_size_range_constant_of_shape(out_dir):
    g = compiler.Graph("shape_ops_const")
    x = g.add_input("x", (2, 3, 5), DType.float32)
    outs = [g.add_node("Shape", [x]).outputs[0], g.add_node("Size", [x]).outputs[0],
            g.add_node("ConstantOfShape", [], {"shape": [3, 20], "value": np.array([2.5], np.float32)}).outputs[0],
            g.add_node("Range", [g.add_const(n, np.array(v, np.float32)) for n, v in
                                 (("start", 0.5), ("limit", 9.0), ("delta", 0.25))]).outputs[0]]
    g.outputs = outs
    compare(g, {"x": f32(2, 3, 5)}, out_dir, rtol=0, atol=0)


def test_blocked_layout_convs_on_neon(out_dir):
    """BlockedConv and the layout conversions with 4-channel blocks (NEON's vector), on the inverted-residual
    block of the x86 tests; arm64-neon itself compiles convolutions in NCHW (conv_block 0)."""
    from aotc.passes.blocked_layout import nchwc_layout
    from test_blocked_layout import mbconv_graph
    g = mbconv_graph(c=12, e=20, m=12, hw=6)
    nchwc_layout(g, block=4)
    assert {"BlockedConv", "FromBlockedLayout", "ReduceMean"} <= set(g.op_histogram())
    compare(g, {"x": f32(1, 3, 12, 12)}, out_dir, rtol=1e-4, atol=1e-4)


def test_blocked_max_pool_and_elementwise_on_neon(out_dir):
    """BlockedMaxPool (a NaN in the input), ToBlockedLayout and blocked elementwise ops with 4-channel blocks."""
    from aotc.passes.blocked_layout import nchwc_layout
    from test_blocked_layout import pool_chain_graph
    g, feeds = pool_chain_graph("neon", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 10)
    want = compiler.interpret(g, feeds)
    nchwc_layout(g, block=4)
    g.outputs.append(g.add_node("ToBlockedLayout", [g.add_input("x2", (1, 5, 3, 3), DType.float32)],
                                {"block": 4}).outputs[0])
    feeds = {**feeds, "x2": f32(1, 5, 3, 3)}
    assert {"BlockedConv", "BlockedMaxPool", "Mul", "Add"} <= set(g.op_histogram())
    got = compare(g, feeds, out_dir, rtol=1e-4, atol=1e-4)
    for k in want:  # and the graph before the pass
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, equal_nan=True)


def test_quantized_conv_runs_in_float_on_arm64(tmp_path):
    """"QuantizedConv" has no NEON kernel yet (VNNI only): on arm64-neon it runs in float (fit_to_target), the
    manifest names the node and why, and the result matches the reference."""
    g = compiler.Graph("qconv")
    x = g.add_input("x", (1, 4, 6, 6), DType.uint8)
    sc = lambda v: g.add_const(f"s{v}", np.array(v, np.float32))  # noqa: E731
    node = g.add_node("QuantizedConv", [x, sc(0.05), g.add_const("zx", np.array(3, np.uint8)),
                                        g.add_const("w", R.integers(-20, 20, (8, 4, 1, 1)).astype(np.int8)),
                                        g.add_const("ws", np.full(8, 0.02, np.float32))], {}, name="qconv_node")
    g.outputs = list(node.outputs)
    bundle = compile_arm(g, tmp_path)
    man = json.loads((bundle / "manifest.json").read_text())
    report = next(p["report"] for p in man["passes"] if p["name"] == "fit_to_target")
    assert [(c["node"], c["now"]) for c in report["changed"]] == [("qconv_node", "float FusedConv")]
    assert "arm64-neon target has no int8 convolution kernel" in report["changed"][0]["why"]
    feeds = {"x": R.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)}
    want = compiler.interpret(g, feeds)[g.outputs[0].name]
    got = run_arm(bundle, feeds)[g.outputs[0].name]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * float(np.abs(want).max()))


def test_every_lowered_op_is_checked_here():
    """Each op the CPU lowering registers appears in this file or in test_quant_arm64.py."""
    from pathlib import Path
    from aotc.targets.cpu.rules import lowered_ops
    here = Path(__file__).read_text() + (Path(__file__).parent / "test_quant_arm64.py").read_text()
    missing = [op for op in lowered_ops() if f'"{op}"' not in here]
    assert not missing, f"ops without an arm64 test: {missing}"


def test_the_host_runtime_names_the_bundles_cpu(tmp_path):
    """Loading an aarch64 bundle with the x86 runtime says what the library is built for, not 'no such file'."""
    import platform
    from aotc import runtime_stub
    if platform.machine() in ("aarch64", "arm64"):
        pytest.skip("this machine runs aarch64 bundles natively")
    g, _ = small_model()
    with pytest.raises(runtime_stub.RuntimeStubError, match="is built for aarch64"):
        runtime_stub.load(compile_arm(g, tmp_path))


def test_runner_reads_raw_inputs(tmp_path):
    import subprocess
    from aotc.targets.arm64.qemu import npy_name, runner_command
    g, feeds = small_model()
    b = compile_arm(g, tmp_path)
    (tmp_path / "x.bin").write_bytes(feeds["x"].tobytes())
    p = subprocess.run(runner_command(b) + [str(b), "-i", f"x={tmp_path / 'x.bin'}", "-o", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    got = np.load(tmp_path / npy_name(g.outputs[0].name))
    np.testing.assert_allclose(got, compiler.interpret(g, feeds)[g.outputs[0].name], rtol=1e-4, atol=1e-5)
    (tmp_path / "short.bin").write_bytes(feeds["x"].tobytes()[:-4])
    p = subprocess.run(runner_command(b) + [str(b), "-i", f"x={tmp_path / 'short.bin'}"], capture_output=True, text=True)
    assert p.returncode == 1 and "expected 2048 bytes" in p.stderr

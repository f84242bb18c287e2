"""The pass manager, the pattern language and every fusion: positive cases,
and near misses (the same shape of graph with one constraint broken) that
must stay unfused. Every rewrite is checked against the interpreter on the
unrewritten graph."""
import copy
import math
import subprocess
import sys

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler import DType, Graph
from aotc.compiler.errors import VerificationError
from aotc.passes import PASSES, PassManager, parse_pipeline, register_pass
from aotc.passes.pass_manager import PipelineError
from aotc.passes.patterns import Const, Op, Product, Var, apply_rules, Rule

F32 = DType.float32
RNG = np.random.default_rng(0)


def feeds_for(g: Graph, seed=0):
    r = np.random.default_rng(seed)
    return {v.name: r.standard_normal(v.shape).astype(v.dtype.numpy) for v in g.inputs}


def run_pass_checked(g: Graph, *passes: str, tol=1e-5) -> Graph:
    """Run passes with verification and check the outputs did not change."""
    before = copy.deepcopy(g)
    feeds = feeds_for(g)
    want = compiler.interpret(before, feeds)
    PassManager(list(passes), verify_each=True).run(g)
    got = compiler.interpret(g, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol)
    return g


def c(g, name, value, dtype=np.float32):
    return g.add_const(name, np.asarray(value, dtype))


def out(g, v):
    g.outputs.append(v)
    return g


# -- pipeline -----------------------------------------------------------------------------
def test_parse_pipeline():
    assert parse_pipeline("canonicalize, fuse_gelu,fold_constants{max_elements=10}") == [
        ("canonicalize", {}), ("fuse_gelu", {}), ("fold_constants", {"max_elements": 10})]
    with pytest.raises(PipelineError):
        parse_pipeline("canonicalize;;fuse_gelu")


def test_unknown_pass_and_option_are_named():
    with pytest.raises(PipelineError, match="no_such_pass"):
        PassManager(["canonicalize", "no_such_pass"])
    with pytest.raises(PipelineError, match="fold_constants has no option.*bogus"):
        PassManager([("fold_constants", {"bogus": 1})])


def test_disable_pass_and_records():
    pm = PassManager(None, disabled=["fuse_gelu"])
    assert "fuse_gelu" not in [n for n, _ in pm.steps] and "canonicalize" in [n for n, _ in pm.steps]


def test_verifier_names_the_pass_that_broke_the_graph():
    @register_pass("break_shapes_for_test")
    def break_shapes_for_test(graph):
        """Corrupts the first node's recorded shape."""
        graph.nodes[0].outputs[0].shape = (99,)
        return 1
    try:
        g = Graph()
        x = g.add_input("x", (2, 3), F32)
        out(g, g.add_node("Relu", [x]).outputs[0])
        with pytest.raises(VerificationError, match="after pass 'break_shapes_for_test'"):
            PassManager(["canonicalize", "break_shapes_for_test"], verify_each=True).run(g)
    finally:
        del PASSES["break_shapes_for_test"]


# -- pattern language ---------------------------------------------------------------------------
def test_product_matches_any_association_and_var_binding_is_consistent():
    for assoc in range(3):
        g = Graph()
        x = g.add_input("x", (4,), F32)
        y = g.add_input("y", (4,), F32)
        half = c(g, "half", 0.5)
        if assoc == 0:
            v = g.add_node("Mul", [g.add_node("Mul", [x, half]).outputs[0], x]).outputs[0]
        elif assoc == 1:
            v = g.add_node("Mul", [x, g.add_node("Mul", [half, x]).outputs[0]]).outputs[0]
        else:  # x * 0.5 * y: the second x is a different value -> no match
            v = g.add_node("Mul", [g.add_node("Mul", [x, half]).outputs[0], y]).outputs[0]
        out(g, v)
        rule = Rule("half_square", Product(Var("x"), Var("x"), Const(value=0.5)),
                    lambda g, m: g.add_node("Mul", [g.add_node("Mul", [m["x"], m["x"]]).outputs[0],
                                                    c(g, "h2", 0.5)]).outputs[0])
        assert apply_rules(g, [rule], max_rewrites=1) == (1 if assoc < 2 else 0)


def test_intermediate_used_outside_the_match_blocks_the_rewrite():
    g = Graph()
    x = g.add_input("x", (4,), F32)
    r = g.add_node("Relu", [x]).outputs[0]
    n = g.add_node("Neg", [r]).outputs[0]
    out(g, n)
    out(g, r)  # the Relu result is needed too
    rule = Rule("neg_relu", Op("Neg", Op("Relu", Var("x"))), lambda g, m: g.add_node("Abs", [m["x"]]).outputs[0])
    assert apply_rules(g, [rule]) == 0


# -- canonicalize, folding, CSE ---------------------------------------------------------------------
def test_canonicalize_removes_noops_and_collapses_chains():
    g = Graph()
    x = g.add_input("x", (2, 3, 4), F32)
    v = g.add_node("Identity", [x]).outputs[0]
    v = g.add_node("Cast", [v], {"to": "float32"}).outputs[0]
    v = g.add_node("Unsqueeze", [v], {"axes": [0]}).outputs[0]
    v = g.add_node("Reshape", [v], {"shape": [6, 4]}).outputs[0]
    v = g.add_node("Flatten", [v], {"axis": 1}).outputs[0]
    v = g.add_node("Transpose", [v], {"perm": [1, 0]}).outputs[0]
    v = g.add_node("Transpose", [v], {"perm": [1, 0]}).outputs[0]
    out(g, g.add_node("Relu", [v]).outputs[0])
    run_pass_checked(g, "canonicalize")
    assert g.op_histogram() == {"Reshape": 1, "Relu": 1}


def hardswish_spelled_out_graph(form: str, three=3.0, six=6.0, clip_max=6.0):
    """x * relu6(x + 3) / 6 as exporters write it: the division last, a multiplication by 1/6, or
    relu6(x + 3) / 6 first."""
    g = Graph()
    x = g.add_input("x", (2, 3, 5), F32)
    r6 = g.add_node("Clip", [g.add_node("Add", [x, c(g, "three", three)]).outputs[0]],
                    {"min": 0.0, "max": clip_max}).outputs[0]
    if form == "div_last":
        y = g.add_node("Div", [g.add_node("Mul", [x, r6]).outputs[0], c(g, "six", six)]).outputs[0]
    elif form == "times_sixth":
        y = g.add_node("Mul", [g.add_node("Mul", [r6, x]).outputs[0], c(g, "sixth", 1 / six)]).outputs[0]
    else:
        y = g.add_node("Mul", [x, g.add_node("Div", [r6, c(g, "six", six)]).outputs[0]]).outputs[0]
    out(g, y)
    return g


@pytest.mark.parametrize("form", ["div_last", "times_sixth", "div_first"])
def test_spelled_out_hardswish_becomes_hardswish(form):
    g = run_pass_checked(hardswish_spelled_out_graph(form), "canonicalize")
    assert g.op_histogram() == {"HardSwish": 1}


@pytest.mark.parametrize("near_miss", [{"three": 2.0}, {"six": 5.0}, {"clip_max": 5.0}])
def test_hardswish_near_misses_stay(near_miss):
    g = run_pass_checked(hardswish_spelled_out_graph("div_last", **near_miss), "canonicalize")
    assert "HardSwish" not in g.op_histogram()


def test_gemm_becomes_matmul_with_folded_transpose_and_scales():
    g = Graph()
    a = g.add_input("a", (3, 5), F32)
    w = c(g, "w", RNG.standard_normal((4, 5)))
    b = c(g, "b", RNG.standard_normal((4,)))
    out(g, g.add_node("Gemm", [a, w, b], {"transB": 1, "alpha": 0.5, "beta": 2.0}).outputs[0])
    run_pass_checked(g, "canonicalize")
    assert g.op_histogram() == {"MatMul": 1, "Add": 1}


def test_fold_constants_and_cse():
    g = Graph()
    x = g.add_input("x", (2, 3), F32)
    k = g.add_node("Mul", [c(g, "a", [2.0]), c(g, "b", [3.0])]).outputs[0]  # constant expression
    s1 = g.add_node("Shape", [x]).outputs[0]
    y1 = g.add_node("Mul", [x, k]).outputs[0]
    y2 = g.add_node("Mul", [x, k]).outputs[0]  # common subexpression
    out(g, g.add_node("Add", [y1, y2]).outputs[0])
    out(g, g.add_node("Cast", [s1], {"to": "float32"}).outputs[0])
    run_pass_checked(g, "fold_constants", "eliminate_common_subexpressions")
    assert g.op_histogram() == {"Mul": 1, "Add": 1, "Cast": 1}


# -- GELU ---------------------------------------------------------------------------------------
def gelu_erf_graph(order: int, sqrt2=math.sqrt(2), half=0.5, extra_use=False):
    g = Graph()
    x = g.add_input("x", (2, 8), F32)
    e = g.add_node("Erf", [g.add_node("Div", [x, c(g, "s", sqrt2)]).outputs[0]]).outputs[0]
    one_plus = g.add_node("Add", [c(g, "one", 1.0), e]).outputs[0]
    if order == 0:  # x * 0.5 * (1 + erf)
        y = g.add_node("Mul", [g.add_node("Mul", [x, c(g, "h", half)]).outputs[0], one_plus]).outputs[0]
    else:  # x * ((1 + erf) * 0.5)
        y = g.add_node("Mul", [x, g.add_node("Mul", [one_plus, c(g, "h", half)]).outputs[0]]).outputs[0]
    out(g, y)
    if extra_use:
        out(g, g.add_node("Neg", [e]).outputs[0])
    return g


@pytest.mark.parametrize("order", [0, 1])
def test_gelu_erf_fused(order):
    g = run_pass_checked(gelu_erf_graph(order), "fuse_gelu")
    assert g.op_histogram() == {"Gelu": 1}
    assert g.nodes[0].attrs["approximate"] == "none"


@pytest.mark.parametrize("kw", [{"sqrt2": 2.0}, {"half": 0.49}, {"extra_use": True}])
def test_gelu_near_misses(kw):
    g = run_pass_checked(gelu_erf_graph(0, **kw), "fuse_gelu")
    assert "Gelu" not in g.op_histogram()


@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_gelu_tanh_fused(cube):
    g = Graph()
    x = g.add_input("x", (2, 8), F32)
    x3 = (g.add_node("Pow", [x, c(g, "three", 3.0)]).outputs[0] if cube == "pow"
          else g.add_node("Mul", [g.add_node("Mul", [x, x]).outputs[0], x]).outputs[0])
    inner = g.add_node("Add", [x, g.add_node("Mul", [c(g, "k", 0.044715), x3]).outputs[0]]).outputs[0]
    t = g.add_node("Tanh", [g.add_node("Mul", [inner, c(g, "s", math.sqrt(2 / math.pi))]).outputs[0]]).outputs[0]
    y = g.add_node("Mul", [g.add_node("Mul", [c(g, "h", 0.5), x]).outputs[0],
                           g.add_node("Add", [t, c(g, "one", 1.0)]).outputs[0]]).outputs[0]
    out(g, y)
    g = run_pass_checked(g, "fuse_gelu")
    assert g.op_histogram() == {"Gelu": 1} and g.nodes[0].attrs["approximate"] == "tanh"


# -- LayerNorm ------------------------------------------------------------------------------------
def layernorm_graph(axis=-1, eps=1e-5, gamma_shape=(16,), square="pow"):
    g = Graph()
    x = g.add_input("x", (2, 4, 16), F32)
    mean = g.add_node("ReduceMean", [x], {"axes": [axis]}).outputs[0]
    d = g.add_node("Sub", [x, mean]).outputs[0]
    sq = g.add_node("Pow", [d, c(g, "two", 2.0)]).outputs[0] if square == "pow" else g.add_node("Mul", [d, d]).outputs[0]
    var = g.add_node("ReduceMean", [sq], {"axes": [axis]}).outputs[0]
    std = g.add_node("Sqrt", [g.add_node("Add", [var, c(g, "eps", eps)]).outputs[0]]).outputs[0]
    n = g.add_node("Div", [d, std]).outputs[0]
    y = g.add_node("Mul", [n, c(g, "gamma", RNG.standard_normal(gamma_shape))]).outputs[0]
    return out(g, g.add_node("Add", [y, c(g, "beta", RNG.standard_normal((16,)))]).outputs[0])


@pytest.mark.parametrize("square", ["pow", "mul"])
def test_layernorm_fused(square):
    g = run_pass_checked(layernorm_graph(square=square), "fuse_layernorm")
    assert g.op_histogram() == {"LayerNormalization": 1}


def test_layernorm_near_misses():
    # Normalizing over a middle axis is not LayerNormalization(axis=-1).
    g = run_pass_checked(layernorm_graph(axis=1), "fuse_layernorm")
    assert "LayerNormalization" not in g.op_histogram()
    # A γ that varies along another axis cannot be LayerNormalization's scale: it stays outside.
    g = run_pass_checked(layernorm_graph(gamma_shape=(4, 16)), "fuse_layernorm")
    assert g.op_histogram() == {"LayerNormalization": 1, "Mul": 1, "Add": 1}


def test_skip_layernorm_keeps_the_sum_for_later_residuals():
    g = Graph()
    a = g.add_input("a", (2, 4, 16), F32)
    b = g.add_input("b", (2, 4, 16), F32)
    s = g.add_node("Add", [a, b]).outputs[0]
    y = g.add_node("LayerNormalization", [s, c(g, "g", np.ones(16)), c(g, "be", np.zeros(16))]).outputs[0]
    out(g, g.add_node("Add", [y, s]).outputs[0])  # pre-LN style: the sum is read again
    g = run_pass_checked(g, "fuse_skip_layernorm")
    assert g.op_histogram() == {"SkipLayerNormalization": 1, "Add": 1}


def test_skip_layernorm_near_miss_constant_operand():
    g = Graph()
    a = g.add_input("a", (2, 4, 16), F32)
    s = g.add_node("Add", [a, c(g, "pos", RNG.standard_normal((2, 4, 16)))]).outputs[0]
    out(g, g.add_node("LayerNormalization", [s, c(g, "g", np.ones(16))]).outputs[0])
    assert "SkipLayerNormalization" not in run_pass_checked(g, "fuse_skip_layernorm").op_histogram()


# -- BatchNorm folding and epilogues -------------------------------------------------------------------
def conv_bn_graph(const_stats=True, act=None, residual=None):
    g = Graph()
    x = g.add_input("x", (1, 3, 8, 8), F32)
    conv = g.add_node("Conv", [x, c(g, "w", RNG.standard_normal((3, 3, 3, 3)))], {"pads": [1, 1, 1, 1]}).outputs[0]
    mean = c(g, "mean", RNG.standard_normal(3)) if const_stats else g.add_input("mean", (3,), F32)
    bn = g.add_node("BatchNormalization", [conv, c(g, "s", RNG.uniform(0.5, 2, 3)), c(g, "bb", RNG.standard_normal(3)),
                                           mean, c(g, "var", RNG.uniform(0.5, 2, 3))]).outputs[0]
    v = bn
    if residual == "before":
        v = g.add_node("Add", [v, x]).outputs[0]
    if act:
        v = g.add_node(act, [v], {"min": 0.0, "max": 6.0} if act == "Clip" else {}).outputs[0]
    if residual == "after":
        v = g.add_node("Add", [x, v]).outputs[0]
    return out(g, v)


def test_batchnorm_folds_into_conv():
    g = run_pass_checked(conv_bn_graph(), "fold_batchnorm")
    assert g.op_histogram() == {"Conv": 1}


def test_batchnorm_near_miss_runtime_statistics():
    g = run_pass_checked(conv_bn_graph(const_stats=False), "fold_batchnorm")
    assert g.op_histogram() == {"Conv": 1, "BatchNormalization": 1}


def conv_affine_graph(scale_shape, shift_shape, bias=True):
    """Conv, times a constant, plus a constant, HardSwish (PP-LCNet's learnable affine block)."""
    g = Graph()
    x = g.add_input("x", (1, 3, 6, 6), F32)
    ins = [x, c(g, "w", RNG.standard_normal((4, 3, 3, 3)))] + ([c(g, "b", RNG.standard_normal(4))] if bias else [])
    v = g.add_node("Conv", ins, {"pads": [1, 1, 1, 1]}).outputs[0]
    v = g.add_node("Mul", [c(g, "k", RNG.uniform(0.5, 2, scale_shape)), v]).outputs[0]
    v = g.add_node("Add", [v, c(g, "t", RNG.standard_normal(shift_shape))]).outputs[0]
    return out(g, g.add_node("HardSwish", [v]).outputs[0])


@pytest.mark.parametrize("scale_shape,shift_shape,bias", [((1,), (1,), True), ((4, 1, 1), (1, 4, 1, 1), False),
                                                          ((), (4, 1, 1), True)])
def test_conv_affine_folds_into_conv(scale_shape, shift_shape, bias):
    g = run_pass_checked(conv_affine_graph(scale_shape, shift_shape, bias), "fold_batchnorm", "fuse_conv_epilogue")
    assert g.op_histogram() == {"FusedConv": 1}


@pytest.mark.parametrize("scale_shape", [(4,), (1, 4, 1), (2, 4, 1, 1)])
def test_conv_affine_near_misses_stay(scale_shape):
    """Constants that vary along a spatial axis (a [4] vector aligns with W) or broadcast the batch."""
    g = Graph()
    x = g.add_input("x", (1, 3, 4, 4), F32)
    v = g.add_node("Conv", [x, c(g, "w", RNG.standard_normal((4, 3, 1, 1)))]).outputs[0]
    out(g, g.add_node("Mul", [v, c(g, "k", RNG.uniform(0.5, 2, scale_shape))]).outputs[0])
    g = run_pass_checked(g, "fold_batchnorm")
    assert g.op_histogram() == {"Conv": 1, "Mul": 1}


@pytest.mark.parametrize("act,residual", [("Relu", None), ("Clip", "after"), ("Relu", "before"), ("HardSwish", None),
                                          (None, "after")])
def test_conv_epilogue(act, residual):
    g = run_pass_checked(conv_bn_graph(act=act, residual=residual), "fold_batchnorm", "fuse_conv_epilogue")
    assert g.op_histogram() == {"FusedConv": 1}
    node = g.nodes[0]
    assert node.attrs["activation"] == ({"Relu": "relu", "Clip": "clip", "HardSwish": "hardswish"}.get(act, "none"))
    assert node.attrs["residual_before_activation"] == int(residual == "before")


def matmul_graph(bias_shape=(6,), act="Relu", residual_shape=(2, 4, 6)):
    g = Graph()
    x = g.add_input("x", (2, 4, 5), F32)
    v = g.add_node("MatMul", [x, c(g, "w", RNG.standard_normal((5, 6)))]).outputs[0]
    if bias_shape:
        v = g.add_node("Add", [c(g, "b", RNG.standard_normal(bias_shape)), v]).outputs[0]
    if act == "silu":
        v = g.add_node("Mul", [v, g.add_node("Sigmoid", [v]).outputs[0]]).outputs[0]
    elif act:
        v = g.add_node(act, [v]).outputs[0]
    if residual_shape:
        v = g.add_node("Add", [v, g.add_input("r", residual_shape, F32)]).outputs[0]
    return out(g, v)


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Gelu", "silu", None])
def test_matmul_epilogue(act):
    g = run_pass_checked(matmul_graph(act=act), "fuse_matmul_epilogue")
    assert g.op_histogram() == {"FusedMatMul": 1}
    assert g.nodes[0].attrs["activation"] == {None: "none", "Gelu": "gelu"}.get(act, (act or "").lower())
    assert g.nodes[0].inputs[3] is not None  # the residual went in too


def test_matmul_epilogue_near_misses():
    # A bias along rows (shape [4, 1]) is not a per-column bias: the Add stays outside.
    g = run_pass_checked(matmul_graph(bias_shape=(4, 1), act=None, residual_shape=None), "fuse_matmul_epilogue")
    assert "FusedMatMul" not in g.op_histogram()
    # A residual that broadcasts (would grow) is not a residual.
    g = run_pass_checked(matmul_graph(act=None, residual_shape=(4, 6)), "fuse_matmul_epilogue")
    hist = g.op_histogram()
    assert hist.get("FusedMatMul") == 1 and hist.get("Add") == 1 and g.nodes[0].inputs[-1].const is not None


# -- attention --------------------------------------------------------------------------------------
def attention_graph(k_perm=(0, 2, 3, 1), softmax_axis=-1, scale_shape=(), mask=True, b=1, s=8, h=2, d=8,
                    prescale=None):
    """BERT-style self-attention written out op by op (d == s so wrong layouts still type-check). `prescale`
    = (projection, factor): that projection's output is scaled before the head split, as Whisper does to Q."""
    g = Graph()
    e = h * d
    x = g.add_input("x", (b, s, e), F32)

    def proj(name, perm):
        v = g.add_node("MatMul", [x, c(g, f"w{name}", RNG.standard_normal((e, e)) * 0.3)]).outputs[0]
        v = g.add_node("Add", [v, c(g, f"b{name}", RNG.standard_normal(e))]).outputs[0]
        if prescale and prescale[0] == name:
            v = g.add_node("Mul", [v, c(g, f"s{name}", prescale[1])]).outputs[0]
        v = g.add_node("Reshape", [v], {"shape": [b, s, h, d]}).outputs[0]
        return g.add_node("Transpose", [v], {"perm": list(perm)}).outputs[0]

    q, k, v = proj("q", (0, 2, 1, 3)), proj("k", k_perm), proj("v", (0, 2, 1, 3))
    sc = g.add_node("MatMul", [q, k]).outputs[0]
    scale = math.sqrt(d) * (np.arange(1, h + 1).reshape(scale_shape) if scale_shape else 1.0)
    sc = g.add_node("Div", [sc, c(g, "scale", scale)]).outputs[0]
    if mask == "two":  # T5: a position bias [1, H, S, S], then the padding mask
        sc = g.add_node("Add", [sc, g.add_input("bias", (1, h, s, s), F32)]).outputs[0]
    if mask:
        sc = g.add_node("Add", [sc, g.add_input("mask", (b, 1, 1, s), F32)]).outputs[0]
    p = g.add_node("Softmax", [sc], {"axis": softmax_axis}).outputs[0]
    ctx = g.add_node("MatMul", [p, v]).outputs[0]
    ctx = g.add_node("Transpose", [ctx], {"perm": [0, 2, 1, 3]}).outputs[0]
    return out(g, g.add_node("Reshape", [ctx], {"shape": [b, s, e]}).outputs[0])


def test_attention_fused():
    g = run_pass_checked(attention_graph(), "fuse_attention")
    assert g.op_histogram() == {"Attention": 1}
    a = g.nodes[0].attrs
    assert (a["num_heads"], a["head_dim"]) == (2, 8) and abs(a["scale"] - 1 / math.sqrt(8)) < 1e-7


def test_attention_fused_with_two_additive_masks():
    g = run_pass_checked(attention_graph(mask="two"), "fuse_attention")
    assert g.op_histogram() == {"Attention": 1, "Add": 1}  # the two masks summed once, outside


def test_attention_fused_with_q_scaled_before_the_head_split():
    g = run_pass_checked(attention_graph(prescale=("q", 0.25)), "fuse_attention")
    assert g.op_histogram() == {"Attention": 1}
    assert abs(g.nodes[0].attrs["scale"] - 0.25 / math.sqrt(8)) < 1e-7


@pytest.mark.parametrize("kw", [{"k_perm": (0, 2, 1, 3)},  # K not transposed: a different computation
                                {"prescale": ("v", 0.5)},  # V scaled: not a scale on the scores
                                {"softmax_axis": 2},  # normalizing over queries
                                {"scale_shape": (1, 2, 1, 1)}])  # a different scale per head
def test_attention_near_misses(kw):
    g = run_pass_checked(attention_graph(**kw), "fuse_attention")
    assert "Attention" not in g.op_histogram()


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_print_ir_after_and_pass_times(tmp_path):
    import onnx
    from aotc.compiler.onnx_export import to_onnx
    path = tmp_path / "ln.onnx"
    onnx.save(to_onnx(layernorm_graph()), path)
    res = subprocess.run([sys.executable, "-m", "aotc.cli", "optimize", str(path), "-o", str(tmp_path / "o.onnx"),
                          "--print-ir-after", "all", "--print-pass-times", "--verify"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "// ----- IR after fuse_layernorm" in res.stderr and "LayerNormalization(" in res.stderr
    assert "// ----- IR after canonicalize" in res.stderr
    assert "fuse_layernorm" in res.stderr.split("pass ")[-1] and "total" in res.stderr
    # The written model re-imports (aotc's own ops included) and computes the same.
    g0 = compiler.load_onnx(path)
    g1 = compiler.load_onnx(tmp_path / "o.onnx")
    feeds = feeds_for(g0)
    np.testing.assert_allclose(compiler.interpret(g1, feeds)[g1.outputs[0].name],
                               compiler.interpret(g0, feeds)[g0.outputs[0].name], rtol=1e-5, atol=1e-5)


# -- sub-pixel ConvTranspose (a CPU target pass) -----------------------------------------------------------
@pytest.mark.parametrize("w_shape,attrs", [
    ((6, 4, 2, 2), {"strides": [2, 2]}),
    ((6, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ((6, 4, 2, 5), {"strides": [3, 2], "pads": [0, 2, 1, 0]}),
])
def test_subpixel_conv_transpose(w_shape, attrs):
    g = Graph()
    x = g.add_input("x", (2, 6, 5, 4), F32)
    out(g, g.add_node("ConvTranspose", [x, c(g, "w", RNG.standard_normal(w_shape)), c(g, "b", RNG.standard_normal(4))],
                      attrs).outputs[0])
    g = run_pass_checked(g, "subpixel_conv_transpose")
    hist = g.op_histogram()
    assert "ConvTranspose" not in hist and hist["Conv"] == 1 and hist["Transpose"] == 1


def test_subpixel_leaves_grouped_dilated_and_stride_one():
    g = Graph()
    x = g.add_input("x", (1, 6, 5, 5), F32)
    for i, attrs in enumerate([{"group": 3, "strides": [2, 2]}, {"dilations": [2, 2], "strides": [2, 2]}, {}]):
        w = RNG.standard_normal((6, 2 if "group" in attrs else 4, 3, 3))
        out(g, g.add_node("ConvTranspose", [x, c(g, f"w{i}", w)], attrs).outputs[0])
    g = run_pass_checked(g, "subpixel_conv_transpose")
    assert g.op_histogram() == {"ConvTranspose": 3}

"""decompose_fused_ops: every fused op back to primitives, with the same outputs in the interpreter."""
import copy

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler import DType, Graph
from aotc.passes import PassManager
from aotc.passes.pass_manager import PipelineError

F32 = DType.float32
R = np.random.default_rng(0)


def decompose_and_compare(g: Graph, feeds: dict, ops: str = "", tol=1e-5) -> Graph:
    want = compiler.interpret(copy.deepcopy(g), feeds)
    PassManager([("decompose_fused_ops", {"ops": ops})], verify_each=True).run(g)
    got = compiler.interpret(g, feeds)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, equal_nan=True)
    return g


def c(g, name, shape, dtype=np.float32, scale=0.3):
    return g.add_const(name, (R.standard_normal(shape) * scale).astype(dtype))


@pytest.mark.parametrize("act, alpha, beta", [
    ("none", None, None), ("relu", None, None), ("gelu", None, None), ("gelu_tanh", None, None),
    ("silu", None, None), ("clip", 0.0, 6.0), ("hardsigmoid", 0.2, 0.5), ("hardswish", None, None),
    ("leakyrelu", 0.1, None), ("sigmoid", None, None), ("tanh", None, None)])
@pytest.mark.parametrize("residual", [None, 0, 1])
def test_fused_matmul(act, alpha, beta, residual):
    g = Graph("fmm")
    a = g.add_input("a", (2, 3, 8), F32)
    ins = [a, c(g, "w", (8, 5)), c(g, "b", (5,))]
    if residual is not None:
        ins.append(g.add_input("r", (2, 3, 5), F32))
    y = g.add_node("FusedMatMul", ins, {"activation": act, "act_alpha": alpha, "act_beta": beta,
                                         "residual_before_activation": residual or 0})
    g.outputs.append(y.outputs[0])
    name = y.outputs[0].name
    feeds = {v.name: R.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    g = decompose_and_compare(g, feeds)
    assert "FusedMatMul" not in g.op_histogram() and g.outputs[0].name == name  # the output keeps its name


def test_skip_layernorm_both_outputs():
    g = Graph("sln")
    a, b = g.add_input("a", (2, 4, 16), F32), g.add_input("b", (2, 4, 16), F32)
    n = g.add_node("SkipLayerNormalization", [a, b, c(g, "gamma", (16,)), c(g, "beta", (16,))], {"epsilon": 1e-6},
                   num_outputs=2)
    g.outputs += [n.outputs[0], g.add_node("Relu", [n.outputs[1]]).outputs[0]]
    feeds = {v.name: R.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    g = decompose_and_compare(g, feeds)
    assert g.op_histogram() == {"Add": 1, "LayerNormalization": 1, "Relu": 1}


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the fully masked row
@pytest.mark.parametrize("masks", ["add", "keep_nan", "both", "none"])
def test_attention(masks):
    b, s, h, d = 2, 5, 3, 4
    e = h * d
    g = Graph("att")
    xq, xkv = g.add_input("xq", (b, s, e), F32), g.add_input("xkv", (b, 7, e), F32)
    w = [c(g, n, (e, e)) if n.startswith("w") else c(g, n, (e,)) for n in ("wq", "bq", "wk", "bk", "wv", "bv")]
    w[3] = None  # no K bias
    add = c(g, "add_mask", (b, 1, s, 7)) if masks in ("add", "both") else None
    keep = None
    if masks in ("keep_nan", "both"):
        k = R.random((1, h, s, 7)) > 0.3
        k[0, 1, 2] = False  # a fully masked row: NaN without the guard
        keep = g.add_const("keep", k)
    att = g.add_node("Attention", [xq, xkv, *w, add, keep],
                     {"num_heads": h, "head_dim": d, "scale": 0.5, "mask_fill": float("-inf"),
                      "nan_to_zero": int(masks == "keep_nan")})
    g.outputs.append(att.outputs[0])
    feeds = {v.name: R.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    g = decompose_and_compare(g, feeds)
    assert "Attention" not in g.op_histogram()


def test_only_the_named_ops_and_unknown_ops():
    from test_prune_heads import toy_transformer, toy_feeds
    g = toy_transformer(layers=2)
    g = decompose_and_compare(g, toy_feeds(g)[0], ops="Attention")
    hist = g.op_histogram()
    assert "Attention" not in hist and hist["FusedMatMul"] == 2
    with pytest.raises(PipelineError, match="cannot decompose Conv"):
        PassManager([("decompose_fused_ops", {"ops": "Conv"})]).run(g)


def test_pruned_toy_transformer_decomposes():
    from aotc.passes.prune_heads import prune_attention_heads
    from test_prune_heads import toy_transformer, toy_feeds
    g = toy_transformer(layers=2)
    prune_attention_heads(g, spec="0:0,1:3")
    g = decompose_and_compare(g, toy_feeds(g)[0])
    assert set(g.op_histogram()) <= {"MatMul", "Add", "Reshape", "Transpose", "Mul", "Softmax", "LayerNormalization"}

"""Attention-head pruning (passes/prune_heads.py), calibration data (compiler/calibration.py) and the
PassContext that carries it.

Fast tests use small hand-built graphs: removing heads structurally must give exactly the outputs of the
unpruned graph with those heads' output-projection rows zeroed. Whole-model tests (slow) prune MiniLM-L6:
the same heads removed by hand from the PyTorch model give the same outputs, and at 25% of heads the
importance ranking keeps the embeddings of held-out sentences closer than random pruning does."""
from __future__ import annotations

import contextlib
import copy
import subprocess
import sys

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler import DType, Graph
from aotc.compiler.calibration import CalibrationError, calibration_feeds, load_calibration
from aotc.passes import PassContext, PassManager, insert_pass, parse_pipeline
from aotc.passes.pass_manager import DEFAULT_PIPELINE, PipelineError
from aotc.passes.prune_heads import (PruneError, attention_sites, format_report, parse_spec, prune_attention_heads,
                                select_heads)

F32 = DType.float32


# -- a small transformer built directly in the IR -----------------------------------------------------
def toy_transformer(layers=2, heads=4, head_dim=8, batch=2, seq=5, seed=0, head_axis_mask=False, consumer="proj",
                    shared_wo=False):
    """`layers` × (Attention -> output projection FusedMatMul -> residual Add -> LayerNorm)."""
    r = np.random.default_rng(seed)
    e = heads * head_dim
    g = Graph("toy")
    x = g.add_input("x", (batch, seq, e), F32)
    mask_shape = (1, heads, seq, seq) if head_axis_mask else (1, 1, seq, seq)
    add_mask = g.add_const("mask", (r.standard_normal(mask_shape) * 0.5).astype(np.float32))
    wo_shared = g.add_const("wo_shared", (r.standard_normal((e, e)) / np.sqrt(e)).astype(np.float32)) \
        if shared_wo else None

    def c(name, shape, scale=1.0):
        return g.add_const(name, (r.standard_normal(shape) * scale).astype(np.float32))

    h = x
    for i in range(layers):
        w = [c(f"l{i}.{n}", s, 1 / np.sqrt(e) if len(s) == 2 else 0.1)
             for n, s in (("wq", (e, e)), ("bq", (e,)), ("wk", (e, e)), ("bk", (e,)), ("wv", (e, e)), ("bv", (e,)))]
        att = g.add_node("Attention", [h, h, *w, add_mask, None],
                         {"num_heads": heads, "head_dim": head_dim, "scale": 1 / np.sqrt(head_dim)},
                         name=f"l{i}/Attention").outputs[0]
        if consumer == "relu" and i == layers - 1:
            g.outputs.append(g.add_node("Relu", [att], name="relu").outputs[0])
            return g
        if consumer == "output" and i == layers - 1:
            g.outputs.append(att)
            return g
        wo = wo_shared if shared_wo else c(f"l{i}.wo", (e, e), 1 / np.sqrt(e))
        proj = g.add_node("FusedMatMul", [att, wo, c(f"l{i}.bo", (e,), 0.1)], name=f"l{i}/proj").outputs[0]
        if consumer == "two" and i == layers - 1:
            extra = g.add_node("Relu", [att], name="relu").outputs[0]
            g.outputs.append(extra)
        s = g.add_node("Add", [proj, h], name=f"l{i}/residual").outputs[0]
        h = g.add_node("LayerNormalization", [s, c(f"l{i}.gamma", (e,), 0.1), c(f"l{i}.beta", (e,), 0.1)],
                       {"axis": -1, "epsilon": 1e-5}, name=f"l{i}/ln").outputs[0]
    g.outputs.append(h)
    compiler.verify(g)
    return g


def toy_feeds(g, n=1, seed=1):
    r = np.random.default_rng(seed)
    return [{v.name: r.standard_normal(v.shape).astype(np.float32) for v in g.inputs} for _ in range(n)]


def zero_heads(g: Graph, spec: dict[int, list[int]]) -> Graph:
    """The unpruned graph with the heads' output-projection rows zeroed: what pruning must compute."""
    g = copy.deepcopy(g)
    sites = attention_sites(g)
    for layer, heads in spec.items():
        s = sites[layer]
        w = s.projection.inputs[1]
        data = w.const.copy()
        data[s.head_columns(heads)] = 0
        s.projection.inputs[1] = g.add_const(f"{w.name}/zeroed", data)
    return g


@pytest.mark.parametrize("head_axis_mask", [False, True])
def test_spec_pruning_equals_zeroing_the_heads(head_axis_mask):
    g = toy_transformer(layers=3, heads=4, head_axis_mask=head_axis_mask)
    spec = {0: [1], 2: [0, 2, 3]}
    want_graph = zero_heads(g, spec)
    feeds = toy_feeds(g)[0]
    params = g.parameter_count()
    report = prune_attention_heads(g, spec="0:1,2:0,2:2,2:3")
    compiler.verify(g)
    got, want = compiler.interpret(g, feeds), compiler.interpret(want_graph, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    atts = [n for n in g.nodes if n.op_type == "Attention"]
    assert [n.attrs["num_heads"] for n in atts] == [3, 4, 1]
    assert [n.outputs[0].shape[-1] for n in atts] == [24, 32, 8]
    assert [n.inputs[2].shape for n in atts] == [(32, 24), (32, 32), (32, 8)]
    # 4 heads × (3 weight columns blocks [32×8] + 3 bias blocks [8] + one Wo row block [8×32]);
    # a per-head mask loses its heads' [5×5] planes (it is shared by all layers, so it is sliced per layer)
    removed = 4 * (3 * 32 * 8 + 3 * 8 + 8 * 32)
    if not head_axis_mask:
        assert g.parameter_count() == params - removed
    assert report["params_before"] - report["params_after"] == params - g.parameter_count()
    assert report["flops_after"] < report["flops_before"]
    assert report["heads_removed"] == 4 and report["removed"] == {"0": [1], "2": [0, 2, 3]}
    assert report["drift"] is None  # no calibration data


def test_kept_constants_keep_their_names_and_shared_weights_are_copied():
    g = toy_transformer(layers=2, shared_wo=True)
    feeds = toy_feeds(g)[0]
    want = compiler.interpret(zero_heads(g, {0: [0, 1]}), feeds)
    prune_attention_heads(g, spec={0: [0, 1]})
    compiler.verify(g)
    out = g.outputs[0].name
    np.testing.assert_allclose(compiler.interpret(g, feeds)[out], want[out], rtol=1e-5, atol=1e-5)
    assert g.initializers["l0.wq"].shape == (32, 16)  # sliced in place, name kept
    projs = [n for n in g.nodes if n.op_type == "FusedMatMul"]
    assert projs[0].inputs[1].shape == (16, 32) and projs[1].inputs[1].shape == (32, 32)
    assert projs[1].inputs[1].name == "wo_shared" and projs[0].inputs[1].name != "wo_shared"


def test_fraction_ranks_globally_and_keeps_min_per_layer():
    g = toy_transformer(layers=2, heads=4)
    sites = attention_sites(g)
    # make layer 0's heads all nearly dead: drift must remove them first, but keep min_per_layer
    wo = sites[0].projection.inputs[1]
    wo.const = wo.const * 1e-4
    cal = toy_feeds(g, n=2)
    report = prune_attention_heads(g, fraction=0.5, min_per_layer=2, calibration=cal)
    assert report["removed"]["0"] == report["layers"][0]["removed"] and len(report["removed"]["0"]) == 2
    assert report["heads_removed"] == 4 and len(report["removed"]["1"]) == 2
    assert [n.attrs["num_heads"] for n in g.nodes if n.op_type == "Attention"] == [2, 2]
    d = report["drift"]
    assert d["feeds"] == 2 and 0 < d["mse"] and d["mean_cosine"] > 0.5
    compiler.verify(g)


def test_samples_limits_the_calibration_feeds_and_quantized_attention_is_named():
    g = toy_transformer(layers=2)
    report = prune_attention_heads(g, fraction=0.25, calibration=toy_feeds(g, n=5), samples=2)
    assert report["drift"]["feeds"] == 2
    with pytest.raises(PruneError, match="positive integer"):
        prune_attention_heads(toy_transformer(), fraction=0.25, calibration=toy_feeds(g), samples=0)
    q = toy_transformer(layers=1)
    PassManager(["quantize_int8"], context=PassContext(calibration=toy_feeds(q, n=2))).run(q)
    assert "QuantizedAttention" in q.op_histogram()
    with pytest.raises(PruneError, match="before quantize_int8"):
        prune_attention_heads(q, spec="0:1")


def test_drift_scores_a_dead_head_lowest_and_the_report_matches_a_rerun():
    g = toy_transformer(layers=2, heads=4)
    s = attention_sites(g)[1]
    s.projection.inputs[1].const[s.head_columns([2])] = 0  # head 1:2 contributes nothing
    cal = toy_feeds(g, n=2)
    base = [compiler.interpret(g, f) for f in cal]
    report = prune_attention_heads(g, fraction=0.125, calibration=cal)
    assert report["removed"] == {"1": [2]}
    assert report["layers"][1]["importance"][2] == 0.0
    assert report["drift"]["max_abs"] < 1e-5
    for f, b in zip(cal, base):
        np.testing.assert_allclose(compiler.interpret(g, f)[g.outputs[0].name], b[g.outputs[0].name], atol=1e-5)


@pytest.mark.parametrize("importance", ["drift", "contribution", "weight", "random"])
def test_every_importance_method_prunes_and_verifies(importance):
    g = toy_transformer(layers=2, heads=4)
    report = prune_attention_heads(g, fraction=0.25, importance=importance, calibration=toy_feeds(g), seed=3)
    assert report["heads_removed"] == 2 and report["importance"] == importance
    assert all(len(layer["importance"]) == 4 for layer in report["layers"])
    compiler.verify(g)
    assert "removed 2 of 8 heads" in format_report(report)


def test_select_heads_is_global_deterministic_and_respects_min_per_layer():
    scores = [np.array([0.1, 0.2, 0.3]), np.array([0.05, 5.0, 0.15]), np.array([0.01, 0.02, 0.03])]
    assert select_heads(scores, 3, 1) == {1: [0], 2: [0, 1]}
    assert select_heads(scores, 4, 1) == {0: [0], 1: [0], 2: [0, 1]}
    assert select_heads(scores, 3, 2) == {0: [0], 1: [0], 2: [0]}
    assert select_heads([np.zeros(2), np.zeros(2)], 2, 1) == {0: [0], 1: [0]}


def test_parse_spec_forms():
    assert parse_spec("0:3, 0:1,4:1,0:3") == {0: [1, 3], 4: [1]}
    assert parse_spec({2: [1, 0]}) == {2: [0, 1]}
    assert parse_spec([(1, 1)]) == {1: [1]}
    assert parse_spec("") == {}


@pytest.mark.parametrize("kwargs, needles", [
    ({"fraction": 0.0}, ["strictly between 0 and 1", "0.0"]),
    ({"fraction": 1.0}, ["strictly between 0 and 1"]),
    ({"fraction": -0.2}, ["strictly between 0 and 1"]),
    ({"fraction": 1.5}, ["strictly between 0 and 1"]),
    ({"fraction": "a lot"}, ["strictly between 0 and 1"]),
    ({}, ["needs a fraction", "or an explicit spec"]),
    ({"fraction": 0.25, "spec": "0:1"}, ["either a fraction", "not both"]),
    ({"spec": "5:0"}, ["layer 5 does not exist", "layers 0..1"]),
    ({"spec": "1:4"}, ["layer 1 has heads 0..3, not 4"]),
    ({"spec": "0:-1"}, ["layer 0 has heads 0..3, not -1"]),
    ({"spec": "0:0,0:1,0:2,0:3"}, ["layer 0 would keep 0 of 4 heads", "min_per_layer=1"]),
    ({"spec": "0-1"}, ["Cannot read '0-1'", "LAYER:HEAD"]),
    ({"fraction": 0.25, "importance": "magic"}, ["Unknown head-importance method 'magic'", "drift"]),
    ({"fraction": 0.25, "min_per_layer": 0}, ["min_per_layer must be an integer of at least 1"]),
    ({"fraction": 0.9}, ["asks for 7 of 8", "at most 6 can go"]),
    ({"fraction": 0.25}, ["needs no data", "calibration"]),  # drift without calibration data
])
def test_bad_options_are_one_clear_error(kwargs, needles):
    g = toy_transformer(layers=2, heads=4)
    text = str(g)
    with pytest.raises(PruneError) as e:
        prune_attention_heads(g, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    assert str(g) == text  # nothing changed


def test_no_attention_is_refused():
    g = Graph("mlp")
    x = g.add_input("x", (2, 4), F32)
    g.outputs.append(g.add_node("Relu", [x]).outputs[0])
    with pytest.raises(PruneError, match="no Attention ops.*fuse_attention"):
        prune_attention_heads(g, spec="0:0")


@pytest.mark.parametrize("consumer, needle", [
    ("relu", "feeds a Relu"), ("output", "is a graph output"), ("two", "feeds 2 nodes")])
def test_unsliceable_consumer_is_refused_before_any_change(consumer, needle):
    g = toy_transformer(layers=2, consumer=consumer)
    text = str(g)
    with pytest.raises(PruneError, match=needle):
        prune_attention_heads(g, spec="0:1")
    assert str(g) == text


# -- the pass manager and the PassContext ---------------------------------------------------------------
def test_pass_receives_calibration_from_the_context_and_reports():
    g = toy_transformer(layers=2)
    cal = toy_feeds(g, n=3)
    pm = PassManager(parse_pipeline("prune_heads{fraction=0.25;importance=contribution}"), verify_each=True,
                     context=PassContext(calibration=cal))
    pm.run(g)
    report = pm.context.reports["prune_heads"]
    assert report["heads_removed"] == 2 and report["drift"]["feeds"] == 3
    (step,) = pm.applied()
    assert step["name"] == "prune_heads" and step["options"]["fraction"] == 0.25 and step["report"] is report
    assert pm.records[0].rewrites == 2


def test_spec_option_through_the_pipeline_text_and_default_context():
    g = toy_transformer(layers=2)
    pm = PassManager(parse_pipeline("prune_heads{spec=0:1,1:2}"))
    pm.run(g)
    assert pm.context.reports["prune_heads"]["removed"] == {"0": [1], "1": [2]}


def test_pruning_then_int8_quantization_share_the_calibration_data():
    g = toy_transformer(layers=2, heads=4)
    cal = toy_feeds(g, n=4)
    float_pruned = copy.deepcopy(g)
    prune_attention_heads(float_pruned, spec="0:1,1:0,1:3")
    steps = insert_pass(insert_pass(["canonicalize"], ("prune_heads", {"spec": "0:1,1:0,1:3"})),
                        "quantize_int8", ("fuse_", "prune_"))
    pm = PassManager(steps, verify_each=True, context=PassContext(calibration=cal))
    pm.run(g)
    assert [s["name"] for s in pm.applied()] == ["canonicalize", "prune_heads", "quantize_int8"]
    assert {"prune_heads", "quantize_int8"} <= set(pm.context.reports)
    heads = [n.attrs["num_heads"] for n in g.nodes if "Attention" in n.op_type]
    assert heads == [3, 2]
    out = g.outputs[0].name
    got, want = compiler.interpret(g, cal[0])[out], compiler.interpret(float_pruned, cal[0])[out]
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.mean() > 0.99, cos.mean()


def test_insert_pass_puts_opt_in_passes_after_fusion():
    steps = insert_pass(DEFAULT_PIPELINE, ("prune_heads", {"fraction": 0.25}))
    names = [n for n, _ in steps]
    last_fusion = max(i for i, n in enumerate(names) if n.startswith("fuse_"))
    assert names.index("prune_heads") == last_fusion + 1 and names[-1] == "eliminate_dead_code"
    steps = insert_pass(steps, "quantize_int8", ("fuse_", "prune_"))
    names = [n for n, _ in steps]
    assert names.index("quantize_int8") == names.index("prune_heads") + 1
    assert [n for n, _ in insert_pass(["canonicalize"], "prune_heads")] == ["canonicalize", "prune_heads"]
    with pytest.raises(PipelineError, match="already runs prune_heads"):
        insert_pass(steps, "prune_heads")


# -- calibration data -----------------------------------------------------------------------------------
def two_input_graph(batch=2):
    g = Graph("two")
    ids = g.add_input("input_ids", (batch, 6), DType.int64)
    mask = g.add_input("attention_mask", (batch, 6), DType.int64)
    g.outputs.append(g.add_node("Add", [ids, mask]).outputs[0])
    return g


def test_calibration_layouts():
    g = two_input_graph(batch=2)
    ids = np.arange(48, dtype=np.int64).reshape(8, 6)
    concat = calibration_feeds(g, {"input_ids": ids, "attention_mask": ids + 1})
    assert len(concat) == 4 and np.array_equal(concat[1]["input_ids"], ids[2:4])
    stacked = calibration_feeds(g, {"input_ids": ids.reshape(4, 2, 6), "attention_mask": ids.reshape(4, 2, 6)})
    assert len(stacked) == 4 and np.array_equal(stacked[3]["attention_mask"], ids[6:8])
    indexed = calibration_feeds(g, {f"{n}/{i}": ids[2 * i:2 * i + 2] for n in ("input_ids", "attention_mask")
                                    for i in range(3)})
    assert len(indexed) == 3 and np.array_equal(indexed[2]["input_ids"], ids[4:6])
    listed = calibration_feeds(g, [{"input_ids": ids[:2], "attention_mask": ids[:2]}])
    assert len(listed) == 1


@pytest.mark.parametrize("data, needles", [
    ({"input_ids": np.zeros((4, 6), np.int64)}, ["missing input(s) attention_mask", "input_ids int64[2,6]"]),
    ({"input_ids": np.zeros((4, 6), np.int32), "attention_mask": np.zeros((4, 6), np.int64)},
     ["input_ids has dtype int32, the model's input is int64"]),
    ({"input_ids": np.zeros((5, 6), np.int64), "attention_mask": np.zeros((5, 6), np.int64)},
     ["input_ids has shape [5, 6], which is neither samples along axis 0 [N*2,6]"]),
    ({"input_ids": np.zeros((4, 6), np.int64), "attention_mask": np.zeros((6, 6), np.int64)},
     ["different numbers of feeds", "input_ids 2, attention_mask 3"]),
    ({"input_ids": np.zeros((4, 6), np.int64), "attention_mask": np.zeros((4, 6), np.int64),
      "token_type_ids": np.zeros((4, 6), np.int64)}, ["unknown key(s) token_type_ids"]),
    ({"input_ids/0": np.zeros((2, 6), np.int64), "input_ids/2": np.zeros((2, 6), np.int64),
      "attention_mask/0": np.zeros((2, 6), np.int64), "attention_mask/1": np.zeros((2, 6), np.int64)},
     ["input_ids has indices [0, 2], not 0..1"]),
    ({"input_ids/0": np.zeros((2, 6), np.int64), "attention_mask": np.zeros((2, 6), np.int64)},
     ["mixes per-feed keys"]),
    ({"input_ids/0": np.zeros((3, 6), np.int64), "attention_mask/0": np.zeros((2, 6), np.int64)},
     ["input_ids has shape [3, 6], the model's input is [2, 6]"]),
    ({}, ["missing input(s) input_ids, attention_mask"]),
])
def test_calibration_mismatch_names_the_inputs(data, needles):
    with pytest.raises(CalibrationError) as e:
        calibration_feeds(two_input_graph(), data)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_load_calibration_refuses_pickles_and_non_archives(tmp_path):
    good = tmp_path / "cal.npz"
    np.savez(good, input_ids=np.zeros((2, 6), np.int64), attention_mask=np.ones((2, 6), np.int64))
    assert sorted(load_calibration(good)) == ["attention_mask", "input_ids"]
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, input_ids=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CalibrationError, match="without pickle"):
        load_calibration(pickled)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(CalibrationError, match="single array"):
        load_calibration(single)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(CalibrationError, match="junk.npz"):
        load_calibration(junk)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "missing.npz")


# -- the CLI's bad input --------------------------------------------------------------------------------
def aotc(*args):
    return subprocess.run([sys.executable, "-m", "aotc.cli", *args], capture_output=True, text=True)


def assert_user_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and err.startswith("error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, f"{n!r} not in: {err}"


def test_pruning_step_helper_for_cli_commands():
    from aotc.pruning_options import PRUNE_HEADS_AFTER, pruning_step
    assert pruning_step(None, None) is None
    assert pruning_step(0.25, None, 2, "drift", "cal.npz") == (
        ("prune_heads", {"min_per_layer": 2, "fraction": 0.25, "importance": "drift"}), PRUNE_HEADS_AFTER)
    assert pruning_step(None, "0:1", calibration=None) == (("prune_heads", {"min_per_layer": 1, "spec": "0:1"}),
                                                           PRUNE_HEADS_AFTER)
    assert pruning_step(0.5, None, importance="weight")[0][1]["importance"] == "weight"
    assert pruning_step(0.5, None, calibration="c.npz", samples=4)[0][1]["samples"] == 4
    with pytest.raises(compiler.AotcError, match="--prune-heads-min-per-layer only"):
        pruning_step(None, None, min_per_layer=3)


@pytest.fixture
def relu_model(tmp_path):
    import onnx
    from oracle import single_op_model
    path = tmp_path / "relu.onnx"
    onnx.save(single_op_model("Relu", [("x", np.zeros((2, 3), np.float32))]), path)
    return path


@pytest.mark.parametrize("args, needles", [
    (["--prune-heads", "1.5"], ["strictly between 0 and 1"]),
    (["--prune-heads", "0"], ["strictly between 0 and 1"]),
    (["--prune-heads", "0.25"], ["--calibration FILE.npz"]),
    (["--prune-heads", "0.2", "--prune-heads-spec", "0:1"], ["give one of them"]),
    (["--prune-heads-importance", "weight"], ["only take(s) effect with --prune-heads"]),
    (["--prune-heads-spec", "0:0"], ["no Attention ops"]),
    (["--prune-heads", "0.5", "--prune-heads-importance", "weight"], ["no Attention ops"]),
])
def test_cli_bad_pruning_input(relu_model, tmp_path, args, needles):
    assert_user_error(aotc("optimize", str(relu_model), "-o", str(tmp_path / "o.onnx"), *args), *needles)


def test_cli_calibration_mismatch(relu_model, tmp_path):
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.zeros((4, 3), np.float64), y=np.zeros(3, np.float32))
    assert_user_error(aotc("optimize", str(relu_model), "-o", str(tmp_path / "o.onnx"), "--prune-heads-spec", "0:0",
                           "--calibration", str(cal)), "x has dtype float64", "unknown key(s) y", "x float32[2,3]")


# -- MiniLM-L6 ------------------------------------------------------------------------------------------
# Calibration sentences: what head importance is scored on.
CALIBRATION_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She opened the window to let the cool evening air into the room.",
    "Interest rates were raised by a quarter of a percentage point.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Our flight to Lisbon was delayed by three hours because of fog.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "He has been learning to play the cello since he was seven.",
    "The museum's new exhibition features paintings from the Dutch Golden Age.",
    "Please restart the router if the connection keeps dropping.",
    "A strong earthquake shook the coastal city early this morning.",
    "The committee will announce the winners of the poetry prize next week.",
    "Children were building sandcastles along the shore.",
    "The software update fixes a bug that drained the battery overnight.",
    "Volcanic ash grounded hundreds of flights across northern Europe.",
    "My grandmother grows tomatoes, beans and courgettes in her garden.",
    "The defender cleared the ball off the line in the final minute.",
    "Researchers sequenced the genome of an ancient strain of wheat.",
    "Is there a pharmacy open near the train station on Sundays?",
    "The orchestra tuned their instruments before the concert began.",
    "Shares of the chip maker rose after strong quarterly earnings.",
    "The hikers reached the summit just before the storm rolled in.",
    "Compile the project with optimizations enabled for the benchmark.",
    "The novel follows three generations of a family in rural Ireland.",
    "Wash your hands thoroughly before handling food.",
    "The city council approved a plan to add more bicycle lanes.",
    "A migrating flock of geese flew south in a perfect V.",
    "The lawyer argued that the contract had never been signed.",
    "Solar panels on the roof now cover most of the household's electricity.",
    "He forgot his umbrella and arrived at the office soaking wet.",
    "The vaccine trial enrolled thousands of volunteers on four continents.",
    "Our cat refuses to eat anything except one brand of salmon.",
    "The bridge will be closed for repairs throughout the summer.",
]

# Held-out sentences: what the pruned model is judged on (never used for scoring).
HELD_OUT_SENTENCES = [
    "A man is playing a guitar on the street corner.",
    "The stock market closed lower amid fears of a recession.",
    "Scientists discovered a new species of frog in the rainforest.",
    "I would like to book a table for two at eight o'clock.",
    "The train was cancelled, so we took a bus instead.",
    "Heavy rain caused flooding in several low-lying neighbourhoods.",
    "The team celebrated their victory with a parade through the town.",
    "Add the onions to the pan and fry them until golden.",
    "How do I reset my password if I no longer have access to my email?",
    "The telescope captured images of a galaxy billions of light years away.",
    "She was promoted to head of the engineering department.",
    "The children laughed at the clown's silly tricks.",
    "Electric cars are becoming cheaper to buy and to run.",
    "The ancient temple was rediscovered by archaeologists in 1911.",
    "Drink plenty of water when exercising in hot weather.",
    "The central bank kept inflation targets unchanged this quarter.",
    "A dog chased a ball across the park.",
    "The hospital opened a new wing for cancer treatment.",
    "Our neighbours are renovating their kitchen and the noise is constant.",
    "The court ruled that the law was unconstitutional.",
    "He plays chess online every evening after dinner.",
    "The glacier has retreated by almost a kilometre in twenty years.",
    "Please submit your expense report by Friday afternoon.",
    "The bakery on the corner sells the best croissants in town.",
    "A new study links poor sleep to a higher risk of heart disease.",
    "The band released their first album in over a decade.",
    "Firefighters battled the wildfire for three days.",
    "Mathematics is the language in which the universe is written.",
    "The app crashes whenever I try to upload a photo.",
    "They adopted two kittens from the animal shelter.",
    "The prime minister met with union leaders to discuss wages.",
    "Fresh snow covered the mountains overnight.",
    "The professor explained the theory of relativity with simple examples.",
    "My phone battery dies before lunchtime every day.",
    "The festival attracts musicians from all over the world.",
    "Wind turbines were installed off the northern coast.",
    "The thief was caught on camera leaving the jewellery shop.",
    "Knead the dough for ten minutes until it is smooth and elastic.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Tickets for the final sold out within minutes.",
    "The library extended its opening hours during exam season.",
    "A woman is slicing tomatoes in the kitchen.",
    "Two boys are riding bicycles down a hill.",
    "The company announced plans to cut two thousand jobs.",
    "The river burst its banks after days of torrential rain.",
    "Learning a second language can improve memory.",
    "The painting was sold at auction for a record price.",
    "Turn left at the traffic lights and the hotel is on your right.",
    "The virus spreads mainly through respiratory droplets.",
    "She finished the marathon in under four hours.",
    "The government introduced a tax on sugary drinks.",
    "An old lighthouse stands at the end of the pier.",
    "The database query takes too long when the table is large.",
    "Whales migrate thousands of miles to their breeding grounds.",
    "The actor won an award for his role in the historical drama.",
    "Can you recommend a good book about the history of Rome?",
    "The farmers are worried about the long drought.",
    "Our new office has a view of the harbour.",
    "The referee showed the striker a red card.",
    "Quantum computers could break many current encryption schemes.",
    "A bird is building a nest in the old oak tree.",
    "The museum is free to visit on the first Sunday of each month.",
    "Prices of fresh vegetables rose sharply this winter.",
    "The detective found a hidden letter behind the fireplace.",
    "The toddler fell asleep in the back of the car.",
    "Engineers tested the new bridge design in a wind tunnel.",
    "The concert was postponed because the singer was ill.",
    "Coffee production has been hit by unusual frosts in Brazil.",
    "The students protested against higher tuition fees.",
    "He repaired the broken chair with glue and a few screws.",
    "The airline lost my suitcase on the way to Tokyo.",
    "Rainforests store enormous amounts of carbon.",
    "The chef prepared a five-course meal for the guests.",
    "Vote counting continued late into the night.",
    "The puppy chewed through the television cable.",
    "A comet will be visible to the naked eye next month.",
    "The software license expires at the end of the year.",
    "The crowd cheered as the runners crossed the finish line.",
    "The recipe works just as well with almond milk.",
    "An earthquake of magnitude six struck off the coast of Chile.",
]

SEQ = 24            # every sentence above fits in 24 tokens
CAL_BATCH = 8       # calibration feeds of 8 sentences
FRACTION = 0.25
RANDOM_SEEDS = (0, 1, 2, 3, 4)


@contextlib.contextmanager
def one_blas_thread():
    """The scoring runs the graph ~40 times per feed; on a shared 2-core box one BLAS thread per process
    is several times faster than oversubscribed ones."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def tokenize(sentences, seq=SEQ):
    from tokenizers import Tokenizer
    from models import minilm_dir
    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_padding(length=seq)
    tok.enable_truncation(max_length=seq)
    enc = tok.encode_batch(list(sentences))
    assert all(sum(e.attention_mask) < seq for e in enc), "a sentence fills the whole sequence"
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}


def mean_pooled(hidden, mask):
    m = mask[..., None].astype(np.float64)
    emb = (hidden * m).sum(1) / m.sum(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def fused_minilm(cache, batch, seq=SEQ):
    from models import export_minilm
    g = compiler.load_onnx(export_minilm(cache, "legacy", "eager", dynamic=True),
                           {"input_ids": (batch, seq), "attention_mask": (batch, seq)})
    PassManager(None).run(g)
    return g


def prune_torch_heads(bert, spec: dict[int, list[int]]) -> None:
    """Remove heads from a transformers BertModel by slicing its Linear layers (transformers 5 dropped
    `prune_heads`): rows of query/key/value, input columns of attention.output.dense."""
    import torch
    for layer, heads in spec.items():
        att = bert.encoder.layer[layer].attention
        d = att.self.attention_head_size
        keep = [h for h in range(att.self.num_attention_heads) if h not in heads]
        idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
        for lin in (att.self.query, att.self.key, att.self.value):
            lin.weight = torch.nn.Parameter(lin.weight.detach()[idx].clone())
            lin.bias = torch.nn.Parameter(lin.bias.detach()[idx].clone())
            lin.out_features = len(idx)
        dense = att.output.dense
        dense.weight = torch.nn.Parameter(dense.weight.detach()[:, idx].clone())
        dense.in_features = len(idx)
        att.self.num_attention_heads, att.self.all_head_size = len(keep), len(idx)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [
    {0: [0, 5, 11], 2: [3], 5: list(range(11))},
    {layer: [h for h in range(12) if (h + layer) % 3] for layer in range(6)},
])
def test_minilm_spec_pruning_matches_torch_surgery(model_cache, spec):
    import torch
    from models import load_minilm, minilm_feeds
    feeds = minilm_feeds(batch=2, seq=SEQ, seed=5)
    g = fused_minilm(model_cache, 2)
    pm = PassManager([("prune_heads", {"spec": spec})], verify_each=True)
    pm.run(g)
    assert pm.context.reports["prune_heads"]["heads_removed"] == sum(map(len, spec.values()))
    got = compiler.interpret(g, feeds)["last_hidden_state"]
    model = load_minilm("eager")
    prune_torch_heads(model.bert, spec)
    with torch.no_grad():
        want = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    err = float(np.abs(got - want).max())
    assert err <= 1e-5, f"max |aotc - torch| = {err}"


@pytest.mark.slow
def test_minilm_dynamo_sdpa_export_prunes_like_torch(model_cache):
    """The dynamo exporter with SDPA attention: another spelling of attention, the same surgery."""
    import torch
    from models import export_minilm, load_minilm, minilm_feeds
    spec = {1: [0, 1, 2, 3], 3: [7], 4: [11, 2]}
    g = compiler.load_onnx(export_minilm(model_cache, "dynamo", "sdpa"))
    PassManager(insert_pass(DEFAULT_PIPELINE, ("prune_heads", {"spec": spec})), verify_each=True).run(g)
    feeds = minilm_feeds(seed=11)
    got = compiler.interpret(g, feeds)["last_hidden_state"]
    model = load_minilm("sdpa")
    prune_torch_heads(model.bert, spec)
    with torch.no_grad():
        want = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    err = float(np.abs(got - want).max())
    assert err <= 1e-5, f"max |aotc - torch| = {err}"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["legacy17", "dynamo"])
def test_gpt2_block_pruning_equals_zeroing_heads(model_cache, variant):
    """A causal decoder whose Q/K/V come from one fused projection split three ways, with a constant
    boolean causal mask: pruning must equal zeroing the heads' output-projection rows."""
    from test_model_gpt2 import export_gpt2, token_ids
    g = compiler.load_onnx(export_gpt2(model_cache, variant))
    PassManager(None).run(g)
    spec = {0: [1, 3], 1: [0]}
    want_graph = zero_heads(g, spec)
    feeds = {"ids": token_ids()}
    pm = PassManager([("prune_heads", {"spec": spec})], verify_each=True)
    pm.run(g)
    assert [n.attrs["num_heads"] for n in g.nodes if n.op_type == "Attention"] == [2, 3]
    got, want = compiler.interpret(g, feeds), compiler.interpret(want_graph, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def evaluate_pruning(cache) -> dict:
    """Prune 25% of MiniLM's heads by each importance method (drift scored on the calibration sentences)
    and by random rankings; the mean cosine of held-out mean-pooled embeddings vs the unpruned model."""
    cal_feeds = tokenize(CALIBRATION_SENTENCES)
    held = tokenize(HELD_OUT_SENTENCES)
    g_eval = fused_minilm(cache, len(HELD_OUT_SENTENCES))
    base = mean_pooled(compiler.interpret(g_eval, held)["last_hidden_state"], held["attention_mask"])

    def cosine_after(removed):
        g = copy.deepcopy(g_eval)
        prune_attention_heads(g, spec=removed, measure_drift=False)
        compiler.verify(g)
        emb = mean_pooled(compiler.interpret(g, held)["last_hidden_state"], held["attention_mask"])
        return float((emb * base).sum(1).mean())

    result = {"methods": {}, "random": []}
    g_cal = fused_minilm(cache, CAL_BATCH)
    for method in ("drift",):
        g = copy.deepcopy(g_cal)
        report = prune_attention_heads(g, fraction=FRACTION, importance=method, calibration=cal_feeds)
        compiler.verify(g)
        removed = {int(k): v for k, v in report["removed"].items()}
        result["methods"][method] = {"report": report, "cosine": cosine_after(removed), "graph": g}
    for seed in RANDOM_SEEDS:
        report = prune_attention_heads(copy.deepcopy(g_cal), fraction=FRACTION, importance="random", seed=seed,
                                       measure_drift=False)
        result["random"].append(cosine_after({int(k): v for k, v in report["removed"].items()}))
    return result


@pytest.fixture(scope="module")
def pruned_quarter(model_cache):
    with one_blas_thread():
        return evaluate_pruning(model_cache)


@pytest.mark.slow
def test_minilm_quarter_pruned_beats_random(pruned_quarter):
    drift = pruned_quarter["methods"]["drift"]
    report, cos = drift["report"], drift["cosine"]
    rand = pruned_quarter["random"]
    print(format_report(report))
    print(f"held-out mean cosine: drift {cos:.4f}, random {np.mean(rand):.4f} ({', '.join(f'{c:.4f}' for c in rand)})")
    assert report["heads_before"] == 72 and report["heads_removed"] == 18
    assert all(layer["heads_after"] >= 1 for layer in report["layers"])
    assert report["params_after"] < report["params_before"] and report["flops_after"] < report["flops_before"]
    # 18 heads × (3 × [384×32] + 3 × [32] + [32×384]) parameters
    assert report["params_before"] - report["params_after"] == 18 * (4 * 384 * 32 + 3 * 32)
    assert report["attention_params_after"] * 4 == report["attention_params_before"] * 3  # every head costs the same
    assert report["drift"]["feeds"] == len(CALIBRATION_SENTENCES) // CAL_BATCH
    assert cos > np.mean(rand) + 0.02, (cos, rand)
    assert cos > 0.95


@pytest.mark.slow
def test_minilm_pruned_graph_runs_and_is_smaller(pruned_quarter):
    g = pruned_quarter["methods"]["drift"]["graph"]
    compiler.verify(g)
    atts = [n for n in g.nodes if n.op_type == "Attention"]
    assert sum(n.attrs["num_heads"] for n in atts) == 54
    for n in atts:
        h = n.attrs["num_heads"]
        assert n.inputs[2].shape == (384, 32 * h) and n.outputs[0].shape == (CAL_BATCH, SEQ, 32 * h)
    out = compiler.interpret(g, tokenize(CALIBRATION_SENTENCES[:CAL_BATCH]))["last_hidden_state"]
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_minilm_cli_prunes_with_calibration(model_cache, tmp_path):
    from models import export_minilm
    cal = tmp_path / "cal.npz"
    np.savez(cal, **tokenize(CALIBRATION_SENTENCES[:8]))
    res = aotc("optimize", str(export_minilm(model_cache, "legacy", "eager", dynamic=True)), "-o",
               str(tmp_path / "pruned.onnx"), "-s", f"input_ids=4x{SEQ}", "-s", f"attention_mask=4x{SEQ}",
               "--prune-heads", "0.25", "--calibration", str(cal), "--prune-heads-importance", "contribution",
               "--report", str(tmp_path / "report.json"), "--verify")
    assert res.returncode == 0, res.stderr
    assert "removed 18 of 72 heads" in res.stderr and "output drift on 2 calibration feed(s)" in res.stderr
    import json
    steps = json.loads((tmp_path / "report.json").read_text())
    (prune,) = [s for s in steps if s["name"] == "prune_heads"]
    assert prune["report"]["heads_removed"] == 18


@pytest.mark.slow
@pytest.mark.parametrize("route", ["fused", "decomposed"])
def test_pruned_minilm_compiles_for_x86(pruned_quarter, tmp_path, route):
    """The pruned graph through the x86-avx512 target and the runtime, against the interpreter: with the
    target's own Attention/FusedMatMul/SkipLayerNormalization kernels, and decomposed into primitives."""
    from x86_helpers import assert_close, compile_and_run, has_avx512
    if not has_avx512():
        pytest.skip("needs an x86-64 CPU with AVX-512")
    g = copy.deepcopy(pruned_quarter["methods"]["drift"]["graph"])
    if route == "decomposed":
        PassManager(["decompose_fused_ops"], verify_each=True).run(g)
    feeds = tokenize(CALIBRATION_SENTENCES[:CAL_BATCH])
    got = compile_and_run(g, feeds, tmp_path)
    want = compiler.interpret(g, feeds)
    for name, ref in want.items():
        assert_close(got[name], ref, f"pruned MiniLM output {name}", rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [False, True])
def test_aotc_compile_with_pruning(model_cache, tmp_path, quantize):
    """`aotc compile --prune-heads-spec ... [--quantize int8 --calibration ...]`: the bundle runs, matches the
    interpreter on the same pipeline, and its manifest carries the pruning report."""
    import json
    from models import export_minilm
    from aotc.passes import PassContext
    from x86_helpers import has_avx512
    if not has_avx512():
        pytest.skip("needs an x86-64 CPU with AVX-512")
    spec = "0:5,0:7,1:1,1:2,3:2,4:9"
    cal = tmp_path / "cal.npz"
    np.savez(cal, **tokenize(CALIBRATION_SENTENCES[:8]))
    args = ["--quantize", "int8", "--calibration", str(cal)] if quantize else []
    res = aotc("compile", str(export_minilm(model_cache, "legacy", "eager", dynamic=True)), "-t", "x86-avx512",
               "-o", str(tmp_path / "bundle"), "-s", f"input_ids=1x{SEQ}", "-s", f"attention_mask=1x{SEQ}",
               "--prune-heads-spec", spec, *args)
    assert res.returncode == 0, res.stderr
    assert "removed 6 of 72 heads" in res.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    names = [p["name"] for p in manifest["passes"]]
    assert names.index("prune_heads") > names.index("fuse_attention")
    assert ("quantize_int8" in names) == quantize and (not quantize or names.index("quantize_int8") > names.index(
        "prune_heads"))
    (prune,) = [p for p in manifest["passes"] if p["name"] == "prune_heads"]
    assert prune["report"]["removed"] == {"0": [5, 7], "1": [1, 2], "3": [2], "4": [9]}
    feeds = tokenize(HELD_OUT_SENTENCES[:1])
    np.savez(tmp_path / "in.npz", **feeds)
    out = tmp_path / "out.npz"
    res = aotc("run", str(tmp_path / "bundle"), "-i", str(tmp_path / "in.npz"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    g = compiler.load_onnx(export_minilm(model_cache, "legacy", "eager", dynamic=True),
                           {"input_ids": (1, SEQ), "attention_mask": (1, SEQ)})
    steps = [s["name"] if not s["options"] else (s["name"], s["options"]) for s in manifest["passes"]]
    PassManager(steps, context=PassContext(calibration=load_calibration(cal))).run(g)
    want = compiler.interpret(g, feeds)["last_hidden_state"]
    np.testing.assert_allclose(np.load(out)["last_hidden_state"], want, rtol=1e-4, atol=1e-4)

"""Import → export gives a valid ONNX model with the same outputs in onnxruntime."""
import numpy as np
import onnx
import pytest

from aotc import compiler
from aotc.compiler.onnx_export import save_onnx, to_onnx
from models import export_minilm, minilm_feeds
from oracle import assert_matches, ort_run, single_op_model


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_minilm_round_trip(model_cache, exporter, tmp_path):
    src = export_minilm(model_cache, exporter, "sdpa")
    graph = compiler.load_onnx(src)
    out = tmp_path / "static.onnx"
    save_onnx(graph, out)
    onnx.checker.check_model(str(out), full_check=True)
    feeds = minilm_feeds(seed=5)
    want = ort_run(str(src), feeds)["last_hidden_state"]
    got = ort_run(str(out), feeds)["last_hidden_state"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # And the exported model re-imports to the same graph.
    again = compiler.load_onnx(out)
    assert again.op_histogram() == graph.op_histogram()


# Parameters that are attributes in aotc and inputs in ONNX go back to the right form per opset.
PARAM_CASES = [
    ("Squeeze", 11, [("x", np.zeros((1, 3, 1), np.float32))], {"axes": [0, 2]}, []),
    ("Squeeze", 13, [("x", np.zeros((1, 3, 1), np.float32))], {}, [("axes", np.array([2], np.int64))]),
    ("ReduceMean", 17, [("x", np.arange(24, dtype=np.float32).reshape(2, 3, 4))], {"axes": [1], "keepdims": 0}, []),
    ("ReduceMean", 18, [("x", np.arange(24, dtype=np.float32).reshape(2, 3, 4))], {},
     [("axes", np.array([-1], np.int64))]),
    ("Split", 13, [("x", np.arange(10, dtype=np.float32))], {}, [("split", np.array([3, 7], np.int64))]),
    ("Split", 18, [("x", np.arange(10, dtype=np.float32))], {"num_outputs": 3}, []),
    ("Clip", 13, [("x", np.linspace(-3, 3, 12, dtype=np.float32))], {},
     [("min", np.array(-1, np.float32)), ("max", np.array(2, np.float32))]),
    ("Clip", 13, [("x", np.linspace(-3, 3, 12, dtype=np.float32))], {}, [("min", None), ("max", np.array(2, np.float32))]),
    ("Slice", 13, [("x", np.arange(20, dtype=np.float32).reshape(4, 5))], {},
     [("starts", np.array([3, 1], np.int64)), ("ends", np.array([0, 100], np.int64)),
      ("axes", np.array([0, 1], np.int64)), ("steps", np.array([-1, 2], np.int64))]),
    ("Pad", 13, [("x", np.ones((2, 3), np.float32))], {"mode": "constant"},
     [("pads", np.array([1, 0, 0, 2], np.int64)), ("value", np.array(7, np.float32))]),
    ("Trilu", 14, [("x", np.ones((4, 4), np.float32))], {"upper": 0}, [("k", np.array(1, np.int64))]),
    ("Cast", 13, [("x", np.array([1.7, -2.5], np.float32))], {"to": onnx.TensorProto.INT32}, []),
]


@pytest.mark.parametrize("op,opset,inputs,attrs,consts", PARAM_CASES,
                         ids=[f"{c[0]}-opset{c[1]}-{i}" for i, c in enumerate(PARAM_CASES)])
def test_parameter_round_trip(op, opset, inputs, attrs, consts):
    n_out = 3 if attrs.get("num_outputs") == 3 else 2 if op == "Split" else 1
    model = single_op_model(op, inputs, attrs, consts, num_outputs=n_out, opset=opset)
    graph = compiler.load_onnx(model)
    exported = to_onnx(graph)
    onnx.checker.check_model(exported, full_check=True)
    feeds = dict(inputs)
    want = ort_run(model, feeds)
    got = ort_run(exported, feeds)
    for k in want:
        assert_matches(got[k], want[k], k)

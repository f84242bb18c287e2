"""Bad input through the CLI: one clear paragraph, exit code 2, no traceback."""
import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from oracle import single_op_model


def aotc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aotc.cli", *args], capture_output=True, text=True, cwd=cwd)


def assert_user_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert err.startswith("error: ") and "\n" not in err, err  # exactly one paragraph
    for n in needles:
        assert n in err, f"{n!r} not in: {err}"
    return err


def usage_text(stderr: str) -> str:
    """click's usage error with rich's box drawing taken out and its lines joined (rich wraps at the width)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stderr).split())


def assert_usage_error(res, *needles):
    """A command-line mistake: click's usage message, exit 2, never an internal error."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith("Usage: "), res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    text = usage_text(res.stderr)
    for n in needles:
        assert n in text, f"{n!r} not in: {text}"


@pytest.fixture
def small_model(tmp_path):
    x = np.zeros((2, 3), np.float32)
    path = tmp_path / "relu.onnx"
    onnx.save(single_op_model("Relu", [("x", x)]), path)
    return path


def test_missing_file(tmp_path):
    assert_user_error(aotc("inspect", str(tmp_path / "nope.onnx")), "does not exist", "nope.onnx")


def test_truncated_file(small_model, tmp_path):
    data = small_model.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    assert_user_error(aotc("inspect", str(bad)), "truncated.onnx", "truncated")


def test_random_bytes(tmp_path):
    bad = tmp_path / "random.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_user_error(aotc("inspect", str(bad)), "random.onnx", "not")


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.onnx"
    bad.write_bytes(b"")
    assert_user_error(aotc("inspect", str(bad)), "empty")


def test_every_unsupported_op_named_in_one_message(tmp_path):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok_relu"),
        helper.make_node("Det", ["a"], ["b"], name="det_1"),
        helper.make_node("Unique", ["a"], ["c"], name="unique_1"),
        helper.make_node("Unique", ["a"], ["d"], name="unique_2"),
        helper.make_node("FusedMatMul", ["a", "a"], ["e"], name="ms_fused", domain="com.microsoft"),
    ]
    outs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in "bcde"]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, path)
    err = assert_user_error(aotc("inspect", str(path)), "Det ×1", "'det_1'", "Unique ×2", "'unique_1'",
                            "'unique_2'", "com.microsoft::FusedMatMul ×1", "'ms_fused'")
    assert "3 op type(s)" in err
    # The report is still printed, marking what cannot be compiled.
    res = aotc("inspect", str(path), "--json")
    report = json.loads(res.stdout)
    assert set(report["unsupported_ops"]) == {"Det", "Unique", "com.microsoft::FusedMatMul"}
    assert report["unsupported_ops"]["Unique"]["count"] == 2


def test_missing_input_shape_names_every_dynamic_input(tmp_path):
    a = helper.make_tensor_value_info("tokens", onnx.TensorProto.FLOAT, ["batch", "seq"])
    b = helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["tokens", "mask"], ["y"])], "g", [a, b], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    assert_user_error(aotc("inspect", str(path)), "'tokens'", "'mask'", "--input-shape tokens=NxN",
                      "--input-shape mask=Nx16")
    # Naming one is not enough: the other is still reported.
    err = assert_user_error(aotc("inspect", str(path), "--input-shape", "tokens=2x16"), "'mask'")
    assert "'tokens'" not in err
    res = aotc("inspect", str(path), "--input-shape", "tokens=2x16", "--input-shape", "mask=2x16")
    assert res.returncode == 0, res.stderr
    assert "tokens: float32[2x16]" in res.stdout


def test_bad_input_shape_flags(small_model):
    assert_usage_error(aotc("inspect", str(small_model), "--input-shape", "x"), "NAME=DIMS")
    assert_user_error(aotc("inspect", str(small_model), "--input-shape", "nosuch=1x2"), "'nosuch'", "'x'")
    assert_user_error(aotc("inspect", str(small_model), "--input-shape", "x=5x5"), "'x'", "5x5")


def _external_data_model(tmp_path, location):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = numpy_helper.from_array(w, "w")
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y],
                                                initializer=[t]), opset_imports=[helper.make_opsetid("", 17)])
    d = tmp_path / "model"
    d.mkdir(parents=True)
    path = d / "model.onnx"
    onnx.save(model, path)
    return path, w


def test_external_data_escaping_the_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(np.ones(6, np.float32).tobytes())
    path, _ = _external_data_model(tmp_path, "../secret.bin")
    assert_user_error(aotc("inspect", str(path)), "'w'", "../secret.bin", "outside the model's folder")
    path2, _ = _external_data_model(tmp_path / "absolute", str(tmp_path / "secret.bin"))
    assert_user_error(aotc("inspect", str(path2)), "outside the model's folder")


def test_external_data_beside_the_model_is_read(tmp_path):
    from aotc import compiler
    path, w = _external_data_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(w.tobytes())
    g = compiler.load_onnx(path)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(compiler.interpret(g, {"x": x})["y"], x + w)
    (path.parent / "weights.bin").write_bytes(w.tobytes()[:10])
    assert_user_error(aotc("inspect", str(path)), "truncated")


def test_opset_out_of_range(tmp_path):
    x = np.zeros((2, 3), np.float32)
    path = tmp_path / "old.onnx"
    onnx.save(single_op_model("Relu", [("x", x)], opset=9), path)
    assert_user_error(aotc("inspect", str(path)), "opset 9", "11")


def test_debug_shows_traceback(tmp_path):
    res = aotc("--debug", "inspect", str(tmp_path / "nope.onnx"))
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_inspect_report(small_model):
    res = aotc("inspect", str(small_model), "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["inputs"] == [{"name": "x", "dtype": "float32", "shape": [2, 3]}]
    assert r["op_histogram"] == {"Relu": 1} and r["unsupported_ops"] == {} and r["error"] is None
    assert r["static_graph"]["flops"] == 6


def test_help_lists_commands():
    res = aotc("--help")
    assert res.returncode == 0 and "inspect" in res.stdout

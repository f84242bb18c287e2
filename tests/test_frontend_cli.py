"""The command-line way into the frontend: example-input specs, FILE.py:factory loading,
`aotc trace`, and the documented control-flow example end to end."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aotc import compiler
from aotc.compiler.frontend import ModelSpecError, is_python_model_spec, load_python_model, parse_example_inputs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "control_flow" / "model.py"


def test_parse_example_inputs():
    ex = parse_example_inputs(["input_ids=1x128:int64", "x=2x3", "flag=scalar:bool", "n=4:int32"])
    assert ex["input_ids"].shape == (1, 128) and ex["input_ids"].dtype == np.int64 and (ex["input_ids"] == 1).all()
    assert ex["x"].shape == (2, 3) and ex["x"].dtype == np.float32
    assert ex["flag"].shape == () and ex["flag"].dtype == np.bool_
    assert ex["n"].dtype == np.int32


def test_python_model_specs_are_told_from_model_files():
    assert is_python_model_spec("examples/control_flow/model.py:make_model")
    assert not is_python_model_spec("model.onnx") and not is_python_model_spec("model.py")
    assert not is_python_model_spec("C:/models/m.onnx")


def test_parse_example_input_from_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    ex = parse_example_inputs([f"a={tmp_path / 'a.npy'}"])
    assert ex["a"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("spec,needle", [("x", "NAME=DIMS"), ("x=2xq", "cannot read dimensions"),
                                         ("x=2:cplx", "unknown dtype"), ("x=/nope.npy", "does not exist")])
def test_bad_example_input_specs(spec, needle):
    with pytest.raises(ModelSpecError, match=needle):
        parse_example_inputs([spec])


def test_duplicate_example_input():
    with pytest.raises(ModelSpecError, match="twice"):
        parse_example_inputs(["x=1", "x=2"])


def test_load_python_model_on_the_example():
    graph = load_python_model(f"{EXAMPLE}:make_model", parse_example_inputs(["x=2x16"]))
    assert [v.name for v in graph.inputs] == ["x"] and graph.outputs[0].shape == (2, 4)
    assert graph.op_histogram()["Where"] >= 5


def test_example_inputs_that_do_not_fit_the_model():
    from aotc.compiler import AotcError
    with pytest.raises(AotcError, match=r"do not fit EarlyExitClassifier.forward\(x\)"):
        load_python_model(f"{EXAMPLE}:make_model", parse_example_inputs(["y=2x16"]))


def test_factory_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def make():\n    return 3\n\ndef boom():\n    raise RuntimeError('no weights')\n")
    with pytest.raises(ModelSpecError, match="returned int"):
        load_python_model(f"{bad}:make", {"x": np.zeros(2, np.float32)})
    with pytest.raises(ModelSpecError, match="RuntimeError: no weights at .*bad.py:5"):
        load_python_model(f"{bad}:boom", {"x": np.zeros(2, np.float32)})
    with pytest.raises(ModelSpecError, match="FILE.py:FACTORY"):
        load_python_model(str(bad), {})
    (tmp_path / "syntax.py").write_text("def f(:\n")
    with pytest.raises(ModelSpecError, match="syntax.py:1"):
        load_python_model(f"{tmp_path / 'syntax.py'}:f", {})


def test_aotc_trace_example_end_to_end(tmp_path):
    """The documented example: traced and optimized by the CLI, the written model matches eager
    PyTorch on inputs taking every path (early exit, 0-2 loop iterations, loud or not)."""
    out = tmp_path / "cf.onnx"
    res = subprocess.run([sys.executable, "-m", "aotc.cli", "trace", f"{EXAMPLE}:make_model",
                          "--example-input", "x=2x16", "-o", str(out), "--optimize", "--verify"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "optimized" in res.stderr and "FusedMatMul" in res.stderr
    graph = compiler.load_onnx(out)
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import model as example
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    m = example.make_model()
    paths = set()
    for i, scale in enumerate([0.05, 0.3, 1.0, 3.0, 10.0, 30.0] * 3):
        x = torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) * scale
        with torch.no_grad():
            want = m(x).numpy()
        got = compiler.interpret(graph, {"x": x.numpy()})["output"]
        np.testing.assert_allclose(got, want, atol=1e-6)
        paths.add(example.paths_taken(m, x))
    assert any("early-exit" in p for p in paths) and any("loop-steps=0" in p for p in paths)
    assert any("loop-steps=1" in p for p in paths) and any("loud=True" in p for p in paths)

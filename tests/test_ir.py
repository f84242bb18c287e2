"""The IR itself: construction, text form, verifier, interpreter and observer."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from aotc import compiler
from aotc.compiler import DType, Graph
from aotc.compiler.errors import InputError, VerificationError
from aotc.compiler.ir import Value
from oracle import ort_run


def small_graph() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", (2, 3), DType.float32)
    w = g.add_const("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    y = g.add_node("MatMul", [x, w], name="proj").outputs[0]
    z = g.add_node("Relu", [y], name="act", output_names=["z"]).outputs[0]
    g.outputs.append(z)
    return g


def test_text_form_is_stable_and_readable():
    text = str(small_graph())
    assert text == str(small_graph())
    assert "%proj:0: float32[2,4] = MatMul(%x, %w)  # proj" in text
    assert "%z: float32[2,4] = Relu(%proj:0)  # act" in text
    assert text.splitlines()[0] == "graph tiny("


def test_copy_is_independent_and_handles_deep_graphs():
    g = small_graph()
    c = g.copy()
    assert str(c) == str(g)
    c.nodes[1].attrs["extra"] = 1
    c.add_node("Neg", [c.outputs[0]], name="neg")
    assert "extra" not in g.nodes[1].attrs and len(g.nodes) == 2
    assert all(v.producer is n for n in c.nodes for v in n.outputs)
    assert c.initializers["w"].const is g.initializers["w"].const  # constants are shared, not copied
    # A chain far deeper than Python's recursion limit (copy.deepcopy would overflow).
    d = Graph("deep")
    v = d.add_input("x", (1,), DType.float32)
    for i in range(3000):
        v = d.add_node("Neg", [v]).outputs[0]
    d.outputs = [v]
    d2 = d.copy()
    x = np.ones(1, np.float32)
    np.testing.assert_array_equal(compiler.interpret(d2, {"x": x})[v.name], x)


def test_interpreter_and_observer():
    g = small_graph()
    seen = []
    x = np.array([[1, -2, 3], [-4, 5, -6]], np.float32)
    out = compiler.interpret(g, {"x": x}, observer=lambda node, vals: seen.append((node.name, vals[0].shape)))
    np.testing.assert_array_equal(out["z"], np.maximum(x @ np.arange(12, dtype=np.float32).reshape(3, 4), 0))
    assert seen == [("proj", (2, 4)), ("act", (2, 4))]


def test_interpreter_rejects_bad_feeds_in_one_message():
    g = small_graph()
    with pytest.raises(InputError) as e:
        compiler.interpret(g, {"x": np.zeros((3, 3), np.float64), "extra": np.zeros(1)})
    msg = str(e.value)
    assert "float64" in msg and "[3, 3]" in msg and "extra" in msg


def test_verifier_accepts_good_graph():
    compiler.verify(small_graph())


def test_verifier_catches_wrong_shape_and_use_before_def():
    g = small_graph()
    g.nodes[1].outputs[0].shape = (4, 2)
    with pytest.raises(VerificationError, match="after pass 'broken_pass'.*inference gives float32\\[2,4\\]"):
        compiler.verify(g, after="broken_pass")
    g = small_graph()
    g.nodes.reverse()
    with pytest.raises(VerificationError, match="not defined before use"):
        compiler.verify(g)
    g = small_graph()
    g.outputs.append(Value("ghost", (1,), DType.float32))
    with pytest.raises(VerificationError, match="ghost"):
        compiler.verify(g)


def test_shape_errors_name_the_node():
    g = Graph()
    a = g.add_input("a", (2, 3), DType.float32)
    b = g.add_input("b", (4, 5), DType.float32)
    with pytest.raises(compiler.AotcError, match="inner dimensions"):
        g.add_node("MatMul", [a, b])


def _if_model(cond_value: bool):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [3])],
                               initializer=[numpy_helper.from_array(np.float32(2), "two")])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ReduceSum", ["s"], ["n"], keepdims=0),
             helper.make_node("Equal", ["n", "three" if cond_value else "four"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    inits = [numpy_helper.from_array(np.int64(3), "three"), numpy_helper.from_array(np.int64(4), "four")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the onnxruntime in use reads
    return model


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_constant_condition_is_inlined(cond):
    model = _if_model(cond)
    g = compiler.load_onnx(model)
    assert "If" not in g.op_histogram()
    x = np.array([1, -2, 3], np.float32)
    np.testing.assert_array_equal(compiler.interpret(g, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_if_on_runtime_value_is_refused_with_advice():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])
    sub = lambda n: helper.make_graph([helper.make_node("Identity", ["x"], [n])], n, [],  # noqa: E731
                                      [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=sub("a"), else_branch=sub("b"), name="dyn_if")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y],
                                                initializer=[numpy_helper.from_array(np.float32(0), "zero")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(compiler.AotcError, match="'dyn_if'.*where"):
        compiler.load_onnx(model)

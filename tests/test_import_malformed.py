"""Malformed models the importer fuzzer (tests/fuzz/) found, minimized: each must be refused with
one paragraph of aotc's own error (exit 2 from the CLI), never another exception.

Each test names the exception the code before this fix raised."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from aotc import compiler
from aotc.compiler.dtypes import DType, UnsupportedDTypeError
from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph
from aotc.compiler.model_summary import summarize_onnx
from oracle import single_op_model

F = TensorProto.FLOAT


def model(nodes, inputs=(("x", [2, 3]),), outputs=(("y", [2, 3]),), inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, F, s) for n, s in outputs], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def refused(m, *needles, error=AotcError, **kwargs):
    with pytest.raises(error) as e:
        compiler.load_onnx(m, **kwargs)
    msg = str(e.value)
    assert msg.strip() and "\n" not in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in: {msg}"
    return msg


def branch(op, out):
    return helper.make_graph([helper.make_node(op, ["x"], [out])], op, [],
                             [helper.make_tensor_value_info(out, F, [2, 3])])


TRUE = numpy_helper.from_array(np.array(True), "c")


# -- graph structure ----------------------------------------------------------------------------
def test_if_without_else_branch():  # StopIteration
    m = model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("Relu", "t"))], inits=[TRUE])
    refused(m, "'if'", "else_branch")


def test_if_branch_output_not_defined():  # KeyError
    bad = branch("Relu", "t")
    bad.output[0].name = "nowhere"
    m = model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=bad, else_branch=branch("Neg", "e"))],
              inits=[TRUE])
    refused(m, "'nowhere'", "then_branch")


def test_if_branch_output_count_differs_from_node():  # silently dropped outputs
    m = model([helper.make_node("If", ["c"], ["y", "z"], name="if", then_branch=branch("Relu", "t"),
                                else_branch=branch("Neg", "e"))], inits=[TRUE])
    refused(m, "1 output(s)", "has 2")


def test_if_condition_with_no_values():  # IndexError
    empty = numpy_helper.from_array(np.zeros((0,), bool), "c")
    m = model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("Relu", "t"),
                                else_branch=branch("Neg", "e"))], inits=[empty])
    refused(m, "condition must hold one value")


@pytest.mark.parametrize("attrs", [dict(value_float=1.0, value_int=2), {}])
def test_constant_needs_exactly_one_value(attrs):  # ValueError: (a,) = node.attribute
    m = model([helper.make_node("Constant", [], ["k"], name="k", **attrs), helper.make_node("Add", ["x", "k"], ["y"])])
    refused(m, "Constant node 'k'", "exactly one")


def test_constant_value_of_the_wrong_attribute_type():  # ValueError: int(b'abc')
    const = helper.make_node("Constant", [], ["k"], name="k")
    const.attribute.append(helper.make_attribute("value_ints", b"abc"))
    refused(model([const, helper.make_node("Add", ["x", "k"], ["y"])]), "value_ints must be of type INTS", "STRING")


def test_variadic_op_with_an_empty_input():  # AttributeError: 'NoneType' has no attribute 'dtype'
    refused(model([helper.make_node("Sum", ["x", "", "x"], ["y"], name="s")]), "Sum", "#1", "empty")


# -- names and attributes ------------------------------------------------------------------------
def _with_bad_utf8(m: onnx.ModelProto, text: bytes) -> bytes:
    data = m.SerializeToString()
    assert data.count(text) == 1
    return data.replace(text, text[:-1] + b"\xff")


def test_name_that_is_not_utf8(tmp_path):  # TypeError sorting bytes and str in `aotc inspect`
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_bad_utf8(single_op_model("Relu", [("x", np.zeros((2, 3), np.float32))]), b"the_Relu"))
    with pytest.raises(AotcError, match="not valid UTF-8"):
        summarize_onnx(path)
    m = onnx.ModelProto()
    m.ParseFromString(path.read_bytes())
    refused(m, "not valid UTF-8", "model.graph.node[0].name")


def test_name_with_a_line_break():  # an UnsupportedOpsError of two paragraphs ("Unsque\nze")
    m = model([helper.make_node("Relu", ["x"], ["y"])])
    m.graph.node[0].op_type = "Re\nlu"
    refused(m, "control characters", "model.graph.node[0].op_type")


def test_string_attribute_that_is_not_utf8():  # UnicodeDecodeError
    m = model([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode=b"\xffconstant")],
              outputs=(("y", [2, 3]),), inits=[numpy_helper.from_array(np.zeros(4, np.int64), "pads")])
    refused(m, "'mode'", "UTF-8")


@pytest.mark.parametrize("value,what", [([1, 2], "single integer, got 2 values"), (1.5, "whole numbers"), (b"abc", "single integer, got str")])
def test_attribute_of_the_wrong_kind(value, what):  # TypeError/ValueError from int(...)
    m = model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=value)])
    refused(m, "'sm'", "'axis'", what)


def test_attribute_of_a_type_aotc_does_not_read():  # TypeError: int() of a SparseTensorProto
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm")
    node.attribute.append(AttributeProto(name="axis", type=AttributeProto.SPARSE_TENSOR))
    refused(model([node]), "'axis'", "SPARSE_TENSOR")


def test_attribute_given_twice():  # the second silently won
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=0)
    node.attribute.append(helper.make_attribute("axis", 1))
    refused(model([node]), "'axis' twice")


def test_infinite_value_for_an_int_list():  # OverflowError: cannot convert float infinity to integer
    axes = numpy_helper.from_array(np.array([np.inf], np.float32), "axes")
    m = model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="u")], outputs=(("y", [1, 2, 3]),),
              inits=[axes])
    refused(m, "'axes'", "whole numbers")


def test_cast_without_to():  # KeyError: 'to'
    refused(model([helper.make_node("Cast", ["x"], ["y"], name="c")]), "'c'", "'to'")


def test_cast_to_an_unsupported_type():  # UnsupportedDTypeError was a ValueError, not an AotcError
    msg = refused(model([helper.make_node("Cast", ["x"], ["y"], name="c", to=TensorProto.STRING)]), "'c'", "STRING",
                  error=UnsupportedDTypeError)
    assert "supported element types" in msg
    assert issubclass(UnsupportedDTypeError, AotcError)


def test_castlike_with_one_input():  # IndexError
    refused(model([helper.make_node("CastLike", ["x"], ["y"], name="cl")]), "'cl'", "two inputs")


# -- ops given inputs they cannot take -----------------------------------------------------------
def test_layernorm_scale_that_does_not_broadcast():  # ValueError from np.broadcast_shapes
    scale = numpy_helper.from_array(np.ones((2, 2), np.float32), "scale")
    refused(model([helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln")], inits=[scale]),
            "LayerNormalization", "do not broadcast")


def test_gather_constant_index_out_of_range():  # IndexError while folding
    data = numpy_helper.from_array(np.zeros((0, 3), np.float32), "d")
    idx = numpy_helper.from_array(np.array([0], np.int64), "i")
    m = model([helper.make_node("Gather", ["d", "i"], ["g"]), helper.make_node("Add", ["x", "g"], ["y"])],
              inits=[data, idx])
    refused(m, "Gather", "out of range")


@pytest.mark.parametrize("attrs", [dict(axis=0), dict(axis=0, num_outputs=-1)])
def test_split_of_a_scalar_or_into_no_parts(attrs):  # IndexError: tuple index out of range
    x = numpy_helper.from_array(np.array(1.0 if len(attrs) == 1 else [1.0, 2.0], np.float32), "k")
    m = model([helper.make_node("Split", ["k"], ["s"], name="sp", **attrs), helper.make_node("Add", ["x", "s"], ["y"])],
              inits=[x], opset=18)
    refused(m, "Split")


def test_split_with_negative_sizes():  # np.split with a negative size
    x = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "k")
    sizes = numpy_helper.from_array(np.array([3, -1], np.int64), "sizes")
    m = model([helper.make_node("Split", ["k", "sizes"], ["s", "t"], name="sp"),
               helper.make_node("Add", ["x", "s"], ["y"])], inits=[x, sizes])
    refused(m, "Split", "negative")


@pytest.mark.parametrize("delta", [0.0, np.nan])
def test_range_with_zero_or_nan_delta(delta):  # ZeroDivisionError / ValueError converting NaN
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("s", 0), ("l", 2), ("d", delta))]
    m = model([helper.make_node("Range", ["s", "l", "d"], ["r"], name="r"), helper.make_node("Add", ["x", "r"], ["y"])],
              inits=inits)
    refused(m, "Range", "non-zero")


@pytest.mark.parametrize("op,axes,out", [("Unsqueeze", [1, 1], [2, 1, 1, 3]), ("Unsqueeze", [1, -3], [2, 1, 1, 3]),
                                         ("Squeeze", [0, -3], [1, 3])])
def test_squeeze_axes_named_twice(op, axes, out):  # StopIteration (Unsqueeze), ValueError: repeated axis
    shape = [1, 1, 3] if op == "Squeeze" else [2, 3]
    m = model([helper.make_node(op, ["x", "axes"], ["y"], name="u")], inputs=(("x", shape),), outputs=(("y", out),),
              inits=[numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    refused(m, op, "twice")


def test_constant_of_shape_with_an_empty_value():  # IndexError while folding
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    value = numpy_helper.from_array(np.zeros((0,), np.float32), "v")
    m = model([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="c", value=value),
               helper.make_node("Add", ["x", "c"], ["y"])], inits=[shape])
    refused(m, "ConstantOfShape", "one element")


def test_gathernd_with_scalar_indices():  # IndexError: tuple index out of range
    idx = numpy_helper.from_array(np.array(0, np.int64), "i")
    refused(model([helper.make_node("GatherND", ["x", "i"], ["y"], name="g")], inits=[idx]), "GatherND", "rank 1")


def test_clip_bounds_as_inputs_in_the_ir_are_refused():  # silently ignored: the IR reads attributes
    g = Graph("g")
    x = g.add_input("x", (4,), DType.float32)
    lo, hi = g.add_const("lo", np.array(-0.5, np.float32)), g.add_const("hi", np.array(0.5, np.float32))
    with pytest.raises(AotcError, match="attributes in aotc's IR"):
        g.add_node("Clip", [x, lo, hi])


def test_clip11_bounds_from_onnx_inputs_are_honoured():
    # what the importer makes of Clip-11+: its min/max inputs become the IR's attributes
    lo, hi = numpy_helper.from_array(np.array(-0.5, np.float32), "lo"), numpy_helper.from_array(np.array(0.5, np.float32), "hi")
    g = compiler.load_onnx(model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], inits=[lo, hi]))
    (clip,) = g.nodes
    assert len(clip.inputs) == 1 and (clip.attrs["min"], clip.attrs["max"]) == (-0.5, 0.5)
    x = np.array([[-2, -0.1, 0.1], [2, 0.4, -0.6]], np.float32)
    np.testing.assert_array_equal(compiler.interpret(g, {"x": x})["y"], np.clip(x, -0.5, 0.5))


# -- shapes and external data --------------------------------------------------------------------
@pytest.mark.parametrize("dims", [[10 ** 23, 3], [2, -3], [2, 1 << 41], ["2", 3]])
def test_input_shape_out_of_range_in_the_api(dims):  # OverflowError from int64 arithmetic
    refused(model([helper.make_node("Relu", ["x"], ["y"])], inputs=(("x", ["N", 3]),)), "'x'",
            input_shapes={"x": dims})


def test_declared_input_dimension_too_large():
    refused(model([helper.make_node("Relu", ["x"], ["y"])], inputs=(("x", [1 << 50, 3]),)), "2^40")


@pytest.mark.parametrize("location,offset", [("w\x00.bin", "0"), ("w.bin", "x"), ("w.bin", "-5")])
def test_external_data_fields(tmp_path, location, offset):  # ValueError: embedded null byte / int('x')
    (tmp_path / "w.bin").write_bytes(np.zeros(6, np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros((2, 3), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset)):
        w.external_data.add(key=k, value=v)
    path = tmp_path / "m.onnx"
    onnx.save(model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[w]), path)
    with pytest.raises(AotcError, match="'w'"):
        compiler.load_onnx(path)


def test_inspect_reports_unknown_element_types(tmp_path):  # ValueError: DataType has no name for 99
    m = single_op_model("Relu", [("x", np.zeros((2, 3), np.float32))])
    m.graph.input[0].type.tensor_type.elem_type = 99
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    report, error = summarize_onnx(path)
    assert report["inputs"][0]["dtype"] == "unknown element type 99"
    assert isinstance(error, AotcError)


# -- through the CLI: exit 2 and one paragraph ---------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "aotc", *args], capture_output=True, text=True)


def test_cli_huge_input_shape(tmp_path):  # OverflowError, exit 1 "internal error"
    path = tmp_path / "m.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], inputs=(("x", ["N", 4]),)), path)
    res = _cli("inspect", str(path), "--input-shape", "x=99999999999999999999999x4")
    from test_cli_errors import assert_usage_error
    assert_usage_error(res, "--input-shape", "2^40")  # a bad flag value: click's usage error, exit 2


def test_cli_inspect_json_bad_utf8(tmp_path):  # TypeError: json keys must be str, not bytes
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_bad_utf8(single_op_model("Relu", [("x", np.zeros((2, 3), np.float32))]), b"the_Relu"))
    res = _cli("inspect", str(path), "--json")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and "UTF-8" in res.stderr and "Traceback" not in res.stderr

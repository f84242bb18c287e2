"""The independent references tests compare aotc against: onnxruntime on
single-op and whole ONNX models, with tolerances stated per dtype."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from aotc import compiler
from aotc.compiler.dtypes import DType

# (rtol, atol) per output dtype. Float tolerances cover differences in
# summation order and in transcendental implementations between NumPy/SciPy
# and onnxruntime's MLAS; half types are compared after their own rounding.
TOLERANCE: dict[str, tuple[float, float]] = {
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 2e-3),
    "bfloat16": (2e-2, 2e-2),
    "int8": (0, 0), "uint8": (0, 0), "int32": (0, 0), "int64": (0, 0), "bool": (0, 0),
}


def assert_matches(got: np.ndarray, want: np.ndarray, what: str = "", tol: tuple[float, float] | None = None):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != reference {want.dtype}"
    rtol, atol = tol or TOLERANCE[DType.from_numpy(got.dtype).value]
    if rtol == 0 and atol == 0:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=what, equal_nan=True)


def ort_run(model: onnx.ModelProto | str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def single_op_model(op_type: str, inputs: Sequence[tuple[str, np.ndarray]], attrs: Mapping[str, Any] | None = None,
                    consts: Sequence[tuple[str, np.ndarray | None]] = (), num_outputs: int = 1,
                    opset: int = 17) -> onnx.ModelProto:
    """A model with one node. `inputs` become graph inputs (their arrays give
    shapes/dtypes); `consts` become initializers after them, in order (None =
    an omitted optional input)."""
    graph_inputs = [helper.make_tensor_value_info(n, DType.from_numpy(a.dtype).onnx, a.shape) for n, a in inputs]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in consts if a is not None]
    node_inputs = [n for n, _ in inputs] + [n if a is not None else "" for n, a in consts]
    outs = [f"y{i}" for i in range(num_outputs)]
    node = helper.make_node(op_type, node_inputs, outs, name=f"the_{op_type}", **(attrs or {}))
    graph = helper.make_graph([node], f"single_{op_type}", graph_inputs, [], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Output types come from ONNX's own shape inference, independent of aotc's.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in inferred.graph.value_info}
    model.graph.output.extend(known[o] for o in outs)
    return model


def check_against_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], tol=None,
                      input_shapes=None) -> dict[str, np.ndarray]:
    """Import `model`, run it in aotc's interpreter and in onnxruntime, compare every output."""
    graph = compiler.load_onnx(model, input_shapes=input_shapes)
    got = compiler.interpret(graph, feeds)
    want = ort_run(model, feeds)
    for name, ref in want.items():
        assert_matches(got[name], ref, f"output {name}", tol)
    return got


def check_single_op(op_type: str, inputs: Sequence[tuple[str, np.ndarray]], attrs=None, consts=(),
                    num_outputs: int = 1, opset: int = 17, tol=None) -> dict[str, np.ndarray]:
    model = single_op_model(op_type, inputs, attrs, consts, num_outputs, opset)
    return check_against_ort(model, dict(inputs), tol=tol)

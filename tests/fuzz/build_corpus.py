"""Builds the fuzz corpus, tests/fuzz/corpus.zip: small valid ONNX models.

Three sources:
  * every model the op tests import successfully (recorded by wrapping `compiler.load_onnx`
    while pytest runs tests/test_ops_*.py and tests/test_smoke_ops.py),
  * a few models exported from PyTorch (an MLP, a CNN, an attention block),
  * hand-built models with control flow (If with a constant condition, Loop) and
    Constant nodes of every kind, which neither of the above produces.

Run once after adding op tests (it takes a few minutes; it needs torch and onnxruntime):
    PYTHONPATH=. python tests/fuzz/build_corpus.py
The corpus is committed, so the fuzz runs are reproducible without rebuilding it.
"""
from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
CORPUS = HERE / "corpus.zip"
MAX_BYTES = 48 * 1024  # small models mutate into small models: cases stay fast
PER_KIND = 3  # models kept per (source, op types) pair: parametrized op tests add little beyond a few


def _save(models: dict[str, tuple[str, bytes]], prefix: str, model: onnx.ModelProto) -> None:
    data = model.SerializeToString()
    kind = "-".join([prefix] + sorted({n.op_type for n in model.graph.node}))
    if len(data) <= MAX_BYTES and sum(k == kind for k, _ in models.values()) < PER_KIND:
        models.setdefault(hashlib.sha256(data).hexdigest()[:12], (kind, data))


def from_op_tests(models: dict) -> None:
    import pytest

    from aotc import compiler

    real = compiler.load_onnx

    def recording(model, *args, **kwargs):
        graph = real(model, *args, **kwargs)
        if isinstance(model, onnx.ModelProto) and not args and not kwargs.get("input_shapes"):
            _save(models, "op", model)
        return graph

    compiler.load_onnx = recording
    try:
        files = sorted(str(p) for p in TESTS.glob("test_ops_*.py")) + [str(TESTS / "test_smoke_ops.py")]
        pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(TESTS.parent), *files])
    finally:
        compiler.load_onnx = real


def from_torch(models: dict) -> None:
    import io

    import torch

    class Attention(torch.nn.Module):
        def __init__(self, d=16, heads=2):
            super().__init__()
            self.qkv, self.out, self.heads = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d), heads
            self.norm = torch.nn.LayerNorm(d)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(x).split(d, dim=-1)
            split = lambda t: t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
            a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            y = (a @ split(v)).transpose(1, 2).reshape(b, s, d)
            return self.norm(x + torch.nn.functional.gelu(self.out(y)))

    torch.manual_seed(0)
    nets = {
        "mlp": (torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4),
                                    torch.nn.Softmax(-1)), torch.randn(2, 8)),
        "cnn": (torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                    torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3, groups=2),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)),
                torch.randn(1, 3, 8, 8)),
        "attention": (Attention(), torch.randn(1, 4, 16)),
    }
    for name, (net, x) in nets.items():
        for opset in (13, 17):
            buf = io.BytesIO()
            with torch.no_grad():
                torch.onnx.export(net.eval(), (x,), buf, dynamo=False, opset_version=opset,
                                  input_names=["x"], output_names=["y"])
            _save(models, f"torch-{name}", onnx.load_model_from_string(buf.getvalue()))


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def hand_built(models: dict) -> None:
    f = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731

    def branch(op, out):
        return helper.make_graph([helper.make_node(op, ["x"], [out])], f"{op}_branch", [], [f(out, [2, 3])])

    for cond in (True, False):
        c = numpy_helper.from_array(np.array(cond), "c")
        if_node = helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("Relu", "t"),
                                   else_branch=branch("Neg", "e"))
        _save(models, "if", _model([if_node], [f("x", [2, 3])], [f("y", [2, 3])], [c]))
    # an If whose condition is folded from the input's shape, as exporters write it
    shape_if = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ReduceProd", ["s"], ["n"], keepdims=0),
                helper.make_node("Greater", ["n", "k"], ["c"]),
                helper.make_node("If", ["c"], ["y"], then_branch=branch("Sigmoid", "t"), else_branch=branch("Tanh", "e"))]
    _save(models, "if", _model(shape_if, [f("x", [2, 3])], [f("y", [2, 3])],
                               [numpy_helper.from_array(np.array(4, np.int64), "k")]))
    # Loop is not supported: its damage must still be reported as aotc's error
    body = helper.make_graph([helper.make_node("Add", ["v", "x"], ["v2"]), helper.make_node("Identity", ["cin"], ["cout"])],
                             "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                      helper.make_tensor_value_info("cin", TensorProto.BOOL, []), f("v", [2, 3])],
                             [helper.make_tensor_value_info("cout", TensorProto.BOOL, []), f("v2", [2, 3])])
    loop = helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)
    _save(models, "loop", _model([loop], [f("x", [2, 3])], [f("y", [2, 3])],
                                 [numpy_helper.from_array(np.array(3, np.int64), "n")]))
    # Constant nodes of every value_* kind feeding an Add
    consts = {"value": numpy_helper.from_array(np.ones((2, 3), np.float32)), "value_float": 2.0,
              "value_floats": [1.0, 2.0, 3.0]}
    for key, val in consts.items():
        nodes = [helper.make_node("Constant", [], ["k"], **{key: val}), helper.make_node("Add", ["x", "k"], ["y"])]
        _save(models, "constant", _model(nodes, [f("x", [2, 3])], [f("y", [2, 3])]))
    ints = [helper.make_node("Constant", [], ["shape"], value_ints=[3, 2]),
            helper.make_node("Reshape", ["x", "shape"], ["y"])]
    _save(models, "constant", _model(ints, [f("x", [2, 3])], [f("y", [3, 2])]))
    # Clip-11+ with its bounds as constant inputs
    clip = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    _save(models, "clip", _model(clip, [f("x", [2, 3])], [f("y", [2, 3])],
                                 [numpy_helper.from_array(np.array(-0.5, np.float32), "lo"),
                                  numpy_helper.from_array(np.array(0.5, np.float32), "hi")]))


def main() -> None:
    sys.path.insert(0, str(TESTS))
    models: dict[str, tuple[str, bytes]] = {}
    hand_built(models)
    from_torch(models)
    from_op_tests(models)
    # One zip, written with fixed timestamps so a rebuild from the same tests is byte-identical.
    with zipfile.ZipFile(CORPUS, "w", zipfile.ZIP_DEFLATED) as z:
        for digest, (kind, data) in sorted(models.items(), key=lambda kv: (kv[1][0], kv[0])):
            z.writestr(zipfile.ZipInfo(f"{kind[:80]}-{digest}.onnx", date_time=(2020, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)
    total = sum(len(d) for _, d in models.values())
    print(f"{len(models)} models, {total} bytes, in {CORPUS} ({CORPUS.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

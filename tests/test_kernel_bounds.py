"""Kernels access only their buffers (targets/cpu/bounds_check.py). conftest.py turns the check on for every
compile in the suite, so every CPU kernel a test builds is proven in bounds after TVM's simplifier; these tests
show the check catches the failure it exists for, and that the guarded reads it found keep their clamps."""
from __future__ import annotations

import os

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType
from x86_helpers import check_graph, needs_avx512


def _concat_kernel(guard):
    """Concat of [5] and [3] rows along axis 0 the way the CPU lowering writes it: a select between clamped
    reads of both inputs, its condition through `guard`."""
    from tvm import te
    from tvm import tirx as T

    from aotc.targets.cpu.schedules import prim_func
    A = te.placeholder((5, 16), "float32", name="A")
    B = te.placeholder((3, 16), "float32", name="B")

    def f(i, j):
        a = A[T.min(T.max(i, 0), 4), j]
        b = B[T.min(T.max(i - 5, 0), 2), j]
        return T.Select(guard(i < 5), a, b)
    Y = te.compute((8, 16), f, name="Y")
    return prim_func([A, B, Y])


def _llvm():
    import tvm
    return tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})


def test_the_check_catches_a_clamp_the_simplifier_drops():
    from aotc.targets.cpu.bounds_check import out_of_bounds_access
    from aotc.targets.cpu.lowering import in_bounds
    found = out_of_bounds_access(_concat_kernel(lambda c: c), _llvm())
    assert found is not None and "Out of bounds" in found, found
    assert out_of_bounds_access(_concat_kernel(lambda c: in_bounds(c)), _llvm()) is None


def test_the_suite_checks_every_kernel():
    assert os.environ.get("AOTC_CHECK_BOUNDS") == "1"


@needs_avx512
@pytest.mark.parametrize("case", ["concat", "ragged_channels_to_blocked", "padded_keys_attention"])
def test_guarded_reads_stay_in_bounds_and_correct(case, tmp_path):
    """Graphs with the guarded reads the check found dropped clamps in (Concat's select chain, the channel
    padding of the blocked layout, the fused attention's padded keys): built under the check, and equal to the
    interpreter."""
    rng = np.random.default_rng(0)
    g = compiler.Graph(case)
    if case == "concat":
        a = g.add_input("a", (1, 5, 7, 9), DType.float32)
        b = g.add_input("b", (1, 3, 7, 9), DType.float32)
        g.outputs = [g.add_node("Concat", [a, b], {"axis": 1}).outputs[0]]
        feeds = {"a": rng.standard_normal((1, 5, 7, 9), np.float32), "b": rng.standard_normal((1, 3, 7, 9), np.float32)}
    elif case == "ragged_channels_to_blocked":
        x = g.add_input("x", (1, 20, 9, 9), DType.float32)
        w = g.add_const("w", rng.standard_normal((24, 20, 3, 3)).astype(np.float32))
        y = g.add_node("Conv", [x, w], {"pads": [1, 1, 1, 1]}).outputs[0]
        g.outputs = [g.add_node("Relu", [y]).outputs[0]]
        feeds = {"x": rng.standard_normal((1, 20, 9, 9), np.float32)}
        from aotc.passes import PassManager
        PassManager(["canonicalize", "fuse_conv_epilogue"]).run(g)
    else:
        q = g.add_input("q", (1, 37, 48), DType.float32)
        wq, wk, wv = (g.add_const(n, (rng.standard_normal((48, 48)) * 0.2).astype(np.float32)) for n in "qkv")
        attrs = {"num_heads": 2, "head_dim": 24, "scale": 24 ** -0.5}
        g.outputs = [g.add_node("Attention", [q, q, wq, None, wk, None, wv, None, None, None], attrs).outputs[0]]
        feeds = {"q": rng.standard_normal((1, 37, 48), np.float32)}
    check_graph(g, feeds, tmp_path, rtol=1e-4, atol=1e-4)

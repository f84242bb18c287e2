"""The x86-avx512 target: every case of the shared op table (tests/op_cases.py) compiled into a bundle, run by
the thin runtime and compared with aotc's reference interpreter; the plain NCHW convolution path; the errors
an op without a lowering gives at compile time."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import op_cases
from aotc import compiler
from x86_helpers import check_graph, needs_avx512

pytestmark = needs_avx512


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("x86-ops")


# Cases of the shared table this target refuses, each with the reason its one-paragraph error gives.
REFUSED = {
}


@pytest.mark.parametrize("case", op_cases.CASES, ids=op_cases.case_id)
def test_op(case, out_dir):
    op_cases.run(case, lambda g, feeds: check_graph(g, feeds, out_dir, case.rtol, case.atol), REFUSED)


@pytest.mark.parametrize("conv", [c for c in op_cases.CONVS if len(c[1]) == 4], ids=lambda c: c[0])
def test_conv_plain_nchw(conv, out_dir):
    """The plain NCHW kernels (which other targets, and the convolutions the layout pass leaves alone, use);
    the shared table's convolutions run on the default NCHW16c ones."""
    from aotc.targets.cpu.target import X86_AVX512
    graph, feeds = op_cases.conv_case(*conv).build()
    check_graph(graph, feeds, out_dir, 1e-4, 1e-4, target=dataclasses.replace(X86_AVX512, conv_block=0))


# -- compile-time errors -------------------------------------------------------------------------------
def test_unlowerable_ops_are_all_named_and_leave_nothing(tmp_path):
    """Every registered op has a lowering now, so this uses nodes the lowerings refuse (float16 LRN and
    InstanceNormalization raise NoLoweringError): each is named, with the lowering's reason."""
    import aotc
    from aotc.targets.cpu.lowering import UnsupportedOnTargetError
    g = compiler.Graph("needs_missing_ops")
    x = g.add_input("x", (1, 4, 5, 5), compiler.DType.float16)
    a = g.add_node("LRN", [x], {"size": 3}, name="lrn_a").outputs[0]
    s = g.add_node("InstanceNormalization", [a, g.add_const("sc", np.ones(4, np.float16)),
                                             g.add_const("bi", np.zeros(4, np.float16))],
                   name="instnorm").outputs[0]
    b = g.add_node("LRN", [s], {"size": 3}, name="lrn_b").outputs[0]
    g.outputs = [b]
    out = tmp_path / "bundle"
    with pytest.raises(UnsupportedOnTargetError) as e:
        aotc.compile(g, out, target="x86-avx512", passes="none").path
    msg = str(e.value)
    for part in ("LRN ×2", "'lrn_a'", "'lrn_b'", "InstanceNormalization ×1", "'instnorm'",
                 "float16 LRN has no CPU kernel yet"):
        assert part in msg
    assert isinstance(e.value, compiler.AotcError)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_all_minilm_and_efficientnet_ops_have_lowerings():
    from aotc.targets.cpu.rules import lowered_ops
    have = set(lowered_ops())
    need = {"MatMul", "Add", "Mul", "Div", "Reshape", "Transpose", "LayerNormalization", "Softmax", "Erf", "Gelu",
            "Gather", "GatherND", "Where", "Cast", "And", "IsNaN", "Expand", "Flatten", "Conv", "BatchNormalization",
            "MaxPool", "AveragePool", "Relu", "Clip", "HardSwish", "Sigmoid", "Pad", "Concat", "GlobalAveragePool",
            "Gemm", "ReduceMean"}
    assert need <= have, sorted(need - have)


def test_every_registered_op_has_an_x86_lowering():
    """A new op registered in compiler.ops without an x86 lowering fails here, not in a user's compile."""
    from aotc.compiler.ops import ops_targets_see, registered_ops
    from aotc.targets.cpu.rules import lowered_ops
    have = set(lowered_ops())
    missing = [op for op in ops_targets_see() if op not in have]
    assert not missing, f"registered ops without an x86 lowering: {missing}"
    assert not have - set(registered_ops()), sorted(have - set(registered_ops()))  # lowerings of unknown ops

"""Every way the frontend refuses user code names the user's file and line (never aotc's
generated code) and explains itself in one paragraph; the CLI exits with 2."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aotc import compiler
import frontend_error_cases as cases
from aotc.compiler.frontend import (BranchMismatchError, DataDependentValueError, LoopBoundError, SideEffectError,
                               TraceError, UnboundedLoopError, UnsupportedControlFlowError)

CASES_FILE = Path(cases.__file__)
SOURCE = CASES_FILE.read_text().splitlines()


def line_of(marker: str, kind: str = "ERR") -> int:
    hits = [i + 1 for i, line in enumerate(SOURCE) if line.rstrip().endswith(f"# {kind} {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def trace_error(fn, example, cls):
    with pytest.raises(cls) as info:
        compiler.trace(fn, example)
    return info.value


def assert_points_at(err: TraceError, marker: str):
    line = line_of(marker)
    assert err.filename == str(CASES_FILE) and err.lineno == line, (err.filename, err.lineno, str(err))
    msg = str(err)
    assert f"frontend_error_cases.py:{line} " in msg, msg
    assert SOURCE[line - 1].strip().split("  #")[0] in msg  # quotes the offending line
    assert "\n" not in msg and "_aotc" not in msg  # one paragraph, nothing generated
    return msg


POS = (torch.tensor([1.0, 2.0, 3.0]),)


@pytest.mark.parametrize("fn,marker,needle", [
    (cases.inplace_method, "inplace_method", "add_"),
    (cases.augmented_assignment, "augmented_assignment", "in-place operation `add_`"),
    (cases.item_assignment, "item_assignment", "x[0]"),
    (cases.list_append, "list_append", "collected.append"),
    (cases.AttributeWrite(), "attribute_write", "self.last"),
    (cases.inplace_in_helper, "helper_inplace", "mul_"),
    (cases.append_in_helper, "helper_append", "history.append"),
    (cases.append_in_nested_helper, "nested_helper_append", "seen.append"),
])
def test_side_effects_under_tensor_condition(fn, marker, needle):
    msg = assert_points_at(trace_error(fn, POS, SideEffectError), marker)
    assert needle in msg


def test_side_effects_are_fine_under_python_conditions():
    def python_flag(x, flag=True):
        y = x.clone()
        if flag:
            y.add_(1)
            cases.collected.append(1)
        return y
    g = compiler.trace(python_flag, POS)
    out = compiler.interpret(g, {"x": POS[0].numpy()})["output"]
    assert out.tolist() == [2.0, 3.0, 4.0]


def test_local_tensors_may_change_in_place_inside_a_branch():
    def local(x):
        if x.sum() > 0:
            y = x.clone()
            y.add_(1)
            parts = []
            parts.append(y)
            x = parts[0]
        return x
    g = compiler.trace(local, POS)
    for v in ([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]):
        x = torch.tensor(v)
        assert compiler.interpret(g, {"x": x.numpy()})["output"].tolist() == local(x).tolist()


@pytest.mark.parametrize("fn,marker,needle", [
    (cases.shape_mismatch, "shape_mismatch", "shape [2]"),
    (cases.dtype_mismatch, "dtype_mismatch", "int64"),
    (cases.return_mismatch, "return_mismatch", "None"),
])
def test_branches_that_cannot_be_selected(fn, marker, needle):
    msg = assert_points_at(trace_error(fn, POS, BranchMismatchError), marker)
    assert needle in msg and "then-branch" in msg and "else-branch" in msg


def test_variable_assigned_in_one_branch_then_used():
    msg = assert_points_at(trace_error(cases.one_branch_variable, POS, BranchMismatchError), "one_branch_variable")
    assert "'y'" in msg and "only in the then-branch" in msg
    assert f"frontend_error_cases.py:{line_of('one_branch_variable', 'USE')}" in msg  # where it is used


def test_module_loop_variable_used_after_a_tensor_break():
    msg = assert_points_at(trace_error(cases.LayerAfterBreak(), POS, BranchMismatchError), "layer_after_break")
    assert "'layer'" in msg and "cannot be selected" in msg
    assert f"frontend_error_cases.py:{line_of('layer_after_break', 'USE')}" in msg


def test_unbounded_while_on_tensor_condition():
    msg = assert_points_at(trace_error(cases.unbounded_while, POS, UnboundedLoopError), "unbounded_while")
    assert "aotc.bounded" in msg


def test_bound_exceeded_by_the_example_inputs():
    msg = assert_points_at(trace_error(cases.bound_too_small, POS, LoopBoundError), "bound_too_small")
    assert "2 iteration" in msg
    g = compiler.trace(cases.bound_too_small, (torch.tensor([40.0]),))  # within the bound: fine
    assert g is not None


@pytest.mark.parametrize("fn,marker,needle", [
    (cases.return_in_with, "return_in_with", "returns from inside a `with` or `try` block"),
    (cases.return_in_try_in_loop, "return_in_try_in_loop", "returns from inside a `with` or `try` block"),
    (cases.break_in_try, "break_in_try", "controls `break`/`continue` of a loop from inside a `try`"),
])
def test_unsupported_control_flow(fn, marker, needle):
    msg = assert_points_at(trace_error(fn, POS, UnsupportedControlFlowError), marker)
    assert needle in msg


def test_while_loop_ended_by_a_tensor_break_needs_a_bound():
    msg = assert_points_at(trace_error(cases.while_true_with_tensor_break, POS, UnboundedLoopError),
                           "while_true_with_tensor_break")
    assert "`break`" in msg and "aotc.bounded" in msg


@pytest.mark.parametrize("fn,marker,needle", [
    (cases.item_call, "item_call", ".item()"),
    (cases.numpy_call, "numpy_call", ".numpy()"),
    (cases.bool_call, "bool_call", "bool()"),
    (cases.int_call, "int_call", "int()"),
    (cases.assert_on_tensor, "assert_on_tensor", "bool()"),
    (cases.item_in_helper, "helper_item", ".item()"),
    (cases.swallowed_item, "swallowed_item", ".item()"),
])
def test_python_values_of_traced_tensors(fn, marker, needle):
    msg = assert_points_at(trace_error(fn, POS, DataDependentValueError), marker)
    assert needle in msg


def test_unconverted_function_is_named():
    msg = assert_points_at(trace_error(cases.calls_decorated, POS, DataDependentValueError), "decorated")
    assert "did not convert `decorated`" in msg


def test_branch_that_raises_is_reported_at_its_if():
    msg = assert_points_at(trace_error(cases.raising_branch, POS, TraceError), "raising_branch")
    assert "ValueError: negative input" in msg


def test_exception_in_the_model_is_the_users_error():
    msg = assert_points_at(trace_error(cases.shape_bug, POS, TraceError), "shape_bug")
    assert "RuntimeError" in msg


def test_condition_with_many_elements():
    msg = assert_points_at(trace_error(cases.ambiguous_condition, POS, TraceError), "ambiguous_condition")
    assert ".any()" in msg


def aotc(*args):
    return subprocess.run([sys.executable, "-m", "aotc.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("factory,marker", [("make_unbounded_module", "unbounded_while"),
                                            ("make_item_module", "item_call")])
def test_cli_exits_2_naming_the_users_line(factory, marker, tmp_path):
    res = aotc("trace", f"{CASES_FILE}:{factory}", "--example-input", "x=3", "-o", str(tmp_path / "m.onnx"))
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert f"frontend_error_cases.py:{line_of(marker)} " in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_bad_specs_exit_2(tmp_path):
    res = aotc("trace", f"{tmp_path}/missing.py:make", "--example-input", "x=3", "-o", str(tmp_path / "m.onnx"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = aotc("trace", f"{CASES_FILE}:no_such_factory", "--example-input", "x=3", "-o", str(tmp_path / "m.onnx"))
    assert res.returncode == 2 and "no 'no_such_factory'" in res.stderr and "make_item_module" in res.stderr
    # (bad --example-input specs and inputs that do not fit: tests/test_frontend_cli.py, in-process)


def test_helper_filling_a_tensor_created_in_the_branch_is_fine():
    def fill_first(buf, v):
        buf[0] = v  # item assignment into the caller's tensor: checked at run time, not statically
        return buf

    def f(x):
        if x.sum() > 0:
            y = fill_first(torch.zeros_like(x), x.max())
        else:
            y = x
        return y

    from oracle import ort_run
    model = compiler.trace(f, POS, return_onnx=True)  # (aotc has no ScatterND yet: onnxruntime runs it)
    for v in ([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]):
        x = torch.tensor(v)
        assert ort_run(model, {"x": x.numpy()})["output"].tolist() == f(x).tolist()

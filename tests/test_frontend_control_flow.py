"""The frontend's control-flow conversion, construct by construct: every test traces once
and then runs the graph in aotc's interpreter on inputs that take each branch (and loop
counts 0, 1 and the bound), against eager PyTorch within 1e-6."""
import numpy as np
import pytest
import torch
from torch import nn

from aotc import compiler
from aotc.compiler import bounded

t = torch.tensor


def check(fn, example, cases, **trace_kwargs):
    """Trace `fn` on `example` (a tuple), then compare with eager on every input tuple in `cases`."""
    graph = compiler.trace(fn, example, **trace_kwargs)
    names = [v.name for v in graph.inputs]
    for case in cases:
        got = compiler.interpret(graph, {n: a.numpy() for n, a in zip(names, case)})
        with torch.no_grad():
            want = fn(*case)
        want = list(want.values()) if isinstance(want, dict) else \
            list(want) if isinstance(want, (tuple, list)) else [want]
        assert len(got) == len(want)
        for (name, g), w in zip(got.items(), want):
            # eager `not tensor` is a Python bool; the graph's is a 0-d bool tensor
            w = w.numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, (name, g.dtype, g.shape, w.dtype, w.shape)
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-6, err_msg=f"{name} for input {case}")
    return graph


# -- if / elif / else ------------------------------------------------------------------------------
def seed(x):
    if x.sum() > 0:
        return x * 2
    else:
        return x + 1


def test_seed_example_both_branches():
    g = check(seed, (t([1.0, 2.0, 3.0]),), [(t([1.0, 2.0, 3.0]),), (t([-1.0, -2.0, -3.0]),), (t([0.0, 0, 0]),)])
    assert g.op_histogram()["Where"] == 1


def test_jit_trace_alone_gets_the_other_branch_wrong():
    traced = torch.jit.trace(seed, (t([1.0, 2.0, 3.0]),), check_trace=False)
    x = t([-1.0, -2.0, -3.0])
    assert not torch.equal(traced(x), seed(x))  # jit baked in the example's branch (x * 2)
    g = compiler.trace(seed, (t([1.0, 2.0, 3.0]),))
    np.testing.assert_array_equal(compiler.interpret(g, {"x": x.numpy()})["output"], seed(x).numpy())


def elif_chain(x):
    s = x.sum()
    if s > 5:
        y = x * 3
    elif s > 0:
        y = x * 2
    else:
        y = -x
    return y + 1


def test_if_elif_else():
    check(elif_chain, (t([1.0, 2.0]),), [(t([3.0, 4.0]),), (t([1.0, 2.0]),), (t([-1.0, -2.0]),)])


def if_without_else(x):
    y = x
    if x.mean() > 0:
        y = y * 10
        tmp = y + 1  # assigned in one branch only, never read afterwards: fine
    return y


def test_if_without_else():
    check(if_without_else, (t([1.0]),), [(t([1.0]),), (t([-1.0]),)])


def nested(x, y):
    out = x
    if x.mean() > 0:
        if y.mean() > 0:
            out = x + y
        else:
            out = x - y
    else:
        out = x * y
    return out


def test_nested_ifs_all_four_paths():
    a, b = t([1.0, 2.0]), t([-3.0, -4.0])
    check(nested, (a, a), [(a, a), (a, b), (b, a), (b, b)])


def several_vars(x):
    if x.sum() > 0:
        a, b = x + 1, x.max()
    else:
        a = x - 1
        b = x.min()
    return a * b, b


def test_if_assigning_several_variables_and_tuple_outputs():
    check(several_vars, (t([1.0, 2.0]),), [(t([1.0, 2.0]),), (t([-1.0, -2.0]),)])


def python_number_vs_tensor(x):
    if x.sum() > 0:
        scale = 2.0
    else:
        scale = 0.5
    bias = 0 if x.max() > 1 else x.mean()
    return x * scale + bias


def test_python_numbers_merge_into_tensors():
    check(python_number_vs_tensor, (t([1.0, 2.0]),), [(t([1.0, 2.0]),), (t([0.5, 0.25]),), (t([-1.0, -2.0]),)])


# -- early return ----------------------------------------------------------------------------------
def early_return(x):
    if x.max() > 2:
        return x / 2
    x = x + 1
    if x.min() < 0:
        return x * 0
    for _ in range(2):  # a Python loop after the early returns
        x = x * 1.5
    return x


def test_early_return_each_exit():
    check(early_return, (t([1.0, 2.0]),), [(t([1.0, 3.0]),), (t([-3.0, 1.0]),), (t([0.0, 1.0]),)])


def return_in_nested_if(x):
    if x.sum() > 0:
        if x.max() > 5:
            return x - 5
        x = x * 2
    else:
        x = -x
    return x + 1


def test_return_inside_nested_if_falls_through():
    check(return_in_nested_if, (t([1.0]),), [(t([6.0]),), (t([1.0]),), (t([-1.0]),)])


# -- and / or / not ------------------------------------------------------------------------------
def logic(x, y):
    a = x.sum() > 0
    b = y.sum() > 0
    if a and not b:
        return x
    if a or b:
        return y
    return x + y


def test_and_or_not_all_combinations():
    p, n = t([1.0]), t([-1.0])
    g = check(logic, (p, p), [(p, p), (p, n), (n, p), (n, n)])
    assert "Not" in g.op_histogram()


def boolean_values(x, y):
    both = (x.sum() > 0) and (y.sum() > 0)
    either = (x.sum() > 0) or (y.sum() > 0)
    neither = not either
    return both, either, neither


def test_and_or_not_as_values():
    p, n = t([1.0]), t([-1.0])
    check(boolean_values, (p, p), [(p, p), (p, n), (n, p), (n, n)])


def or_selects_operand(x, y):
    s = x.sum() or y.sum()  # Python semantics: the first truthy operand
    return s * 1


def test_or_returns_the_first_truthy_tensor():
    check(or_selects_operand, (t([1.0]), t([2.0])), [(t([1.0]), t([2.0])), (t([0.0]), t([2.0]))])


# -- ternaries ------------------------------------------------------------------------------------
def ternary(x):
    return x * 2 if x.sum() > 0 else x - 1


def test_ternary():
    check(ternary, (t([1.0]),), [(t([1.0]),), (t([-1.0]),)])


def nested_ternary(x):
    return x * 2 if x.sum() > 1 else (x if x.sum() > 0 else -x)


def test_nested_ternary():
    check(nested_ternary, (t([2.0]),), [(t([2.0]),), (t([0.5]),), (t([-2.0]),)])


# -- bounded while ----------------------------------------------------------------------------------
def doubling(x):
    steps = torch.zeros((), dtype=torch.int64)
    while bounded(x.sum() < 10, max_iters=4):
        x = x * 2
        steps = steps + 1
    return x, steps


@pytest.mark.parametrize("start,iterations", [(20.0, 0), (6.0, 1), (3.0, 2), (1.0, 4)])
def test_bounded_while_loop_counts(start, iterations):
    assert int(doubling(t([start]))[1]) == iterations
    check(doubling, (t([1.0]),), [(t([start]),)])


def test_bounded_while_traced_on_any_example_is_right_for_all_counts():
    cases = [(t([s]),) for s in (20.0, 6.0, 3.0, 1.0)]
    g = check(doubling, (t([20.0]),), cases)  # the example runs 0 iterations; the graph still has 4
    assert g.op_histogram()["Mul"] == 4


def newton_sqrt(a):
    x = a
    while bounded((x * x - a).abs().max() > 1e-4, max_iters=12):
        x = 0.5 * (x + a / x)
    return x


def test_bounded_while_to_convergence():
    check(newton_sqrt, (t([2.0, 9.0]),), [(t([2.0, 9.0]),), (t([1.0, 1.0]),), (t([100.0, 0.25]),)])


def python_while(x, n: int = 3):
    i = 0
    while i < n:  # a Python condition: an ordinary loop, unrolled by tracing
        x = x + i
        i += 1
    return x


def test_python_while_stays_python():
    g = check(python_while, (t([1.0]),), [(t([5.0]),)])
    assert "Where" not in g.op_histogram()


# -- Python-valued predicates stay Python ---------------------------------------------------------
class Flags(nn.Module):
    def __init__(self, use_bias: bool):
        super().__init__()
        self.use_bias = use_bias
        self.register_buffer("scale", t([2.0]))

    def forward(self, x, mode: str = "double"):
        if x.shape[0] > 1 and x.dim() == 2:  # shapes are static
            x = x + 1
        if self.use_bias:  # a Python attribute
            x = x + 0.5
        if mode == "double":  # a Python argument
            x = x * 2
        if self.scale.sum() > 0:  # a tensor, but from the weights only: decided while tracing
            x = x * self.scale
        return x if x.dtype == torch.float32 else x.float()


def test_python_predicates_are_decided_while_tracing():
    m = Flags(use_bias=True)
    g = check(m, (torch.ones(2, 3),), [(torch.randn(2, 3),), (-torch.ones(2, 3),)])
    assert "Where" not in g.op_histogram()
    assert g.op_histogram().get("Add") == 2


def test_non_tensor_example_inputs_are_constants():
    m = Flags(use_bias=False)
    g = compiler.trace(m, {"x": torch.ones(2, 3), "mode": "keep"})
    assert [v.name for v in g.inputs] == ["x"]
    x = torch.randn(2, 3)
    np.testing.assert_allclose(compiler.interpret(g, {"x": x.numpy()})["output"], m(x, "keep").numpy(), atol=1e-6)


# -- methods, helpers and submodules are converted -----------------------------------------------
def clamp_helper(h, limit):
    if h.abs().max() > limit:
        return h * (limit / h.abs().max())
    return h


class Gate(nn.Module):
    def forward(self, h):
        return h.relu() if h.mean() > 0 else h.sigmoid()


class WithHelpers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.gate = Gate()  # a user submodule: its forward is converted too

    def branch(self, h):
        if h.sum() > 0:
            return h.relu()
        return torch.tanh(h)

    def forward(self, x):
        def scale(v):  # a nested helper
            if v.mean() > 0:
                v = v * 2
            return v
        h = self.lin(x)
        h = scale(self.branch(h))
        return self.gate(clamp_helper(h, 1.5))


def test_methods_nested_helpers_and_submodules_are_converted():
    torch.manual_seed(0)
    m = WithHelpers().eval()
    cases = [(torch.randn(2, 3) * s,) for s in (0.1, 1.0, 5.0, -5.0)] + [(torch.full((2, 3), v),) for v in (-2.0, 2.0)]
    g = check(m, cases[0], cases)
    assert g.op_histogram()["Where"] == 4  # branch, scale, clamp_helper, Gate


class Base(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x + 1
        return x - 1


class Derived(Base):
    def forward(self, x):
        y = super().forward(x)
        if y.mean() > 2:
            y = y / 2
        return y


def test_super_calls_in_converted_methods():
    check(Derived(), (t([1.0]),), [(t([5.0]),), (t([1.0]),), (t([-1.0]),)])


def loop_with_branch(x):
    acc = torch.zeros_like(x)
    for i in range(3):  # a Python loop, unrolled; the tensor `if` inside is converted
        if (x + i).sum() > 2:
            acc = acc + x
        else:
            acc = acc - 1
    return acc


def test_tensor_if_inside_python_for_loop():
    check(loop_with_branch, (t([1.0]),), [(t([3.0]),), (t([1.0]),), (t([0.0]),), (t([-5.0]),)])


def closure_counter(x):
    calls = 0

    def bump(v):
        nonlocal calls
        calls += 1
        return v + calls
    y = bump(bump(x))  # Python state changed outside any tensor branch: fine
    if y.sum() > 2:
        y = y * calls
    return y


def test_closures_and_nonlocal_keep_working():
    check(closure_counter, (t([1.0]),), [(t([5.0]),), (t([0.0]),)])


def dict_output(x):
    if x.sum() > 0:
        out = {"value": x * 2, "flag": x > 0}
    else:
        out = {"value": x, "flag": x < 0}
    return out


def test_dict_outputs_name_the_graph_outputs():
    g = check(dict_output, (t([1.0]),), [(t([1.0]),), (t([-1.0]),)])
    assert [v.name for v in g.outputs] == ["value", "flag"]


def test_converted_graph_goes_through_the_default_pipeline():
    from aotc.passes import PassManager
    m = WithHelpers().eval()
    g = compiler.trace(m, (torch.randn(2, 3),))
    PassManager(None, verify_each=True).run(g)
    for s in (0.1, 5.0, -5.0):
        x = torch.randn(2, 3) * s
        with torch.no_grad():
            want = m(x).numpy()
        np.testing.assert_allclose(compiler.interpret(g, {"x": x.numpy()})["output"], want, atol=1e-6)


def chained(x):
    if 0 < x.sum() < 5:
        return x * 2
    return x


def test_chained_comparison():
    check(chained, (t([1.0]),), [(t([1.0]),), (t([7.0]),), (t([-1.0]),)])


class Private(nn.Module):
    def __init__(self):
        super().__init__()
        self.__gain = 3.0  # name-mangled attribute

    def __pick(self, x):
        return x * self.__gain if x.sum() > 0 else x

    def forward(self, x):
        return self.__pick(x)


def test_private_names_in_converted_methods():
    check(Private(), (t([1.0]),), [(t([1.0]),), (t([-1.0]),)])


def test_library_code_runs_as_written_unless_named(tmp_path, monkeypatch):
    """Code outside the user's files is not converted (its tensor `if` is refused by the guard);
    `convert_modules` converts it."""
    from aotc.compiler.frontend import DataDependentValueError, usercode
    lib = tmp_path / "fakelib_branchy.py"
    lib.write_text("def pick(x):\n    if x.sum() > 0:\n        return x * 2\n    return -x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(usercode, "_library_dirs", lambda: (str(tmp_path.resolve()),))
    usercode.is_user_file.cache_clear()
    try:
        import fakelib_branchy

        def uses_lib(x):
            return fakelib_branchy.pick(x) + 1

        with pytest.raises(DataDependentValueError, match="fakelib_branchy.py:2"):
            compiler.trace(uses_lib, (t([1.0]),))
        check(uses_lib, (t([1.0]),), [(t([1.0]),), (t([-1.0]),)], convert_modules=["fakelib_branchy"])
    finally:
        usercode.is_user_file.cache_clear()


def test_future_annotations_in_the_users_module(tmp_path, monkeypatch):
    (tmp_path / "annotated_model.py").write_text(
        "from __future__ import annotations\n"
        "def f(x: Tensor) -> Tensor:  # names that exist only as strings\n"
        "    def helper(v: NotDefined) -> AlsoNot:\n"
        "        return v * 2 if v.sum() > 0 else v\n"
        "    return helper(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import annotated_model
    check(annotated_model.f, (t([1.0]),), [(t([1.0]),), (t([-1.0]),)])


def test_converted_source_shows_the_rewrite():
    from aotc.compiler.frontend import converted_source
    src = converted_source(seed)
    assert "_aotc_rt.if_return(" in src and "def _aotc_then_" in src
    assert "_aotc_rt.while_(" in converted_source(doubling)
    assert converted_source(WithHelpers().branch) is not None  # a bound method
    assert converted_source(torch.relu) is None and converted_source(lambda x: x) is None


def shape_and_like_values(x):
    n = x.shape[0]
    if n > 1:  # a size: static, even though the tracer hands it over as a 0-d tensor
        x = x * 2
    z = torch.zeros_like(x)
    if z.sum() == 0:  # made like `x`, but its values do not depend on `x`'s
        x = x + 1
    return x + x.new_ones(()).item()


def test_sizes_and_like_constructors_are_static():
    g = check(shape_and_like_values, (t([1.0, 2.0]),), [(t([3.0, -4.0]),)])
    assert "Where" not in g.op_histogram()


# -- break / continue ---------------------------------------------------------------------------------
def for_break(x):
    steps = torch.zeros(())
    for i in range(5):
        if x.sum() > 10:  # a tensor condition ends the loop
            break
        x = x * 2
        steps = steps + 1
    return x, steps


@pytest.mark.parametrize("start", [20.0, 6.0, 3.0, 1.0, 0.1])
def test_break_on_tensor_condition_in_for_loop(start):
    check(for_break, (t([1.0]),), [(t([start]),)])


def for_continue_else(x):
    acc = torch.zeros_like(x)
    for k in range(4):
        if (x + k).sum() < 2:
            continue
        acc = acc + x * k
    else:
        acc = acc + 100  # for-else: runs unless the loop broke
    return acc


def test_continue_and_for_else():
    check(for_continue_else, (t([1.0]),), [(t([s]),) for s in (-5.0, 0.0, 0.5, 1.5, 3.0)])


def break_with_else(x):
    for k in range(3):
        if x.sum() > k:
            x = x - 1
            break
    else:
        x = x * 10
    return x


def test_break_skips_the_else_clause():
    check(break_with_else, (t([1.0]),), [(t([s]),) for s in (-1.0, 0.5, 1.5, 5.0)])


def python_break(x, n: int = 2):
    for i in range(10):
        if i >= n:  # a Python condition: a real break
            break
        x = x + i
    return x


def test_python_break_stays_a_real_break():
    g = check(python_break, (t([1.0]),), [(t([1.0]),)])
    assert "Where" not in g.op_histogram() and g.op_histogram().get("Add", 0) <= 2


def nested_loops(x):
    for i in range(3):
        for j in range(3):
            if (x * j).sum() > 4:
                break  # leaves the inner loop only
            x = x + 1
        if x.sum() > 8:
            break
    return x


def test_break_in_nested_loops():
    check(nested_loops, (t([1.0]),), [(t([s]),) for s in (-1.0, 0.0, 1.0, 2.0, 5.0)])


def bounded_with_break(x):
    n = torch.zeros(())
    while bounded(x.sum() < 100, max_iters=6):
        x = x * 2
        if x.max() > 40:
            break
        n = n + 1
    return x, n


def test_break_inside_bounded_while():
    check(bounded_with_break, (t([1.0]),), [(t([s]),) for s in (200.0, 30.0, 15.0, 3.0, 2.0)])


class EarlyExitLayers(nn.Module):
    """An early-exit network: `return` from inside the loop over layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = torch.tanh(layer(x))
            if x.mean() > 0.2 * i:
                return self.head(x) * (i + 1)
        return self.head(x)


def test_return_from_inside_a_loop():
    m = EarlyExitLayers().eval()
    cases = [(torch.randn(1, 4, generator=torch.Generator().manual_seed(s)) * 3,) for s in range(12)]
    exits = set()
    for (x,) in cases:
        h = x
        with torch.no_grad():
            for i, layer in enumerate(m.layers):
                h = torch.tanh(layer(h))
                if h.mean() > 0.2 * i:
                    break
        exits.add(i if h.mean() > 0.2 * i else "end")
    assert len(exits) >= 3, exits  # the inputs leave at different layers
    check(m, cases[0], cases)


def nested_loop_return(x):
    for i in range(3):
        for j in range(3):
            if (x + i + j).sum() > 6:
                return x * (i * 3 + j)
            x = x + 0.5
    return -x


def test_return_from_a_nested_loop():
    check(nested_loop_return, (t([1.0]),), [(t([s]),) for s in (-10.0, 0.0, 2.0, 5.0, 7.0)])


def bounded_with_return(x):
    while bounded(x.sum() < 100, max_iters=6):
        x = x * 2
        if x.max() > 40:
            return x - 1000
    return x


def test_return_inside_bounded_while():
    check(bounded_with_return, (t([1.0]),), [(t([s]),) for s in (200.0, 30.0, 15.0, 7.0, 1.0)])


def first_index_over(x, limit):
    for i, v in enumerate(x):
        if v > limit:
            break
    return i * v  # the loop variables keep their values from the iteration that broke


def test_loop_variables_after_a_tensor_break():
    check(first_index_over, (t([1.0, 5.0, 9.0]), t(4.0)),
          [(t([1.0, 5.0, 9.0]), t(s)) for s in (0.0, 4.0, 6.0, 10.0)])


class BreakOverLayers(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(3)])

    def forward(self, x):
        for layer in self.layers:  # `layer` (a module) cannot be selected: fine while unused after
            x = torch.relu(layer(x)) + x
            if x.sum() > 3:
                break
        return x


def test_module_loop_variable_with_tensor_break():
    m = BreakOverLayers().eval()
    check(m, (torch.zeros(1, 3),), [(torch.full((1, 3), v),) for v in (-1.0, 0.0, 0.5, 2.0)])


def builtin_extremes(x):
    scale = max(x.abs().max(), 0.5)  # Python's max on a tensor and a number
    low = min(x.sum(), x.mean(), 1.0)
    return x / scale + low + max(3, 2)


def test_builtin_max_min_on_tensors():
    check(builtin_extremes, (t([1.0, 2.0]),), [(t(v),) for v in ([1.0, 2.0], [0.1, -0.2], [-3.0, 0.25])])


def nested_inputs(pair, extras, scale=2.0):
    a, b = pair
    out = a + b if a.sum() > b.sum() else a - b
    return out * extras["w"] * scale


def test_nested_example_inputs_become_graph_inputs():
    pair, extras = (t([1.0, 2.0]), t([0.5, 0.5])), {"w": t([3.0, 4.0])}
    g = compiler.trace(nested_inputs, (pair, extras))
    assert [v.name for v in g.inputs] == ["pair_0", "pair_1", "extras_w"]
    for a, b in (([1.0, 2.0], [0.5, 0.5]), ([0.0, 0.0], [1.0, 1.0])):
        feeds = {"pair_0": np.array(a, np.float32), "pair_1": np.array(b, np.float32),
                 "extras_w": np.array([3.0, 4.0], np.float32)}
        want = nested_inputs((t(a), t(b)), {"w": t([3.0, 4.0])}).numpy()
        np.testing.assert_allclose(compiler.interpret(g, feeds)["output"], want, atol=1e-6)


def test_dataclass_outputs():
    import dataclasses

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        aux: torch.Tensor = None

    def f(x):
        return Out(logits=x * 2 if x.sum() > 0 else x)

    g = compiler.trace(f, (t([1.0]),))
    assert [v.name for v in g.outputs] == ["logits"]
    assert compiler.interpret(g, {"x": np.array([-1.0], np.float32)})["logits"].tolist() == [-1.0]


class HelperFromInit(nn.Module):
    def __init__(self):
        super().__init__()
        self.__bias = 1.5

        def shift(v):  # defined in __init__ (not converted with forward), mangled as inside the class
            return v + self.__bias if v.sum() > 0 else v - self.__bias
        self.shift = shift

    def forward(self, x):
        return self.shift(x)


def test_helper_defined_in_init_keeps_private_names():
    check(HelperFromInit(), (t([1.0]),), [(t([1.0]),), (t([-1.0]),)])

"""What converted code calls at run time (the rewriter's `_aotc_rt`).

Each helper decides when it runs, not when the code is rewritten, whether a condition
is a tensor that depends on the model's inputs. If it is not, the construct behaves
exactly as Python would (so library code, shape checks and flags keep working). If it
is, every branch is traced and the results are merged with `torch.where`.
"""
from __future__ import annotations

import contextlib
import math
import operator

import torch

from . import guard as _guard
from .convert import call  # noqa: F401  (the call hook converted code uses)
from .errors import (AotcError, BranchMismatchError, LoopBoundError, SideEffectError, TraceError,
                     UnboundedLoopError, UnsupportedControlFlowError)
from .select import NO_VALUE, select, unselectable_loop_variable  # noqa: F401  (NO_VALUE: see rewrite.py)
from .sites import SITES
from .undefined import Undefined


def is_dynamic(x) -> bool:
    """Outside a trace (converted code run eagerly) every tensor counts as dynamic."""
    g = _guard.active()
    if g is None:
        return isinstance(x, torch.Tensor)
    return g.is_dynamic(x)


def _predicate(value, site) -> torch.Tensor | None:
    """None for a value Python can decide on; else the 0-d bool tensor it stands for."""
    if not is_dynamic(value):
        return None
    shape = [int(d) for d in value.shape]  # int(): under the tracer, sizes are 0-d tensors
    if math.prod(shape) != 1:
        raise TraceError(
            f"the condition is a tensor of shape {shape} that depends on the model's inputs; Python would refuse "
            "its truth value (more than one element).", site.filename, site.lineno,
            "Reduce it to one element with .any() or .all().")
    p = value if value.dim() == 0 else value.reshape(())
    return p if p.dtype == torch.bool else p != 0


def _check_effects(site) -> None:
    if site.effects:
        e = site.effects[0]
        where = "in the body of the bounded `while`" if site.kind == "while" else \
            "in code that runs on only one path of the `if`"
        raise SideEffectError(
            f"{e.what} {where} at line {site.lineno}, whose condition depends on the model's inputs. aotc "
            "compiles such control flow by tracing every branch and selecting the results with torch.where, so a "
            "branch must not change anything outside itself (Python lists and dicts, attributes, tensors in "
            "place).", site.filename, e.lineno,
            "Compute the value in the branch and assign it to a variable; do the update after the `if`.")


def _run(fn, args, site, which: str):
    g = _guard.active()
    scope = g.branch(site, which) if g is not None else contextlib.nullcontext()
    try:
        with scope:
            return fn(*args)
    except (AotcError, UnboundLocalError):
        raise
    except Exception as e:
        part = "the loop body" if site.kind == "while" else f"the {which}-branch"
        raise TraceError(
            f"tracing {part} raised {type(e).__name__}: {e}. The condition depends on the model's inputs, so aotc "
            "traces every branch with the example inputs, including the one those inputs do not take.",
            site.filename, site.lineno, "Every branch must run on inputs of the example's shapes; a branch that "
            "only raises (input validation) cannot be compiled, since a compiled graph cannot raise.") from e


def load(local_vars: dict, names: tuple[str, ...]) -> tuple:
    """Current values of the variables a construct assigns (Undefined where unassigned)."""
    return tuple(local_vars[n] if n in local_vars else Undefined(n) for n in names)


def if_(pred, then_fn, else_fn, args: tuple, site_id: int) -> tuple:
    site = SITES[site_id]
    p = _predicate(pred, site)
    if p is None:
        return (then_fn if pred else else_fn)(*args)
    _check_effects(site)
    a = _run(then_fn, args, site, "then")
    b = _run(else_fn, args, site, "else")
    return tuple(_merge(p, n, x, y, site) for n, x, y in zip(site.names, a, b))


def _merge(p, name, a, b, site):
    try:
        return select(p, a, b, f"variable {name!r}", site)
    except BranchMismatchError:
        if name not in site.lenient:
            raise
        return unselectable_loop_variable(name, site, a)


def if_return(pred, then_fn, else_fn, args: tuple, site_id: int):
    site = SITES[site_id]
    p = _predicate(pred, site)
    if p is None:
        return (then_fn if pred else else_fn)(*args)
    _check_effects(site)
    a = _run(then_fn, args, site, "then")
    b = _run(else_fn, args, site, "else")
    return select(p, a, b, "the returned value", site)


def ifexp(pred, then_thunk, else_thunk, site_id: int):
    site = SITES[site_id]
    p = _predicate(pred, site)
    if p is None:
        return then_thunk() if pred else else_thunk()
    a = _run(then_thunk, (), site, "then")
    b = _run(else_thunk, (), site, "else")
    return select(p, a, b, "the value of `x if cond else y`", site)


def and_(site_id: int, *thunks):
    """`a and b` is `b if a else a`, with a tensor `a` a selection."""
    site = SITES[site_id]
    v = thunks[0]()
    for th in thunks[1:]:
        p = _predicate(v, site)
        if p is None:
            if not v:
                return v
            v = th()
        else:
            v = select(p, _run(th, (), site, "then"), v, "the value of `and`", site)
    return v


def or_(site_id: int, *thunks):
    """`a or b` is `a if a else b`."""
    site = SITES[site_id]
    v = thunks[0]()
    for th in thunks[1:]:
        p = _predicate(v, site)
        if p is None:
            if v:
                return v
            v = th()
        else:
            v = select(p, v, _run(th, (), site, "else"), "the value of `or`", site)
    return v


_COMPARE = {"Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le, "Gt": operator.gt,
            "GtE": operator.ge, "Is": operator.is_, "IsNot": operator.is_not,
            "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b}


def compare_chain(site_id: int, ops: tuple[str, ...], *thunks):
    """`a < b < c`: each comparison joined with `and` semantics, each operand evaluated once."""
    site = SITES[site_id]
    left, result, p = thunks[0](), None, None
    for op, th in zip(ops, thunks[1:]):
        if result is not None:
            p = _predicate(result, site)
            if p is None and not result:
                return result
        right = th()
        v = _COMPARE[op](left, right)
        result = v if result is None or p is None else select(p, v, result, "the chained comparison", site)
        left = right
    return result


def _builtin_extreme(builtin, pick_later):
    def extreme(*args, **kwargs):
        """Python's builtin on two or more values, some of them tensors depending on the inputs:
        the same choice (the first extreme one), made with torch.where."""
        if kwargs or len(args) < 2 or not any(is_dynamic(a) for a in args):
            return builtin(*args, **kwargs)
        from .errors import user_frame
        from .sites import Site
        user, _ = user_frame()
        site = Site("ifexp", user.f_code.co_filename if user else "", user.f_lineno if user else 0)
        v = args[0]
        for b in args[1:]:
            later = pick_later(b, v)
            p = _predicate(later, site)
            if p is None:
                v = b if later else v
            else:
                v = select(p, b, v, f"the value of {builtin.__name__}()", site)
        return v
    extreme.__name__ = builtin.__name__
    return extreme


builtin_max = _builtin_extreme(max, operator.gt)
builtin_min = _builtin_extreme(min, operator.lt)


def not_(value, site_id: int):
    p = _predicate(value, SITES[site_id])
    return (not value) if p is None else torch.logical_not(p)


def py_test(value, site_id: int):
    """The condition of an `if` kept as Python `if` (it controls break/continue, or returns from
    inside a loop, `with` or `try`): it must not depend on the inputs."""
    if is_dynamic(value):
        site = SITES[site_id]
        raise UnsupportedControlFlowError(
            f"this `if` depends on the model's inputs and {site.note}, which aotc cannot convert into a "
            "selection with torch.where.", site.filename, site.lineno,
            "Compute both outcomes and select with torch.where, or bound the loop with "
            "`while aotc.bounded(cond, max_iters=N):` and let the condition stop it.")
    return value


def loop_test(value, site_id: int):
    if is_dynamic(value):
        site = SITES[site_id]
        raise UnboundedLoopError(
            "this `while` loop's condition depends on the model's inputs, so the number of iterations is not known "
            "when compiling.", site.filename, site.lineno,
            "Give it a bound: `while aotc.bounded(cond, max_iters=N):` (from compiler import bounded) traces N "
            "iterations and masks out the ones after the condition turns false.")
    return value


def loop_exit(broke, site_id: int) -> bool:
    """The real `break` of a loop whose breaks became a flag: taken when the flag is a Python
    True. A tensor flag keeps the loop going with later iterations masked, which a `for` loop
    ends by itself but a `while` loop on a Python condition may never."""
    site = SITES[site_id]
    if is_dynamic(broke):
        if site.note == "while":
            raise UnboundedLoopError(
                "this `while` loop ends through a `break` whose condition depends on the model's inputs, so the "
                "number of iterations is not known when compiling.", site.filename, site.lineno,
                "Bound it: `while aotc.bounded(cond, max_iters=N):` (break and continue work inside it), or "
                "loop `for _ in range(N):`.")
        return False
    return bool(broke)


def while_(cond_fn, body_fn, max_iters, args: tuple, site_id: int) -> tuple:
    """`while bounded(cond, max_iters):` — Python iterations while the condition is a Python value;
    once it depends on the inputs, the remaining iterations (up to max_iters in all) are traced
    and each result kept only where the condition still held."""
    site = SITES[site_id]
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 0:
        raise TraceError(f"the bound of `aotc.bounded` must be a non-negative Python int, not {max_iters!r}.",
                         site.filename, site.lineno)
    vals, active, it = tuple(args), None, 0
    while True:
        c = cond_fn(*vals)
        p = _predicate(c, site)
        if active is None and p is None:
            if not c:
                return vals
            vals = body_fn(*vals)
            it += 1
            continue
        if active is None:
            active = p
        else:
            active = active & (p if p is not None else bool(c))
        if it >= max_iters:
            g = _guard.active()
            with (g.concrete() if g is not None else contextlib.nullcontext()):
                exceeded = bool(active)
            if exceeded:
                raise LoopBoundError(
                    f"the loop is bounded to {max_iters} iteration(s), but with the example inputs its condition "
                    f"still holds after {it}. The compiled model runs at most {max_iters}, so it would be wrong "
                    "for these inputs.", site.filename, site.lineno,
                    "Raise max_iters to the most iterations any input can need.")
            return vals
        _check_effects(site)
        new = _run(body_fn, vals, site, "body")
        vals = tuple(select(active, x, y, f"variable {n!r}", site) for n, x, y in zip(site.names, new, vals))
        it += 1

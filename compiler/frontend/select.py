"""Merging what the two sides of a tensor condition computed into one value with
`torch.where`, with the rules that keep the merge faithful to eager PyTorch.

Tensors must agree exactly in shape and dtype: a `where` over merely broadcastable
shapes would have a shape that neither branch has in eager mode. A Python number may
meet a tensor (it broadcasts, and must not change the tensor's dtype); two different
Python numbers become a 0-d tensor. Containers merge element by element; anything else
must be the same object on both sides.
"""
from __future__ import annotations

import numbers

import torch

from .errors import BranchMismatchError
from .undefined import Undefined

_PLAIN = (str, bytes, int, float, bool, complex, type(None))


def describe(v) -> str:
    if isinstance(v, torch.Tensor):
        # int(): under the tracer, sizes are 0-d tensors
        return f"a {str(v.dtype).replace('torch.', '')} tensor of shape {[int(d) for d in v.shape]}"
    if isinstance(v, Undefined):
        return "unassigned"
    if isinstance(v, (bool, numbers.Number)):
        return f"the Python {type(v).__name__} {v!r}"
    if isinstance(v, (tuple, list)):
        return f"a {type(v).__name__} of {len(v)}"
    if v is None:
        return "None"
    return f"a {type(v).__name__}"


def _mismatch(site, what: str, a, b, why: str = "") -> BranchMismatchError:
    sides = ("the loop body's result", "the value before the iteration") if site.kind == "while" else \
        ("the then-branch", "the else-branch")
    return BranchMismatchError(
        f"{what} is {describe(a)} in {sides[0]} but {describe(b)} in {sides[1]}{why}; the condition depends on "
        "the model's inputs, so aotc must select between both results with torch.where.", site.filename,
        site.lineno, "Make both sides produce tensors of the same shape and dtype (or the same Python value).")


_UNDEFINED_HINT = ("aotc compiles such control flow by running every branch and selecting each variable with "
                   "torch.where, so a variable used afterwards needs a value on every path: assign it before the "
                   "`if` or in every branch.")


def unselectable_loop_variable(name: str, site, value) -> Undefined:
    """A `for` loop's variable after a break that depends on the inputs, when its values (modules,
    layers, strings) cannot be selected: fine unless it is used after the loop."""
    return Undefined(name, (site, f"is the variable of the `for` loop at line {site.lineno}, which a `break` "
                                  f"depending on the model's inputs may end early, and its values ({describe(value)})"
                                  " cannot be selected with torch.where, so it has no value after the loop",
                            "Keep what you need from the loop in a tensor variable assigned inside it."))


def _is_number(v) -> bool:
    return isinstance(v, (bool, int, float)) and not isinstance(v, torch.Tensor)


class _NoValue:
    """The value a loop's `return` slot holds before any `return` ran: a flag guards every read,
    so selecting it against a real value gives the real value."""

    def __repr__(self):
        return "<no value>"


NO_VALUE = _NoValue()


def select(p: torch.Tensor, a, b, what: str, site):
    """`a` where the 0-d bool tensor `p` holds, else `b`."""
    if a is b or b is NO_VALUE:
        return a
    if a is NO_VALUE:
        return b
    if isinstance(a, Undefined) or isinstance(b, Undefined):
        if isinstance(a, Undefined) and isinstance(b, Undefined):
            return a
        name = (a if isinstance(a, Undefined) else b).name
        if site.kind == "while":
            text = "is assigned in the loop body but not before the loop"
        else:
            text = f"is assigned only in the {'else' if isinstance(a, Undefined) else 'then'}-branch"
        return Undefined(name, (site, text + f" of this `{site.kind}`, whose condition depends on the model's "
                                "inputs", _UNDEFINED_HINT))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise _mismatch(site, what, a, b)
        return torch.where(p, a, b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        t, other = (a, b) if isinstance(a, torch.Tensor) else (b, a)
        if not _is_number(other):
            raise _mismatch(site, what, a, b)
        if torch.result_type(t, other) != t.dtype:
            raise _mismatch(site, what, a, b, " (the number would change the tensor's dtype)")
        # a 0-d tensor of the same dtype: the TorchScript tracer has no where(Tensor, bool, Tensor)
        other = torch.tensor(other, dtype=t.dtype)
        return torch.where(p, t, other) if t is a else torch.where(p, other, t)
    if _is_number(a) and _is_number(b):
        if type(a) is type(b) and a == b:
            return a
        return torch.where(p, torch.tensor(a), torch.tensor(b))
    if isinstance(a, (tuple, list)) and type(a) is type(b):
        if len(a) != len(b):
            raise _mismatch(site, what, a, b)
        items = [select(p, x, y, f"{what}[{i}]", site) for i, (x, y) in enumerate(zip(a, b))]
        return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)
    if isinstance(a, dict) and type(a) is type(b):
        if list(a) != list(b):
            raise _mismatch(site, what, a, b, f" (keys {list(a)} vs {list(b)})")
        merged = {k: select(p, a[k], b[k], f"{what}[{k!r}]", site) for k in a}
        try:
            return type(a)(**merged) if type(a) is not dict else merged
        except TypeError:
            return type(a)(merged)
    if isinstance(a, _PLAIN) and type(a) is type(b) and a == b:
        return a
    raise _mismatch(site, what, a, b)

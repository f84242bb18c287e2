"""The guard active while a model is traced: a torch function mode that tracks which
tensors depend on the model's inputs ("dynamic" tensors), refuses to turn them into
Python values, and refuses in-place changes, inside a branch being traced for a tensor
condition, to tensors that exist outside that branch.

Tracing records one path through the program; any Python decision taken on a dynamic
tensor's value would silently freeze that path. A tensor computed only from parameters
and constants is static: deciding on it in Python is exact, because the weights are
baked into the compiled model.
"""
from __future__ import annotations

import contextlib
import weakref

import torch
from torch.overrides import TorchFunctionMode

from .errors import DataDependentValueError, SideEffectError, error_at_user_code, format_location

_CONCRETIZERS = {
    "item": "`.item()`", "tolist": "`.tolist()`", "numpy": "`.numpy()`", "__array__": "conversion to a NumPy array",
    "__bool__": "`bool()` (an `assert`, a chained comparison, or an `if`/`while` aotc did not convert)",
    "__int__": "`int()`", "__float__": "`float()`", "__index__": "use as a Python index or size",
    "__complex__": "`complex()`", "__contains__": "`in`",
}
_INPLACE_DUNDERS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                    "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__"}
_NOT_MUTATIONS = {"requires_grad_", "retain_grad", "share_memory_", "register_hook"}


def _tensors(x, depth: int = 0):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)) and depth < 2:
        for v in x:
            yield from _tensors(v, depth + 1)
    elif isinstance(x, dict) and depth < 2:
        for v in x.values():
            yield from _tensors(v, depth + 1)


def _inplace_target(name: str, args, kwargs):
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if name in _INPLACE_DUNDERS or (name.endswith("_") and not name.startswith("_") and name not in _NOT_MUTATIONS):
        return first
    if kwargs.get("inplace") is True:
        return first
    out = kwargs.get("out")
    return out if isinstance(out, torch.Tensor) else None


def _static_queries() -> set:
    """Functions that describe a tensor's static type, not its values. Under the tracer they
    return sizes as 0-d tensors, which must not count as input-dependent: shapes are fixed at
    compile time."""
    T = torch.Tensor
    fns = {T.size, T.dim, T.numel, T.__len__, T.stride, T.element_size, T.nelement, T.ndimension}
    for prop in ("shape", "ndim", "dtype", "device", "is_cuda", "layout", "requires_grad", "is_sparse"):
        fns.add(getattr(T, prop).__get__)
    return fns


_STATIC = _static_queries()
# Tensors made "like" another: only the other's shape, dtype and device matter, not its values.
_LIKE = {"new_tensor", "new_zeros", "new_ones", "new_full", "new_empty", "zeros_like", "ones_like", "full_like",
         "empty_like"}


class _TensorSet:
    """Tensors by identity, without keeping them alive."""

    def __init__(self):
        self._refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        self._refs[id(t)] = weakref.ref(t)

    def __contains__(self, t: torch.Tensor) -> bool:
        r = self._refs.get(id(t))
        return r is not None and r() is t


class BranchScope:
    """Tensors created while one branch (or loop iteration) of a tensor condition is traced."""

    def __init__(self, site, which: str):
        self.site, self.which = site, which
        self.created = _TensorSet()


class TraceGuard(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.dynamic = _TensorSet()
        self.scopes: list[BranchScope] = []
        self._concrete_ok = 0
        self.refused = None  # the first error the guard raised

    # -- queries the runtime helpers use --------------------------------------------------------
    def is_dynamic(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t in self.dynamic

    def mark_dynamic(self, t: torch.Tensor) -> None:
        self.dynamic.add(t)

    @contextlib.contextmanager
    def branch(self, site, which: str):
        self.scopes.append(BranchScope(site, which))
        try:
            yield
        finally:
            self.scopes.pop()

    @contextlib.contextmanager
    def concrete(self):
        """Let aotc itself read a dynamic value (e.g. to check a loop bound on the example inputs)."""
        self._concrete_ok += 1
        try:
            yield
        finally:
            self._concrete_ok -= 1

    def _record(self, err):
        """Keep the first refusal: code that catches every exception (`except Exception:`) must not
        turn it into a silently wrong graph; the tracer raises it when the trace ends."""
        if self.refused is None:
            self.refused = err
        return err

    # -- the mode ---------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _CONCRETIZERS and not self._concrete_ok and any(self.is_dynamic(a) for a in args[:2]):
            raise self._record(error_at_user_code(
                DataDependentValueError,
                f"{_CONCRETIZERS[name]} reads the value of a tensor that depends on the model's inputs. A compiled "
                "graph cannot hand a value back to Python: tracing would freeze the example input's value here "
                "and the model would be wrong for other inputs." + _unconverted_note(),
                "Keep the computation in tensors (torch.where instead of a Python branch on the value, tensor "
                "arithmetic instead of Python numbers); `if`, `while aotc.bounded(...)`, `and`/`or`/`not` and "
                "`x if c else y` in your own functions are converted automatically."))
        target = _inplace_target(name, args, kwargs)
        if target is not None and self.scopes:
            self._check_mutation(target, name)
        out = func(*args, **kwargs)
        if func in _STATIC:
            return out
        value_args = args[1:] if name in _LIKE else args
        if any(self.is_dynamic(t) for t in _tensors(value_args)) or \
                any(self.is_dynamic(t) for t in _tensors(kwargs)):
            for t in _tensors(out):
                self.dynamic.add(t)
            if target is not None:
                self.dynamic.add(target)
        for scope in self.scopes:
            for t in _tensors(out):
                scope.created.add(t)
        return out

    def _check_mutation(self, target: torch.Tensor, name: str) -> None:
        scope = self.scopes[-1]
        base = target._base if target._base is not None else target
        if target in scope.created and base in scope.created:
            return
        site = scope.site
        what = "assignment into a tensor (`t[...] = ...`)" if name == "__setitem__" else \
            f"in-place operation `{name}`"
        where = "the body of the bounded `while`" if site.kind == "while" else \
            f"the {scope.which}-branch of the `{site.kind}`"
        raise self._record(error_at_user_code(
            SideEffectError,
            f"{what} changes a tensor created outside {where} at {format_location(site.filename, site.lineno)}, "
            "whose condition depends on the model's inputs. aotc traces every branch of such control flow and "
            "selects the results with torch.where, so a branch must not change anything outside itself.",
            "Compute a new tensor instead (e.g. `x = x + 1` rather than `x += 1` or `x.add_(1)`; "
            "`x = torch.where(mask, v, x)` rather than `x[mask] = v`)."))


def _unconverted_note() -> str:
    from .usercode import CONVERTED_CODE
    from .errors import user_frame
    user, _ = user_frame()
    if user is None or user.f_code in CONVERTED_CODE:
        return ""
    return (f" aotc did not convert `{user.f_code.co_name}`, so its control flow runs as written: aotc converts "
            "the functions your converted code calls, but not decorated functions, lambdas, or code called "
            "from libraries.")


_ACTIVE: list[TraceGuard] = []


def active() -> TraceGuard | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def guarding(guard: TraceGuard):
    _ACTIVE.append(guard)
    try:
        with guard:
            yield guard
    finally:
        _ACTIVE.pop()

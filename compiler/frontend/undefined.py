"""A variable with no value on the path taken: assigned before a tensor `if` in neither
place, or in only one branch of it. Using it raises; merely having it is fine (a branch
temporary that is never read after the `if` is common)."""
from __future__ import annotations


class Undefined:
    __slots__ = ("name", "reason")

    def __init__(self, name: str, reason=None):
        self.name = name
        # None: a plain Python path (using it is an UnboundLocalError); else (site, text, hint), where
        # `text` completes "variable NAME ..." and `hint` says how to fix it
        self.reason = reason

    def fail(self, *args, **kwargs):
        if self.reason is None:
            raise UnboundLocalError(f"cannot access local variable {self.name!r} where it is not associated "
                                    "with a value")
        from .errors import BranchMismatchError, format_location, user_frame
        site, text, hint = self.reason
        user, _ = user_frame()
        used = (f" It is used at {format_location(user.f_code.co_filename, user.f_lineno)}."
                if user is not None else "")
        raise BranchMismatchError(f"variable {self.name!r} {text}.{used}", site.filename, site.lineno, hint)

    def __repr__(self) -> str:
        return f"<undefined {self.name}>"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for a in list(args) + list((kwargs or {}).values()):
            if isinstance(a, Undefined):
                a.fail()
        return NotImplemented


def _failing(name):
    def method(self, *args, **kwargs):
        self.fail()
    method.__name__ = name
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__",
              "__rmatmul__", "__neg__", "__pos__", "__abs__", "__invert__", "__and__", "__rand__", "__or__",
              "__ror__", "__xor__", "__rxor__", "__lt__", "__le__", "__gt__", "__ge__", "__getitem__",
              "__setitem__", "__call__", "__bool__", "__iter__", "__len__", "__int__", "__float__", "__index__",
              "__getattr__", "__contains__"):
    setattr(Undefined, _name, _failing(_name))

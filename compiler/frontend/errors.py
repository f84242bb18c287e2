"""Errors the frontend reports, each pointing at the user's source line.

A `TraceError` names `file:line` and quotes the offending line of the user's
code (never aotc's generated code), then says why and what to write instead,
all in one paragraph like every other `AotcError`.
"""
from __future__ import annotations

import linecache
import os
import sys

from ..errors import AotcError


def display_path(filename: str) -> str:
    """A path relative to the working directory when the file lies under it."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def format_location(filename: str | None, lineno: int | None) -> str:
    if not filename or not lineno:
        return "<unknown location>"
    line = linecache.getline(filename, lineno).strip()
    where = f"{display_path(filename)}:{lineno}"
    return f"{where} (`{line}`)" if line else where


class TraceError(AotcError):
    """Tracing a PyTorch model or function failed because of the user's code."""

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None, hint: str = ""):
        self.filename, self.lineno = filename, lineno
        self.source_line = linecache.getline(filename, lineno).strip() if filename and lineno else ""
        self.reason = message
        text = f"{format_location(filename, lineno)}: {message}" if filename else message
        if hint:
            text += " " + hint
        super().__init__(" ".join(text.split("\n")))


class SideEffectError(TraceError):
    """A branch under a tensor condition changes something outside itself."""


class BranchMismatchError(TraceError):
    """The two branches of a tensor condition give values `where` cannot select between."""


class UnboundedLoopError(TraceError):
    """A `while` loop's condition depends on the inputs and the loop has no bound."""


class LoopBoundError(TraceError):
    """A bounded `while` loop needs more iterations than its bound on the example inputs."""


class DataDependentValueError(TraceError):
    """A tensor computed from the inputs is turned into a Python value (`.item()`, `bool()`, ...)."""


class UnsupportedControlFlowError(TraceError):
    """Control flow on a tensor condition that aotc cannot convert (e.g. `break` under it)."""


class ModelSpecError(AotcError):
    """A `FILE.py:factory` spec or an `--example-input` spec cannot be used."""


def user_frame(skip_library: bool = True):
    """The innermost frame of the user's code on the stack (and the innermost non-aotc frame,
    which may be a library's), skipping aotc's frontend and torch."""
    from .usercode import is_frontend_file, is_user_file
    f = sys._getframe(1)
    first_outside = None
    while f is not None:
        fn = f.f_code.co_filename
        if not is_frontend_file(fn):
            if first_outside is None and "/torch/" not in fn:
                first_outside = f
            if is_user_file(fn):
                return f, first_outside
        f = f.f_back
    return None, first_outside


def error_at_user_code(cls: type[TraceError], message: str, hint: str = "") -> TraceError:
    """Build `cls` located at the innermost user frame; mention the library frame if the
    problem happened inside a library the user's code called."""
    user, inner = user_frame()
    if inner is not None and inner is not user:
        message += (f" (This happened inside {format_location(inner.f_code.co_filename, inner.f_lineno)}, "
                    "library code aotc does not convert, called from the line above.)")
    if user is None:
        return cls(message, hint=hint)
    return cls(message, user.f_code.co_filename, user.f_lineno, hint)

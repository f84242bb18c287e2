"""Progress of long steps (calibration, head scoring, kernel compilation), reported to whoever listens.

A step says what it does and how many units it has; the front end decides how to show it (a rich
progress bar on a terminal, a line per step with --verbose, nothing with --quiet or in the Python API by
default):

    with progress.task("calibrating", total=len(samples)) as t:
        for feed in samples:
            ...
            t.advance()

Steps deep in passes and targets need no reporter handed down to them: the front end installs one
for the duration of a command (`with progress.reporting(reporter): ...`), per thread of control
(a context variable)."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    def start(self, description: str, total: int | None) -> Task: ...
    def finish(self, task: Task) -> None: ...


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass


_SILENT = _Silent()
_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("aotc_progress_reporter", default=None)


@contextlib.contextmanager
def task(description: str, total: int | None = None) -> Iterator[Task]:
    """A unit of work with `total` steps (None: unknown), shown by the installed reporter, if any."""
    reporter = _reporter.get()
    if reporter is None:
        yield _SILENT
        return
    t = reporter.start(description, total)
    try:
        yield t
    finally:
        reporter.finish(t)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Show every task started inside the block with `reporter`."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)

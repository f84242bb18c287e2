"""How a command talks to the person who ran it: results on stdout, everything else on stderr.

Three levels, the same for every command: `-q` prints nothing but errors (and the result a command
exists to print); the default prints summaries and, on a terminal, progress bars for long steps
(calibration, head scoring, kernel compilation); `-v` prints every step as a line (and progress as
lines when stderr is not a terminal, e.g. in CI logs)."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

import typer

from aotc.compiler import progress


class Console:
    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet, self.verbose = quiet, verbose and not quiet
        self.tty = sys.stderr.isatty()

    def info(self, msg: str) -> None:
        """A summary line (stderr), unless --quiet."""
        if not self.quiet:
            typer.echo(msg, err=True)

    def detail(self, msg: str) -> None:
        """A step-by-step line (stderr), only with --verbose."""
        if self.verbose:
            typer.echo(msg, err=True)

    @contextlib.contextmanager
    def progress(self) -> Iterator[None]:
        """Show the long steps started inside the block: bars on a terminal, lines with --verbose."""
        if self.quiet:
            yield
            return
        if self.tty and not self.verbose:
            reporter = _RichBars()
            with reporter.bars, progress.reporting(reporter):
                yield
            return
        with progress.reporting(_Lines() if self.verbose else None):
            yield


class _RichTask:
    def __init__(self, bars, task_id):
        self.bars, self.task_id = bars, task_id

    def advance(self, n: int = 1) -> None:
        self.bars.advance(self.task_id, n)


class _RichBars:
    def __init__(self):
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=RichConsole(stderr=True), transient=True)

    def start(self, description: str, total: int | None) -> _RichTask:
        return _RichTask(self.bars, self.bars.add_task(description, total=total))

    def finish(self, task: _RichTask) -> None:
        self.bars.remove_task(task.task_id)


class _LineTask:
    def __init__(self, description: str, total: int | None):
        self.description, self.total, self.done, self.t0 = description, total, 0, time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n


class _Lines:
    """--verbose without a terminal: one line when a step starts and one when it ends, with its time."""

    def start(self, description: str, total: int | None) -> _LineTask:
        typer.echo(f"aotc: {description} ({total if total is not None else '?'} steps) ...", err=True)
        return _LineTask(description, total)

    def finish(self, task: _LineTask) -> None:
        typer.echo(f"aotc: {task.description}: {task.done} done in {time.perf_counter() - task.t0:.1f} s", err=True)

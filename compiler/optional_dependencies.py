"""Python packages only some commands need, each installed by an aotc extra (pyproject.toml
[project.optional-dependencies]). A missing one is the user's to install: one paragraph naming the extra,
not a ModuleNotFoundError traceback from deep inside aotc."""
from __future__ import annotations

import importlib
import sys

from .errors import AotcError


class MissingDependencyError(AotcError):
    """An optional Python package that the requested work needs is not installed."""


def require(module: str, purpose: str, extra: str, package: str | None = None):
    """Import `module` for `purpose` ("Tracing PyTorch models"), or raise MissingDependencyError naming
    `pip install 'aotc[extra]'`. A module missing *inside* `module` (a broken install) stays a bug."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != module.split(".")[0]:
            raise
        raise MissingDependencyError(
            f"{purpose} needs the Python package {package or module!r}, which is not installed in this environment "
            f"({sys.executable}). Install it with `pip install 'aotc[{extra}]'` (or `pip install {package or module}`)."
        ) from None

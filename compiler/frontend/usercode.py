"""Which code is the user's (and so gets its control flow converted) and which is a
library's (run as it is: torch, transformers, the standard library, aotc itself)."""
from __future__ import annotations

import functools
import os
import site
import sysconfig
import types
from pathlib import Path

_FRONTEND_DIR = str(Path(__file__).resolve().parent)
# This file is aotc/compiler/frontend/usercode.py (in a checkout aotc/compiler links to compiler/): the aotc
# package and, by their real paths, its subpackages.
_AOTC_PACKAGE = Path(__file__).parents[2]
_AOTC_DIRS = [str(_AOTC_PACKAGE)] + [str(_AOTC_PACKAGE / d) for d in ("compiler", "passes", "targets", "runtime_stub")]

# The code objects aotc's conversion produced (convert.py adds them; guard.py asks, to say whether a frame's
# control flow was converted). Kept here, below both, so neither imports the other for it.
CONVERTED_CODE: set[types.CodeType] = set()


@functools.lru_cache(maxsize=None)
def _library_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            dirs.add(os.path.realpath(p))
    try:
        dirs.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # some virtualenvs' site module lacks it
        pass
    dirs.update(os.path.realpath(p) for p in _AOTC_DIRS)
    return tuple(sorted(dirs))


@functools.lru_cache(maxsize=4096)
def is_frontend_file(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_FRONTEND_DIR + os.sep)


@functools.lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """A real source file outside the standard library, site-packages and aotc."""
    if not filename or filename.startswith("<"):
        return False
    real = os.path.realpath(filename)
    return os.path.isfile(real) and not any(real.startswith(d + os.sep) for d in _library_dirs())


def is_user_function(fn: types.FunctionType, extra_modules: tuple[str, ...] = ()) -> bool:
    """Whether aotc converts `fn`: the user's own code, or a module the user named in
    `convert_modules` (for library code that branches on tensors)."""
    module = getattr(fn, "__module__", None) or ""
    if any(module == m or module.startswith(m + ".") for m in extra_modules):
        return True
    return is_user_file(fn.__code__.co_filename)

"""The versions of the tools a target compiles with, for `Target.toolchain_versions()`.

`aotc build` puts them into an artifact's cache key: a bundle built with another TVM, nvcc or cross compiler
may differ, so it must not be taken from the cache. A tool's version is what it says about itself (a Python
distribution's metadata, the first line of `CMD --version`), read once per process."""
from __future__ import annotations

import functools
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

MISSING = "missing"  # not installed: its own value, so installing it later changes the key


@functools.lru_cache(maxsize=None)
def package_version(distribution: str) -> str:
    """A Python distribution's version (no import: reading it must not load TVM or coremltools)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return MISSING


@functools.lru_cache(maxsize=None)
def command_version(command: str, line_with: str = "") -> str:
    """What `COMMAND --version` says: its first line (gcc, clang: 'aarch64-linux-gnu-gcc (Debian 12.2.0-14)
    12.2.0'), or its first line containing `line_with` (nvcc names its release on the fourth line)."""
    path = shutil.which(command) or (command if Path(command).is_file() else None)
    if path is None:
        return MISSING
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return MISSING
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    picked = [line for line in lines if line_with in line]
    return picked[0] if picked else MISSING

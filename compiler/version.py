"""aotc's version, written in one place: pyproject.toml's [project] version.

An installed aotc (wheel or editable) reads it from the distribution's metadata. A plain source checkout
run without installing (PYTHONPATH=. python -m aotc) has no metadata of its own, or another install's,
so there the checkout's own pyproject.toml is read first: it is the version of the code that runs."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aotc"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
UNKNOWN = "0+unknown"  # neither installed nor in a checkout (e.g. files copied by hand)


def _checkout_version(pyproject: Path) -> str | None:
    """[project] version from a pyproject.toml that belongs to aotc (tomllib is 3.11+; the file is ours and
    simple, so its [project] table is read line by line)."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if not table:
        return None
    name = re.search(r'^name\s*=\s*"([^"]+)"', table.group(1), re.M)
    version = re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
    return version.group(1) if name and name.group(1) == DISTRIBUTION and version else None


def aotc_version() -> str:
    found = _checkout_version(_PYPROJECT)
    if found:
        return found
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN

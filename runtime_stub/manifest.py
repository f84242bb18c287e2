"""manifest.json as Python tools read it (`aotc inspect`, `aotc run`): parsed as strictly as the C
loader parses it (duplicate keys and NaN refused, so both read one meaning from the same bytes), and
checked for the structure those tools rely on. The C loader (aotc_runtime.c) stays the authority on
whether a bundle may run; this module only keeps the tools from tripping over a malformed manifest."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .errors import RuntimeStubError

MAX_MANIFEST_BYTES = 64 << 20  # the C loader's limit (aotc_runtime.c AOTC_MAX_MANIFEST_BYTES)
DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool")


class ManifestError(RuntimeStubError):
    """manifest.json is missing, not JSON, or lacks what a bundle manifest has."""


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: bytes, where: str = "manifest.json"):
    """`text` as JSON, parsed as strictly as the C loader parses it (raises ManifestError)."""
    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ManifestError(f"{where} is not valid JSON ({e})") from None


def parse_manifest(text: bytes, where: str = "manifest.json") -> dict:
    """The manifest in `text`, structure-checked (raises ManifestError)."""
    man = parse_json(text, where)
    problem = manifest_problem(man)
    if problem:
        raise ManifestError(f"{where} is not a bundle manifest: {problem}")
    return man


def manifest_problem(man) -> str | None:
    """What is wrong with the structure of a parsed manifest, or None."""
    if not isinstance(man, dict):
        return f"it holds a JSON {type(man).__name__}, not an object"
    for key in ("inputs", "outputs"):
        items = man.get(key)
        if not isinstance(items, list):
            return f"'{key}' is missing or not a list"
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return f"{key}[{i}] has no name"
            if item.get("dtype") not in DTYPES:
                return f"{key} {item['name']!r} has no known dtype (one of {', '.join(DTYPES)})"
            shape = item.get("shape")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                return f"{key} {item['name']!r} has no shape (a list of whole numbers >= 0)"
    for key in ("target", "source_model"):
        if key in man and not isinstance(man[key], dict):
            return f"'{key}' is not an object"
    if "files" in man and not isinstance(man["files"], dict):
        return "'files' is not an object"
    passes = man.get("passes", [])
    if not isinstance(passes, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str) and
                                               isinstance(p.get("report", {}), dict) for p in passes):
        return "'passes' is not a list of objects with a name"
    for key in ("kernels", "kernel_calls", "arena_bytes", "weight_bytes", "flops"):
        if key in man and (type(man[key]) not in (int, float) or man[key] < 0):
            return f"'{key}' is not a number >= 0"
    return None


def read_manifest_bytes(bundle: str | os.PathLike, public_key=None) -> bytes:
    """The bytes of `bundle`'s manifest.json; with `public_key`, only once their signature verifies. A caller
    that hands them on (to the C loader) uses exactly what it read and checked."""
    bundle = Path(bundle)
    if public_key is not None:
        from .signature import verified_manifest
        return verified_manifest(bundle, public_key)
    path = bundle / "manifest.json"
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST_BYTES:
                raise ManifestError(f"{path} is not a regular file of at most {MAX_MANIFEST_BYTES >> 20} MiB")
            return f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(f"{bundle} is not an aotc bundle: it has no manifest.json") from None
    except OSError as e:
        raise ManifestError(f"{bundle} is not an aotc bundle: no readable manifest.json ({e.strerror or e})") from None


def read_manifest(bundle: str | os.PathLike, public_key=None) -> dict:
    """`bundle`'s manifest; with `public_key`, only once its signature verifies."""
    return parse_manifest(read_manifest_bytes(bundle, public_key), f"{Path(bundle)}/manifest.json")


def bundle_target(bundle: str | os.PathLike, public_key=None) -> str | None:
    """The target a bundle was compiled for (None if its manifest cannot say; loading it then explains why).

    With `public_key`, the signature is checked here, and for arm64-neon, whose aotc_runner is the bundle's
    own executable and runs before it could check anything itself, every listed file's SHA-256 too."""
    try:
        man = read_manifest(bundle, public_key)
    except ManifestError:
        if public_key is not None:
            raise
        return None
    name = man.get("target", {}).get("name")
    if public_key is not None and name == "arm64-neon":
        from .signature import check_listed_files
        check_listed_files(bundle, man)
    return name

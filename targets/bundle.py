"""The generic bundle writer every target uses.

A bundle is a directory: `manifest.json` (format and ABI version, the target,
inputs and outputs, the passes applied, the source model's SHA-256 and the
SHA-256 of every other file) beside the files a target contributes. It is
assembled in a staging directory beside the destination and swapped into
place in one step, so a failed compile leaves nothing behind and a reader
never sees half a bundle; the same model and options give byte-identical
bundles (the manifest holds no time, path or random value).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from compiler.errors import AotcError
from compiler.ir import Graph

# The bundle format and the C ABI between the runtime and model.so, defined here and nowhere else.
FORMAT_VERSION = 1
ABI_VERSION = 1


class BundleWriteError(AotcError):
    """The output path cannot hold a bundle."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def io_description(values) -> list[dict]:
    return [{"name": v.name, "dtype": v.dtype.value, "shape": list(v.shape)} for v in values]


def graph_digest(graph: Graph) -> str:
    h = hashlib.sha256(str(graph).encode())
    for v in graph.initializers.values():
        h.update(v.const.tobytes())
    return h.hexdigest()


def check_output_path(out: Path) -> None:
    """Refuse, before any work, an -o that exists and is not a bundle (or an empty folder)."""
    if out.exists() and not (out.is_dir() and ((out / "manifest.json").exists() or not any(out.iterdir()))):
        raise BundleWriteError(f"Output path {str(out)!r} exists and is not an aotc bundle; choose another -o.")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise BundleWriteError(f"Cannot write the bundle {str(out)!r}: {str(parent)!r} is a file, not a folder.")


def write_bundle(out: str | os.PathLike, files: Mapping[str, bytes], manifest: Mapping[str, Any]) -> Path:
    """Write `files` and `manifest` (plus the format/ABI versions and every file's SHA-256) as the bundle `out`,
    replacing a bundle already there in one atomic step."""
    out = Path(out)
    check_output_path(out)
    for name in files:
        parts = name.split("/")
        if name == "manifest.json" or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"a target asked for the bundle file name {name!r}")  # a bug in a target, not user error
    full = {"format_version": FORMAT_VERSION, "abi_version": ABI_VERSION, **manifest,
            "files": {name: sha256_bytes(data) for name, data in sorted(files.items())}}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise BundleWriteError(f"Cannot write the bundle {str(out)!r}: {e.strerror or e}. Choose an -o in a "
                               "folder you can write to.") from None
    try:
        for name, data in files.items():  # names may hold folders ("model.mlpackage/Manifest.json")
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
            if data[:4] == b"\x7fELF":
                (staging / name).chmod(0o755)
        (staging / "manifest.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        for d in sorted(p for p in staging.rglob("*") if p.is_dir()):
            d.chmod(0o755)
        staging.chmod(0o755)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _move_into_place(staging: Path, out: Path) -> None:
    """staging -> out. Where `out` exists (a bundle being rebuilt, or a concurrent compile's result), the two
    are exchanged atomically and the old one removed: readers see the old or the new bundle, never neither, and
    of two concurrent compiles to one -o the last to finish wins with a complete bundle."""
    for _ in range(100):
        try:
            os.rename(staging, out)  # `out` absent (or an empty folder): a plain rename
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise BundleWriteError(f"Cannot write the bundle {str(out)!r}: {e.strerror}.") from None
        if not (out / "manifest.json").exists() and out.exists():
            raise BundleWriteError(f"Output path {str(out)!r} exists and is not an aotc bundle; choose another -o.")
        try:
            if _exchange(staging, out):
                shutil.rmtree(staging, ignore_errors=True)  # now holds the replaced bundle
                return
        except FileNotFoundError:
            continue  # `out` vanished in between (another writer's fallback path): try the plain rename again
        # No atomic exchange on this system: move the old bundle aside, then rename.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        try:
            os.rename(out, old / "b")
        except FileNotFoundError:
            shutil.rmtree(old, ignore_errors=True)
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise BundleWriteError(f"Cannot write the bundle {str(out)!r}: other processes keep replacing it.")

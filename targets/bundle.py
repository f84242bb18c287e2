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

from aotc.compiler.errors import AotcError
from aotc.compiler.user_files import check_output_dir, make_staging_dir
from aotc.compiler.ir import Graph

# The bundle format and the C ABI between the runtime and model.so, defined here and nowhere else.
FORMAT_VERSION = 1
# A bundle of shape buckets (targets/bucket_bundle.py): a top-level manifest listing the buckets, each bucket a
# complete format-1 bundle in its own folder. Single-shape bundles stay format 1 and load as before.
BUCKETS_FORMAT_VERSION = 2
ABI_VERSION = 2  # the model.so entry points (runtime_stub/aotc_runtime.h AOTC_ABI_VERSION)


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


def model_id_for(aotc_version: str, target_manifest: dict, source: dict, passes: list, graph: Graph) -> str:
    """A compiled model's id (what model.so and the manifest must agree on): the digest of everything that
    decides the code."""
    src = json.dumps({"format": FORMAT_VERSION, "aotc": aotc_version, "target": target_manifest, "source": source,
                      "passes": passes, "graph": graph_digest(graph)}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:32]


def model_manifest(aotc_version: str, model_id: str, target_manifest: dict, source: dict, graph: Graph,
                   passes: list, target_fields: Mapping[str, Any]) -> dict:
    """A single-shape bundle's manifest fields (the writer adds the versions and the files' digests)."""
    return {"aotc_version": aotc_version, "model_id": model_id, "target": target_manifest, "source_model": source,
            "inputs": io_description(graph.inputs), "outputs": io_description(graph.outputs), "passes": passes,
            **target_fields}


def check_output_path(out: Path) -> None:
    """Refuse, before any work, an -o that exists and is not a bundle (or an empty folder)."""
    check_output_dir(str(out))  # a file there, a parent that is a file, a folder that cannot be written
    if out.exists() and not ((out / "manifest.json").exists() or not any(out.iterdir())):
        raise BundleWriteError(f"Output path {str(out)!r} exists and is not an aotc bundle; choose another -o.")


def manifest_bytes(manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> bytes:
    """manifest.json's bytes: the format/ABI versions (unless `manifest` names its own format), `manifest`, and
    the SHA-256 of every file, in a fixed key order."""
    full = {"format_version": FORMAT_VERSION, "abi_version": ABI_VERSION, **manifest,
            "files": {name: sha256_bytes(data) for name, data in sorted(files.items())}}
    return (json.dumps(full, indent=2, sort_keys=True) + "\n").encode()


class BundleWriter:
    """Assembles a bundle in a staging folder beside `out`, made when the writer is (so an -o that cannot be
    written fails before any compile work), and removed again if anything fails before `write`:

        with BundleWriter(out) as writer:
            ...                                   # the compile
            writer.write(files, manifest)
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        check_output_path(self.out)
        # Folders above `out` that this writer creates, removed again (if still empty) when the compile fails.
        self.created = [d for d in self.out.absolute().parents if not d.exists()]
        self.written = False
        self.staging = make_staging_dir(self.out)  # a path the user cannot write is their error, named

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)  # after write() it is gone already
        if not self.written:
            for d in self.created:  # deepest first
                try:
                    d.rmdir()
                except OSError:
                    break

    def write(self, files: Mapping[str, bytes], manifest: Mapping[str, Any], signing_key=None,
              links: Mapping[str, str] | None = None) -> Path:
        """Write `files` and `manifest` (plus the format/ABI versions and every file's SHA-256) as the bundle,
        replacing a bundle already there in one atomic step. `signing_key` (targets.signing.load_signing_key)
        adds manifest.sig, an Ed25519 signature over the manifest's bytes. `links` (name -> a relative path
        inside the bundle) are symbolic links, recorded in the manifest's "links"; a bucketed bundle's folders
        reach the one shared weights.bin through them."""
        staging = self.staging
        for name in [*files, *(links or {})]:
            parts = name.split("/")
            if name == "manifest.json" or "\\" in name or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"a target asked for the bundle file name {name!r}")  # a target's bug
        for name, data in files.items():  # names may hold folders ("model.mlpackage/Manifest.json")
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
            if data[:4] == b"\x7fELF":
                (staging / name).chmod(0o755)
        for name, to in sorted((links or {}).items()):
            if os.path.isabs(to) or not os.path.normpath(staging / name / ".." / to).startswith(str(staging)):
                raise ValueError(f"bundle link {name!r} -> {to!r} leaves the bundle")
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(to, staging / name)
        extra = {"links": dict(sorted(links.items()))} if links else {}
        (staging / "manifest.json").write_bytes(manifest_bytes({**manifest, **extra}, files))
        if signing_key is not None:
            from .signing import sign_bundle
            sign_bundle(staging, signing_key)
        for d in sorted(p for p in staging.rglob("*") if p.is_dir()):
            d.chmod(0o755)
        staging.chmod(0o755)
        _move_into_place(staging, self.out)
        self.written = True
        return self.out


def write_bundle(out: str | os.PathLike, files: Mapping[str, bytes], manifest: Mapping[str, Any],
                 signing_key=None) -> Path:
    """BundleWriter(out).write(...) in one call."""
    with BundleWriter(out) as writer:
        return writer.write(files, manifest, signing_key)


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

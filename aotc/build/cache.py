"""The content-addressed bundle cache: a folder (any path a CI system caches) of bundles named by cache key.

    .aotc-cache/ab/ab12...ef/manifest.json, model.so, ...

An entry is written in a staging folder and renamed into place, so a reader never sees half of one; two
builds writing the same key write the same bytes, and the second rename simply loses. An entry is used only
if every file matches the SHA-256 its manifest lists: a cache half restored by CI is a miss, not a broken
release."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


class BundleCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        """The cached bundle's folder, or None when there is none or it is damaged."""
        path = self.entry(key)
        return path if path.is_dir() and bundle_is_intact(path) else None

    def put(self, key: str, files: dict[str, bytes]) -> Path:
        path = self.entry(key)
        if self.get(key) is not None:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=path.parent))
        try:
            write_files(staging, files)
            if path.exists():  # damaged (get said so): replace it
                shutil.rmtree(path)
            try:
                os.rename(staging, path)
            except OSError:
                if self.get(key) is None:  # not a concurrent writer's identical entry
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in sorted(files.items()):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def read_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def bundle_is_intact(path: Path) -> bool:
    """Every file the manifest lists is there with its SHA-256, and nothing else is (target files may sit in
    folders, e.g. coreml's model.mlpackage/)."""
    try:
        listed = json.loads((path / "manifest.json").read_text())["files"]
        present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {"manifest.json"}
        if set(listed) != present:
            return False
        return all(hashlib.sha256((path / name).read_bytes()).hexdigest() == digest for name, digest in listed.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False

"""Running a bundle of shape buckets (format 2; targets/bucket_bundle.py describes the layout).

The runtime picks the smallest bucket that holds the inputs (by the product of its sizes), pads every input
that is smaller than the bucket with the input's pad value from the manifest (an input without one must match
the bucket exactly), runs that bucket's folder, an ordinary bundle, and slices each output back along the axes
that carry a bucketed dimension. Numpy only, like the rest of runtime_stub.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import RuntimeStubError
from .manifest import parse_manifest

_FOLDER = re.compile(r"[A-Za-z0-9_]{1,128}")


def is_bucketed(manifest) -> bool:
    return isinstance(manifest, dict) and "buckets" in manifest


class BucketChooser:
    """The manifest's buckets, checked, and the choice of a bucket for a set of inputs."""

    def __init__(self, manifest: Mapping[str, Any], where: str):
        b = manifest.get("buckets")
        try:
            self.dims = list(b["dims"])
            self.pad = dict(b.get("pad", {}))
            self.variants = [(v["name"], {d: v["sizes"][d] for d in self.dims}) for v in b["variants"]]
            self.inputs = {i["name"]: list(i["dims"]) for i in manifest["inputs"]}
            self.outputs = {o["name"]: list(o["dims"]) for o in manifest["outputs"]}
            ok = (self.variants and all(isinstance(d, str) for d in self.dims) and
                  all(isinstance(n, str) and _FOLDER.fullmatch(n) and
                      all(type(s) is int and s > 0 for s in sizes.values()) for n, sizes in self.variants) and
                  all(type(v) in (int, float) and math.isfinite(v) and k in self.inputs for k, v in self.pad.items())
                  and all(d is None or d in self.dims for axes in (*self.inputs.values(), *self.outputs.values())
                          for d in axes))
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise RuntimeStubError(f"{where} has a malformed 'buckets' description (dims, pad, variants with a name "
                                   "and sizes, and each input's and output's dims)")
        self.variants.sort(key=lambda v: math.prod(v[1].values()))

    def describe(self) -> str:
        return "; ".join(f"{name} ({', '.join(f'{d} {n}' for d, n in sizes.items())})"
                         for name, sizes in self.variants)

    def choose(self, feeds: Mapping[str, Any]) -> tuple[str, dict[str, np.ndarray], dict[str, int]]:
        """(the bucket's folder, the inputs padded to it, each bucketed dimension's size in the inputs)."""
        if not isinstance(feeds, Mapping):
            raise RuntimeStubError(f"run() takes a mapping of input names to arrays, not {type(feeds).__name__}")
        arrays = {name: np.asarray(a) for name, a in feeds.items()}
        need: dict[str, tuple[int, str]] = {}
        for name, arr in arrays.items():
            axes = self.inputs.get(name)
            if axes is None:
                raise RuntimeStubError(f"the model has no input '{name}'; its inputs are "
                                       f"{', '.join(self.inputs)}")
            if arr.ndim != len(axes):
                raise RuntimeStubError(f"input '{name}' has {arr.ndim} dimensions, the model takes {len(axes)}")
            for d, n in zip(axes, arr.shape):
                if d is None:
                    continue
                if d in need and need[d][0] != n:
                    raise RuntimeStubError(f"inputs '{need[d][1]}' and '{name}' disagree on dimension {d} "
                                           f"({need[d][0]} and {n})")
                need[d] = (n, name)
        sizes = {d: n for d, (n, _) in need.items()}
        fits = [v for v in self.variants if all(v[1][d] >= n for d, n in sizes.items())]
        if not fits:
            over = next((d for d, n in sizes.items() if all(v[1][d] < n for v in self.variants)), None)
            if over is None:  # an explicit bucket list: every size fits some bucket, not all of them one
                raise RuntimeStubError(f"no bucket of this bundle holds the inputs' sizes together "
                                       f"({', '.join(f'{d} {n}' for d, n in sizes.items())}; buckets: "
                                       f"{self.describe()})")
            raise RuntimeStubError(
                f"input '{need[over][1]}' has {over} {sizes[over]}, more than every bucket of this bundle holds "
                f"(largest {over} {max(v[1][over] for v in self.variants)}; buckets: {self.describe()}); split the "
                "input, or compile a larger bucket")
        folder, bucket = fits[0]
        padded = {}
        for name, arr in arrays.items():
            want = [bucket[d] if d is not None else n for d, n in zip(self.inputs[name], arr.shape)]
            if list(arr.shape) != want:
                if name not in self.pad:
                    raise RuntimeStubError(
                        f"input '{name}' has shape {list(arr.shape)} and the smallest bucket that holds it, {folder}, "
                        f"takes {want}; the bundle has no pad value for '{name}', so it must match a bucket exactly "
                        f"(buckets: {self.describe()}); compile with --pad {name}=VALUE to pad it")
                arr = np.pad(arr, [(0, w - n) for w, n in zip(want, arr.shape)], constant_values=self.pad[name])
            padded[name] = arr
        return folder, padded, sizes

    def unpad(self, outputs: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Each output sliced back to the inputs' sizes along the axes that carry a bucketed dimension."""
        out = {}
        for name, arr in outputs.items():
            axes = self.outputs.get(name, [])
            index = tuple(slice(0, sizes[d]) if d in sizes else slice(None) for d in axes)
            out[name] = np.ascontiguousarray(arr[index]) if any(d in sizes for d in axes) else arr
        return out


def bucket_manifest(bundle: Path, top: Mapping[str, Any], folder: str) -> bytes:
    """The bytes of a bucket's manifest.json, once their SHA-256 is the one the top-level manifest lists (so a
    signature over the top-level manifest covers every bucket)."""
    rel = f"{folder}/manifest.json"
    digest = top.get("files", {}).get(rel) if isinstance(top.get("files"), dict) else None
    try:
        text = (bundle / rel).read_bytes()
    except OSError as e:
        raise RuntimeStubError(f"bundle {bundle} is incomplete: cannot read {rel} ({e.strerror or e})") from None
    actual = hashlib.sha256(text).hexdigest()
    if actual != digest:
        raise RuntimeStubError(f"bundle {bundle} is corrupted: {rel} has SHA-256 {actual[:16]}..., the manifest says "
                               f"{str(digest)[:16]}...")
    return text


class BucketedModel:
    """runtime_stub.load's result for a bucketed bundle: each bucket a runtime_stub.Model, opened on first use
    (the C loader checks its folder as any bundle); `run` picks, pads, runs and slices."""

    def __init__(self, path, manifest_text: bytes):
        """`manifest_text`: the top-level manifest's bytes as read (and, with a key, verified) by load()."""
        from . import _dtype
        self.bundle = Path(path)
        self.manifest = parse_manifest(manifest_text, f"{path}/manifest.json")
        self.chooser = BucketChooser(self.manifest, f"{path}/manifest.json")
        # The largest bucket's shapes; run() takes anything up to them.
        self.inputs = {i["name"]: (_dtype(i["dtype"]), tuple(i["shape"])) for i in self.manifest["inputs"]}
        self.outputs = {o["name"]: (_dtype(o["dtype"]), tuple(o["shape"])) for o in self.manifest["outputs"]}
        self._buckets: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.threads = 0

    def bucket(self, folder: str):
        from . import Model
        with self._lock:
            if folder not in self._buckets:
                model = Model(self.bundle / folder, manifest_text=bucket_manifest(self.bundle, self.manifest, folder))
                if self.threads:
                    model.set_num_threads(self.threads)
                self._buckets[folder] = model
            return self._buckets[folder]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        folder, padded, sizes = self.chooser.choose(feeds)
        return self.chooser.unpad(self.bucket(folder).run(padded), sizes)

    def set_num_threads(self, n: int) -> None:
        with self._lock:
            self.threads = n
            for model in self._buckets.values():
                model.set_num_threads(n)

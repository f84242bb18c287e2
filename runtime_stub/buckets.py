"""Running a bundle of shape buckets (format 2; targets/bucket_bundle.py describes the layout, docs/buckets.md
the rules) through the C API (aotc_bucketed_* in aotc_runtime.h): the runtime picks the smallest bucket that
holds the inputs, pads the inputs that have a pad value, runs that bucket's folder (loaded on first use, once
its manifest.json has the SHA-256 the top-level manifest lists) and slices the outputs back. C callers and the
arm64 aotc_runner use the same functions, so there is one implementation of the choice."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import RuntimeStubError
from .manifest import parse_manifest
from . import NativeHandle


def _declare(lib, path: Path) -> None:
    """The bucketed entry points of `lib` (a runtime library older than shape buckets has none)."""
    from . import _Tensor
    try:
        lib.aotc_bucketed_load_with_manifest.restype = ctypes.c_void_p
        lib.aotc_bucketed_load_with_manifest.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.aotc_bucketed_output_shape.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(_Tensor), ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64)]
        lib.aotc_bucketed_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Tensor), ctypes.c_int,
                                          ctypes.POINTER(_Tensor), ctypes.c_int]
        lib.aotc_bucketed_choose.restype = ctypes.c_char_p
        lib.aotc_bucketed_choose.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Tensor), ctypes.c_int]
        lib.aotc_bucketed_num_outputs.argtypes = [ctypes.c_void_p]
        lib.aotc_bucketed_set_num_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.aotc_bucketed_free.argtypes = [ctypes.c_void_p]
    except AttributeError:
        raise RuntimeStubError(f"the aotc runtime library for {path} predates shape buckets; recompile the bundle "
                               "with this aotc") from None


class BucketedModel(NativeHandle):
    """runtime_stub.load's result for a bucketed bundle; `run` takes inputs of any size up to the largest bucket.
    Safe to call from several threads at once, like Model.run."""
    _free = "aotc_bucketed_free"

    def __init__(self, path, manifest_text: bytes):
        """`manifest_text`: the top-level manifest's bytes as read (and, with a key, verified) by load(); the C
        loader checks and uses exactly these."""
        from . import _dtype, _error, _library_for
        self.path = Path(path)
        self.manifest = parse_manifest(manifest_text, f"{self.path}/manifest.json")
        self._lib = lib = _library_for(self.path, self.manifest)
        _declare(lib, self.path)
        handle = lib.aotc_bucketed_load_with_manifest(os.fsencode(self.path), manifest_text, len(manifest_text))
        if not handle:
            raise RuntimeStubError(_error(lib))
        self._handle = handle
        # The largest bucket's shapes; run() takes anything up to them.
        self.inputs = {i["name"]: (_dtype(i["dtype"]), tuple(i["shape"])) for i in self.manifest["inputs"]}
        self.outputs = {o["name"]: (_dtype(o["dtype"]), tuple(o["shape"])) for o in self.manifest["outputs"]}

    def bucket_for(self, feeds: Mapping[str, Any]) -> str:
        """The folder name of the bucket `run(feeds)` runs."""
        from . import _error, input_tensors
        ins, keep = input_tensors(feeds)
        name = self._lib.aotc_bucketed_choose(self._handle, ins, len(feeds))
        if name is None:
            raise RuntimeStubError(_error(self._lib))
        return name.decode()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from . import _dtype, _error, input_tensors, output_tensors
        ins, keep = input_tensors(feeds)
        specs = []
        for i in range(len(self.outputs)):
            name, dt = ctypes.c_char_p(), ctypes.c_char_p()
            ndim, shape = ctypes.c_int32(), (ctypes.c_int64 * 16)()
            if self._lib.aotc_bucketed_output_shape(self._handle, ins, len(feeds), i, ctypes.byref(name),
                                                    ctypes.byref(dt), ctypes.byref(ndim), shape):
                raise RuntimeStubError(_error(self._lib))
            specs.append((name.value.decode(), _dtype(dt.value.decode()), tuple(shape[:ndim.value])))
        results, outs = output_tensors(specs, keep)
        if self._lib.aotc_bucketed_run(self._handle, ins, len(feeds), outs, len(specs)) != 0:
            raise RuntimeStubError(_error(self._lib))
        return results

    def set_num_threads(self, n: int) -> None:
        self._lib.aotc_bucketed_set_num_threads(self._handle, int(n))

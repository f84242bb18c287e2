"""The thin runtime that loads and runs a bundle; needs only numpy (never the compiler).

    import runtime_stub
    model = runtime_stub.load("out/minilm")
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

A Python wrapper (ctypes) over the C library in aotc_runtime.c, which checks
the bundle (every manifest field, every checksum, and that model.so was
built for exactly what the manifest says) before running any of its code
and validates every input. With `public_key`, the manifest's Ed25519
signature is checked first (runtime_stub/signature.py). The library is built with the system C compiler on
first use and cached (set AOTC_RUNTIME_LIB to use a prebuilt one).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import RuntimeStubError

__all__ = ["load", "Model", "RuntimeStubError", "library_path"]

HERE = Path(__file__).resolve().parent
SOURCES = ("aotc_runtime.c", "aotc_runtime.h")


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_char_p), ("ndim", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p)]


_lib = None
_lib_lock = threading.Lock()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aotc" / "runtime"


def library_path() -> Path:
    """The built runtime library (built now if needed)."""
    env = os.environ.get("AOTC_RUNTIME_LIB")
    if env:
        return Path(env)
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((HERE / name).read_bytes())
    out = _cache_dir() / h.hexdigest()[:16] / "libaotc_runtime.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cc = os.environ.get("CC", "cc")
        cmd = [cc, "-O2", "-std=gnu11", "-fPIC", "-shared", "-o", tmp, str(HERE / "aotc_runtime.c"), "-ldl",
               "-lpthread"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise RuntimeStubError(f"building the aotc runtime failed ({' '.join(cmd)}): {proc.stderr.strip()}")
        os.replace(tmp, out)
    return out


def _library():
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(str(library_path()))
            lib.aotc_load.restype = ctypes.c_void_p
            lib.aotc_load.argtypes = [ctypes.c_char_p]
            lib.aotc_load_with_manifest.restype = ctypes.c_void_p
            lib.aotc_load_with_manifest.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
            lib.aotc_check_inputs.restype = ctypes.c_int
            lib.aotc_check_inputs.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Tensor), ctypes.c_int]
            lib.aotc_run.restype = ctypes.c_int
            lib.aotc_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Tensor), ctypes.c_int, ctypes.POINTER(_Tensor),
                                     ctypes.c_int]
            lib.aotc_free.argtypes = [ctypes.c_void_p]
            lib.aotc_set_num_threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
            lib.aotc_last_error.restype = ctypes.c_char_p
            lib.aotc_num_inputs.argtypes = lib.aotc_num_outputs.argtypes = [ctypes.c_void_p]
            info_args = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                         ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int32),
                         ctypes.POINTER(ctypes.POINTER(ctypes.c_int64))]
            lib.aotc_input_info.argtypes = lib.aotc_output_info.argtypes = info_args
            _lib = lib
        return _lib


def _error(lib) -> str:
    return (lib.aotc_last_error() or b"").decode("utf-8", "replace")


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes  # only for bfloat16 models
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class Model:
    """A loaded bundle. `run` is safe to call from several threads at once."""

    def __init__(self, path: str | os.PathLike, public_key=None):
        self._lib = lib = _library()
        self.path = Path(path)
        if public_key is None:
            handle = lib.aotc_load(os.fsencode(self.path))
        else:
            from .signature import verified_manifest
            manifest = verified_manifest(self.path, public_key)  # the bytes verified are the bytes loaded
            handle = lib.aotc_load_with_manifest(os.fsencode(self.path), manifest, len(manifest))
        if not handle:
            raise RuntimeStubError(_error(lib))
        self._handle = handle
        self.inputs = self._infos(lib.aotc_input_info, lib.aotc_num_inputs(handle))
        self.outputs = self._infos(lib.aotc_output_info, lib.aotc_num_outputs(handle))

    def _infos(self, fn, n) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        out = {}
        for i in range(n):
            name, dt = ctypes.c_char_p(), ctypes.c_char_p()
            ndim, shape = ctypes.c_int32(), ctypes.POINTER(ctypes.c_int64)()
            if fn(self._handle, i, ctypes.byref(name), ctypes.byref(dt), ctypes.byref(ndim), ctypes.byref(shape)):
                raise RuntimeStubError(_error(self._lib))
            out[name.value.decode()] = (_dtype(dt.value.decode()), tuple(shape[k] for k in range(ndim.value)))
        return out

    def set_num_threads(self, n: int) -> None:
        self._lib.aotc_set_num_threads(self._handle, int(n))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise RuntimeStubError(f"run() takes a mapping of input names to arrays, not {type(feeds).__name__}")
        keep = []
        ins = (_Tensor * max(len(feeds), 1))()
        for i, (name, arr) in enumerate(feeds.items()):
            # np.asarray, not np.ascontiguousarray: the latter turns a 0-d array into shape (1,).
            arr = np.asarray(arr)
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            shape = (ctypes.c_int64 * max(arr.ndim, 1))(*arr.shape)
            keep += [arr, shape]
            ins[i] = _Tensor(str(name).encode(), str(arr.dtype).encode(), arr.ndim, shape, arr.ctypes.data)
        # Inputs are checked before any output buffer is allocated.
        if self._lib.aotc_check_inputs(self._handle, ins, len(feeds)) != 0:
            raise RuntimeStubError(_error(self._lib))
        results = {}
        outs = (_Tensor * max(len(self.outputs), 1))()
        for i, (name, (dt, shp)) in enumerate(self.outputs.items()):
            arr = np.empty(shp, dt)
            shape = (ctypes.c_int64 * max(len(shp), 1))(*shp)
            keep.append(shape)
            results[name] = arr
            outs[i] = _Tensor(name.encode(), str(dt).encode(), len(shp), shape, arr.ctypes.data)
        if self._lib.aotc_run(self._handle, ins, len(feeds), outs, len(self.outputs)) != 0:
            raise RuntimeStubError(_error(self._lib))
        return results

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.aotc_free(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def load(path: str | os.PathLike, public_key=None) -> Model:
    """Load the bundle directory `path`: checks every manifest field and checksum before loading its code.

    `public_key` (an Ed25519 public key: PEM file path, PEM bytes or 32 raw bytes) makes an unsigned bundle,
    or one whose signature does not verify with that key, an error before anything else is read."""
    return Model(path, public_key)

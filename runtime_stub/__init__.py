"""The thin runtime that loads and runs a bundle; needs only numpy (never the compiler).

    from aotc import runtime_stub
    model = runtime_stub.load("out/minilm")
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

A Python wrapper (ctypes) over the C library in aotc_runtime.c, which checks
the bundle (every manifest field, every checksum, and that model.so was
built for exactly what the manifest says) before running any of its code
and validates every input. With `public_key`, the manifest's Ed25519
signature is checked first (runtime_stub/signature.py).

Which C library: the bundle's own libaotc_runtime.so (every CPU bundle carries
one, built when it was compiled), dlopened only once its SHA-256 matches the
manifest, so running a bundle needs numpy and ctypes, no C compiler. For a
bundle without one, the library is built from aotc_runtime.c with the system
C compiler ($CC, else cc) on first use and cached. AOTC_RUNTIME_LIB names a
library to use instead of either (a sanitizer build, say).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import RuntimeStubError
from .manifest import parse_json, read_manifest_bytes

__all__ = ["load", "Model", "RuntimeStubError", "library_path"]

HERE = Path(__file__).resolve().parent
SOURCES = ("aotc_runtime.c", "aotc_runtime.h")
BUNDLED_LIB = "libaotc_runtime.so"  # the name targets/runtime_library.py gives it in a bundle
_ELF_MACHINES = {62: "x86-64", 183: "aarch64"}
_HOST_MACHINE = {"x86_64": 62, "AMD64": 62, "aarch64": 183, "arm64": 183}.get(platform.machine())


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_char_p), ("ndim", ctypes.c_int32),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p)]


# Loaded libraries: a bundle's by its SHA-256 (the same bytes are the same code, whichever bundle holds
# them), the built or named one by its path.
_libs: dict[str, ctypes.CDLL] = {}
_lib_lock = threading.Lock()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aotc" / "runtime"


def library_path(why: str = "") -> Path:
    """The runtime library built from this package's sources (built now if needed), or $AOTC_RUNTIME_LIB.
    `why` starts the message of the error raised when there is no C compiler to build it with."""
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
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            os.unlink(tmp)
            raise RuntimeStubError(
                f"{why or 'The aotc runtime library has to be built from source'}, and the C compiler {cc!r} cannot "
                f"be run ({e.strerror or e}). Recompile the bundle with this aotc (CPU bundles carry a prebuilt "
                "libaotc_runtime.so), install a C compiler (e.g. `apt-get install gcc`) or name one with $CC, or "
                "set AOTC_RUNTIME_LIB to a built libaotc_runtime.so") from None
        if proc.returncode != 0:
            os.unlink(tmp)
            raise RuntimeStubError(f"building the aotc runtime failed ({' '.join(cmd)}): {proc.stderr.strip()}")
        os.replace(tmp, out)
    return out


def _open_library(path: Path) -> ctypes.CDLL:
    """dlopen `path` and declare the C API (every name this wrapper calls must be there)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise RuntimeStubError(f"cannot load the aotc runtime library {path}: {e}") from None
    try:
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
    except AttributeError as e:
        raise RuntimeStubError(f"{path} is not an aotc runtime library this wrapper can use ({e})") from None
    return lib


def _built_library(why: str) -> ctypes.CDLL:
    with _lib_lock:
        path = str(library_path(why))
        if path not in _libs:
            _libs[path] = _open_library(Path(path))
        return _libs[path]


def _hash_regular_file(path: Path) -> tuple[str, bytes, os.stat_result]:
    """(SHA-256, first 20 bytes, fstat) of the regular file `path`, read through one descriptor."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        head = f.read(20)
        h.update(head)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest(), head, st


def _bundle_library(bundle: Path, manifest) -> ctypes.CDLL | None:
    """The bundle's own runtime library, once its SHA-256 is the manifest's (None if it lists none). The
    trust order of aotc_runtime.c: nothing of the bundle is dlopened before it has been hashed, and the path
    must still name the file hashed when it is opened."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    digest = files.get(BUNDLED_LIB) if isinstance(files, dict) else None
    if digest is None:
        return None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise RuntimeStubError(f"{bundle}/manifest.json lists a bad file entry '{BUNDLED_LIB}' (a plain file name "
                               "and its SHA-256 in hex)")
    _check_glibc(bundle, manifest)  # every bundle, also one whose library is loaded already
    with _lib_lock:
        if digest in _libs:
            return _libs[digest]
        path = bundle.absolute() / BUNDLED_LIB
        try:
            actual, head, hashed = _hash_regular_file(path)
        except OSError as e:
            raise RuntimeStubError(f"bundle {bundle} is incomplete: cannot read {BUNDLED_LIB} ({e.strerror or e})") from None
        if actual != digest:
            raise RuntimeStubError(f"bundle {bundle} is corrupted: {BUNDLED_LIB} has SHA-256 {actual[:16]}..., the "
                                   f"manifest says {digest[:16]}...")
        if head[:4] == b"\x7fELF" and len(head) == 20 and _HOST_MACHINE is not None:
            machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
            if machine != _HOST_MACHINE:
                raise RuntimeStubError(
                    f"bundle {bundle} is built for {_ELF_MACHINES.get(machine, 'another CPU')} (its {BUNDLED_LIB} and "
                    f"model.so), this process runs on {_ELF_MACHINES[_HOST_MACHINE]}: run the bundle on such a "
                    "machine, or an arm64 bundle with its aotc_runner under qemu-aarch64, as `aotc run` does")
        try:
            now = os.stat(path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (hashed.st_dev, hashed.st_ino):
            raise RuntimeStubError(f"{path} was replaced while the bundle was being checked")
        _libs[digest] = _open_library(path)
        return _libs[digest]


def _host_glibc() -> tuple[int, ...] | None:
    """This process's glibc version ((2, 36)), or None where the C library is another (musl)."""
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
    except (ValueError, OSError):
        return None
    return tuple(int(x) for x in version.split(".")) if name == "glibc" and re.fullmatch(r"\d+(\.\d+)+", version) else None


def _check_glibc(bundle: Path, manifest) -> None:
    """The manifest's `glibc` (the newest GLIBC_ symbol version the bundle's native files need) against this
    system's, before anything is loaded: the dynamic linker would only say "version `GLIBC_2.34' not found"."""
    need = manifest.get("glibc")
    if need is None:
        return
    if not isinstance(need, str) or not re.fullmatch(r"\d{1,3}(\.\d{1,3}){1,2}", need):
        raise RuntimeStubError(f"{bundle}/manifest.json: 'glibc' must be a version such as \"2.34\"")
    have = _host_glibc()
    if have is None:
        raise RuntimeStubError(f"bundle {bundle} is linked against glibc {need} or newer, and this system's C library "
                               "is not glibc (musl, as on Alpine?): run it on a glibc-based system, or compile the "
                               "model on one like the device")
    if have < tuple(int(x) for x in need.split(".")):
        raise RuntimeStubError(
            f"bundle {bundle} needs glibc {need} or newer (its native code was linked on a newer system), this system "
            f"has glibc {'.'.join(map(str, have))}: compile the model on a system no newer than the device (e.g. a "
            "container of the device's distribution), or run the bundle on a newer one")


def _library_for(bundle: Path, manifest):
    if not os.environ.get("AOTC_RUNTIME_LIB"):
        lib = _bundle_library(bundle, manifest)
        if lib is not None:
            return lib
    return _built_library(f"Bundle {bundle} carries no {BUNDLED_LIB} (bundles compiled by an earlier aotc, or "
                          "for a target that ships none, do not), so the runtime has to be built from source")


def _error(lib) -> str:
    return (lib.aotc_last_error() or b"").decode("utf-8", "replace")


def _dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        try:
            import ml_dtypes  # only for bfloat16 models
        except ModuleNotFoundError:
            raise RuntimeStubError("this bundle has bfloat16 inputs or outputs, which numpy represents with the "
                                   "ml-dtypes package: install it (pip install ml-dtypes)") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def input_tensors(feeds) -> tuple:
    """The C API's input list for `feeds`, and what must stay alive while it is used."""
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
    return ins, keep


def output_tensors(specs, keep: list) -> tuple[dict[str, np.ndarray], ctypes.Array]:
    """New output arrays for (name, dtype, shape) specs, and the C API's output list over them."""
    results = {}
    outs = (_Tensor * max(len(specs), 1))()
    for i, (name, dt, shp) in enumerate(specs):
        arr = np.empty(shp, dt)
        shape = (ctypes.c_int64 * max(len(shp), 1))(*shp)
        keep.append(shape)
        results[name] = arr
        outs[i] = _Tensor(name.encode(), str(dt).encode(), len(shp), shape, arr.ctypes.data)
    return results, outs


class NativeHandle:
    """A handle of the C library, freed once: by close(), or when the object is collected."""
    _free = "aotc_free"  # the C function that frees it

    def close(self) -> None:
        if getattr(self, "_handle", None):
            getattr(self._lib, self._free)(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Model(NativeHandle):
    """A loaded bundle. `run` is safe to call from several threads at once."""

    def __init__(self, path: str | os.PathLike, public_key=None, manifest_text: bytes | None = None):
        self.path = Path(path)
        # The bytes read (and, with a key, verified) here are the bytes the C loader checks and uses; a caller
        # that has read and checked them already (load(), a bucket of a bucketed bundle) hands them in.
        text = manifest_text if manifest_text is not None else read_manifest_bytes(self.path, public_key)
        self._lib = lib = _library_for(self.path, parse_json(text, f"{self.path}/manifest.json"))
        handle = lib.aotc_load_with_manifest(os.fsencode(self.path), text, len(text))
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
        ins, keep = input_tensors(feeds)
        # Inputs are checked before any output buffer is allocated.
        if self._lib.aotc_check_inputs(self._handle, ins, len(feeds)) != 0:
            raise RuntimeStubError(_error(self._lib))
        results, outs = output_tensors([(name, dt, shp) for name, (dt, shp) in self.outputs.items()], keep)
        if self._lib.aotc_run(self._handle, ins, len(feeds), outs, len(self.outputs)) != 0:
            raise RuntimeStubError(_error(self._lib))
        return results



def load(path: str | os.PathLike, public_key=None):
    """Load the bundle directory `path`: checks every manifest field and checksum before loading its code.
    A bundle of shape buckets gives a BucketedModel (runtime_stub/buckets.py), whose run() takes inputs of any
    size up to the largest bucket.

    `public_key` (an Ed25519 public key: PEM file path, PEM bytes or 32 raw bytes) makes an unsigned bundle,
    or one whose signature does not verify with that key, an error before anything else is read."""
    from .buckets import BucketedModel
    text = read_manifest_bytes(Path(path), public_key)
    if "buckets" in parse_json(text, f"{path}/manifest.json"):
        return BucketedModel(path, text)
    return Model(path, manifest_text=text)

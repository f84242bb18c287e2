"""How `aotc run` / `aotc.load(...).run` execute a CUDA bundle: through the bundle's model.so (its aotc_cuda_*
entry points), in this process, with host numpy arrays.

Trust order as in runtime_stub: the manifest is parsed (and its signature checked when a key is given), every
file it lists is read once and checked against its SHA-256, and only those verified bytes are used: the weights
are uploaded from memory, and model.so is loaded from a private copy of the verified bytes, never from the
bundle path a second time. Before any of that code loads, the NVIDIA driver (libcuda.so.1) and a GPU of a
supported architecture must be present; otherwise CannotRunHereError says which is missing."""
from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from aotc.targets.base import BundleRunError, CannotRunHereError, LoadedBundle

CUDA_ABI_VERSION = 1  # targets/cuda/codegen.py ABI_VERSION (not imported: the loader must not pull in TVM)


def _gpu_problem(archs: list[str]) -> str | None:
    """Why this machine cannot run a bundle built for `archs`, or None."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "the NVIDIA driver: libcuda.so.1 is not installed or not on the library path"
    rc = cuda.cuInit(0)
    if rc != 0:
        return (f"a working NVIDIA GPU: the driver's cuInit failed with CUDA error {rc}"
                f"{' (no CUDA-capable device)' if rc == 100 else ''}")
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "an NVIDIA GPU: the driver reports none"
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, 0)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0)
    cc = major.value * 10 + minor.value
    oldest = min(int(a.split("_")[1]) for a in archs) if archs else 80
    if cc < oldest:
        return f"a GPU of compute capability {oldest // 10}.{oldest % 10} or newer (device 0 is {major.value}.{minor.value})"
    return None


def _verified_files(bundle: Path, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.so" not in files or "weights.bin" not in files:
        raise BundleRunError(f"Bundle {bundle}: its manifest does not list model.so and weights.bin; it was not "
                             f"written by aotc compile --target cuda.")
    out = {}
    for name in ("model.so", "weights.bin"):
        try:
            data = (bundle / name).read_bytes()
        except OSError as e:
            raise BundleRunError(f"Bundle {bundle} is incomplete: cannot read {name} ({e.strerror or e}).") from None
        if hashlib.sha256(data).hexdigest() != files[name]:
            raise BundleRunError(f"Bundle {bundle} is corrupted: {name} does not match the SHA-256 in its manifest.")
        out[name] = data
    return out


class CudaBundle(LoadedBundle):
    def __init__(self, bundle_dir, manifest=None, public_key=None):
        from aotc.runtime_stub.manifest import read_manifest
        bundle = Path(bundle_dir)
        man = read_manifest(bundle, public_key) if manifest is None else manifest
        archs = list(man.get("archs") or man.get("target", {}).get("archs") or [])
        name = man.get("target", {}).get("name", "cuda")
        problem = _gpu_problem(archs)
        if problem:
            raise CannotRunHereError(
                f"This {name} bundle runs on an NVIDIA GPU ({', '.join(archs) or 'sm_80/sm_90'}), and this machine "
                f"lacks {problem}. Copy the bundle to a machine with the NVIDIA driver (R525 or newer) and a GPU of "
                f"those architectures; it needs no CUDA toolkit and no TVM there.")
        files = _verified_files(bundle, man)
        if man.get("cuda_abi_version") != CUDA_ABI_VERSION:
            raise BundleRunError(f"Bundle {bundle} has CUDA ABI version {man.get('cuda_abi_version')}; this aotc "
                                 f"loads version {CUDA_ABI_VERSION}. Recompile it.")
        self._tmp = tempfile.TemporaryDirectory(prefix="aotc-cuda-")
        so = Path(self._tmp.name) / "model.so"
        so.write_bytes(files["model.so"])
        os.chmod(so, 0o500)
        lib = ctypes.CDLL(str(so))
        lib.aotc_model_id.restype = ctypes.c_char_p
        if lib.aotc_cuda_abi_version() != CUDA_ABI_VERSION or \
                lib.aotc_model_id().decode() != man.get("model_id"):
            raise BundleRunError(f"Bundle {bundle}: model.so was not built for this manifest (model id or ABI).")
        lib.aotc_cuda_load.restype = ctypes.c_void_p
        lib.aotc_cuda_load.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p,
                                       ctypes.c_size_t]
        lib.aotc_cuda_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
        lib.aotc_cuda_free.argtypes = [ctypes.c_void_p]
        err = ctypes.create_string_buffer(1024)
        weights = files["weights.bin"]
        handle = lib.aotc_cuda_load(weights, len(weights), int(os.environ.get("AOTC_CUDA_DEVICE", "0")), err, 1024)
        if not handle:
            raise BundleRunError(f"Loading {bundle} on the GPU failed: {err.value.decode(errors='replace')}.")
        self._lib, self._handle = lib, handle
        self.inputs = [(i["name"], np.dtype(i["dtype"]), tuple(i["shape"])) for i in man["inputs"]]
        self.outputs = [(o["name"], np.dtype(o["dtype"]), tuple(o["shape"])) for o in man["outputs"]]

    def run(self, feeds: Mapping[str, Any]) -> dict:
        unknown = sorted(set(feeds) - {n for n, _, _ in self.inputs})
        if unknown:
            raise BundleRunError(f"Unknown input(s) {unknown}; the model's inputs are "
                                 f"{[n for n, _, _ in self.inputs]}.")
        ins = []
        for name, dtype, shape in self.inputs:
            if name not in feeds:
                raise BundleRunError(f"Input {name!r} is missing.")
            a = np.asarray(feeds[name])
            if a.dtype != dtype or a.shape != shape:
                raise BundleRunError(f"Input {name!r} is {a.dtype}{list(a.shape)}; the model takes "
                                     f"{dtype}{list(shape)}.")
            ins.append(np.ascontiguousarray(a))
        outs = [np.empty(shape, dtype) for _, dtype, shape in self.outputs]
        ptrs = lambda arrays: (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])  # noqa: E731
        err = ctypes.create_string_buffer(1024)
        if self._lib.aotc_cuda_run(self._handle, ptrs(ins), ptrs(outs), err, 1024) != 0:
            raise BundleRunError(f"Running the model on the GPU failed: {err.value.decode(errors='replace')}.")
        return {name: o for (name, _, _), o in zip(self.outputs, outs)}

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.aotc_cuda_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

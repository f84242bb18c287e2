"""Writes a bundle directory: manifest.json, weights.bin, model.so and the
generated sources. The bundle is assembled in a staging directory beside the
destination and renamed into place, so a failed compile leaves nothing
behind; the same model and options give byte-identical bundles."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

from compiler.errors import AotcError
from compiler.user_files import make_staging_dir
from compiler.ir import Graph

FORMAT_VERSION = 1
ABI_VERSION = 2  # the model.so entry points (runtime_stub/aotc_runtime.h AOTC_ABI_VERSION)


class BundleWriteError(AotcError):
    """The output path cannot hold a bundle."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _io(values) -> list[dict]:
    return [{"name": v.name, "dtype": v.dtype.value, "shape": list(v.shape)} for v in values]


def graph_digest(graph: Graph) -> str:
    h = hashlib.sha256(str(graph).encode())
    for v in graph.initializers.values():
        h.update(v.const.tobytes())
    return h.hexdigest()


def compile_to_bundle(model: str | os.PathLike | Graph, out: str | os.PathLike, target="host",
                      input_shapes: Mapping[str, Sequence[int]] | None = None, quiet: bool = False,
                      transform: Callable[[Graph], list] | None = None, signing_key=None,
                      max_memory: int | None = None) -> Path:
    """Compile an ONNX model file (or an IR graph) for a CPU target into the bundle directory `out`.

    `transform` (e.g. a pass pipeline) rewrites the graph first and returns what it applied, which the
    manifest records under "passes". `signing_key` (targets.signing.load_signing_key) signs the manifest;
    `max_memory` (bytes, default targets.memory_limit.DEFAULT_MAX_MEMORY) bounds arena + weights."""
    import compiler
    from targets.cpu.codegen import compile_graph
    from targets.cpu.target import get_target

    out = Path(out)
    if isinstance(model, Graph):
        graph = model
        source = {"name": graph.name, "kind": "aotc-ir", "sha256": graph_digest(graph)}
    else:
        path = Path(model)
        graph = compiler.load_onnx(path, input_shapes=input_shapes)
        source = {"name": path.name, "kind": "onnx", "sha256": sha256_bytes(path.read_bytes()) if path.is_file() else ""}
    from targets.cpu.target import CpuTarget
    tgt = target if isinstance(target, CpuTarget) else get_target(target)
    if out.exists() and not (out.is_dir() and ((out / "manifest.json").exists() or not any(out.iterdir()))):
        raise BundleWriteError(f"Output path {str(out)!r} exists and is not an aotc bundle; choose another -o.")
    passes: list = []
    if transform is not None:
        passes = json.loads(json.dumps(transform(graph) or [], sort_keys=True, default=str))
    id_src = json.dumps({"format": FORMAT_VERSION, "aotc": compiler.__version__, "target": tgt.manifest(),
                         "source": source, "passes": passes, "graph": graph_digest(graph)}, sort_keys=True)
    model_id = sha256_bytes(id_src.encode())[:32]

    staging = make_staging_dir(out)  # a path the user cannot write is their error, named
    build = Path(tempfile.mkdtemp(prefix="aotc-build-"))
    try:
        cm = compile_graph(graph, tgt, build / "build", model_id, compiler.__version__, quiet=quiet,
                           max_memory=max_memory)
        files = {"model.so": cm.model_so, "weights.bin": cm.plan.weights, "driver.c": cm.driver_c.encode()}
        files.update(tgt.bundle_extras(build / "build"))  # e.g. arm64-neon's runner and runtime library
        manifest = {
            "format_version": FORMAT_VERSION,
            "abi_version": ABI_VERSION,
            "aotc_version": compiler.__version__,
            "model_id": model_id,
            "target": tgt.manifest(),
            "source_model": source,
            "inputs": _io(graph.inputs),
            "outputs": _io(graph.outputs),
            "passes": passes,
            "arena_bytes": cm.plan.arena_bytes,
            "weight_bytes": cm.plan.weight_bytes,
            "kernels": len(cm.kernels),
            "kernel_calls": cm.calls,
            "flops": cm.flops,
            "files": {name: sha256_bytes(data) for name, data in sorted(files.items())},
        }
        for name, data in files.items():
            (staging / name).write_bytes(data)
        for name, data in files.items():
            if data[:4] == b"\x7fELF":
                (staging / name).chmod(0o755)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if signing_key is not None:
            from .signing import sign_bundle
            sign_bundle(staging, signing_key)
        staging.chmod(0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / "b")
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out

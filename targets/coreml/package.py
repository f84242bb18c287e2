"""MIL program -> the files of `model.mlpackage`, byte-identical across rebuilds.

`ct.convert(..., convert_to="mlprogram")` runs coremltools' MIL pass pipeline (with compute_precision
FLOAT16 it stores weights in fp16 and casts activations) and `save` writes the package. Two things in it
change on every build: the package's Manifest.json names its items by random UUIDs, and the model's
metadata carries the conversion date. The UUIDs are replaced by UUIDs derived from the bundle's model id and
the item's path; the date is removed and the spec re-serialized deterministically.
"""
from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path

from aotc.compiler.errors import AotcError

PACKAGE = "model.mlpackage"
SPEC_PATH = "Data/com.apple.CoreML/model.mlmodel"
CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"


class CoreMLToolsMissingError(AotcError):
    """coremltools, which the coreml target builds packages with, is not installed."""


def import_coremltools():
    """coremltools, imported quietly (on Linux it prints that its macOS-only runtime parts are missing)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import coremltools
    except ImportError:
        raise CoreMLToolsMissingError("The coreml target needs coremltools: install aotc's [coreml] extra "
                                      "(pip install 'aotc[coreml]', i.e. coremltools==9.0).") from None
    return coremltools


def convert(program, deployment, precision: str):
    """The Core ML model of a MIL program (the program is consumed: ct.convert rewrites it in place)."""
    ct = import_coremltools()
    with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
        return ct.convert(program, convert_to="mlprogram", minimum_deployment_target=deployment.coremltools_target(),
                          compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                          skip_model_load=True)


def package_files(model, workdir: Path, model_id: str) -> dict[str, bytes]:
    """Save `model` under workdir and return the package's files ({"model.mlpackage/...": bytes}), normalized."""
    path = workdir / PACKAGE
    model.save(str(path))
    files = {f"{PACKAGE}/{p.relative_to(path).as_posix()}": p.read_bytes()
             for p in sorted(path.rglob("*")) if p.is_file()}
    files[f"{PACKAGE}/Manifest.json"] = _normalized_manifest(files[f"{PACKAGE}/Manifest.json"], model_id)
    files[f"{PACKAGE}/{SPEC_PATH}"] = _normalized_spec(files[f"{PACKAGE}/{SPEC_PATH}"])
    return files


def _normalized_manifest(data: bytes, model_id: str) -> bytes:
    manifest = json.loads(data)
    ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"aotc:{model_id}:{item['path']}")).upper()
           for old, item in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {ids[k]: v for k, v in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = ids[manifest["rootModelIdentifier"]]
    return (json.dumps(manifest, indent=4, sort_keys=True) + "\n").encode()


def _normalized_spec(data: bytes) -> bytes:
    from coremltools.proto import Model_pb2
    spec = Model_pb2.Model()
    spec.ParseFromString(data)
    meta = spec.description.metadata.userDefined
    if CONVERSION_DATE in meta:
        del meta[CONVERSION_DATE]
    return spec.SerializeToString(deterministic=True)

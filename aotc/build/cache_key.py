"""An artifact's cache key: the SHA-256 of everything that decides its bundle's bytes.

That is the model file and the external-data files it names, the calibration data, every compile option,
the target with its options, the versions of aotc, of the bundle format and of the tools the target
compiles with (Target.toolchain_versions), and of numpy and onnx, which every target's passes run on
(constant folding, calibration, import). Paths are not in it, only file names where the bundle records them
(the manifest names the ONNX file): a cache restored into another checkout still hits."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aotc.compiler.user_files import file_sha256

from .spec import Artifact

# Every target's graph goes through these before the target's own tools see it.
COMMON_PACKAGES = ("numpy", "onnx")


def model_files(model: Path) -> list[Path]:
    """The ONNX file and the external-data files it references (beside it, as ONNX requires)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data
    proto = onnx.load(str(model), load_external_data=False)
    names = set()
    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            names.update(e.value for e in tensor.external_data if e.key == "location")
    return [model] + [model.parent / n for n in sorted(names)]


def key_material(art: Artifact, target, files: list[Path]) -> dict[str, Any]:
    """What the key hashes, as JSON-able data (also what `aotc build -v` can show for a miss)."""
    from aotc.compiler import __version__
    from aotc.targets.bundle import FORMAT_VERSION
    from aotc.targets.toolchains import package_version
    options = art.compile_options()
    if "calibration" in options:
        options["calibration"] = {"sha256": file_sha256(Path(options["calibration"]))}
    model = files[0]
    return {
        "aotc": __version__,
        "bundle_format": FORMAT_VERSION,
        "model": {"file": model.name, "sha256": file_sha256(model),
                  "external_data": {str(p.relative_to(model.parent)): file_sha256(p) for p in files[1:]}},
        "options": options,
        "target": {"name": art.target.target, "options": art.target_options(), "manifest": target.manifest()},
        "toolchains": {**{p: package_version(p) for p in COMMON_PACKAGES}, **target.toolchain_versions()},
    }


def cache_key(material: dict[str, Any]) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()

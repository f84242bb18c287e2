"""How `aotc run` / `aotc.load(...).run` executes a coreml bundle: Core ML's predict through coremltools,
which exists only on macOS; elsewhere a CannotRunHereError says so (the NumPy evaluator in mil_eval.py
checks a package's numbers on any machine, but it is a test oracle, not a runtime)."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ..base import CannotRunHereError, LoadedBundle


class CoreMLBundle(LoadedBundle):
    def __init__(self, bundle_dir, manifest, public_key=None):  # a key was checked by aotc.load already
        self.io = manifest["coreml"]
        if platform.system() != "Darwin":
            raise CannotRunHereError(
                f"A coreml bundle runs with Core ML, which needs macOS (this is {platform.system()}). Copy "
                f"{Path(bundle_dir) / self.io['package']} to a Mac and run it there (aotc run, or "
                "MLModel(contentsOf:) in Swift: see targets/coreml/README.md).")
        from .package import import_coremltools
        ct = import_coremltools()
        self.model = ct.models.MLModel(str(Path(bundle_dir) / self.io["package"]))

    def run(self, feeds):
        inputs = {}
        for d in self.io["inputs"]:
            inputs[d["coreml_name"]] = np.asarray(feeds[d["name"]]).astype(d["coreml_dtype"]).reshape(d["coreml_shape"])
        got = self.model.predict(inputs)
        return {d["name"]: np.asarray(got[d["coreml_name"]]).astype(d["dtype"]).reshape(d["shape"])
                for d in self.io["outputs"]}

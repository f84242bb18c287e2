"""Shared by the coreml target tests: compile an IR graph to a coreml bundle, evaluate the saved package with
the NumPy MIL evaluator (targets/coreml/mil_eval.py), and on macOS also with Core ML's predict; compare with
aotc's reference interpreter."""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from x86_helpers import assert_close

coremltools = pytest.importorskip("coremltools", reason="the coreml tests need coremltools (the [coreml] extra)")
ON_MACOS = platform.system() == "Darwin"
needs_macos = pytest.mark.skipif(not ON_MACOS, reason="Core ML's predict needs macOS")


def compile_coreml(graph: compiler.Graph, out_dir: Path, coreml_target: str = "iOS16", precision: str = "fp32",
                   passes: str = "none", **options) -> Path:
    import aotc
    key = hashlib.sha256((str(graph) + coreml_target + precision + passes + repr(sorted(options.items()))
                          ).encode()).hexdigest()[:10]
    return aotc.compile(graph, out_dir / f"{graph.name}-{key}", target="coreml", passes=passes,
                        target_options={"coreml_target": coreml_target, "precision": precision}, **options).path


def evaluate(bundle: Path, feeds: dict) -> dict:
    """The bundle's outputs by aotc name, from the saved package (NumPy MIL evaluator), in aotc's dtypes."""
    from aotc.targets.coreml.mil_eval import MilPackage
    io = json.loads((bundle / "manifest.json").read_text())["coreml"]
    pkg = MilPackage(bundle / io["package"])
    got = pkg.run({d["coreml_name"]: np.asarray(feeds[d["name"]]) for d in io["inputs"]})
    return {d["name"]: got[d["coreml_name"]].astype(d["dtype"]).reshape(d["shape"]) for d in io["outputs"]}


def run_everywhere(bundle: Path, feeds: dict) -> list[tuple[str, dict]]:
    """(how, outputs) from the NumPy evaluator and, on macOS, from Core ML itself."""
    runs = [("mil_eval", evaluate(bundle, feeds))]
    if ON_MACOS:
        import aotc
        runs.append(("coreml.predict", aotc.load(bundle).run(feeds)))
    return runs


def check_graph(g: compiler.Graph, feeds: dict, out_dir: Path, rtol=1e-5, atol=1e-5, **compile_options):
    want = compiler.interpret(g, feeds)
    bundle = compile_coreml(g, out_dir, **compile_options)
    for how, got in run_everywhere(bundle, feeds):
        for name, ref in want.items():
            assert_close(got[name], ref, f"{g.name} output {name} ({how}, {compile_options})", rtol, atol)
    return bundle


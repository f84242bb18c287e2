"""Shared by the x86 target tests: compile an IR graph to a bundle and run it
with the thin runtime, and compare against compiler.interpret."""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.dtypes import DType


def has_avx512() -> bool:
    if platform.machine() != "x86_64":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))


needs_avx512 = pytest.mark.skipif(not has_avx512(), reason="needs an x86-64 CPU with AVX-512")


def build_graph(op_type: str, inputs, attrs=None, consts=(), num_outputs=None) -> compiler.Graph:
    """A one-node graph: `inputs` are (name, array) graph inputs, `consts` (name, array) constants."""
    g = compiler.Graph(f"single_{op_type}")
    vals = [g.add_input(n, a.shape, DType.from_numpy(a.dtype)) for n, a in inputs]
    vals += [g.add_const(n, a) if a is not None else None for n, a in consts]
    node = g.add_node(op_type, vals, attrs or {}, name=f"the_{op_type}", num_outputs=num_outputs)
    g.outputs = list(node.outputs)
    return g


def compile_and_run(graph: compiler.Graph, feeds: dict, out_dir: Path, target: str = "x86-avx512") -> dict:
    from aotc import runtime_stub
    import aotc
    digest = hashlib.sha256((str(graph) + repr(target)).encode()).hexdigest()[:10]
    bundle = aotc.compile(graph, out_dir / f"{graph.name}-{digest}", target=target, passes="none").path
    return runtime_stub.load(bundle).run(feeds)


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol=1e-5, atol=1e-5):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what, equal_nan=True)


def check_graph(g: compiler.Graph, feeds: dict, out_dir: Path, rtol=1e-5, atol=1e-5, target="x86-avx512") -> dict:
    """Compile `g` (no passes), run it with the thin runtime, compare every output with the interpreter."""
    want = compiler.interpret(g, feeds)
    got = compile_and_run(g, feeds, out_dir, target=target)
    for name, ref in want.items():
        assert_close(got[name], ref, f"{g.name} output {name}", rtol, atol)
    return got


def check_op(op_type: str, inputs, out_dir: Path, attrs=None, consts=(), rtol=1e-5, atol=1e-5, num_outputs=None,
             target="x86-avx512"):
    return check_graph(build_graph(op_type, inputs, attrs, consts, num_outputs), dict(inputs), out_dir, rtol, atol,
                       target)


def copy_bundle(bundle: Path, tmp_path: Path, name: str = "copy") -> Path:
    import shutil
    dst = tmp_path / name
    shutil.copytree(bundle, dst)
    return dst


def rewrite_manifest(path: Path, **changes) -> None:
    import json
    man = json.loads((path / "manifest.json").read_text())
    man.update(changes)
    (path / "manifest.json").write_text(json.dumps(man))

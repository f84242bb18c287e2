"""aotc as a user installs it (issue #14): the wheel, installed non-editable into a fresh venv, compiles a model
and runs it with no C compiler ($CC pointing nowhere); and the runtime-only deployment (numpy + the wheel
installed with --no-deps) loads and runs the same bundle.

Cost on the 2-core CI VM: about a minute, most of it pip installing the compile dependencies (TVM, onnx,
scipy, ...) from pip's cache into the fresh venv. PyPI must be reachable for what the cache lacks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import compiler
from x86_helpers import needs_avx512

pytestmark = [pytest.mark.slow, needs_avx512]
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aotc", "compiler", "passes", "targets", "runtime_stub")
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", *PACKAGES)


def tiny_model() -> compiler.Graph:
    g = compiler.Graph("tiny")
    x = g.add_input("x", (4, 8), compiler.DType.float32)
    w = g.add_const("w", np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8))
    y = g.add_node("MatMul", [x, w]).outputs[0]
    g.outputs = list(g.add_node("Relu", [y], output_names=["y"]).outputs)
    return g


def clean_env(**extra) -> dict:
    """The environment of a user's shell: nothing of this test run's PYTHONPATH or venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def run(cmd, cwd, **env) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=clean_env(**env))
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def fresh_venv(path: Path) -> Path:
    """A venv without pip (this interpreter's pip installs into it: `pip --python`), so making it is quick."""
    run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    return path / "bin" / "python"


def pip_install(python: Path, *args, cwd: Path) -> None:
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check", *args],
        cwd=cwd)


def shipped_data_files() -> set[str]:
    """Every non-Python file of the packages (READMEs aside): what the code reads at run time."""
    out = set()
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*"):
            if p.is_file() and p.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in p.parts:
                out.add(p.relative_to(ROOT).as_posix())
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (as pip builds it for a user) from a copy of just what the build reads, so the build's
    scratch folders stay out of the checkout and nothing else of the checkout can leak into the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", tmp / "dist",
         src], cwd=tmp)
    (whl,) = (tmp / "dist").glob("aotc-*.whl")
    return whl


def test_the_wheel_ships_every_data_file_the_license_and_one_version(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(shipped_data_files() - names)
    assert not missing, f"files the code reads at run time are not in the wheel: {missing}"
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"Version: {compiler.__version__}\n" in meta
    assert "Provides-Extra: torch" in meta and "Provides-Extra: ascend" in meta


def test_installed_wheel_compiles_and_runs_without_a_c_compiler(wheel, tmp_path):
    # 1. The compiler: the wheel and its dependencies, non-editable, into a fresh venv.
    python = fresh_venv(tmp_path / "full")
    pip_install(python, wheel, cwd=tmp_path)
    where = run([python, "-c", "import compiler, aotc; print(compiler.__file__); print(aotc.__version__)"],
                cwd=tmp_path).split()
    assert where[0].startswith(str(tmp_path / "full")), where  # the installed copy, not the checkout
    assert where[1] == compiler.__version__

    from compiler.onnx_export import save_onnx
    save_onnx(tiny_model(), tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    want = compiler.interpret(tiny_model(), {"x": x})["y"]
    aotc = tmp_path / "full" / "bin" / "aotc"
    run([aotc, "compile", "tiny.onnx", "--target", "host", "-o", "bundle"], cwd=tmp_path)  # templates found

    # 2. Running needs no C compiler: the bundle's own runtime library, nothing built into the cache.
    no_cc = {"CC": "/nonexistent", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run([aotc, "run", "bundle", "-i", "in.npz", "-o", "out.npz"], cwd=tmp_path, **no_cc)
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)
    assert not list((tmp_path / "cache").rglob("*.so"))

    # 3. The runtime alone: numpy, then the wheel without its dependencies (README "Deploying the runtime").
    rt_python = fresh_venv(tmp_path / "rt")
    pip_install(rt_python, "numpy", cwd=tmp_path)
    pip_install(rt_python, "--no-deps", wheel, cwd=tmp_path)
    installed = run([sys.executable, "-m", "pip", "--python", rt_python, "list", "--format=freeze",
                     "--disable-pip-version-check"], cwd=tmp_path)
    assert sorted(line.split("==")[0].lower() for line in installed.split()) == ["aotc", "numpy"], installed
    script = ("import importlib.util, sys, numpy as np, runtime_stub\n"
              "assert importlib.util.find_spec('tvm') is None and importlib.util.find_spec('onnx') is None\n"
              "out = runtime_stub.load('bundle').run(dict(np.load('in.npz')))\n"
              "np.save('rt_y.npy', out['y'])\n"
              "bad = [m for m in sys.modules if m.split('.')[0] in ('compiler', 'passes', 'targets', 'aotc')]\n"
              "assert not bad, bad\n")
    run([rt_python, "-c", script], cwd=tmp_path, **no_cc)
    np.testing.assert_allclose(np.load(tmp_path / "rt_y.npy"), want, rtol=1e-5, atol=1e-5)

"""aotc as a user installs it (issue #14): the wheel, installed non-editable into a fresh venv, compiles a model
and runs it with no C compiler ($CC pointing nowhere); and the runtime-only deployments (the aotc-runtime
wheel built from runtime_stub/, or numpy + the aotc wheel installed with --no-deps) load and run the same
bundle with numpy as their only dependency.

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

from aotc import compiler
from x86_helpers import needs_avx512

pytestmark = [pytest.mark.slow, needs_avx512]
ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("compiler", "passes", "targets", "runtime_stub")  # installed as aotc.<name>
PACKAGES = ("aotc", *SUBPACKAGES)
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", *PACKAGES)
RUNTIME_BUILD_FILES = {"runtime_stub/pyproject.toml", "runtime_stub/LICENSE"}  # the aotc-runtime distribution's


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
        for p in (ROOT / pkg).rglob("*"):  # rglob does not follow aotc/compiler etc.: each folder once
            rel = p.relative_to(ROOT).as_posix()
            if (p.is_file() and p.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in p.parts
                    and rel not in RUNTIME_BUILD_FILES):
                out.add(rel if pkg == "aotc" else f"aotc/{rel}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (as pip builds it for a user) from a copy of just what the build reads, so the build's
    scratch folders stay out of the checkout and nothing else of the checkout can leak into the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():  # aotc/compiler etc. stay links to the copied folders beside aotc/
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", tmp / "dist",
         src], cwd=tmp)
    (whl,) = (tmp / "dist").glob("aotc-*.whl")
    return whl


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory) -> Path:
    """aotc-runtime's wheel, built from a copy of runtime_stub/ (its own pyproject.toml)."""
    tmp = tmp_path_factory.mktemp("runtime_wheel")
    shutil.copytree(ROOT / "runtime_stub", tmp / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", tmp / "dist",
         tmp / "src"], cwd=tmp)
    (whl,) = (tmp / "dist").glob("aotc_runtime-*.whl")
    return whl


def test_the_wheel_installs_one_import_package(wheel):
    """No generic top-level names (compiler, passes, ...) in site-packages: everything is under aotc/."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"aotc"}, tops
    top_level = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/top_level.txt")))
    assert top_level.decode().split() == ["aotc"]
    for sub in SUBPACKAGES:
        assert f"aotc/{sub}/__init__.py" in names


def test_the_runtime_distribution_is_the_runtime_alone(runtime_wheel):
    names = set(zipfile.ZipFile(runtime_wheel).namelist())
    code = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    want = {f"aotc_runtime/{p.name}" for p in (ROOT / "runtime_stub").iterdir()
            if p.is_file() and p.name not in ("pyproject.toml", "LICENSE") and p.suffix in (".py", ".c", ".h")}
    assert code == want, code ^ want
    meta = zipfile.ZipFile(runtime_wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Version: {compiler.__version__}\n" in meta  # one version for the compiler and its runtime
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert [r.split()[1] for r in requires] == ["numpy<3,>=1.26"], requires
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_wheel_ships_every_data_file_the_license_and_one_version(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(shipped_data_files() - names)
    assert not missing, f"files the code reads at run time are not in the wheel: {missing}"
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert f"Version: {compiler.__version__}\n" in meta
    assert "Provides-Extra: torch" in meta and "Provides-Extra: ascend" in meta


def test_installed_wheel_compiles_and_runs_without_a_c_compiler(wheel, runtime_wheel, tmp_path):
    # 1. The compiler: the wheel and its dependencies, non-editable, into a fresh venv.
    python = fresh_venv(tmp_path / "full")
    pip_install(python, wheel, cwd=tmp_path)
    where = run([python, "-c", "import aotc.compiler, aotc, importlib.util as u; print(aotc.compiler.__file__); "
                 "print(aotc.__version__); print([n for n in ('compiler', 'passes', 'targets', 'runtime_stub') "
                 "if u.find_spec(n)])"], cwd=tmp_path).split()
    assert where[0].startswith(str(tmp_path / "full")), where  # the installed copy, not the checkout
    assert where[1] == compiler.__version__
    assert where[2] == "[]"  # no generic top-level names installed

    from aotc.compiler.onnx_export import save_onnx
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

    # 3. The runtime alone (docs/deployment.md): the aotc-runtime wheel, which brings numpy and nothing else;
    # beside it, the aotc wheel installed without its dependencies, whose aotc.runtime_stub must work too.
    rt_python = fresh_venv(tmp_path / "rt")
    pip_install(rt_python, runtime_wheel, cwd=tmp_path)
    pip_install(rt_python, "--no-deps", wheel, cwd=tmp_path)
    installed = run([sys.executable, "-m", "pip", "--python", rt_python, "list", "--format=freeze",
                     "--disable-pip-version-check"], cwd=tmp_path)
    assert sorted(line.split("==")[0].lower() for line in installed.split()) == ["aotc", "aotc-runtime", "numpy"]
    for module, result in (("aotc_runtime", "rt_y.npy"), ("aotc.runtime_stub", "ns_y.npy")):
        script = (f"import importlib.util, sys, numpy as np, {module} as rt\n"
                  "assert importlib.util.find_spec('tvm') is None and importlib.util.find_spec('onnx') is None\n"
                  "out = rt.load('bundle').run(dict(np.load('in.npz')))\n"
                  f"np.save({result!r}, out['y'])\n"
                  "bad = [m for m in sys.modules if m.startswith(('aotc.compiler', 'aotc.passes', 'aotc.targets', "
                  "'aotc.api'))]\n"
                  "assert not bad, bad\n")
        run([rt_python, "-c", script], cwd=tmp_path, **no_cc)
        np.testing.assert_allclose(np.load(tmp_path / result), want, rtol=1e-5, atol=1e-5)

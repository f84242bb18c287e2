"""A missing optional package (torch, onnx-graphsurgeon, onnxruntime, ml-dtypes) is one paragraph naming what
to install, not a ModuleNotFoundError; the version is written once, in pyproject.toml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from aotc.compiler.optional_dependencies import MissingDependencyError, require

ROOT = Path(__file__).resolve().parent.parent
NET = """import torch

def make():
    return torch.nn.Linear(4, 2)
"""


def without(module: str) -> str:
    """Python source that makes `import module` fail as if it were not installed."""
    return f"import sys; sys.modules[{module!r}] = None; "


def test_missing_torch_names_the_extra_on_the_command_line(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    cli = [sys.executable, "-c", without("torch") + "from aotc.cli import main; main()"]
    for args in (["trace", "net.py:make", "--example-input", "x=1x4", "-o", "net.onnx"],
                 ["compile", "net.py:make", "--example-input", "x=1x4", "--target", "x86-avx2", "-o", "b"]):
        proc = subprocess.run(cli + args, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        msg = proc.stderr.strip()
        assert "pip install 'aotc[torch]'" in msg and "Traceback" not in msg and "\n" not in msg, msg
        assert not (tmp_path / "b").exists()


def test_missing_torch_in_the_api(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"aotc\[torch\]"):
        compiler.trace(lambda x: x, {"x": np.zeros(3, np.float32)})


def test_missing_graphsurgeon_names_the_ascend_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx_graphsurgeon", None)
    from aotc.targets.ascend.onnx_model import atc_onnx_model
    g = compiler.Graph("g")
    x = g.add_input("x", (2,), compiler.DType.float32)
    g.outputs = list(g.add_node("Relu", [x]).outputs)
    with pytest.raises(MissingDependencyError, match=r"'onnx-graphsurgeon'.*pip install 'aotc\[ascend\]'"):
        atc_onnx_model(g, 13)


def test_a_module_missing_inside_a_present_package_stays_a_bug(monkeypatch, tmp_path):
    (tmp_path / "half_installed.py").write_text("import not_a_real_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        require("half_installed", "Something", extra="x")


def test_bfloat16_without_ml_dtypes_says_what_to_install(monkeypatch):
    from aotc import runtime_stub
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(runtime_stub.RuntimeStubError, match="pip install ml-dtypes"):
        runtime_stub._dtype("bfloat16")


def test_the_version_is_pyprojects():
    import re
    import aotc
    want = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert compiler.__version__ == aotc.__version__ == want
    assert not re.search(r"__version__\s*=\s*['\"]", (ROOT / "compiler" / "__init__.py").read_text())

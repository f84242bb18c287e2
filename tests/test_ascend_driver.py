"""The Ascend bundle's C++ AscendCL driver, syntax-checked with g++ against AscendCL's own headers.

The headers (acl/acl.h, acl_mdl.h, acl_rt.h and what they include; CANN Open Software License) come from
the PyPI wheel torch-npu, downloaded once into .cache/ascend/ and extracted there, never committed. Without
network access or g++ the tests skip, naming what is missing."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aotc import compiler
from ascend_helpers import ROOT, compile_ascend
from aotc.compiler.dtypes import DType

WHEEL = "torch-npu==2.14.0"
HEADERS = ROOT / ".cache" / "ascend" / "acl-headers-torch-npu-2.14.0"


@pytest.fixture(scope="session")
def acl_include() -> Path:
    """A folder holding acl/*.h from the torch-npu wheel."""
    if (HEADERS / "acl" / "acl.h").is_file():
        return HEADERS
    wheels = ROOT / ".cache" / "ascend" / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
           "--platform", "manylinux_2_28_x86_64", "-d", str(wheels), WHEEL]
    if not list(wheels.glob("torch_npu-2.14.0-*.whl")):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"cannot fetch the {WHEEL} wheel for the AscendCL headers: {proc.stderr.strip()[-300:]}")
    wheel = sorted(wheels.glob("torch_npu-2.14.0-*.whl"))[0]
    tmp = HEADERS.with_name(HEADERS.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("torch_npu/include/acl/") and not name.endswith("/"):
                out = tmp / name[len("torch_npu/include/"):]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(name))
    shutil.rmtree(HEADERS, ignore_errors=True)
    tmp.rename(HEADERS)
    return HEADERS


def _gxx(args, cwd) -> subprocess.CompletedProcess:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    return subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", *args],
                          cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Two inputs (one int64, one with characters C strings must escape), two outputs, a scalar output."""
    g = compiler.Graph("driver_io")
    x = g.add_input('x"y\\?', (2, 3, 4), DType.float32)
    ids = g.add_input("ids", (2, 3), DType.int64)
    a, b = g.add_node("Split", [x], {"axis": 2, "split": [1, 3]}, num_outputs=2).outputs
    s = g.add_node("ReduceSum", [g.add_node("Cast", [ids], {"to": "float32"}).outputs[0]],
                   {"axes": [0, 1], "keepdims": 0}).outputs[0]
    g.outputs = [a, g.add_node("Add", [b, s]).outputs[0]]
    return compile_ascend(g, tmp_path_factory.mktemp("ascend-driver"))


def test_driver_compiles_against_the_ascendcl_headers(bundle, acl_include):
    proc = _gxx(["-I.", f"-I{acl_include}", "aotc_ascend.cpp"], bundle / "driver")
    assert proc.returncode == 0, proc.stderr
    src = (bundle / "driver" / "aotc_ascend.cpp").read_text()
    for call in ("aclInit(", "aclrtSetDevice(", "aclmdlLoadFromFile(", "aclmdlCreateDataset(", "aclrtMalloc(",
                 "aclmdlExecute(", "aclrtMemcpy(", "aclmdlUnload(", "aclrtResetDevice(", "aclFinalize("):
        assert call in src
    assert r'"x\"y\\\077"' in src  # the odd input name, escaped
    assert "int64_t shape[3]" in src and "{2, 3, 4}, 96u}" in src and "{2, 3}, 48u}" in src


def test_the_headers_really_type_check_the_calls(bundle, acl_include, tmp_path):
    """The check can fail: swapped arguments of aclmdlExecute and a wrong memcpy kind are compile errors."""
    src = (bundle / "driver" / "aotc_ascend.cpp").read_text()
    for bad in (src.replace("aclmdlExecute(m->model_id, m->in, m->out)", "aclmdlExecute(m->in, m->model_id, m->out)"),
                src.replace("ACL_MEMCPY_HOST_TO_DEVICE", "ACL_MEM_MALLOC_HUGE_FIRST")):
        assert bad != src
        (tmp_path / "bad.cpp").write_text(bad)
        shutil.copy(bundle / "driver" / "aotc_runtime.h", tmp_path)
        assert _gxx(["-I.", f"-I{acl_include}", "bad.cpp"], tmp_path).returncode != 0


def test_runner_and_driver_share_the_runtime_api(bundle):
    """aotc_runner.c (the arm64 bundles' runner) compiles against the header the driver implements."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    proc = subprocess.run(["gcc", "-std=gnu11", "-fsyntax-only", "-Wall", "-I.", "aotc_runner.c"],
                          cwd=bundle / "driver", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cmake = (bundle / "driver" / "CMakeLists.txt").read_text()
    assert "add_library(aotc_ascend SHARED aotc_ascend.cpp)" in cmake and "ascendcl" in cmake

"""Filesystem and .npz mistakes through the CLI (issue #13 item 9) and --max-memory (item 11): one
paragraph, exit 2, no partial output."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from oracle import single_op_model
from test_cli_errors import aotc, assert_user_error
from x86_helpers import has_avx512, needs_avx512


@pytest.fixture
def relu_model(tmp_path):
    path = tmp_path / "relu.onnx"
    onnx.save(single_op_model("Relu", [("x", np.zeros((2, 3), np.float32))]), path)
    return path


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no file can be created in: a read-only one, or for root (who ignores permissions) /proc."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield ro if not os.access(ro, os.W_OK) else Path("/proc")
    ro.chmod(0o755)


def test_optimize_output_paths(relu_model, tmp_path, read_only_dir):
    assert_user_error(aotc("optimize", str(relu_model), "-o", str(read_only_dir / "y.onnx")), "y.onnx")
    (tmp_path / "afile").write_text("x")
    assert_user_error(aotc("optimize", str(relu_model), "-o", str(tmp_path / "afile" / "y.onnx")), "is a file")
    assert_user_error(aotc("optimize", str(relu_model), "-o", str(tmp_path)), "is a directory")
    assert_user_error(aotc("optimize", str(relu_model), "-o", str(tmp_path / "no" / "y.onnx")), "does not exist")


def test_compile_output_paths(relu_model, tmp_path, read_only_dir):
    assert_user_error(aotc("compile", str(relu_model), "-o", str(read_only_dir / "b")), "/b'")
    (tmp_path / "afile").write_text("x")
    assert_user_error(aotc("compile", str(relu_model), "-o", str(tmp_path / "afile" / "b")), "is a file")
    assert_user_error(aotc("compile", str(relu_model), "-o", str(tmp_path / "afile")), "is a file")
    assert_user_error(aotc("compile", str(relu_model), "-o", str(tmp_path / "b"), "--max-memory", "lots"),
                      "not a size")


@needs_avx512
def test_max_memory_refuses_naming_the_tensors(tmp_path):
    path = tmp_path / "big.onnx"
    onnx.save(single_op_model("Relu", [("x", np.zeros((1, 2), np.float32))]), path)
    onnx.save(single_op_model("Relu", [("x", np.broadcast_to(np.float32(0), (100000, 1000000)))]), path)
    res = aotc("compile", str(path), "-t", "x86-avx512", "-o", str(tmp_path / "b"))
    err = assert_user_error(res, "more than the limit of 16.0 GiB", "'x'", "--max-memory")
    assert "745.1 GiB" in err
    assert not (tmp_path / "b").exists()
    onnx.save(single_op_model("Relu", [("x", np.zeros((64, 64), np.float32))]), path)
    small = aotc("compile", str(path), "-t", "x86-avx512", "-q", "--max-memory", "1K", "-o", str(tmp_path / "c"))
    assert_user_error(small, "more than the limit of 1.0 KiB")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    if not has_avx512():
        pytest.skip("needs an x86-64 CPU with AVX-512")
    import aotc
    from x86_helpers import build_graph
    g = build_graph("Relu", [("x", np.zeros((2, 3), np.float32))])
    return aotc.compile(g, tmp_path_factory.mktemp("b") / "relu", target="x86-avx512", passes="none").path


def test_run_input_and_output_files(bundle, tmp_path, read_only_dir):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "x.npy", x)
    assert_user_error(aotc("run", str(bundle), "-i", str(tmp_path / "x.npy")), "single .npy array")
    np.savez(tmp_path / "in.npz", x=x)
    data = (tmp_path / "in.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    assert_user_error(aotc("run", str(bundle), "-i", str(tmp_path / "trunc.npz")), "trunc.npz", "as .npz")
    with zipfile.ZipFile(tmp_path / "in.npz") as z:
        info = z.infolist()[0]
    bad = bytearray(data)
    bad[info.header_offset + 30 + len(info.filename) + info.compress_size - 1] ^= 0xFF  # last data byte
    (tmp_path / "crc.npz").write_bytes(bytes(bad))
    assert_user_error(aotc("run", str(bundle), "-i", str(tmp_path / "crc.npz")), "crc.npz", "CRC")
    assert_user_error(aotc("run", str(bundle), "-i", str(tmp_path / "nope.npz")), "no such file")
    assert_user_error(aotc("run", str(bundle), "-i", str(tmp_path / "in.npz"), "-o", str(read_only_dir / "y.npz")),
                      "y.npz")
    out = tmp_path / "out"  # exactly this name: numpy.savez would have written out.npz
    res = aotc("run", str(bundle), "-i", str(tmp_path / "in.npz"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    with np.load(out) as got:
        np.testing.assert_array_equal(got[got.files[0]], np.maximum(x, 0))

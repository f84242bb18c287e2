"""The CUDA targets without a GPU: every op case compiled for sm_90 (one graph, one nvcc run), the launch table
and ptxas's resource numbers within the arch's limits, the generated driver run on the CPU against a recording
fake CUDA runtime (every kernel launched in graph order, every pointer inside the one device allocation),
byte-identical rebuilds, the no-GPU error, and the op coverage rule."""
from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
                                reason="needs nvcc (CUDA toolkit)")


@pytest.fixture(scope="module")
def op_bundle(tmp_path_factory):
    import aotc
    from cuda_op_cases import all_cases_graph
    g, feeds, owner = all_cases_graph()
    out = tmp_path_factory.mktemp("cuda") / "ops-sm90"
    return aotc.compile(g, out, target="cuda-sm90", passes="none").path, g, feeds


def test_every_registered_op_lowers_for_cuda_or_runs_in_float():
    """Every registered op either has a CUDA kernel (the op cases) or is one the CUDA pipeline never hands
    the kernels: the NCHWc ops (a CPU vector layout; conv_block=0 here) and the int8 ops fit_to_target runs in
    float (no int8 kernels on CUDA yet)."""
    from aotc.compiler.ops import ops_targets_see
    from cuda_op_cases import all_cases_graph
    covered = {n.op_type for n in all_cases_graph()[0].nodes}
    not_on_cuda = {"BlockedConv", "BlockedMaxPool", "ToBlockedLayout", "FromBlockedLayout", "QuantizedMatMul", "QuantizedConv",
                   "QuantizedAttention", "DynamicQuantizeLinear",  # a CPU kernel only (x86, arm64)
                   "QuantizedAdd", "QuantizedGlobalAveragePool"}  # LLVM CPU kernels only: float on CUDA
    assert set(ops_targets_see()) - covered == not_on_cuda


def test_op_cases_bundle_launch_table_and_resources(op_bundle):
    bundle, g, _ = op_bundle
    man = json.loads((bundle / "manifest.json").read_text())
    table = json.loads((bundle / "launches.json").read_text())
    assert man["target"]["name"] == "cuda-sm90" and man["archs"] == ["sm_90"]
    assert table["archs"] == ["sm_90"] and len(table["launches"]) >= len(g.nodes) - 8  # aliases launch nothing
    for ln in table["launches"]:
        assert 1 <= np.prod(ln["block"]) <= 1024 and ln["dyn_smem"] <= 227 * 1024
    for a in table["args"]:
        size = {0: table["arena_bytes"], 1: table["weight_bytes"]}.get(a["base"])
        if size is not None:
            assert 0 <= a["offset"] and a["offset"] + a["nbytes"] <= size
    res = table["resources"]
    assert {r["kernel"] for r in res} == {ln["symbol"] for ln in table["launches"]}
    for r in res:
        assert r["arch"] == "sm_90" and r["registers"] <= 255 and r["smem"] <= 227 * 1024
    spills = [r["kernel"] for r in res if r["spill_stores"] or r["spill_loads"]]
    assert not spills, f"kernels spilling registers to local memory: {spills}"


def build_with_fake_cudart(bundle: Path, tmp_path: Path) -> Path:
    """driver.c of `bundle` linked with tests/c/fake_cudart.c instead of the CUDA runtime."""
    from aotc.targets.cuda.codegen import cuda_home, nvcc_path
    work = tmp_path / "fake"
    work.mkdir()
    for f in ("driver.c", "model.fatbin"):
        shutil.copy(bundle / f, work / f)
    inc = cuda_home(nvcc_path()) / "include"
    cmd = ["gcc", "-O1", "-std=gnu11", "-fPIC", "-shared", f"-I{inc}", "-o", "fake.so", "driver.c",
           str(HERE / "c" / "fake_cudart.c"), "-lpthread"]
    subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    return work / "fake.so"


def load_with_fake_cudart(op_bundle, tmp_path, monkeypatch):
    """The op bundle's driver on the recording fake runtime, loaded: (library, handle, error buffer, launch table,
    manifest, the fake runtime's log file)."""
    bundle, _, _ = op_bundle
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_CUDART_LOG", str(log))
    lib = ctypes.CDLL(str(build_with_fake_cudart(bundle, tmp_path)))
    lib.aotc_cuda_load.restype = ctypes.c_void_p
    lib.aotc_cuda_load.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    lib.aotc_cuda_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.aotc_cuda_run_device.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.c_char_p, ctypes.c_size_t]
    lib.aotc_cuda_free.argtypes = [ctypes.c_void_p]
    weights = (bundle / "weights.bin").read_bytes()
    err = ctypes.create_string_buffer(512)
    h = lib.aotc_cuda_load(weights, len(weights), 0, err, 512)
    assert h, err.value
    table = json.loads((bundle / "launches.json").read_text())
    man = json.loads((bundle / "manifest.json").read_text())
    return lib, h, err, table, man, log


def host_pointers(arrays):
    return (ctypes.c_void_p * len(arrays))(*[x.ctypes.data for x in arrays])


def test_driver_against_recording_fake_runtime(op_bundle, tmp_path, monkeypatch):
    _, g, feeds = op_bundle
    lib, h, err, table, man, log = load_with_fake_cudart(op_bundle, tmp_path, monkeypatch)
    ins = [np.ascontiguousarray(feeds[v.name]) for v in g.inputs]
    outs = [np.empty(o["shape"], o["dtype"]) for o in man["outputs"]]
    assert lib.aotc_cuda_run(h, host_pointers(ins), host_pointers(outs), err, 512) == 0, err.value
    lib.aotc_cuda_free(h)
    lines = log.read_text().splitlines()
    assert lines[0] == "library magic=ba55ed50"  # the embedded image is a fatbin
    weights_at = -(-table["arena_bytes"] // 256) * 256
    assert lines[1] == f"malloc {weights_at + table['weight_bytes'] + 1}"
    copies = [ln for ln in lines if ln.startswith("memcpy")]
    assert copies[0].startswith(f"memcpy kind=1 bytes={table['weight_bytes']} ")  # weights uploaded once, at load
    assert len(copies) == 1 + len(g.inputs) + len(g.outputs)
    launches = [ln.split() for ln in lines if ln.startswith("launch ")]
    want = table["launches"]
    assert [ln[1] for ln in launches] == [w["symbol"] for w in want]  # every kernel, in graph order
    for got, w in zip(launches, want):
        assert [int(x) for x in got[2:9]] == w["grid"] + w["block"] + [w["dyn_smem"]]
        ptrs = got[10:]
        assert len(ptrs) == w["num_args"]
        for p in ptrs:  # inside the one allocation: the arena or the weights behind it
            assert p.startswith("m+") and int(p[2:]) < weights_at + table["weight_bytes"] + 1, (w["symbol"], p)


def test_device_pointer_entry_binds_the_callers_buffers(op_bundle, tmp_path, monkeypatch):
    """aotc_cuda_run_device (zero-copy): kernels read and write the caller's buffers directly where an input or
    output has storage of its own (launch arguments at the caller's pointer + the planned offset), everything
    else stays in the one allocation, the only copies are device-to-device ones for the shared values, and
    every launch and copy is on the caller's stream."""
    from aotc.targets.cuda.codegen import BASE_IO
    _, g, feeds = op_bundle
    lib, h, err, table, man, log = load_with_fake_cudart(op_bundle, tmp_path, monkeypatch)
    ins = [np.ascontiguousarray(feeds[v.name]) for v in g.inputs]  # stand-ins for device buffers
    outs = [np.empty(o["shape"], o["dtype"]) for o in man["outputs"]]
    buffers = [x.ctypes.data for x in ins + outs]
    stream = 0x7700
    assert lib.aotc_cuda_run_device(h, host_pointers(ins), host_pointers(outs), ctypes.c_void_p(stream), err,
                                    512) == 0, err.value
    lib.aotc_cuda_free(h)
    lines = log.read_text().splitlines()
    copies = [ln.split() for ln in lines if ln.startswith("memcpy")]
    assert copies[0][1] == "kind=1"  # the weights, uploaded at load
    run_copies = copies[1:]
    assert all(c[1] == "kind=3" and c[3] == f"s={hex(stream)}" for c in run_copies), run_copies  # device to device
    bound = {a["base"] - BASE_IO for a in table["args"] if a["base"] >= BASE_IO}
    assert bound, "no input or output was bound to the caller's buffer"
    assert len(run_copies) <= len(buffers) - len(bound)
    launches = [ln.split() for ln in lines if ln.startswith("launch ")]
    assert len(launches) == len(table["launches"])
    for got, w in zip(launches, table["launches"]):
        assert got[9] == f"s={hex(stream)}", got
        for j, token in enumerate(got[10:]):
            a = table["args"][w["first_arg"] + j]
            if a["base"] >= BASE_IO:  # the caller's buffer, at the planned offset
                assert token.startswith("x") and int(token[1:], 16) == buffers[a["base"] - BASE_IO] + a["offset"], \
                    (w["symbol"], j, token)
            else:
                assert token.startswith("m+"), (w["symbol"], j, token)


def test_rebuilds_are_byte_identical_and_no_gpu_is_one_clear_error(tmp_path):
    import aotc
    from aotc.targets.base import CannotRunHereError
    from x86_helpers import build_graph
    r = np.random.default_rng(0)
    g = build_graph("FusedMatMul", [("a", r.standard_normal((2, 16, 64), dtype=np.float32))],
                    {"activation": "gelu"}, consts=[("b", r.standard_normal((64, 48), dtype=np.float32)),
                                                    ("bias", r.standard_normal(48, dtype=np.float32))])
    paths = [aotc.compile(g, tmp_path / f"b{i}", target="cuda", passes="none").path for i in range(2)]
    files = sorted(p.name for p in paths[0].iterdir())
    assert files == sorted(p.name for p in paths[1].iterdir())
    for f in files:
        assert (paths[0] / f).read_bytes() == (paths[1] / f).read_bytes(), f
    assert json.loads((paths[0] / "manifest.json").read_text())["archs"] == ["sm_80", "sm_90"]
    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("this machine has the NVIDIA driver")
    except OSError:
        pass
    with pytest.raises(CannotRunHereError, match="libcuda.so.1"):
        aotc.load(paths[0]).run({"a": np.zeros((2, 16, 64), np.float32)})
    np.savez(tmp_path / "in.npz", a=np.zeros((2, 16, 64), np.float32))
    p = subprocess.run([sys.executable, "-m", "aotc", "run", str(paths[0]), "-i", str(tmp_path / "in.npz")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "libcuda.so.1" in p.stderr and "Traceback" not in p.stderr


# -- whole models (slow: TVM scheduling of every kernel and one nvcc run each) --------------------------------
@pytest.mark.slow
def test_minilm_compiles_for_sm90(model_cache, tmp_path):
    import aotc
    from models import export_minilm
    b = aotc.compile(export_minilm(model_cache, "legacy", "eager"), tmp_path / "minilm", target="cuda-sm90")
    man = b.manifest
    assert man["archs"] == ["sm_90"] and man["launches"] >= man["kernel_calls"]
    res = json.loads((b.path / "launches.json").read_text())["resources"]
    assert all(r["smem"] <= 227 * 1024 and r["registers"] <= 255 for r in res)


@pytest.mark.slow
def test_efficientnet_lite0_compiles_for_sm90(model_cache, tmp_path):
    import aotc
    from models import export_efficientnet_lite0
    path, _ = export_efficientnet_lite0(model_cache)
    b = aotc.compile(path, tmp_path / "effnet", target="cuda-sm90")
    assert b.manifest["archs"] == ["sm_90"] and b.manifest["kernels"] > 10

"""Targets as plug-ins: the registry (`aotc targets`), target names and options on the command line, one
compile path for the CLI and the Python API (byte-identical bundles), target passes in the manifest, and int8
that degrades to float where a target has no int8 kernel (x86-avx2; arm64 convolutions)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aotc
from aotc import compiler
from aotc.compiler.dtypes import DType
from aotc.compiler.onnx_export import save_onnx
from arm64_helpers import MISSING as ARM64_MISSING
from x86_helpers import has_avx512

R = np.random.default_rng(11)


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aotc", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def mlp_onnx(tmp_path: Path) -> Path:
    g = compiler.Graph("mlp")
    x = g.add_input("x", (16, 64), DType.float32)
    h = g.add_node("MatMul", [x, g.add_const("w1", (R.standard_normal((64, 64)) * 0.2).astype(np.float32))],
                   name="fc1").outputs[0]
    h = g.add_node("Add", [h, g.add_const("b1", R.standard_normal(64).astype(np.float32))], name="fc1_bias").outputs[0]
    h = g.add_node("Relu", [h], name="relu").outputs[0]
    g.outputs = [g.add_node("MatMul", [h, g.add_const("w2", (R.standard_normal((64, 32)) * 0.2).astype(np.float32))],
                            name="fc2").outputs[0]]
    save_onnx(g, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=R.standard_normal((64, 64)).astype(np.float32))
    return tmp_path / "mlp.onnx"


def cnn_onnx(tmp_path: Path) -> Path:
    """Two convolutions (3x3 and pointwise) with ReLU, global pooling and a classifier: int8 convs + a GEMM."""
    g = compiler.Graph("cnn")
    x = g.add_input("x", (1, 8, 12, 12), DType.float32)
    h = g.add_node("Conv", [x, g.add_const("c1w", (R.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)),
                            g.add_const("c1b", R.standard_normal(16).astype(np.float32) * 0.1)],
                   {"pads": [1, 1, 1, 1]}, name="conv1").outputs[0]
    h = g.add_node("Relu", [h], name="relu1").outputs[0]
    h = g.add_node("Conv", [h, g.add_const("c2w", (R.standard_normal((16, 16, 1, 1)) * 0.2).astype(np.float32)),
                            g.add_const("c2b", R.standard_normal(16).astype(np.float32) * 0.1)], name="conv2").outputs[0]
    h = g.add_node("Relu", [h], name="relu2").outputs[0]
    h = g.add_node("GlobalAveragePool", [h], name="pool").outputs[0]
    h = g.add_node("Flatten", [h], {"axis": 1}, name="flatten").outputs[0]
    g.outputs = [g.add_node("MatMul", [h, g.add_const("fcw", (R.standard_normal((16, 12)) * 0.3).astype(np.float32))],
                            name="fc").outputs[0]]
    save_onnx(g, tmp_path / "cnn.onnx")
    np.savez(tmp_path / "cnn_cal.npz", x=R.standard_normal((8, 8, 12, 12)).astype(np.float32))
    return tmp_path / "cnn.onnx"


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def bundle_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- the registry -------------------------------------------------------------------------------------------
def test_targets_lists_every_target_with_aliases_and_options():
    res = cli("targets", "--json")
    assert res.returncode == 0, res.stderr
    items = {t["name"]: t for t in json.loads(res.stdout)}
    assert {"x86-avx512", "x86-avx2", "arm64-neon"} <= set(items)
    arm = items["arm64-neon"]
    assert {"arm64", "arm64-neon-dotprod"} <= set(arm["aliases"])
    assert {o["flag"] for o in arm["options"]} == {"--mcpu", "--cpu-features", "--cross-cc", "--sysroot"}
    assert items["x86-avx512"]["native_on_this_machine"] == has_avx512()
    text = cli("targets")
    assert text.returncode == 0 and "arm64-neon" in text.stdout and "--cpu-features" in text.stdout


def test_target_options_are_compile_flags_in_their_own_panel():
    res = cli("compile", "--help")
    assert res.returncode == 0
    assert "Target options" in res.stdout and "--mcpu" in res.stdout and "--cpu-features" in res.stdout


def test_unknown_target_names_the_known_ones(tmp_path):
    from test_cli_errors import assert_usage_error
    res = cli("compile", mlp_onnx(tmp_path), "--target", "nosuch", "-o", tmp_path / "out")
    assert_usage_error(res, "'nosuch' is not one of", *(f"'{n}'" for n in ("host", "x86-avx512", "x86-avx2",
                                                                             "arm64-neon", "arm64-neon-dotprod")))
    assert not (tmp_path / "out").exists()
    # the Python API says the same in its own words
    from aotc.targets.base import UnknownTargetError
    with pytest.raises(UnknownTargetError, match="Unknown target 'nosuch'; aotc knows: host, .*x86-avx512"):
        aotc.compile(mlp_onnx(tmp_path), tmp_path / "out", target="nosuch")


def test_an_option_of_another_target_is_refused(tmp_path):
    res = cli("compile", mlp_onnx(tmp_path), "--target", "x86-avx512", "--mcpu", "cortex-a76", "-o", tmp_path / "o")
    assert res.returncode == 2
    assert "--mcpu is not an option of target x86-avx512 (it applies to arm64-neon)" in res.stderr
    assert not (tmp_path / "o").exists()


def test_get_target_resolves_aliases_and_host():
    from aotc.targets.base import get_target
    t = get_target("arm64-neon-dotprod", mcpu="cortex-a76")
    assert t.name == "arm64-neon" and t.capabilities.int8_dot == "sdot" and t.mcpu == "cortex-a76"
    assert get_target("arm64").capabilities.int8_dot is None
    if has_avx512():
        host = get_target("host")
        assert host.name == "x86-avx512" and host.capabilities.int8_dot == "vpdpbusd"


# -- one compile path ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not has_avx512(), reason="needs an AVX-512 CPU to build for x86-avx512 here")
def test_cli_and_api_write_byte_identical_bundles(tmp_path):
    model = mlp_onnx(tmp_path)
    res = cli("compile", model, "--target", "x86-avx512", "-o", tmp_path / "cli", "--quantize", "int8",
              "--calibration", tmp_path / "cal.npz", "--calibration-method", "percentile", "-q")
    assert res.returncode == 0, res.stderr
    api = aotc.compile(model, tmp_path / "api", target="x86-avx512", quantize="int8",
                       calibration=tmp_path / "cal.npz", calibration_method="percentile")
    assert bundle_files(tmp_path / "cli") == bundle_files(api.path)
    names = [p["name"] for p in api.manifest["passes"]]
    assert names[-3:] == ["fit_to_target", "subpixel_conv_transpose", "nchwc_layout"]  # the target's passes
    assert "quantize_int8" in names and names.index("quantize_int8") > names.index("fuse_matmul_epilogue")
    # and the API's bundle runs through aotc.load like any other
    feeds = {"x": R.standard_normal((16, 64)).astype(np.float32)}
    want = compiler.interpret(compiler.load_onnx(model), feeds)
    got = aotc.load(api.path).run(feeds)
    assert cosine(got[api.manifest["outputs"][0]["name"]], next(iter(want.values()))) > 0.995


def test_api_leaves_a_given_graph_unchanged(tmp_path):
    g = compiler.load_onnx(mlp_onnx(tmp_path))
    before = str(g)
    aotc.compile(g, tmp_path / "b", target="x86-avx2")
    assert str(g) == before


def test_api_refuses_unknown_options(tmp_path):
    with pytest.raises(TypeError, match="unknown option.*quantise"):
        aotc.compile(mlp_onnx(tmp_path), tmp_path / "b", quantise="int8")


# -- int8 where the target has no int8 kernel ---------------------------------------------------------------
def _fit_report(manifest: dict) -> list[dict]:
    return next((p.get("report", {}).get("changed", []) for p in manifest["passes"] if p["name"] == "fit_to_target"),
                [])


def test_int8_on_avx2_runs_in_float_with_one_line_saying_so(tmp_path):
    """x86-avx2 has no VNNI: the int8 GEMMs run in float (DequantizeLinear -> FusedMatMul), the CLI says which
    nodes and why, and the numbers match the same quantized model on x86-avx512's int8 kernels."""
    model = mlp_onnx(tmp_path)
    res = cli("compile", model, "--target", "x86-avx2", "-o", tmp_path / "avx2", "--quantize", "int8",
              "--calibration", tmp_path / "cal.npz")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "avx2" / "manifest.json").read_text())
    nodes = sorted(c["node"] for c in _fit_report(manifest))
    assert len(nodes) == 2 and nodes[1] == "fc2"  # fc1 is fused with its bias and ReLU first
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("x86-avx2:"))
    assert (f"2 QuantizedMatMul -> float FusedMatMul ({', '.join(nodes)}): QuantizedMatMul needs AVX-512 VNNI "
            "(vpdpbusd), which the x86-avx2 target lacks") in line
    feeds = {"x": R.standard_normal((16, 64)).astype(np.float32)}
    got = aotc.load(tmp_path / "avx2").run(feeds)
    want = compiler.interpret(compiler.load_onnx(model), feeds)
    name = manifest["outputs"][0]["name"]
    assert cosine(got[name], want[name]) > 0.995  # int8 vs the float model
    if has_avx512():
        vnni = aotc.compile(model, tmp_path / "avx512", target="x86-avx512", quantize="int8",
                            calibration=tmp_path / "cal.npz").run(feeds)
        assert _fit_report(json.loads((tmp_path / "avx512" / "manifest.json").read_text())) == []
        # same scales, same quantized activations: int32-exact vs float sums of the same products
        np.testing.assert_allclose(got[name], vnni[name], rtol=1e-4, atol=1e-4 * float(np.abs(vnni[name]).max()))


@pytest.mark.skipif(ARM64_MISSING is not None, reason=ARM64_MISSING or "")
def test_int8_cnn_on_arm64_keeps_convolutions_in_float(tmp_path):
    """arm64-neon has an int8 GEMM (sdot) but no int8 convolution: --quantize int8 on a CNN compiles, the
    QuantizedConv nodes run in float, the classifier in int8, and the bundle (under qemu) matches x86's."""
    model = cnn_onnx(tmp_path)
    res = cli("compile", model, "--target", "arm64-neon-dotprod", "-o", tmp_path / "arm", "--quantize", "int8",
              "--calibration", tmp_path / "cnn_cal.npz")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "arm" / "manifest.json").read_text())
    changed = _fit_report(manifest)
    assert len(changed) == 2 and all(c["node"].startswith(("conv1", "conv2")) for c in changed)  # fused names
    assert all(c["op"] == "QuantizedConv" and "no int8 convolution kernel" in c["why"] for c in changed)
    feeds = {"x": R.standard_normal((1, 8, 12, 12)).astype(np.float32)}
    got = aotc.load(tmp_path / "arm").run(feeds)
    name = manifest["outputs"][0]["name"]
    want = compiler.interpret(compiler.load_onnx(model), feeds)[name]
    assert cosine(got[name], want) > 0.99
    if has_avx512():
        x86 = aotc.compile(model, tmp_path / "x86", target="x86-avx512", quantize="int8",
                           calibration=tmp_path / "cnn_cal.npz").run(feeds)
        np.testing.assert_allclose(got[name], x86[name], rtol=1e-3, atol=2e-3 * float(np.abs(x86[name]).max()))


def test_the_package_api_is_one_lazy_import_package(tmp_path):
    """`import aotc` loads none of the compiler (a runtime-only install can import aotc.runtime_stub); the API
    names load it on first use; aotc.inspect is `aotc inspect --json` for a model and for a bundle."""
    probe = subprocess.run([sys.executable, "-c", "import sys, aotc, aotc.runtime_stub; "
                            "print(sorted(m for m in sys.modules if m.startswith('aotc')))"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert eval(probe.stdout) == ["aotc", "aotc.runtime_stub", "aotc.runtime_stub.errors",
                                  "aotc.runtime_stub.manifest"]
    assert {"compile", "load", "trace", "inspect", "list_targets", "__version__"} <= set(dir(aotc))
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        aotc.nosuch  # noqa: B018
    model = mlp_onnx(tmp_path)
    report = aotc.inspect(model)
    res = cli("inspect", model, "--json")
    assert res.returncode == 0, res.stderr
    assert report == json.loads(res.stdout) and report["error"] is None
    bundle = aotc.compile(model, tmp_path / "b", target="x86-avx512") if has_avx512() else None
    if bundle is not None:
        assert aotc.inspect(bundle.path) == json.loads(cli("inspect", bundle.path, "--json").stdout)

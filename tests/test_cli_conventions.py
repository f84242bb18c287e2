"""The command line as a tool people script: usage mistakes are click's usage errors (exit 2), the same
-q/-v/--json on every command that prints, closed sets shown as choices, a dimension set by its name,
progress for long steps, and `aotc bench` / `aotc profile` on a real bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli_errors import assert_usage_error, usage_text
from x86_helpers import needs_avx512


def aotc(*args, cwd=None, columns=None):
    env = {**os.environ, "COLUMNS": str(columns)} if columns else None
    return subprocess.run([sys.executable, "-m", "aotc", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env)


@pytest.fixture(scope="module")
def named_dims_model(tmp_path_factory) -> Path:
    """x [batch, 16] @ W [16, 8] + relu, the batch dimension named."""
    path = tmp_path_factory.mktemp("m") / "named.onnx"
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                           helper.make_node("Relu", ["h"], ["y"], name="relu")], "named",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# -- usage mistakes -----------------------------------------------------------------------------------------
def test_typo_in_an_option_is_a_usage_error(named_dims_model, tmp_path):
    assert_usage_error(aotc("compile", named_dims_model, "--taget", "host", "-o", tmp_path / "b"),
                       "No such option: --taget", "--target")


def test_missing_required_option_is_a_usage_error(named_dims_model):
    assert_usage_error(aotc("compile", named_dims_model, "-s", "batch=2"), "Missing option '--output'")


def test_bad_values_are_usage_errors(named_dims_model, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 16), np.float32))
    assert_usage_error(aotc("run", tmp_path, "-i", tmp_path / "in.npz", "--threads", "two"),
                       "Invalid value for '--threads'", "valid integer")
    assert_usage_error(aotc("inspect", named_dims_model, "--json", "true"), "unexpected extra argument(s) (true)")
    assert_usage_error(aotc("compile", named_dims_model, "-o", tmp_path / "b", "--calibration-method", "median"),
                       "'median' is not one of 'minmax', 'percentile', 'entropy'")


def test_bare_aotc_shows_help_not_an_error():
    res = aotc()
    assert res.returncode == 2 and "internal error" not in res.stderr + res.stdout
    assert "compile" in res.stdout + res.stderr and "Usage" in res.stdout + res.stderr


@pytest.mark.parametrize("cmd", ["inspect", "compile", "optimize", "trace", "run", "bench", "profile"])
def test_every_printing_command_takes_quiet_verbose_and_json(cmd):
    res = aotc(cmd, "--help")
    assert res.returncode == 0, res.stderr
    for flag in ("--quiet", "-q", "--verbose", "-v", "--json"):
        assert flag in res.stdout, (cmd, flag)


def test_compile_help_groups_options_and_lists_choices():
    text = usage_text(aotc("compile", "--help", columns=200).stdout)
    for panel in ("Input", "Passes", "Quantization", "Pruning", "Target", "Output", "Target options"):
        assert f" {panel} " in f" {text} ", panel
    assert "minmax|percentile|entropy" in text and "x86-avx512" in text


# -- options -------------------------------------------------------------------------------------------------
def test_a_dimension_set_by_its_name(named_dims_model):
    res = aotc("inspect", named_dims_model, "-s", "batch=4", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["inputs"][0]["shape"] == [4, 16]
    res = aotc("inspect", named_dims_model, "-s", "nosuch=4")
    assert res.returncode == 2 and "its named dimensions are 'batch'" in res.stderr


def test_calibration_nothing_reads_is_refused(named_dims_model, tmp_path):
    np.savez(tmp_path / "cal.npz", x=np.zeros((4, 2, 16), np.float32))
    res = aotc("compile", named_dims_model, "-s", "batch=2", "-o", tmp_path / "b", "--calibration",
               tmp_path / "cal.npz")
    assert res.returncode == 2 and "is read only by --quantize int8 and --prune-heads" in res.stderr
    assert not (tmp_path / "b").exists()


# -- output levels, bench and profile ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(named_dims_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "named"
    res = aotc("compile", named_dims_model, "-s", "batch=4", "-t", "x86-avx2", "-o", out, "-q")
    assert res.returncode == 0 and res.stderr == "", res.stderr  # -q: nothing but errors
    return out


def test_verbose_shows_every_step_and_json_is_for_scripts(named_dims_model, tmp_path):
    res = aotc("compile", named_dims_model, "-s", "batch=4", "-t", "x86-avx2", "-o", tmp_path / "b", "-v", "--json")
    assert res.returncode == 0, res.stderr
    assert "scheduling kernels" in res.stderr and "[1/" in res.stderr  # each step, as lines without a terminal
    out = json.loads(res.stdout)
    assert out["target"]["name"] == "x86-avx2" and out["inputs"][0]["shape"] == [4, 16]
    assert out["passes"][-3:] == ["fit_to_target", "subpixel_conv_transpose", "nchwc_layout"]


@needs_avx512
def test_run_json(bundle, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.ones((4, 16), np.float32))
    res = aotc("run", bundle, "-i", tmp_path / "in.npz", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["y"]["shape"] == [4, 8]


@needs_avx512
def test_bench_reports_percentiles_and_throughput(bundle):
    res = aotc("bench", bundle, "--runs", "20", "--warmup", "2", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["runs"] == 20 and r["inputs"] == "random" and r["batch"] == 4
    assert 0 < r["min_ms"] <= r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert r["samples_per_s"] == pytest.approx(4 * 1e3 / r["median_ms"])
    text = aotc("bench", bundle, "--runs", "5")
    assert text.returncode == 0 and "median" in text.stdout and "samples/s" in text.stdout


@needs_avx512
def test_profile_lists_every_kernel_against_the_roofline(bundle):
    res = aotc("profile", bundle, "--runs", "3", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sum(k["calls"] for k in r["kernels"]) == manifest["kernel_calls"]
    assert sum(k["flops"] for k in r["kernels"]) == manifest["flops"]
    assert r["peak"]["gflops"] > 0 and r["peak"]["gbps"] > 0
    assert all(k["us"] > 0 and 0 < k["of_roofline"] for k in r["kernels"])
    assert [k["us"] for k in r["kernels"]] == sorted((k["us"] for k in r["kernels"]), reverse=True)
    text = aotc("profile", bundle, "--runs", "2")
    assert text.returncode == 0 and "roofline" in text.stdout and "GFLOP/s" in text.stdout


def test_python_m_aotc_and_version():
    res = aotc("--version")
    assert res.returncode == 0 and res.stdout.startswith("aotc ")


def test_quiet_compile_prints_nothing_when_constants_fold_to_inf(tmp_path):
    """log(0) = -inf cast to an integer (T5's relative position buckets) is the ops' definition, not an
    error: constant folding used to print NumPy's RuntimeWarnings under -q."""
    consts = [numpy_helper.from_array(np.array([0.0, 1.0, 4.0], np.float32), "c")]
    nodes = [helper.make_node("Log", ["c"], ["l"]), helper.make_node("Cast", ["l"], ["i"], to=TensorProto.INT64),
             helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "f"], ["y"])]
    graph = helper.make_graph(nodes, "fold_inf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], consts)
    path = tmp_path / "fold_inf.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    res = aotc("compile", path, "-t", "x86-avx2", "-o", tmp_path / "b", "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""

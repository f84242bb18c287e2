"""Shape buckets (issue #20): one bundle holding a compiled variant per bucket, the runtime picking the smallest
bucket that holds the inputs, padding them and slicing the outputs back.

Fast cases use two small ONNX models with named dimensions (batch, seq): a per-position one (padding along seq
is exact) and one that averages over seq (padding changes the result: the compile warns). MiniLM-L6 against
onnxruntime is @slow with 4 buckets; the full 8-bucket matrix runs in bench/bench_buckets.py."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aotc
from aotc import compiler
from aotc import runtime_stub
from arm64_helpers import needs_arm64
from test_cli_errors import assert_user_error

HIDDEN = 8


def _model(path: Path, mean_over_seq: bool) -> Path:
    """y[batch, seq, 8] = x @ W + b (per position), minus the mean over seq when `mean_over_seq`."""
    r = np.random.default_rng(0)
    w = numpy_helper.from_array(r.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), "w")
    b = numpy_helper.from_array(r.standard_normal(HIDDEN).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y0"])]
    if mean_over_seq:
        nodes += [helper.make_node("ReduceMean", ["y0"], ["m"], axes=[1], keepdims=1),
                  helper.make_node("Sub", ["y0", "m"], ["y"])]
    else:
        nodes += [helper.make_node("Identity", ["y0"], ["y"])]
    graph = helper.make_graph(nodes, "bucket_test",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
                              [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bucket-models")
    return {"position": _model(d / "position.onnx", False), "mean": _model(d / "mean.onnx", True)}


@pytest.fixture(scope="module")
def bundle(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("bucketed") / "b"
    aotc.compile(models["position"], out, target="x86-avx512", buckets={"batch": (1, 2), "seq": (4, 8)},
                 pad={"x": 0})
    return out


def _reference(model, x):
    graph = compiler.load_onnx(model, input_shapes={"x": x.shape})
    return compiler.interpret(graph, {"x": x})["y"]


def test_any_size_up_to_the_largest_bucket(models, bundle):
    m = runtime_stub.load(bundle)
    r = np.random.default_rng(1)
    for batch, seq in [(1, 1), (1, 3), (1, 4), (2, 5), (1, 8), (2, 8)]:
        x = r.standard_normal((batch, seq, HIDDEN)).astype(np.float32)
        got = m.run({"x": x})["y"]
        assert got.shape == (batch, seq, HIDDEN)
        np.testing.assert_allclose(got, _reference(models["position"], x), rtol=1e-5, atol=1e-5)


def test_layout_one_shared_weights_file(bundle):
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["format_version"] == 2
    b = man["buckets"]
    assert [v["name"] for v in b["variants"]] == ["batch1_seq4", "batch1_seq8", "batch2_seq4", "batch2_seq8"]
    assert b["pad"] == {"x": 0} and b["padding_check"]["exact"] is True
    assert man["inputs"][0]["dims"] == ["batch", "seq", None] and man["outputs"][0]["dims"] == ["batch", "seq", None]
    # One weights.bin; every bucket folder links to it and is a complete format-1 bundle of its own.
    assert (bundle / "weights.bin").is_file() and not (bundle / "weights.bin").is_symlink()
    for v in b["variants"]:
        folder = bundle / v["name"]
        assert os.readlink(folder / "weights.bin") == "../weights.bin"
        sub = json.loads((folder / "manifest.json").read_text())
        assert sub["format_version"] == 1 and sub["bucket"]["sizes"] == v["sizes"]
        assert sub["inputs"][0]["shape"] == [v["sizes"]["batch"], v["sizes"]["seq"], HIDDEN]
        assert man["files"][f"{v['name']}/manifest.json"] == hashlib.sha256(
            (folder / "manifest.json").read_bytes()).hexdigest()
        runtime_stub.Model(folder)  # the C loader takes a bucket folder as it is
    # The C loader, handed the top-level manifest, says how to load a bucketed bundle.
    with pytest.raises(runtime_stub.RuntimeStubError, match="holds shape buckets"):
        runtime_stub.Model(bundle)


def test_weights_stored_once(models, bundle, tmp_path):
    """The per-position model has no constant that depends on the shape: the 4 buckets' weights.bin is exactly
    one single-shape bundle's."""
    single = aotc.compile(models["position"], tmp_path / "single", target="x86-avx512",
                          input_shapes={"batch": (2,), "seq": (8,)})
    assert (bundle / "weights.bin").read_bytes() == (single.path / "weights.bin").read_bytes()


def test_signature_covers_every_bucket(models, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    pem, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    out = tmp_path / "signed"
    aotc.compile(models["position"], out, target="x86-avx512", input_shapes={"batch": (1,)},
                 buckets={"seq": (4, 8)}, pad={"x": 0}, sign=pem)
    x = np.ones((1, 3, HIDDEN), np.float32)
    assert aotc.load(out, public_key=pub).run({"x": x})["y"].shape == (1, 3, HIDDEN)
    # A bucket's manifest changed after signing (still valid JSON, its own files untouched): refused.
    sub = out / "seq4" / "manifest.json"
    sub.write_bytes(sub.read_bytes() + b" ")
    with pytest.raises(runtime_stub.RuntimeStubError, match="seq4/manifest.json has SHA-256"):
        runtime_stub.load(out, public_key=pub).run({"x": x})


def test_rebuild_is_byte_identical(models, bundle, tmp_path):
    again = tmp_path / "again"
    aotc.compile(models["position"], again, target="x86-avx512", buckets={"batch": (2, 1), "seq": (8, 4, 8)},
                 pad={"x": 0})

    def tree(root):
        return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else p.read_bytes()
                for p in sorted(root.rglob("*")) if not p.is_dir() or p.is_symlink()}
    assert tree(bundle) == tree(again)


def test_bucket_errors(models, bundle, tmp_path):
    m = runtime_stub.load(bundle)
    with pytest.raises(runtime_stub.RuntimeStubError, match=r"'x' has seq 9, more than every bucket.*largest seq 8; "
                                                             r"buckets: batch1_seq4, batch1_seq8, batch2_seq4, "
                                                             r"batch2_seq8\)"):
        m.run({"x": np.zeros((1, 9, HIDDEN), np.float32)})
    with pytest.raises(runtime_stub.RuntimeStubError, match="has dtype float64, the model expects float32"):
        m.run({"x": np.zeros((1, 2, HIDDEN))})
    assert m.bucket_for({"x": np.zeros((2, 3, HIDDEN), np.float32)}) == "batch2_seq4"
    with pytest.raises(runtime_stub.RuntimeStubError, match="has 2 dimensions"):
        m.run({"x": np.zeros((1, 9), np.float32)})
    # Without a pad value, an input must match a bucket exactly.
    exact = tmp_path / "exact"
    aotc.compile(models["position"], exact, target="x86-avx512", input_shapes={"batch": (1,)},
                 buckets=[{"seq": 4}, {"seq": 8}])
    e = runtime_stub.load(exact)
    assert e.run({"x": np.ones((1, 8, HIDDEN), np.float32)})["y"].shape == (1, 8, HIDDEN)
    with pytest.raises(runtime_stub.RuntimeStubError, match="no pad value for 'x'"):
        e.run({"x": np.ones((1, 5, HIDDEN), np.float32)})
    short = tmp_path / "short.npz"
    np.savez(short, x=np.ones((1, 5, HIDDEN), np.float32))
    assert_user_error(_cli("run", str(exact), "-i", str(short)), "no pad value for 'x'", "--pad x=VALUE")
    # An explicit list where each size fits some bucket but no bucket holds both.
    mixed = tmp_path / "mixed"
    aotc.compile(models["position"], mixed, target="x86-avx512", buckets=[{"batch": 1, "seq": 8},
                                                                           {"batch": 2, "seq": 4}], pad={"x": 0})
    with pytest.raises(runtime_stub.RuntimeStubError, match="no bucket of this bundle holds"):
        runtime_stub.load(mixed).run({"x": np.ones((2, 6, HIDDEN), np.float32)})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "aotc", *args], capture_output=True, text=True)


def test_cli_bad_input_exit_2(models, bundle, tmp_path):
    out = tmp_path / "never"
    res = _cli("compile", str(models["position"]), "-t", "x86-avx512", "-o", str(out), "--bucket", "length=4,8")
    assert_user_error(res, "no input dimension named 'length'", "'batch', 'seq'")
    res = _cli("compile", str(models["position"]), "-t", "coreml", "-o", str(out), "--bucket", "seq=4,8")
    assert_user_error(res, "coreml does not implement shape buckets", "x86-avx512")
    res = _cli("compile", str(models["position"]), "-t", "x86-avx512", "-o", str(out), "--bucket", "seq=4,0")
    assert_user_error(res, "whole number of at least 1")
    res = _cli("compile", str(models["position"]), "-t", "x86-avx512", "-o", str(out), "--bucket", "seq=4",
               "--pad", "y=0")
    assert_user_error(res, "no input 'y'")
    assert not out.exists()
    long = tmp_path / "long.npz"
    np.savez(long, x=np.zeros((1, 12, HIDDEN), np.float32))
    assert_user_error(_cli("run", str(bundle), "-i", str(long)), "seq 12, more than every bucket")
    ok = tmp_path / "ok.npz"
    np.savez(ok, x=np.ones((2, 3, HIDDEN), np.float32))
    res = _cli("bench", str(bundle), "-i", str(ok), "--runs", "3", "--warmup", "1")
    assert res.returncode == 0 and "bucket batch2_seq4" in res.stdout, res.stderr
    res = _cli("inspect", str(bundle))
    assert res.returncode == 0 and "buckets: 4 over batch, seq" in res.stdout and "batch2_seq8: batch 2, seq 8" \
        in res.stdout and "padding check: exact" in res.stdout, res.stdout


def test_cli_compile_explicit_buckets(models, tmp_path):
    out = tmp_path / "cli"
    res = _cli("compile", str(models["position"]), "-t", "x86-avx512", "-o", str(out), "--buckets", "batch=1,seq=4",
               "--buckets", "batch=2,seq=8", "--pad", "x=0", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["inputs"][0]["dims"] == ["batch", "seq", None]
    sizes = [v["sizes"] for v in json.loads((out / "manifest.json").read_text())["buckets"]["variants"]]
    assert sizes == [{"batch": 1, "seq": 4}, {"batch": 2, "seq": 8}]
    # batch 2, seq 3 fits only the second bucket.
    assert runtime_stub.load(out).run({"x": np.ones((2, 3, HIDDEN), np.float32)})["y"].shape == (2, 3, HIDDEN)
    res = _cli("compile", str(models["position"]), "-t", "x86-avx512", "-o", str(tmp_path / "no"), "--buckets",
               "batch=1,seq=4", "--bucket", "seq=4")
    assert_user_error(res, "not both")


def test_padding_that_changes_the_result_warns(models, tmp_path):
    messages = []
    aotc.compile(models["mean"], tmp_path / "m", target="x86-avx512", input_shapes={"batch": (1,)},
                 buckets={"seq": (4, 8)}, pad={"x": 0}, log=messages.append)
    assert any("padding changes the model's outputs" in m for m in messages), messages
    check = json.loads((tmp_path / "m" / "manifest.json").read_text())["buckets"]["padding_check"]
    assert check["checked"] and not check["exact"] and check["max_relative_difference"] > 1e-3


@pytest.mark.slow
@needs_arm64
def test_arm64_buckets_under_qemu(models, tmp_path):
    out = tmp_path / "arm"
    b = aotc.compile(models["position"], out, target="arm64-neon", input_shapes={"batch": (1,)},
                     buckets={"seq": (4, 8)}, pad={"x": 0})
    # The bundle's aotc_runner (aarch64, under qemu) picks the bucket itself (aotc_bucketed_run).
    for seq in (2, 6, 8):
        x = np.random.default_rng(seq).standard_normal((1, seq, HIDDEN)).astype(np.float32)
        got = b.run({"x": x})["y"]
        np.testing.assert_allclose(got, _reference(models["position"], x), rtol=1e-5, atol=1e-5)
    from aotc.compiler.errors import AotcError
    with pytest.raises(AotcError, match=r"seq 9, more than every bucket.*buckets: seq4, seq8"):
        b.run({"x": np.zeros((1, 9, HIDDEN), np.float32)})


@pytest.mark.slow
def test_minilm_buckets_match_onnxruntime(model_cache, tmp_path):
    """MiniLM-L6 (real weights) with 4 buckets against onnxruntime on the unpadded inputs, at the valid positions
    (the tolerance of the MiniLM tests: 1e-4 absolute)."""
    from models import export_minilm, minilm_feeds
    from oracle import ort_run
    path = export_minilm(model_cache, "legacy", "eager", dynamic=True)
    b = aotc.compile(path, tmp_path / "minilm", target="x86-avx512", buckets={"batch": (1, 2), "seq": (16, 32)},
                     pad={"input_ids": 0, "attention_mask": 0})
    assert b.manifest["buckets"]["padding_check"]["exact"]
    for batch, seq in [(1, 7), (1, 16), (2, 20), (2, 32)]:
        feeds = minilm_feeds(batch, seq, seed=seq)
        got = b.run(feeds)["last_hidden_state"]
        want = ort_run(str(path), feeds)["last_hidden_state"]
        valid = feeds["attention_mask"].astype(bool)
        assert got.shape == want.shape
        assert np.abs(got - want)[valid].max() <= 1e-4


@pytest.mark.slow
def test_minilm_pruned_int8_buckets_compute_one_model(model_cache, tmp_path):
    """MiniLM-L6 with seq buckets 16/32, --prune-heads 0.25 and --quantize int8: heads are scored and ranges
    calibrated on the seq-32 bucket, and the seq-16 bucket prunes the same heads and uses the same scales, so an
    input of 16 tokens gives the same result in its own bucket and padded into the seq-32 one."""
    from models import export_minilm, minilm_feeds
    path = export_minilm(model_cache, "legacy", "eager", dynamic=True)
    cal = tmp_path / "cal.npz"
    c = [minilm_feeds(1, 32, seed=s) for s in range(4)]
    np.savez(cal, **{k: np.concatenate([f[k] for f in c]) for k in c[0]})
    b = aotc.compile(path, tmp_path / "minilm", target="x86-avx512", input_shapes={"batch": (1,)},
                     buckets={"seq": (16, 32)}, pad={"input_ids": 0, "attention_mask": 0}, quantize="int8",
                     calibration=cal, prune_heads=0.25, prune_heads_importance="contribution")
    reports = {}
    for folder in ("seq16", "seq32"):
        man = json.loads((b.path / folder / "manifest.json").read_text())
        reports[folder] = {p["name"]: p.get("report") for p in man["passes"]}
    assert reports["seq32"]["prune_heads"]["importance"] == "contribution"
    assert reports["seq16"]["prune_heads"]["importance"] == "spec"
    assert reports["seq16"]["prune_heads"]["removed"] == reports["seq32"]["prune_heads"]["removed"]
    assert reports["seq32"]["prune_heads"]["heads_removed"] == 18  # 25% of 6 x 12
    m = runtime_stub.load(b.path)
    feeds = minilm_feeds(1, 16, seed=7)
    own = m.run(feeds)["last_hidden_state"]
    padded = m.run({k: np.pad(v, [(0, 0), (0, 16)]) for k, v in feeds.items()})["last_hidden_state"][:, :16]
    valid = feeds["attention_mask"].astype(bool)
    scale = np.abs(own[valid]).max()
    assert np.abs(own - padded)[valid].max() <= 2e-3 * scale


def test_int8_buckets_share_one_set_of_scales(models, tmp_path):
    """--quantize int8 with buckets: the largest bucket is calibrated (the calibration data has its shape) and
    every other bucket is quantized with the same activation ranges. The per-position model then gives at seq 4
    exactly the first 4 positions of its seq-8 output, and seq 8 equals a single-shape int8 bundle's."""
    r = np.random.default_rng(3)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=(r.standard_normal((6, 8, HIDDEN)) * [1, 1, 1, 1, 3, 3, 3, 3][:HIDDEN]).astype(np.float32))
    out = tmp_path / "q"
    aotc.compile(models["position"], out, target="x86-avx512", input_shapes={"batch": (1,)},
                 buckets={"seq": (4, 8)}, pad={"x": 0}, quantize="int8", calibration=cal)
    single = aotc.compile(models["position"], tmp_path / "single", target="x86-avx512",
                          input_shapes={"batch": (1,), "seq": (8,)}, quantize="int8", calibration=cal)
    m = runtime_stub.load(out)
    x = r.standard_normal((1, 8, HIDDEN)).astype(np.float32)
    y8 = m.run({"x": x})["y"]
    np.testing.assert_array_equal(y8, runtime_stub.load(single.path).run({"x": x})["y"])
    np.testing.assert_array_equal(m.run({"x": x[:, :4]})["y"], y8[:, :4])
    want = _reference(models["position"], x)
    assert 0 < np.abs(y8 - want).max() < 0.05 * np.abs(want).max()  # int8, not float
    reports = {}
    for folder in ("seq4", "seq8"):
        man = json.loads((out / folder / "manifest.json").read_text())
        reports[folder] = next(p["report"] for p in man["passes"] if p["name"] == "quantize_int8")
    assert reports["seq8"]["samples"] == 6 and reports["seq8"]["output_error"]["value"] is not None
    assert reports["seq4"]["output_error"]["why"] == "ranges calibrated on another shape of this model"
    assert [q["node"] for q in reports["seq4"]["quantized"]] == [q["node"] for q in reports["seq8"]["quantized"]]


def test_int8_bucket_errors(models, tmp_path):
    cal = tmp_path / "cal4.npz"
    np.savez(cal, x=np.ones((2, 4, HIDDEN), np.float32))
    with pytest.raises(compiler.AotcError, match=r"read the calibration data on the largest bucket \(seq=8\).*x has "
                                                 r"shape \[2, 4, 8\]"):
        aotc.compile(models["position"], tmp_path / "a", target="x86-avx512", input_shapes={"batch": (1,)},
                     buckets={"seq": (4, 8)}, pad={"x": 0}, quantize="int8", calibration=cal)
    with pytest.raises(compiler.AotcError, match="--smoothquant and --max-drop run the model"):
        aotc.compile(models["position"], tmp_path / "b", target="x86-avx512", input_shapes={"batch": (1,)},
                     buckets={"seq": (4, 8)}, pad={"x": 0}, quantize="int8", calibration=cal, smoothquant=0.5)
    assert not any(p.name in "ab" for p in tmp_path.iterdir())

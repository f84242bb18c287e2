"""`aotc build`: a spec of 2 models x 3 targets (x86-avx512, arm64-neon, coreml) x 2 variants built from
scratch, then wholly from the cache, then only the artifacts a changed option touches; the same spec on Dask's
local cluster gives the same bytes; one failing artifact does not stop the others; spec mistakes are one
paragraph naming the file and the key, exit 2."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aotc
from aotc.build import BuildSpecError, build, load_spec
from aotc.build.cache import BundleCache
from aotc.build.cache_key import cache_key, key_material, model_files
from test_target_api import bundle_files, cnn_onnx, mlp_onnx

SPEC = """
[models.mlp]
path = "models/mlp.onnx"
calibration = "data/mlp_cal.npz"

[models.cnn]
path = "models/cnn.onnx"
calibration = "data/cnn_cal.npz"

[targets.x86]
target = "x86-avx512"

[targets.arm64]
target = "arm64-neon"

[targets.coreml]
{coreml}

[variants.fp32]

[variants.int8]
quantize = "int8"
"""


def write_project(root: Path, coreml: str = "") -> Path:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    scratch = root / "scratch"
    scratch.mkdir(exist_ok=True)
    for make, name, cal in ((mlp_onnx, "mlp", "cal"), (cnn_onnx, "cnn", "cnn_cal")):
        make(scratch)
        shutil.copy(scratch / f"{name}.onnx", root / "models" / f"{name}.onnx")
        shutil.copy(scratch / f"{cal}.npz", root / "data" / f"{name}_cal.npz")
    (root / "aotc.toml").write_text(SPEC.format(coreml=coreml))
    return root / "aotc.toml"


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def subtree(files: dict[str, bytes], folder: str) -> dict[str, bytes]:
    return {k.split("/", 1)[1]: v for k, v in files.items() if k.startswith(folder + "/")}


def statuses(report) -> dict[str, str]:
    return {r.artifact.name: r.status for r in report.results}


def test_release_matrix_scratch_cache_changed_option_dask_and_a_failure(tmp_path):
    """One test, so that pytest-xdist cannot build the matrix once per worker."""
    root = tmp_path / "project"
    spec = write_project(root)
    report = build(spec, jobs=2)
    first = tree(root / "dist")
    assert len(report.results) == 12 and set(statuses(report).values()) == {"built"}
    release = json.loads(first["release.json"])
    assert [a["name"] for a in release["artifacts"]] == sorted(statuses(report))
    arm = next(a for a in release["artifacts"] if a["name"] == "cnn-arm64-int8")
    assert arm["target"] == "arm64-neon" and arm["options"]["quantize"] == "int8"
    assert arm["options"]["calibration"] == "data/cnn_cal.npz"  # relative: the release names no checkout path
    assert arm["manifest_sha256"] == hashlib.sha256(first["cnn-arm64-int8/manifest.json"]).hexdigest()
    assert "calibration" not in next(a for a in release["artifacts"] if a["name"] == "mlp-x86-fp32")["options"]

    # a cache hit is indistinguishable from a compile: the same bytes as aotc.compile writes
    direct = aotc.compile(root / "models" / "cnn.onnx", tmp_path / "direct", target="arm64-neon", quantize="int8",
                          calibration=root / "data" / "cnn_cal.npz")
    assert bundle_files(direct.path) == subtree(first, "cnn-arm64-int8")
    again = build(spec, jobs=2)
    assert set(statuses(again).values()) == {"cached"}
    assert tree(root / "dist") == first  # release.json included

    # Dask's local cluster, 2 worker processes, no cache: the same bundles and release.json
    on_dask = build(spec, output=tmp_path / "dask-dist", cache=tmp_path / "dask-cache", jobs=2, executor="dask")
    assert set(statuses(on_dask).values()) == {"built"}
    assert tree(tmp_path / "dask-dist") == first

    # a changed target option rebuilds only the artifacts of that target
    (root / "aotc.toml").write_text(SPEC.format(coreml='precision = "fp32"'))
    changed = build(spec, jobs=2)
    built = sorted(n for n, s in statuses(changed).items() if s == "built")
    assert built == ["cnn-coreml-fp32", "cnn-coreml-int8", "mlp-coreml-fp32", "mlp-coreml-int8"]
    assert all(s == "cached" for n, s in statuses(changed).items() if n not in built)
    assert json.loads((root / "dist" / "mlp-coreml-fp32" / "manifest.json").read_text())["target"]["precision"] == \
        "fp32"

    # one failing artifact: reported, the other one still comes (here from the cache), exit 1, no release.json
    failing = root / "failing.toml"
    failing.write_text('[models.mlp]\npath = "models/mlp.onnx"\n[targets.x86]\ntarget = "x86-avx512"\n'
                       '[variants.fp32]\n[variants.tiny]\nmax_memory = 1024\n')
    res = subprocess.run([sys.executable, "-m", "aotc", "build", str(failing), "-o", str(tmp_path / "out"),
                          "--cache", str(root / ".aotc-cache"), "--json"], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert (summary["cached"], summary["built"], summary["failed"]) == (1, 0, 1)
    assert "FAILED  mlp-x86-tiny (failing.toml (models x targets x variants)): " in res.stderr
    assert not (tmp_path / "out" / "release.json").exists()
    assert tree(tmp_path / "out" / "mlp-x86-fp32") == subtree(first, "mlp-x86-fp32")


def test_api_failure_carries_the_errors(tmp_path):
    """Called without a log, build() has printed nothing: its exception names each failure's error."""
    from aotc.build import BuildFailedError
    root = tmp_path / "project"
    write_project(root)
    failing = root / "failing.toml"
    failing.write_text('[models.mlp]\npath = "models/mlp.onnx"\n[targets.x86]\ntarget = "x86-avx512"\n'
                       '[variants.tiny]\nmax_memory = 1024\n')
    with pytest.raises(BuildFailedError, match=r"1 of 1 artifact\(s\) failed: mlp-x86-tiny \(FAILED  mlp-x86-tiny "
                       r"\(failing.toml \(models x targets x variants\)\): .*memory"):
        build(failing, output=tmp_path / "out", cache=tmp_path / "cache")
    lines = []
    with pytest.raises(BuildFailedError, match="each error is above"):
        build(failing, output=tmp_path / "out", cache=tmp_path / "cache", log=lines.append)
    assert any(line.startswith("FAILED  mlp-x86-tiny") for line in lines)


@pytest.mark.parametrize("text, expected", [
    ('[models.m]\npath = "missing.onnx"\n[targets.x86-avx512]\n', "[models.m] path: file 'missing.onnx' does not"),
    ('[models.m]\npath = "m.onnx"\n[targets.x86-avx512]\n[variants.v]\nquantise = "int8"\n',
     "[variants.v]: unknown key(s) quantise"),
    ('[models.m]\npath = "m.onnx"\n[targets.a]\ntarget = "arm64-neon"\nmcpus = "x"\n',
     "[targets.a]: --mcpus is not an option of target arm64-neon"),
    ('[models.m]\npath = "m.onnx"\n[targets.x86-avx512]\n[[artifacts]]\nmodel = "n"\n',
     "[[artifacts]] #1 model: 'n' is not declared"),
    ('[models.m]\npath = "m.onnx"\ninput_shapes = { x = [1, 0] }\n[targets.x86-avx512]\n',
     "[models.m] input_shapes.x: must be a list of positive integers"),
])
def test_spec_mistakes_name_the_file_and_key(tmp_path, text, expected):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "aotc.toml").write_text(text)
    with pytest.raises(BuildSpecError) as e:
        load_spec(tmp_path)
    assert str(e.value).startswith("aotc.toml ") and expected in str(e.value), str(e.value)


def test_spec_error_on_the_command_line_is_one_paragraph_exit_2(tmp_path):
    (tmp_path / "aotc.toml").write_text('[models.m]\npath = "nope.onnx"\n[targets.coreml]\n')
    res = subprocess.run([sys.executable, "-m", "aotc", "build", str(tmp_path / "aotc.toml")], capture_output=True,
                         text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("error: aotc.toml [models.m] path:") and res.stderr.count("\n") == 1


def test_key_follows_toolchain_versions(tmp_path, monkeypatch):
    from aotc.targets.base import get_target
    spec = write_project(tmp_path)
    art = next(a for a in load_spec(spec).artifacts if a.name == "mlp-arm64-int8")
    target = get_target("arm64-neon")
    files = model_files(art.model.path)
    key = cache_key(key_material(art, target, files))
    assert cache_key(key_material(art, target, files)) == key
    monkeypatch.setattr(type(target), "toolchain_versions", lambda self: {"tvm": "0.27.0", "cc": "other gcc"})
    assert cache_key(key_material(art, target, files)) != key
    monkeypatch.undo()
    (tmp_path / "data" / "mlp_cal.npz").write_bytes(b"other calibration data")
    assert cache_key(key_material(art, target, files)) != key


def test_a_damaged_cache_entry_is_a_miss(tmp_path):
    weights = b"\x01" * 64
    manifest = json.dumps({"files": {"weights.bin": hashlib.sha256(weights).hexdigest()}}).encode()
    cache = BundleCache(tmp_path)
    entry = cache.put("ab" * 32, {"manifest.json": manifest, "weights.bin": weights})
    assert cache.get("ab" * 32) == entry
    (entry / "weights.bin").write_bytes(weights[:-1])  # e.g. a CI cache restored in part
    assert cache.get("ab" * 32) is None
    (entry / "weights.bin").write_bytes(weights)
    (entry / "extra.bin").write_bytes(b"")
    assert cache.get("ab" * 32) is None

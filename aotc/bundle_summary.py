"""`aotc inspect BUNDLE`: what a compiled bundle's manifest says, for a person: target, inputs and
outputs, kernels, sizes, the passes applied, and the INT8 quantization report when there is one
(scheme, calibration method, which nodes are int8 and which stayed float, and why)."""
from __future__ import annotations

from pathlib import Path

from aotc.compiler.errors import AotcError


def read_manifest(bundle: str | Path, public_key=None) -> dict:
    """The bundle's manifest, strictly parsed; with `public_key`, only once its signature verifies."""
    from aotc.runtime_stub import RuntimeStubError
    from aotc.runtime_stub.manifest import read_manifest as read_checked
    try:
        return read_checked(bundle, public_key)
    except RuntimeStubError as e:  # a malformed manifest, a missing or wrong signature
        raise AotcError(f"{e}.") from None


def _io(items) -> str:
    return ", ".join(f"{i['name']} {i['dtype']}[{','.join(map(str, i['shape']))}]" for i in items)


def format_quantization(q: dict) -> list[str]:
    lines = ["int8 quantization:"]
    for k, v in q.get("scheme", {}).items():
        lines.append(f"  {k}: {v}")
    method = q.get("method")
    if method == "percentile":
        method += f" {q.get('percentile')}"
    lines.append(f"  calibration: {method} on {q.get('samples')} sample(s)")
    by_op: dict[str, int] = {}
    for item in q.get("quantized", []):
        by_op[item.get("as", item.get("op"))] = by_op.get(item.get("as", item.get("op")), 0) + 1
    lines.append(f"  int8 nodes: {len(q.get('quantized', []))} (" +
                 ", ".join(f"{k} {v}" for k, v in sorted(by_op.items())) + ")")
    for f in q.get("float", []):
        lines.append(f"  float: {f['node']} ({f.get('reason', '')})")
    if q.get("smoothquant"):
        lines.append(f"  SmoothQuant alpha {q['smoothquant']['alpha']} on {len(q['smoothquant']['smoothed'])} "
                     "activation(s)")
    if q.get("sensitivity"):
        s = q["sensitivity"]
        lines.append(f"  max_drop {s['max_drop']}: error {s['error_all_int8']:.4g} all int8 -> "
                     f"{s['error_after']:.4g} with {len(s['fallback'])} node(s) in float")
    if q.get("output_error"):
        lines.append(f"  output error on the calibration set (1 - cosine): {q['output_error']['value']:.4g}")
    cb = q.get("constant_bytes")
    if cb:
        lines.append(f"  constants: {cb['float']} B float -> {cb['int8']} B ({cb['ratio']:.2f}x smaller)")
    return lines


def format_buckets(b: dict) -> list[str]:
    """A bucketed bundle's buckets, one line each, and its pad values and padding check."""
    variants = b.get("variants", [])
    lines = [f"buckets: {len(variants)} over {', '.join(b.get('dims', []))} (inputs up to the largest are padded to "
             "the smallest bucket that holds them)"]
    for v in variants:
        lines.append(f"  {v.get('name')}: " + ", ".join(f"{d} {n}" for d, n in v.get("sizes", {}).items()) +
                     (f"; {v['kernels']} kernels, arena {v.get('arena_bytes')} B, {v.get('flops', 0) / 1e9:.2f} "
                      "GFLOP per run" if "kernels" in v else ""))
    pad = b.get("pad", {})
    lines.append("pad: " + (", ".join(f"{k}={v}" for k, v in pad.items()) if pad else
                            "none (inputs must match a bucket exactly)"))
    check = b.get("padding_check", {})
    if check.get("checked"):
        verdict = "exact" if check.get("exact") else "CHANGES THE OUTPUTS"
        lines.append(f"padding check: {verdict} ({check.get('from')} padded into {check.get('into')}: relative "
                     f"difference {check.get('max_relative_difference', 0):.3g} at valid positions)")
    elif check:
        lines.append(f"padding check: not run ({check.get('why')})")
    return lines


def format_bundle(manifest: dict) -> str:
    t = manifest.get("target", {})
    lines = [f"bundle for {t.get('name', '?')} (format {manifest.get('format_version')}, aotc "
             f"{manifest.get('aotc_version')}), from {manifest.get('source_model', {}).get('name', '?')}",
             f"inputs:  {_io(manifest.get('inputs', []))}", f"outputs: {_io(manifest.get('outputs', []))}"]
    if isinstance(t.get("cpu_features"), list):
        lines.append("needs CPU features: " + ", ".join(map(str, t["cpu_features"])))
    if isinstance(manifest.get("glibc"), str):
        lines.append(f"needs glibc {manifest['glibc']} or newer (the newest symbol version its native code uses)")
    if "kernels" in manifest:
        lines.append(f"kernels: {manifest['kernels']} ({manifest.get('kernel_calls')} calls), arena "
                     f"{manifest.get('arena_bytes')} B, weights {manifest.get('weight_bytes')} B, "
                     f"{manifest.get('flops', 0) / 1e9:.2f} GFLOP per run")
    if isinstance(manifest.get("buckets"), dict):
        lines += format_buckets(manifest["buckets"])
    passes = manifest.get("passes", [])
    lines.append("passes: " + (", ".join(p["name"] for p in passes) if passes else "none"))
    for p in passes:
        if p["name"] == "quantize_int8" and "report" in p:
            lines += format_quantization(p["report"])
    return "\n".join(lines)

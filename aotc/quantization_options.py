"""The `--quantize int8` family of command-line options, shared by `aotc optimize` and `aotc compile`:
help texts, validation, the pipeline step they turn into, and the one-paragraph summary printed after."""
from __future__ import annotations

from typing import Any, Sequence

from aotc.compiler.errors import AotcError
from aotc.passes.quantization.calibrate import METHODS
from aotc.passes.quantization.quantize import QuantConfig, split_names

QUANTIZE_AFTER = ("fuse_", "prune_")  # quantize_int8 goes after fusion and head pruning (passes.insert_pass)

QUANTIZE_HELP = ("Post-training quantization: 'int8' (weights int8 per output channel, activations uint8 per tensor, "
                 "calibrated on --calibration data). Inserted after fusion and head pruning.")
CALIBRATION_HELP = ("Calibration inputs, an .npz with one array per model input (samples stacked along a new first "
                    "axis, or concatenated along the batch axis); read without pickle.")
METHOD_HELP = f"How activation ranges are chosen from calibration data: {' | '.join(METHODS)}."
PERCENTILE_HELP = "The percentile for --calibration-method percentile (e.g. 99.99)."
SAMPLES_HELP = "Use only the first N calibration samples."
QUANTIZE_OPS_HELP = ("Comma-separated op types to quantize (default: MatMul, FusedMatMul, Gemm, Conv, FusedConv, "
                     "Attention, Gather).")
EXCLUDE_HELP = "Comma-separated node names to keep in float (repeatable)."
SMOOTHQUANT_HELP = "Apply SmoothQuant with this alpha (0..1) before calibration, migrating activation outliers into weights."
MAX_DROP_HELP = ("Keep the layers the output is most sensitive to in float until the output error (1 - cosine vs float) "
                 "on the calibration set is at most this value.")


def quantization_step(quantize: str | None, calibration: str | None = None, method: str = "minmax",
                      percentile: float = 99.99, samples: int | None = None, quantize_ops: str | None = None,
                      exclude_nodes: Sequence[str] | None = None, smoothquant: float | None = None,
                      max_drop: float | None = None) -> tuple[str, dict[str, Any]] | None:
    """The ("quantize_int8", options) pipeline step the flags ask for, or None without --quantize."""
    if quantize is None:
        given = [flag for flag, v in (("--calibration-method", method != "minmax"), ("--calibration-samples", samples),
                                      ("--quantize-ops", quantize_ops), ("--exclude-nodes", exclude_nodes),
                                      ("--smoothquant", smoothquant), ("--max-drop", max_drop)) if v]
        if given:
            raise AotcError(f"{', '.join(given)} only take(s) effect with --quantize int8; add it or drop them.")
        return None
    if quantize.lower() != "int8":
        raise AotcError(f"--quantize {quantize!r} is not a scheme aotc has; use --quantize int8.")
    if not calibration:
        raise AotcError("--quantize int8 calibrates activation ranges on sample inputs: give them with "
                        "--calibration FILE.npz (one array per model input).")
    excluded = [n for item in exclude_nodes or () for n in split_names(item)]
    opts = {"method": method, "percentile": percentile, "samples": samples,
            "quantize_ops": ",".join(split_names(quantize_ops)), "exclude_nodes": ",".join(excluded),
            "smoothquant": smoothquant, "max_drop": max_drop}
    QuantConfig(method=method, percentile=percentile, samples=samples, quantize_ops=split_names(quantize_ops) or None,
                exclude_nodes=excluded, smoothquant=smoothquant, max_drop=max_drop).check()
    return "quantize_int8", opts


def format_summary(report: dict) -> str:
    q = report["quantized"]
    by_op: dict[str, int] = {}
    for item in q:
        by_op[item["op"]] = by_op.get(item["op"], 0) + 1
    cb = report["constant_bytes"]
    fb = [f["node"] for f in report["float"] if f.get("reason", "").startswith(("sensitivity", "excluded"))]
    err = report["output_error"]
    calibrated = (f"calibration {report['method']} on {report['samples']} sample(s); output error (1 - cosine) on "
                  f"the calibration set {err['value']:.4g}") if err["value"] is not None else err["why"]
    text = (f"int8: {len(q)} node(s) quantized ({', '.join(f'{k} {v}' for k, v in sorted(by_op.items()))}), "
            f"{calibrated}; constants {cb['float'] / 1e6:.1f} MB -> {cb['int8'] / 1e6:.1f} MB "
            f"({cb['ratio']:.2f}x smaller)")
    if fb:
        text += f"; kept float: {', '.join(fb[:6])}" + (f" and {len(fb) - 6} more" if len(fb) > 6 else "")
    return text

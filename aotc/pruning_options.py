"""The `--prune-heads` family of command-line options, shared by `aotc optimize` and `aotc compile`:
help texts, validation, the pipeline step they turn into, and the report printed after.

    step = pruning_step(prune_heads, prune_heads_spec, min_per_layer, importance, calibration)
    extra = [step] if step else []          # ((name, options), after_prefixes) for passes.insert_pass
    ...
    typer.echo(pruning_summary(pm), err=True)   # after pm.run(graph); "" when no pruning ran

Calibration data (`--calibration FILE.npz`, shared with `--quantize int8`) reaches the pass through the
PassManager's PassContext; see compiler/calibration.py for the file layouts.
"""
from __future__ import annotations

from typing import Any

from aotc.compiler.errors import AotcError

PRUNE_HEADS_AFTER = ("fuse_",)  # prune_heads runs on fused Attention ops, before quantization

PRUNE_HEADS_HELP = ("Remove this fraction (0..1, exclusive) of all attention heads, least important first (global "
                    "ranking, scored on --calibration data), after fusion. E.g. 0.25.")
PRUNE_SPEC_HELP = ("Remove exactly these heads: LAYER:HEAD,... counting from 0, layers in graph order "
                   "(e.g. 0:3,0:5,4:1).")
PRUNE_MIN_HELP = "With --prune-heads: every attention layer keeps at least this many heads (default 1)."
PRUNE_SAMPLES_HELP = ("With --prune-heads: score heads on only the first N calibration feeds (drift costs about one "
                      "forward pass per head and feed).")
PRUNE_IMPORTANCE_HELP = ("How --prune-heads ranks heads: drift (default: output change on the calibration data when "
                         "the head is removed; about one forward pass per head and calibration feed), contribution "
                         "(one forward pass per feed), weight (needs no calibration data), random.")


def pruning_step(fraction: float | None, spec: str | None, min_per_layer: int = 1, importance: str = "drift",
                 calibration: str | None = None, samples: int | None = None
                 ) -> tuple[tuple[str, dict[str, Any]], tuple[str, ...]] | None:
    """The (("prune_heads", options), PRUNE_HEADS_AFTER) step the flags ask for, or None without
    --prune-heads / --prune-heads-spec. Option errors are raised here, before the model is read."""
    from aotc.passes.prune_heads import check_options
    if fraction is None and not spec:
        given = [flag for flag, v in (("--prune-heads-min-per-layer", min_per_layer != 1),
                                      ("--prune-heads-importance", importance != "drift"),
                                      ("--prune-heads-samples", samples is not None)) if v]
        if given:
            raise AotcError(f"{', '.join(given)} only take(s) effect with --prune-heads FRACTION; add it or drop "
                            "them.")
        return None
    if fraction is not None and spec:
        raise AotcError("--prune-heads FRACTION and --prune-heads-spec LAYER:HEAD,... both choose the heads to "
                        "remove; give one of them.")
    check_options(fraction, spec or None, min_per_layer, importance)
    if fraction is not None and importance in ("drift", "contribution") and not calibration:
        raise AotcError(f"--prune-heads scores heads by running the model on sample inputs (importance "
                        f"{importance}): give them with --calibration FILE.npz (one array per model input), or use "
                        "--prune-heads-importance weight, which needs no data.")
    if samples is not None and samples < 1:
        raise AotcError(f"--prune-heads-samples must be at least 1, got {samples}.")
    opts: dict[str, Any] = {"min_per_layer": min_per_layer}
    if samples is not None:
        opts["samples"] = samples
    if fraction is not None:
        opts.update(fraction=float(fraction), importance=importance)
    else:
        opts["spec"] = spec
    return ("prune_heads", opts), PRUNE_HEADS_AFTER


def pruning_summary(pm) -> str:
    """The prune_heads report of a PassManager that ran, as text ("" when it did not prune)."""
    report = pm.context.reports.get("prune_heads")
    if report is None:
        return ""
    from aotc.passes.prune_heads import format_report
    return format_report(report)

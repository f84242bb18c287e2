"""The `aotc` command line."""
from __future__ import annotations

import json
import sys
import traceback
from typing import List, Optional

import typer

from compiler.errors import AotcError
from compiler.onnx_import import parse_shape

from . import pruning_options as P
from . import quantization_options as Q

app = typer.Typer(
    name="aotc",
    help="aotc — ahead-of-time compiler for neural-network models. Turns an ONNX model (or a PyTorch "
         "module) into a deployable bundle for one target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}

INPUT_SHAPE_HELP = ("Fix an input's shape, as NAME=DIMS (e.g. input_ids=1x128). Repeat for each input with "
                    "dynamic dimensions.")


def parse_input_shapes(items: Optional[List[str]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise AotcError(f"--input-shape {item!r} is not NAME=DIMS; write e.g. --input-shape input_ids=1x128.")
        if name in shapes:
            raise AotcError(f"--input-shape gives {name!r} twice.")
        shapes[name] = parse_shape(dims)
    return shapes


def _version(value: bool):
    if value:
        from compiler import __version__
        typer.echo(f"aotc {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors (for bug reports)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    _state["debug"] = debug


@app.command()
def inspect(
    model: str = typer.Argument(..., help="An ONNX model file, or a bundle directory written by `aotc compile`."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help=INPUT_SHAPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON, for scripts."),
):
    """Show a model's inputs, outputs, op histogram, parameters, FLOPs and unsupported ops.

    Exits with 2 if the model cannot be compiled as it is (unsupported ops, dynamic shapes left open),
    after printing what could be determined.
    """
    from pathlib import Path
    if Path(model).is_dir():  # a compiled bundle: its manifest (incl. the int8 quantization report)
        from compiler.bundle_summary import format_bundle, read_manifest
        manifest = read_manifest(model)
        typer.echo(json.dumps(manifest, indent=2) if as_json else format_bundle(manifest))
        return
    from compiler.model_summary import format_report, summarize_onnx
    report, error = summarize_onnx(model, parse_input_shapes(input_shape))
    if as_json:
        report["error"] = str(error) if error else None
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(format_report(report))
    if error is not None:
        raise error


# -- the pass pipeline, shared by every command that runs it --------------------------------------
PASSES_HELP = ("Comma-separated pass pipeline replacing the default, options in braces: "
               "canonicalize,fuse_gelu,prune_heads{fraction=0.25}. `aotc passes` lists them.")
DISABLE_HELP = "Skip this pass of the pipeline (repeatable)."
PRINT_IR_HELP = "Print the IR after this pass (repeatable), or after every pass with 'all'."
TIMES_HELP = "Print each pass's time, node counts and rewrites."
VERIFY_HELP = "Run the IR verifier after every pass (a broken graph names the pass that broke it)."


# Options `aotc optimize` and `aotc compile` share (one definition each; typer reads them per command).
OPT_DISABLE_PASS = typer.Option(None, "--disable-pass", help=DISABLE_HELP)
OPT_PRINT_IR_AFTER = typer.Option(None, "--print-ir-after", help=PRINT_IR_HELP)
OPT_PRINT_PASS_TIMES = typer.Option(False, "--print-pass-times", help=TIMES_HELP)
OPT_VERIFY = typer.Option(False, "--verify", help=VERIFY_HELP)
OPT_QUANTIZE = typer.Option(None, "--quantize", help=Q.QUANTIZE_HELP)
OPT_CALIBRATION = typer.Option(None, "--calibration", help=Q.CALIBRATION_HELP)
OPT_CALIBRATION_METHOD = typer.Option("minmax", "--calibration-method", help=Q.METHOD_HELP)
OPT_CALIBRATION_PERCENTILE = typer.Option(99.99, "--calibration-percentile", help=Q.PERCENTILE_HELP)
OPT_CALIBRATION_SAMPLES = typer.Option(None, "--calibration-samples", help=Q.SAMPLES_HELP)
OPT_QUANTIZE_OPS = typer.Option(None, "--quantize-ops", help=Q.QUANTIZE_OPS_HELP)
OPT_EXCLUDE_NODES = typer.Option(None, "--exclude-nodes", help=Q.EXCLUDE_HELP)
OPT_SMOOTHQUANT = typer.Option(None, "--smoothquant", help=Q.SMOOTHQUANT_HELP)
OPT_MAX_DROP = typer.Option(None, "--max-drop", help=Q.MAX_DROP_HELP)
OPT_PRUNE_HEADS = typer.Option(None, "--prune-heads", metavar="FRACTION", help=P.PRUNE_HEADS_HELP)
OPT_PRUNE_HEADS_SPEC = typer.Option(None, "--prune-heads-spec", metavar="LAYER:HEAD,...", help=P.PRUNE_SPEC_HELP)
OPT_PRUNE_HEADS_MIN_PER_LAYER = typer.Option(1, "--prune-heads-min-per-layer", help=P.PRUNE_MIN_HELP)
OPT_PRUNE_HEADS_IMPORTANCE = typer.Option("drift", "--prune-heads-importance", help=P.PRUNE_IMPORTANCE_HELP)
OPT_PRUNE_HEADS_SAMPLES = typer.Option(None, "--prune-heads-samples", help=P.PRUNE_SAMPLES_HELP)


@app.command("passes")
def list_passes():
    """List the registered passes, their options and the default pipeline."""
    from passes import DEFAULT_PIPELINE, PASSES
    typer.echo("default pipeline: " + ",".join(DEFAULT_PIPELINE))
    for name in sorted(PASSES):
        info = PASSES[name]
        opts = ", ".join(f"{k}={v}" for k, v in info.options.items())
        typer.echo(f"\n{name}" + (f"  {{{opts}}}" if opts else ""))
        for line in info.doc.splitlines():
            typer.echo(f"    {line.strip()}")


@app.command()
def optimize(
    model: str = typer.Argument(..., help="An ONNX model file."),
    output: str = typer.Option(..., "--output", "-o", help="Where to write the optimized model (.onnx)."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help=INPUT_SHAPE_HELP),
    passes: Optional[str] = typer.Option(None, "--passes", help=PASSES_HELP),
    disable_pass: Optional[List[str]] = OPT_DISABLE_PASS,
    print_ir_after: Optional[List[str]] = OPT_PRINT_IR_AFTER,
    print_pass_times: bool = OPT_PRINT_PASS_TIMES,
    verify: bool = OPT_VERIFY,
    quantize: Optional[str] = OPT_QUANTIZE,
    calibration: Optional[str] = OPT_CALIBRATION,
    calibration_method: str = OPT_CALIBRATION_METHOD,
    calibration_percentile: float = OPT_CALIBRATION_PERCENTILE,
    calibration_samples: Optional[int] = OPT_CALIBRATION_SAMPLES,
    quantize_ops: Optional[str] = OPT_QUANTIZE_OPS,
    exclude_nodes: Optional[List[str]] = OPT_EXCLUDE_NODES,
    smoothquant: Optional[float] = OPT_SMOOTHQUANT,
    max_drop: Optional[float] = OPT_MAX_DROP,
    prune_heads: Optional[float] = OPT_PRUNE_HEADS,
    prune_heads_spec: Optional[str] = OPT_PRUNE_HEADS_SPEC,
    prune_heads_min_per_layer: int = OPT_PRUNE_HEADS_MIN_PER_LAYER,
    prune_heads_importance: str = OPT_PRUNE_HEADS_IMPORTANCE,
    prune_heads_samples: Optional[int] = OPT_PRUNE_HEADS_SAMPLES,
    report: Optional[str] = typer.Option(None, "--report", help="Write what the passes report (e.g. the INT8 "
                                         "scheme and quantized nodes) as JSON to this file."),
):
    """Import a model with static shapes, run the pass pipeline, and write the result as ONNX.

    Fused ops (FusedMatMul, Attention, ...) are written in the ai.aotc domain: the file is for reading
    (e.g. in Netron) and for `aotc` itself; onnxruntime cannot run those nodes.
    """
    from compiler.onnx_export import save_onnx
    from compiler.onnx_import import load_onnx
    from .api import CompileOptions, build_pass_manager, run_pipeline
    opts = CompileOptions(passes=passes, disable_pass=disable_pass or (), print_ir_after=print_ir_after or (),
                          print_pass_times=print_pass_times, verify=verify, **_quantize_and_prune_options(locals()))
    pm = build_pass_manager(opts)
    graph = load_onnx(model, parse_input_shapes(input_shape))
    before = len(graph.nodes)
    run_pipeline(graph, pm, log=lambda msg: typer.echo(msg, err=True))
    save_onnx(graph, output)
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram().items())
    if report:
        with open(report, "w") as f:
            json.dump(pm.applied(), f, indent=2, default=str)
    typer.echo(f"{before} -> {len(graph.nodes)} nodes ({hist}); wrote {output}", err=True)


QUANTIZE_AND_PRUNE = ("quantize", "calibration", "calibration_method", "calibration_percentile", "calibration_samples",
                      "quantize_ops", "exclude_nodes", "smoothquant", "max_drop", "prune_heads", "prune_heads_spec",
                      "prune_heads_min_per_layer", "prune_heads_importance", "prune_heads_samples")


def _quantize_and_prune_options(args: dict) -> dict:
    """The quantization and pruning flags of a command, as CompileOptions fields (same names)."""
    opts = {k: args[k] for k in QUANTIZE_AND_PRUNE}
    opts["exclude_nodes"] = tuple(opts["exclude_nodes"] or ())
    return opts


# -- the PyTorch frontend ----------------------------------------------------------------------
EXAMPLE_INPUT_HELP = ("An example input for the model's parameter NAME, as NAME=DIMS[:DTYPE] (e.g. input_ids=1x128:int64; "
                      "DTYPE defaults to float32) or NAME=FILE.npy. Repeat for each input.")


@app.command("trace")
def trace_cmd(
    model: str = typer.Argument(..., help="FILE.py:FACTORY, where FACTORY() returns the torch.nn.Module (or function)."),
    example_input: List[str] = typer.Option(..., "--example-input", "-e", help=EXAMPLE_INPUT_HELP),
    output: str = typer.Option(..., "--output", "-o", help="Where to write the traced model (.onnx)."),
    optimize: bool = typer.Option(False, "--optimize", help="Run the default pass pipeline before writing."),
    verify: bool = typer.Option(False, "--verify", help=VERIFY_HELP),
):
    """Trace a PyTorch model with aotc's frontend (Python control flow on tensors becomes torch.where) and
    write the IR as ONNX."""
    from compiler.frontend import load_python_model, parse_example_inputs
    from compiler.onnx_export import save_onnx
    graph = load_python_model(model, parse_example_inputs(example_input))
    before = len(graph.nodes)
    if optimize:
        from .api import CompileOptions, build_pass_manager
        build_pass_manager(CompileOptions(verify=verify)).run(graph)
    save_onnx(graph, output)
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram().items())
    typer.echo(f"traced {before} nodes" + (f" -> {len(graph.nodes)} optimized" if optimize else "")
               + f" ({hist}); wrote {output}", err=True)


# -- compile and run bundles (targets/, runtime_stub/) -------------------------------------------

def compile_cmd(
    model: str = typer.Argument(..., help="An ONNX model file, or FILE.py:factory (a function returning a "
                                "torch.nn.Module, traced with --example-input)."),
    target: str = typer.Option("host", "--target", "-t", help="The target (`aotc targets` lists them), or host "
                               "(this machine's best)."),
    output: str = typer.Option(..., "--output", "-o", help="The bundle directory to write (replaced if it is one)."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help=INPUT_SHAPE_HELP),
    passes: str = typer.Option("default", "--passes", help="Passes to run before lowering: 'default' (the default "
                               "pipeline: folding, fusions into FusedMatMul/FusedConv/Attention/...), 'none', or a "
                               "comma-separated list. The target's own passes follow; the manifest records all."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    example_input: Optional[List[str]] = typer.Option(None, "--example-input", "-e", help=EXAMPLE_INPUT_HELP),
    disable_pass: Optional[List[str]] = OPT_DISABLE_PASS,
    print_ir_after: Optional[List[str]] = OPT_PRINT_IR_AFTER,
    print_pass_times: bool = OPT_PRINT_PASS_TIMES,
    verify: bool = OPT_VERIFY,
    quantize: Optional[str] = OPT_QUANTIZE,
    calibration: Optional[str] = OPT_CALIBRATION,
    calibration_method: str = OPT_CALIBRATION_METHOD,
    calibration_percentile: float = OPT_CALIBRATION_PERCENTILE,
    calibration_samples: Optional[int] = OPT_CALIBRATION_SAMPLES,
    quantize_ops: Optional[str] = OPT_QUANTIZE_OPS,
    exclude_nodes: Optional[List[str]] = OPT_EXCLUDE_NODES,
    smoothquant: Optional[float] = OPT_SMOOTHQUANT,
    max_drop: Optional[float] = OPT_MAX_DROP,
    prune_heads: Optional[float] = OPT_PRUNE_HEADS,
    prune_heads_spec: Optional[str] = OPT_PRUNE_HEADS_SPEC,
    prune_heads_min_per_layer: int = OPT_PRUNE_HEADS_MIN_PER_LAYER,
    prune_heads_importance: str = OPT_PRUNE_HEADS_IMPORTANCE,
    prune_heads_samples: Optional[int] = OPT_PRUNE_HEADS_SAMPLES,
    **target_options,
):
    """Compile a model into a deployable bundle (manifest.json, the target's files, generated sources).

    Progress goes to stderr; a failed compile leaves no output behind. The target's options (below) apply
    to the target that declares them.
    """
    from compiler.frontend import parse_example_inputs
    from .api import compile as compile_model
    args = locals()
    compile_model(model, output, target, target_options=target_options, quiet=quiet,
                  log=None if quiet else (lambda msg: typer.echo(msg, err=True)),
                  input_shapes=parse_input_shapes(input_shape),
                  example_inputs=parse_example_inputs(example_input) if example_input else None,
                  passes=passes, disable_pass=tuple(disable_pass or ()), print_ir_after=tuple(print_ir_after or ()),
                  print_pass_times=print_pass_times, verify=verify, **_quantize_and_prune_options(args))


def _add_target_options(fn):
    """Give `fn` (which takes **target_options) one CLI flag per registered target option, shown in a "Target
    options" panel; typer reads the parameters from __signature__."""
    import inspect
    from targets.base import all_target_options, option_owners
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    for opt in all_target_options():
        kind = List[opt.type] if opt.multiple else Optional[opt.type]
        owners = ", ".join(option_owners(opt.name))
        help_ = opt.help + ("" if opt.help.startswith(owners) else f" (targets: {owners})")
        # choices in the help text; TargetOption.convert refuses others (typer 0.29 has no click_type)
        help_ += f" [choices: {', '.join(opt.choices)}]" if opt.choices else ""
        info = typer.Option(None, opt.flag, help=help_, rich_help_panel="Target options")
        params.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind))
    fn.__signature__ = sig.replace(parameters=params)
    return fn


app.command("compile")(_add_target_options(compile_cmd))


@app.command("targets")
def targets_cmd(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON, for scripts.")):
    """List the targets aotc compiles for, with their aliases and options."""
    from targets.base import describe_targets
    items = describe_targets()
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    for t in items:
        native = "  (native here: --target host)" if t["native_on_this_machine"] else ""
        typer.echo(f"{t['name']}{native}")
        typer.echo(f"    {t['description']}")
        if t["aliases"]:
            typer.echo(f"    aliases: {', '.join(t['aliases'])}")
        for o in t["options"]:
            choices = f" {{{'|'.join(o['choices'])}}}" if o["choices"] else ""
            typer.echo(f"    {o['flag']}{choices}  {o['help']}")


@app.command("run")
def run_cmd(
    bundle: str = typer.Argument(..., help="A bundle directory written by `aotc compile`."),
    inputs: str = typer.Option(..., "--inputs", "-i", help="An .npz file with one array per model input."),
    outputs: Optional[str] = typer.Option(None, "--outputs", "-o", help="Write the outputs to this .npz file "
                                          "(default: print a summary)."),
    threads: int = typer.Option(0, "--threads", help="Threads to use (default: all cores)."),
):
    """Run a compiled bundle on inputs from an .npz file, the way its target runs here (in process with the
    thin runtime; arm64-neon under qemu-aarch64 on other machines)."""
    import numpy as np
    from .api import load
    try:
        with np.load(inputs) as data:
            feeds = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        from targets.base import BundleRunError
        raise BundleRunError(f"Cannot read inputs from {inputs!r}: {e}.") from None
    result = load(bundle).run(feeds, threads=threads)
    if outputs:
        np.savez(outputs, **result)
        typer.echo(f"wrote {', '.join(result)} to {outputs}", err=True)
    else:
        for name, arr in result.items():
            flat = arr.reshape(-1)
            typer.echo(f"{name}: {arr.dtype}{list(arr.shape)} first values {np.array2string(flat[:6], precision=5)}")


def main() -> None:
    """Entry point: user errors become one paragraph on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except AotcError as e:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if _state["debug"]:
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e}. This is a bug in aotc; rerun with --debug "
                   "for the traceback and report it.", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The `aotc` command line: a thin layer over the Python API (aotc/api.py).

Conventions every command follows: usage mistakes (a typo'd option, a missing one, a bad value) are
click's usage errors, exit 2; a problem with the user's model, files or options is one paragraph,
exit 2; results go to stdout (`--json` for scripts), everything else to stderr, with the same
`-q/--quiet` and `-v/--verbose` everywhere (aotc/console.py)."""
from __future__ import annotations

import enum
import json
import sys
import traceback
from typing import List, Optional

import typer

from aotc.compiler.errors import AotcError
from aotc.compiler.onnx_import import parse_shape

from . import pruning_options as P
from . import quantization_options as Q
from .console import Console

app = typer.Typer(
    name="aotc",
    help="aotc — ahead-of-time compiler for neural-network models. Turns an ONNX model (or a PyTorch "
         "module) into a deployable bundle for one target.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)

_state = {"debug": False}

# Help panels of `aotc compile --help` (and optimize).
INPUT, PASSES, QUANT, PRUNE, TARGET, OUTPUT = ("Input", "Passes", "Quantization", "Pruning", "Target", "Output")


def _choices(name: str, values) -> type[enum.Enum]:
    """A closed set of values as an Enum, so --help and shell completion list them."""
    return enum.Enum(name, {v: v for v in values}, type=str)


def _target_names() -> list[str]:
    from aotc.targets.base import target_specs
    return ["host"] + sorted({n for s in target_specs() for n in (s.name, *s.aliases)})


TargetName = _choices("TargetName", _target_names())
QuantizeScheme = _choices("QuantizeScheme", ["int8"])
CalibrationMethod = _choices("CalibrationMethod", ["minmax", "percentile", "entropy"])
HeadImportance = _choices("HeadImportance", ["drift", "contribution", "weight", "random"])
BuildExecutor = _choices("BuildExecutor", ["local", "dask"])


def _value(v):
    return v.value if isinstance(v, enum.Enum) else v


def _name_dims(item: str) -> tuple[str, tuple[int, ...]]:
    """NAME=DIMS for --input-shape: an input's name and its dims (input_ids=1x128), or a named dimension and
    its size (batch=4, for every input dimension the model calls batch)."""
    name, sep, dims = str(item).partition("=")
    if not sep or not name:
        raise AotcError(f"--input-shape {item!r} is not NAME=DIMS; write e.g. input_ids=1x128, or batch=4 for a "
                        "named dimension.")
    return name, parse_shape(dims)


def parse_name_dims(item: str) -> tuple[str, tuple[int, ...]]:
    """_name_dims as click's parser: a bad value is a usage error."""
    try:
        return _name_dims(item)
    except AotcError as e:
        raise typer.BadParameter(str(e)) from None


INPUT_SHAPE_HELP = ("Fix an input's shape as NAME=DIMS (input_ids=1x128), or a named dimension of every input as "
                    "DIM=SIZE (batch=4). Repeat as needed.")


def parse_input_shapes(items) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, dims = item if isinstance(item, tuple) else _name_dims(item)
        if name in shapes:
            raise AotcError(f"--input-shape gives {name!r} twice.")
        shapes[name] = dims
    return shapes


# The output options every command that prints shares.
OPT_QUIET = typer.Option(False, "--quiet", "-q", help="Print nothing but errors and the command's result.",
                         rich_help_panel=OUTPUT)
OPT_VERBOSE = typer.Option(False, "--verbose", "-v", help="Print every step (each pass, each kernel) on stderr.",
                           rich_help_panel=OUTPUT)
OPT_JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout, for scripts.",
                        rich_help_panel=OUTPUT)
OPT_INPUT_SHAPE = typer.Option(None, "--input-shape", "-s", help=INPUT_SHAPE_HELP, parser=parse_name_dims,
                               metavar="NAME=DIMS", rich_help_panel=INPUT)


def _emit_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _version(value: bool):
    if value:
        from aotc.compiler import __version__
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
    input_shape: Optional[List[str]] = OPT_INPUT_SHAPE,
    as_json: bool = OPT_JSON,
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
):
    """Show a model's inputs, outputs, op histogram, parameters, FLOPs and unsupported ops.

    Exits with 2 if the model cannot be compiled as it is (unsupported ops, dynamic shapes left open),
    after printing what could be determined.
    """
    from pathlib import Path
    if Path(model).is_dir():  # a compiled bundle: its manifest (incl. the int8 quantization report)
        from aotc.bundle_summary import format_bundle, read_manifest
        manifest = read_manifest(model)
        if as_json:
            _emit_json(manifest)
        elif not quiet:
            typer.echo(format_bundle(manifest))
        return
    from aotc.compiler.model_summary import format_report, summarize_onnx
    report, error = summarize_onnx(model, parse_input_shapes(input_shape))
    if as_json:
        report["error"] = str(error) if error else None
        _emit_json(report)
    elif not quiet:
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
OPT_DISABLE_PASS = typer.Option(None, "--disable-pass", help=DISABLE_HELP, rich_help_panel=PASSES)
OPT_PRINT_IR_AFTER = typer.Option(None, "--print-ir-after", help=PRINT_IR_HELP, rich_help_panel=PASSES)
OPT_PRINT_PASS_TIMES = typer.Option(False, "--print-pass-times", help=TIMES_HELP, rich_help_panel=PASSES)
OPT_VERIFY = typer.Option(False, "--verify", help=VERIFY_HELP, rich_help_panel=PASSES)
OPT_QUANTIZE = typer.Option(None, "--quantize", help=Q.QUANTIZE_HELP, rich_help_panel=QUANT)
OPT_CALIBRATION = typer.Option(None, "--calibration", help=Q.CALIBRATION_HELP, metavar="FILE.npz",
                               rich_help_panel=QUANT)
OPT_CALIBRATION_METHOD = typer.Option("minmax", "--calibration-method", help=Q.METHOD_HELP, rich_help_panel=QUANT)
OPT_CALIBRATION_PERCENTILE = typer.Option(99.99, "--calibration-percentile", help=Q.PERCENTILE_HELP,
                                          rich_help_panel=QUANT)
OPT_CALIBRATION_SAMPLES = typer.Option(None, "--calibration-samples", help=Q.SAMPLES_HELP, rich_help_panel=QUANT)
OPT_QUANTIZE_OPS = typer.Option(None, "--quantize-ops", help=Q.QUANTIZE_OPS_HELP, rich_help_panel=QUANT)
OPT_EXCLUDE_NODES = typer.Option(None, "--exclude-nodes", help=Q.EXCLUDE_HELP, rich_help_panel=QUANT)
OPT_SMOOTHQUANT = typer.Option(None, "--smoothquant", help=Q.SMOOTHQUANT_HELP, rich_help_panel=QUANT)
OPT_MAX_DROP = typer.Option(None, "--max-drop", help=Q.MAX_DROP_HELP, rich_help_panel=QUANT)
OPT_PRUNE_HEADS = typer.Option(None, "--prune-heads", metavar="FRACTION", help=P.PRUNE_HEADS_HELP,
                               rich_help_panel=PRUNE)
OPT_PRUNE_HEADS_SPEC = typer.Option(None, "--prune-heads-spec", metavar="LAYER:HEAD,...", help=P.PRUNE_SPEC_HELP,
                                    rich_help_panel=PRUNE)
OPT_PRUNE_HEADS_MIN_PER_LAYER = typer.Option(1, "--prune-heads-min-per-layer", help=P.PRUNE_MIN_HELP,
                                             rich_help_panel=PRUNE)
OPT_PRUNE_HEADS_IMPORTANCE = typer.Option("drift", "--prune-heads-importance", help=P.PRUNE_IMPORTANCE_HELP,
                                          rich_help_panel=PRUNE)
OPT_PRUNE_HEADS_SAMPLES = typer.Option(None, "--prune-heads-samples", help=P.PRUNE_SAMPLES_HELP,
                                       rich_help_panel=PRUNE)


@app.command("passes")
def list_passes(as_json: bool = OPT_JSON):
    """List the registered passes, their options and the default pipeline."""
    from aotc.passes import DEFAULT_PIPELINE, PASSES
    if as_json:
        _emit_json({"default_pipeline": DEFAULT_PIPELINE, "passes": [
            {"name": n, "options": PASSES[n].options, "doc": PASSES[n].doc} for n in sorted(PASSES)]})
        return
    typer.echo("default pipeline: " + ",".join(DEFAULT_PIPELINE))
    for name in sorted(PASSES):
        info = PASSES[name]
        opts = ", ".join(f"{k}={v}" for k, v in info.options.items())
        typer.echo(f"\n{name}" + (f"  {{{opts}}}" if opts else ""))
        for line in info.doc.splitlines():
            typer.echo(f"    {line.strip()}")


def optimize(
    model: str = typer.Argument(..., help="An ONNX model file."),
    output: str = typer.Option(..., "--output", "-o", help="Where to write the optimized model (.onnx).",
                               rich_help_panel=OUTPUT),
    input_shape: Optional[List[str]] = OPT_INPUT_SHAPE,
    passes: Optional[str] = typer.Option(None, "--passes", help=PASSES_HELP, rich_help_panel=PASSES),
    report: Optional[str] = typer.Option(None, "--report", help="Write what the passes report (e.g. the INT8 "
                                         "scheme and quantized nodes) as JSON to this file.", rich_help_panel=OUTPUT),
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
    **options,
):
    """Import a model with static shapes, run the pass pipeline, and write the result as ONNX.

    Fused ops (FusedMatMul, Attention, ...) are written in the ai.aotc domain: the file is for reading
    (e.g. in Netron) and for `aotc` itself; onnxruntime cannot run those nodes.
    """
    from aotc.compiler.onnx_export import save_onnx
    from aotc.compiler.onnx_import import load_onnx
    from aotc.compiler.user_files import check_output_file, write_file_atomically, writing
    from .api import CompileOptions, build_pass_manager, run_pipeline
    check_output_file(output)
    if report:
        check_output_file(report, "--report")
    opts = CompileOptions(passes=passes, **_pipeline_options(options))
    pm = build_pass_manager(opts)
    console = Console(quiet, verbose)
    graph = load_onnx(model, parse_input_shapes(input_shape))
    before = len(graph.nodes)
    with console.progress():
        applied = run_pipeline(graph, pm, log=console.info)
    with writing(output):
        save_onnx(graph, output)
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram().items())
    if report:
        text = json.dumps(applied, indent=2, default=str)
        write_file_atomically(report, lambda f: f.write(text.encode()), "--report")
    if as_json:
        _emit_json({"output": output, "nodes_before": before, "nodes_after": len(graph.nodes),
                    "ops": graph.op_histogram(), "passes": applied})
    console.info(f"{before} -> {len(graph.nodes)} nodes ({hist}); wrote {output}")


def _pipeline_params() -> list:
    """The pass, quantization and pruning options `aotc optimize` and `aotc compile` share, as parameters
    (added to both commands' signatures by _add_params; their values reach the command in **options)."""
    import inspect
    p = lambda name, kind, info: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info,  # noqa: E731
                                                   annotation=kind)
    return [p("disable_pass", Optional[List[str]], OPT_DISABLE_PASS),
            p("print_ir_after", Optional[List[str]], OPT_PRINT_IR_AFTER),
            p("print_pass_times", bool, OPT_PRINT_PASS_TIMES), p("verify", bool, OPT_VERIFY),
            p("quantize", Optional[QuantizeScheme], OPT_QUANTIZE), p("calibration", Optional[str], OPT_CALIBRATION),
            p("calibration_method", CalibrationMethod, OPT_CALIBRATION_METHOD),
            p("calibration_percentile", float, OPT_CALIBRATION_PERCENTILE),
            p("calibration_samples", Optional[int], OPT_CALIBRATION_SAMPLES),
            p("quantize_ops", Optional[str], OPT_QUANTIZE_OPS),
            p("exclude_nodes", Optional[List[str]], OPT_EXCLUDE_NODES),
            p("smoothquant", Optional[float], OPT_SMOOTHQUANT), p("max_drop", Optional[float], OPT_MAX_DROP),
            p("prune_heads", Optional[float], OPT_PRUNE_HEADS),
            p("prune_heads_spec", Optional[str], OPT_PRUNE_HEADS_SPEC),
            p("prune_heads_min_per_layer", int, OPT_PRUNE_HEADS_MIN_PER_LAYER),
            p("prune_heads_importance", HeadImportance, OPT_PRUNE_HEADS_IMPORTANCE),
            p("prune_heads_samples", Optional[int], OPT_PRUNE_HEADS_SAMPLES)]


PIPELINE_OPTIONS = tuple(param.name for param in _pipeline_params())


def _pipeline_options(options: dict) -> dict:
    """The shared pipeline flags of a command, as CompileOptions fields (same names; closed sets as strings)."""
    opts = {k: _value(options[k]) for k in PIPELINE_OPTIONS}
    for k in ("disable_pass", "print_ir_after", "exclude_nodes"):
        opts[k] = tuple(opts[k] or ())
    return opts


def _add_params(fn, params):
    """Give `fn` (which takes **kwargs) these extra keyword parameters; typer reads them from __signature__."""
    import inspect
    sig = inspect.signature(fn, eval_str=True)
    keep = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=keep + list(params))
    return fn


app.command("optimize")(_add_params(optimize, _pipeline_params()))


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
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
):
    """Trace a PyTorch model with aotc's frontend (Python control flow on tensors becomes torch.where) and
    write the IR as ONNX."""
    from aotc.compiler.frontend import load_python_model, parse_example_inputs
    from aotc.compiler.onnx_export import save_onnx
    from aotc.compiler.user_files import check_output_file, writing
    check_output_file(output)
    graph = load_python_model(model, parse_example_inputs(example_input))
    before = len(graph.nodes)
    if optimize:
        from .api import CompileOptions, build_pass_manager
        build_pass_manager(CompileOptions(verify=verify)).run(graph)
    with writing(output):
        save_onnx(graph, output)
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram().items())
    if as_json:
        _emit_json({"output": output, "traced_nodes": before, "nodes": len(graph.nodes), "ops": graph.op_histogram()})
    Console(quiet, verbose).info(f"traced {before} nodes" + (f" -> {len(graph.nodes)} optimized" if optimize else "")
                                 + f" ({hist}); wrote {output}")


# -- compile and run bundles (targets/, runtime_stub/) -------------------------------------------

def compile_cmd(
    model: str = typer.Argument(..., help="An ONNX model file, or FILE.py:factory (a function returning a "
                                "torch.nn.Module, traced with --example-input)."),
    target: TargetName = typer.Option("host", "--target", "-t", help="The target (`aotc targets` describes them); "
                                      "host: this machine's best.", rich_help_panel=TARGET),
    output: str = typer.Option(..., "--output", "-o", help="The bundle directory to write (replaced if it is one).",
                               rich_help_panel=OUTPUT),
    input_shape: Optional[List[str]] = OPT_INPUT_SHAPE,
    example_input: Optional[List[str]] = typer.Option(None, "--example-input", "-e", help=EXAMPLE_INPUT_HELP,
                                                      rich_help_panel=INPUT),
    passes: str = typer.Option("default", "--passes", help="Passes to run before lowering: 'default' (the default "
                               "pipeline: folding, fusions into FusedMatMul/FusedConv/Attention/...), 'none', or a "
                               "comma-separated list. The target's own passes follow; the manifest records all.",
                               rich_help_panel=PASSES),
    sign: Optional[str] = typer.Option(None, "--sign", metavar="KEY.pem", help="Sign the manifest with this "
                                       "Ed25519 private key (PEM); `aotc run --public-key` then checks it.",
                                       rich_help_panel=OUTPUT),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse a model whose run-time memory "
                                             "(arena + weights) exceeds this (e.g. 8G; default 16G).",
                                             rich_help_panel=TARGET),
    bucket: Optional[List[str]] = typer.Option(None, "--bucket", metavar="DIM=V1,V2", help="Shape buckets: "
                                               "compile one variant per size of the model's named dimension DIM "
                                               "(repeat for more dimensions: the cross product), in one bundle that "
                                               "takes inputs of any size up to the largest.", rich_help_panel=INPUT),
    buckets: Optional[List[str]] = typer.Option(None, "--buckets", metavar="DIM=V,DIM=V", help="One shape bucket "
                                                "(repeat for each), instead of --bucket's cross product.",
                                                rich_help_panel=INPUT),
    pad: Optional[List[str]] = typer.Option(None, "--pad", metavar="INPUT=VALUE", help="With buckets: pad INPUT "
                                            "with VALUE up to its bucket (e.g. attention_mask=0); an input without "
                                            "one must match a bucket exactly.", rich_help_panel=INPUT),
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
    **options,
):
    """Compile a model into a deployable bundle (manifest.json, the target's files, generated sources).

    A failed compile leaves no output behind. Target options (below) apply to the target that declares them.
    """
    from aotc.compiler.frontend import parse_example_inputs
    from .api import compile as compile_model
    target_options = {k: v for k, v in options.items() if k not in PIPELINE_OPTIONS}
    from .buckets import bucket_options
    console = Console(quiet, verbose)
    with console.progress():
        bundle = compile_model(
            model, output, _value(target), target_options=target_options, log=console.info,
            verbose=console.verbose, input_shapes=parse_input_shapes(input_shape),
            example_inputs=parse_example_inputs(example_input) if example_input else None,
            passes=passes, sign=sign, max_memory=max_memory, **bucket_options(bucket, buckets, pad),
            **_pipeline_options(options))
    if as_json:
        m = bundle.manifest
        _emit_json({"bundle": str(bundle.path), "target": m["target"], "model_id": m["model_id"],
                    "inputs": m["inputs"], "outputs": m["outputs"], "passes": [p["name"] for p in m["passes"]],
                    **{k: m[k] for k in ("kernels", "kernel_calls", "arena_bytes", "weight_bytes", "flops") if k in m}})


def _target_params() -> list:
    """One CLI flag per registered target option, in a "Target options" panel."""
    import inspect
    from aotc.targets.base import all_target_options, option_owners
    params = []
    for opt in all_target_options():
        kind = List[opt.type] if opt.multiple else Optional[opt.type]
        owners = ", ".join(option_owners(opt.name))
        help_ = opt.help + ("" if opt.help.startswith(owners) else f" (targets: {owners})")
        # Choices are shown here and checked by TargetOption.convert (typer 0.29's Option has no click_type).
        help_ += f" One of: {', '.join(opt.choices)}." if opt.choices else ""
        info = typer.Option(None, opt.flag, help=help_, rich_help_panel="Target options")
        params.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind))
    return params


app.command("compile")(_add_params(compile_cmd, _pipeline_params() + _target_params()))


@app.command("build")
def build_cmd(
    spec: str = typer.Argument("aotc.toml", help="The build spec (TOML: models, targets, variants; docs/build.md), "
                               "or a folder holding aotc.toml."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="The release folder (default: the spec's "
                                         "[build] output, dist/ beside it).", rich_help_panel=OUTPUT),
    only: Optional[List[str]] = typer.Option(None, "--only", metavar="PATTERN", help="Build only the artifacts "
                                             "whose name matches this glob (repeatable), e.g. 'mlp-*'."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Artifacts compiled at once (default: "
                                       "cores, bounded by free memory); the Dask local cluster's worker count."),
    executor: BuildExecutor = typer.Option("local", "--executor", help="local: a process pool on this machine; "
                                           "dask: a Dask cluster (a local one of --jobs workers, or --address)."),
    address: Optional[str] = typer.Option(None, "--address", help="The Dask scheduler to use "
                                          "(tcp://HOST:8786), with --executor dask."),
    cache: Optional[str] = typer.Option(None, "--cache", metavar="DIR", help="The bundle cache (default: the "
                                        "spec's [build] cache, .aotc-cache/ beside it)."),
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
):
    """Build a release: every model x target x variant of a spec (or its [[artifacts]] list) into one folder
    with release.json. Unchanged artifacts come from the content-addressed cache; one artifact's failure does
    not stop the others (exit 1 after the rest are built)."""
    from .build import BuildFailedError, build
    if address and _value(executor) != "dask":
        raise typer.BadParameter("--address is the Dask scheduler's; add --executor dask.", param_hint="--address")
    console = Console(quiet, verbose)
    try:
        with console.progress():
            report = build(spec, output, cache, only or (), jobs, _value(executor), address, log=console.info)
    except BuildFailedError as e:
        if as_json:
            _emit_json(e.report.as_json())
        raise
    if as_json:
        _emit_json(report.as_json())
    console.info(report.summary())


@app.command("targets")
def targets_cmd(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON, for scripts.")):
    """List the targets aotc compiles for, with their aliases and options."""
    from aotc.targets.base import describe_targets
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


OPT_THREADS = typer.Option(0, "--threads", "-j", help="Threads to use (default: all cores).")
OPT_TIMING_INPUTS = typer.Option(None, "--inputs", "-i", help="An .npz with one array per input (default: random "
                                 "inputs of the right shapes and dtypes).")


@app.command("run")
def run_cmd(
    bundle: str = typer.Argument(..., help="A bundle directory written by `aotc compile`."),
    inputs: str = typer.Option(..., "--inputs", "-i", help="An .npz file with one array per model input."),
    outputs: Optional[str] = typer.Option(None, "--outputs", "-o", help="Write the outputs to this .npz file "
                                          "(default: print a summary)."),
    threads: int = OPT_THREADS,
    reference: bool = typer.Option(False, "--reference", help="Run the target's reference instead of the bundle "
                                   "(ascend: its model.onnx in onnxruntime on this CPU, not the NPU)."),
    public_key: Optional[str] = typer.Option(None, "--public-key", metavar="KEY.pem",
                                             help="Refuse the bundle unless its manifest is signed by this Ed25519 "
                                                  "key (aotc compile --sign)."),
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
):
    """Run a compiled bundle on inputs from an .npz file, the way its target runs here (in process with the
    thin runtime; arm64-neon under qemu-aarch64 on other machines; ascend on a machine with CANN)."""
    import numpy as np
    from aotc.compiler.user_files import check_output_file, read_npz, write_npz
    from .api import load
    console = Console(quiet, verbose)
    if outputs:
        check_output_file(outputs)
    feeds = read_npz(inputs)
    b = load(bundle, public_key=public_key)
    if reference:
        from aotc.targets.base import reference_runner_for
        result = reference_runner_for(b.manifest)(b.path, feeds)
        console.info(f"reference run ({b.target}): not the target's own execution")
    else:
        result = b.run(feeds, threads=threads)
    if outputs:
        write_npz(outputs, result)
        console.info(f"wrote {', '.join(result)} to {outputs}")
    if as_json:
        _emit_json({name: {"dtype": str(a.dtype), "shape": list(a.shape), "first_values": a.reshape(-1)[:6].tolist()}
                    for name, a in result.items()})
    elif not outputs and not quiet:
        for name, arr in result.items():
            flat = arr.reshape(-1)
            typer.echo(f"{name}: {arr.dtype}{list(arr.shape)} first values {np.array2string(flat[:6], precision=5)}")


def _print_result(result: dict, as_text, as_json: bool, quiet: bool) -> None:
    """A command's result: JSON for scripts, or text for a person (nothing with -q)."""
    if as_json:
        _emit_json(result)
    elif not quiet:
        typer.echo(as_text(result))


@app.command("bench")
def bench_cmd(
    bundle: str = typer.Argument(..., help="A bundle directory written by `aotc compile`."),
    inputs: Optional[str] = OPT_TIMING_INPUTS,
    threads: int = OPT_THREADS,
    warmup: int = typer.Option(5, "--warmup", "-w", min=0, help="Runs before timing starts."),
    runs: int = typer.Option(50, "--runs", "-r", min=1, help="Timed runs."),
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
):
    """Time a bundle: median, p10/p90, min and throughput over --runs runs after --warmup."""
    from .bench import bench_bundle, format_bench
    _print_result(bench_bundle(bundle, inputs, threads=threads, warmup=warmup, runs=runs), format_bench, as_json,
                  quiet)


@app.command("profile")
def profile_cmd(
    bundle: str = typer.Argument(..., help="A CPU bundle directory written by `aotc compile`."),
    inputs: Optional[str] = OPT_TIMING_INPUTS,
    threads: int = OPT_THREADS,
    warmup: int = typer.Option(3, "--warmup", "-w", min=0, help="Runs before measuring."),
    runs: int = typer.Option(10, "--runs", "-r", min=1, help="Measured runs (each kernel's median is reported)."),
    top: int = typer.Option(25, "--top", "-n", min=1, help="Kernels to list (the rest are summed)."),
    quiet: bool = OPT_QUIET,
    verbose: bool = OPT_VERBOSE,
    as_json: bool = OPT_JSON,
):
    """Time every kernel of a CPU bundle: calls, µs, share of the run, GFLOP/s and GB/s against this machine's
    measured peak (a roofline per kernel)."""
    from .profile import format_profile, profile_bundle
    _print_result(profile_bundle(bundle, inputs, threads=threads, warmup=warmup, runs=runs),
                  lambda r: format_profile(r, top=top), as_json, quiet)


def main() -> None:
    """Entry point. click handles usage errors itself (its message, exit 2) and --help; a problem with the
    user's model, files or options is one paragraph on stderr and exit 2; anything else is a bug."""
    try:
        app()
    except AotcError as e:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:
        if _state["debug"]:
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e}. This is a bug in aotc; rerun with --debug "
                   "for the traceback and report it.", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

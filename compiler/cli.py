"""The `aotc` command line."""
from __future__ import annotations

import json
import sys
import traceback
from typing import List, Optional

import typer

from .errors import AotcError
from .onnx_import import parse_shape
from . import pruning_cli as P
from .quantization import cli_options as Q

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
        from . import __version__
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
        from .bundle_summary import format_bundle, read_manifest
        manifest = read_manifest(model)
        typer.echo(json.dumps(manifest, indent=2) if as_json else format_bundle(manifest))
        return
    from .model_summary import format_report, summarize_onnx
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


def make_pass_manager(passes: Optional[str], disable_pass: Optional[List[str]], print_ir_after: Optional[List[str]],
                      print_pass_times: bool, verify: bool, extra_steps=(), calibration: Optional[str] = None):
    """`extra_steps`: ((name, options), after_prefixes) opt-in passes the flags asked for, each inserted with
    passes.insert_pass; `calibration`: an .npz path whose contents data-driven passes read from the PassContext."""
    from passes import DEFAULT_PIPELINE, PassContext, PassManager, insert_pass, parse_pipeline
    pipeline = parse_pipeline(passes) if passes else list(DEFAULT_PIPELINE)
    for step, after in extra_steps:
        pipeline = insert_pass(pipeline, step, after)
    context = None
    if calibration:
        from .calibration import load_calibration
        context = PassContext(calibration=load_calibration(calibration))
    return PassManager(pipeline, disabled=disable_pass or (), verify_each=verify,
                       print_ir_after=print_ir_after or (), print_pass_times=print_pass_times, context=context)


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
    from .onnx_export import save_onnx
    from .onnx_import import load_onnx
    from .user_files import check_output_file, write_file_atomically, writing
    check_output_file(output)
    if report:
        check_output_file(report, "--report")
    qstep = Q.quantization_step(quantize, calibration, calibration_method, calibration_percentile,
                                calibration_samples, quantize_ops, exclude_nodes, smoothquant, max_drop)
    extra = [(qstep, Q.QUANTIZE_AFTER)] if qstep else []
    pstep = P.pruning_step(prune_heads, prune_heads_spec, prune_heads_min_per_layer, prune_heads_importance,
                           calibration, prune_heads_samples)
    extra += [pstep] if pstep else []
    pm = make_pass_manager(passes, disable_pass, print_ir_after, print_pass_times, verify, extra, calibration)
    graph = load_onnx(model, parse_input_shapes(input_shape))
    if calibration:
        pm.context.calibration_feeds(graph)  # a mismatch with the model's inputs fails here, before any pass runs
    before = len(graph.nodes)
    pm.run(graph)
    if pstep:
        typer.echo(P.pruning_summary(pm), err=True)
    with writing(output):
        save_onnx(graph, output)
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram().items())
    if "quantize_int8" in pm.context.reports:
        typer.echo(Q.format_summary(pm.context.reports["quantize_int8"]), err=True)
    if report:
        text = json.dumps(pm.applied(), indent=2, default=str)
        write_file_atomically(report, lambda f: f.write(text.encode()), "--report")
    typer.echo(f"{before} -> {len(graph.nodes)} nodes ({hist}); wrote {output}", err=True)


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
    from .frontend import load_python_model, parse_example_inputs
    from .onnx_export import save_onnx
    from .user_files import check_output_file, writing
    check_output_file(output)
    graph = load_python_model(model, parse_example_inputs(example_input))
    before = len(graph.nodes)
    if optimize:
        make_pass_manager(None, None, None, False, verify).run(graph)
    with writing(output):
        save_onnx(graph, output)
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram().items())
    typer.echo(f"traced {before} nodes" + (f" -> {len(graph.nodes)} optimized" if optimize else "")
               + f" ({hist}); wrote {output}", err=True)


# -- compile and run bundles (targets/, runtime_stub/) -------------------------------------------
class BundleRunError(AotcError):
    """A bundle could not be loaded or run (the runtime's message says why)."""


@app.command("compile")
def compile_cmd(
    model: str = typer.Argument(..., help="An ONNX model file, or FILE.py:factory (a function returning a "
                                "torch.nn.Module, traced with --example-input)."),
    target: str = typer.Option("host", "--target", "-t", help="x86-avx512, x86-avx2, arm64-neon (cross-compiled "
                               "for aarch64), or host (this machine's best)."),
    output: str = typer.Option(..., "--output", "-o", help="The bundle directory to write (replaced if it is one)."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", "-s", help=INPUT_SHAPE_HELP),
    mcpu: Optional[str] = typer.Option(None, "--mcpu", help="arm64-neon: the CPU to tune for (LLVM and gcc "
                                       "-mcpu, e.g. cortex-a76)."),
    cpu_features: Optional[List[str]] = typer.Option(None, "--cpu-features", help="arm64-neon: extra CPU "
                                                     "features, e.g. +dotprod (repeatable or comma-separated)."),
    cross_cc: Optional[str] = typer.Option(None, "--cross-cc", help="arm64-neon: the cross compiler (default "
                                           "aarch64-linux-gnu-gcc)."),
    sysroot: Optional[str] = typer.Option(None, "--sysroot", help="arm64-neon: the cross compiler's --sysroot."),
    passes: str = typer.Option("default", "--passes", help="Passes to run before lowering: 'default' (the default "
                               "pipeline: folding, fusions into FusedMatMul/FusedConv/Attention/...), 'none', or a "
                               "comma-separated list. The manifest records them."),
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
    sign: Optional[str] = typer.Option(None, "--sign", metavar="KEY.pem", help="Sign the manifest with this "
                                       "Ed25519 private key (PEM); `aotc run --public-key` then checks it."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse a model whose arena + weights "
                                             "exceed this (e.g. 8G; default 16G)."),
):
    """Compile a model into a deployable bundle (manifest.json, weights.bin, model.so, generated sources).

    Progress (one line per kernel) goes to stderr; a failed compile leaves no output behind.
    """
    from passes import DEFAULT_PIPELINE
    from targets.bundle import compile_to_bundle
    from targets.memory_limit import parse_memory_size
    from targets.signing import load_signing_key
    from .user_files import check_output_dir
    check_output_dir(output)
    signing_key = load_signing_key(sign) if sign else None
    max_memory_bytes = parse_memory_size(max_memory) if max_memory else None
    transform = None
    passes = {"default": ",".join(DEFAULT_PIPELINE), "none": ""}.get(passes, passes)
    qstep = Q.quantization_step(quantize, calibration, calibration_method, calibration_percentile,
                                calibration_samples, quantize_ops, exclude_nodes, smoothquant, max_drop)
    pstep = P.pruning_step(prune_heads, prune_heads_spec, prune_heads_min_per_layer, prune_heads_importance,
                           calibration, prune_heads_samples)
    if qstep or pstep:
        # pruning and quantization work on the fused graph: the default pipeline unless --passes says
        # otherwise; then whatever fused or int8 ops this target has no kernel for are decomposed
        from passes import DEFAULT_PIPELINE
        from targets.cpu.lowering import lowered_ops
        steps = ([pstep] if pstep else []) + ([(qstep, Q.QUANTIZE_AFTER)] if qstep else []) \
            + [(s, ()) for s in Q.decompositions_for(lowered_ops())]
        pm = make_pass_manager(passes or ",".join(DEFAULT_PIPELINE), disable_pass, print_ir_after, print_pass_times,
                               verify, steps, calibration)

        def transform(graph):
            if calibration:
                pm.context.calibration_feeds(graph)  # a mismatch with the model's inputs fails before any pass
            pm.run(graph)
            if not quiet and pstep:
                typer.echo(P.pruning_summary(pm), err=True)
            if not quiet and qstep:
                typer.echo(Q.format_summary(pm.context.reports["quantize_int8"]), err=True)
            return pm.applied()
    elif passes:
        pm = make_pass_manager(passes, disable_pass, print_ir_after, print_pass_times, verify)

        def transform(graph):
            pm.run(graph)
            return pm.applied()
    from .frontend import is_python_model_spec
    if is_python_model_spec(model):
        from .frontend import load_python_model, parse_example_inputs
        model = load_python_model(model, parse_example_inputs(example_input or []))
    elif example_input:
        raise AotcError("--example-input is for a Python model (FILE.py:factory); an ONNX model's shapes are fixed "
                        "with --input-shape.")
    if target.startswith("arm64"):
        from targets.arm64.target import arm64_target
        target = arm64_target(target, mcpu=mcpu, features=cpu_features, cc=cross_cc, sysroot=sysroot)
    elif mcpu or cpu_features or cross_cc or sysroot:
        raise AotcError("--mcpu, --cpu-features, --cross-cc and --sysroot apply to --target arm64-neon only.")
    path = compile_to_bundle(model, output, target, parse_input_shapes(input_shape), quiet=quiet,
                             transform=transform, signing_key=signing_key, max_memory=max_memory_bytes)
    man = json.loads((path / "manifest.json").read_text())
    typer.echo(f"wrote {path}: {man['kernels']} kernels ({man['kernel_calls']} calls) for {man['target']['name']}, "
               f"arena {man['arena_bytes']} B, weights {man['weight_bytes']} B", err=True)


@app.command("run")
def run_cmd(
    bundle: str = typer.Argument(..., help="A bundle directory written by `aotc compile`."),
    inputs: str = typer.Option(..., "--inputs", "-i", help="An .npz file with one array per model input."),
    outputs: Optional[str] = typer.Option(None, "--outputs", "-o", help="Write the outputs to this .npz file "
                                          "(default: print a summary)."),
    threads: int = typer.Option(0, "--threads", help="Threads to use (default: all cores)."),
    public_key: Optional[str] = typer.Option(None, "--public-key", metavar="KEY.pem", help="Refuse the bundle "
                                             "unless its manifest is signed by this Ed25519 key (aotc compile --sign)."),
):
    """Run a compiled bundle on inputs from an .npz file (with the thin runtime only)."""
    import numpy as np
    import runtime_stub
    from .user_files import check_output_file, read_npz, write_npz
    if outputs:
        check_output_file(outputs)
    feeds = read_npz(inputs)
    try:
        result = _run_bundle(bundle, feeds, threads, public_key)
    except runtime_stub.RuntimeStubError as e:
        raise BundleRunError(f"{e}.") from None
    if outputs:
        write_npz(outputs, result)
        typer.echo(f"wrote {', '.join(result)} to {outputs}", err=True)
    else:
        for name, arr in result.items():
            flat = arr.reshape(-1)
            typer.echo(f"{name}: {arr.dtype}{list(arr.shape)} first values {np.array2string(flat[:6], precision=5)}")


def _run_bundle(bundle: str, feeds: dict, threads: int, public_key: Optional[str]) -> dict:
    import runtime_stub
    from runtime_stub.manifest import bundle_target
    if bundle_target(bundle, public_key) == "arm64-neon":
        # the bundle's own aotc_runner, under qemu-aarch64 unless this is an ARM machine
        from targets.arm64.qemu import run_bundle
        return run_bundle(bundle, feeds, threads=threads)[0]
    m = runtime_stub.load(bundle, public_key=public_key)
    if threads:
        m.set_num_threads(threads)
    return m.run(feeds)


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

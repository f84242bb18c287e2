"""aotc's Python API: one compile path, which the command line calls too.

    import aotc
    bundle = aotc.compile("model.onnx", "out/model", target="x86-avx512",
                          input_shapes={"input_ids": (1, 128)}, quantize="int8", calibration="calib.npz")
    outputs = aotc.load("out/model").run({"input_ids": ids})

load (ONNX file, FILE.py:factory, torch module or an aotc Graph) → the pass
pipeline (generic passes, head pruning, INT8 quantization, then the
target's own passes, all recorded in the manifest) → target.compile → the
bundle writer. `aotc compile` builds the same `CompileOptions` from its
flags, so the CLI and this API write byte-identical bundles.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from aotc import compiler
from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph

from .pruning_options import pruning_step
from .quantization_options import QUANTIZE_AFTER, quantization_step


@dataclass
class CompileOptions:
    """Everything besides the model, the output and the target that decides what `compile` builds."""
    input_shapes: Mapping[str, Sequence[int]] | None = None   # fix dynamic input dims (ONNX models)
    example_inputs: Mapping[str, Any] | None = None           # inputs to trace a Python model with
    passes: str | Sequence | None = None   # None or "default": the default pipeline; "none"; or a pipeline
    disable_pass: Sequence[str] = ()
    print_ir_after: Sequence[str] = ()
    print_pass_times: bool = False
    verify: bool = False
    quantize: str | None = None            # "int8"
    calibration: str | os.PathLike | Mapping | None = None  # .npz path (or its arrays) for quantize/prune_heads
    calibration_method: str = "minmax"
    calibration_percentile: float = 99.99
    calibration_samples: int | None = None
    quantize_ops: str | None = None
    exclude_nodes: Sequence[str] = ()
    smoothquant: float | None = None
    max_drop: float | None = None
    prune_heads: float | None = None
    prune_heads_spec: str | None = None
    prune_heads_min_per_layer: int = 1
    prune_heads_importance: str = "drift"
    prune_heads_samples: int | None = None
    sign: str | os.PathLike | None = None      # an Ed25519 private key (PEM) to sign the manifest with
    max_memory: int | str | None = None        # refuse a bundle needing more run-time memory ("16G"; bytes)
    # Shape buckets (aotc/buckets.py): {dimension: sizes} (the cross product) or a list of {dimension: size};
    # `pad` gives the value each padded input is padded with at run time.
    buckets: Mapping[str, Sequence[int]] | Sequence[Mapping[str, int]] | None = None
    pad: Mapping[str, float] | None = None


class Bundle:
    """A compiled bundle on disk: its manifest, and `run` on this machine (the target's registered loader:
    in process, under qemu, or a clear error saying what this machine lacks)."""

    def __init__(self, path: str | os.PathLike, public_key=None):
        from aotc.bundle_summary import read_manifest
        self.path = Path(path)
        self.public_key = public_key
        if public_key is not None:
            # The signature, then every listed file's hash, before any of the bundle's code can run (a runner
            # executable, or a library's constructors).
            from aotc.runtime_stub import RuntimeStubError
            from aotc.runtime_stub.signature import check_listed_files
            self.manifest = read_manifest(self.path, public_key)
            try:
                check_listed_files(self.path, self.manifest)
            except RuntimeStubError as e:
                raise AotcError(f"{e}.") from None
        else:
            self.manifest = read_manifest(self.path)
        self._session = None

    @property
    def target(self) -> str:
        return self.manifest.get("target", {}).get("name", "?")

    def session(self):
        """The loaded bundle (loaded once): an object with run(feeds) and set_num_threads(n)."""
        if self._session is None:
            from aotc.targets.base import loader_for
            self._session = loader_for(self.manifest)(self.path, self.manifest, public_key=self.public_key)
        return self._session

    def run(self, feeds: Mapping[str, Any], threads: int = 0) -> dict:
        s = self.session()
        if threads:
            s.set_num_threads(threads)
        return s.run(feeds)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, target={self.target!r})"


def load(path: str | os.PathLike, public_key=None) -> Bundle:
    """Open a bundle written by `compile` / `aotc compile`. With `public_key` (an Ed25519 public key: PEM file,
    PEM bytes or 32 raw bytes), an unsigned bundle or one whose signature or files do not match is refused."""
    return Bundle(path, public_key)


def load_model(model, options: CompileOptions) -> tuple[Graph, dict]:
    """The model as an IR graph of static shapes (the caller's Graph is copied, never changed), and the
    manifest's description of where it came from."""
    from aotc.compiler.frontend import is_python_model_spec
    if isinstance(model, Graph):
        if options.example_inputs:
            raise AotcError("example_inputs are for a Python model; an aotc Graph already has its shapes.")
        from aotc.targets.bundle import graph_digest
        return model.copy(), {"name": model.name, "kind": "aotc-ir", "sha256": graph_digest(model)}
    if not isinstance(model, (str, os.PathLike)):  # a torch.nn.Module or a Python function
        if not options.example_inputs:
            raise AotcError("Compiling a Python model needs example inputs (example_inputs={name: array}).")
        graph = compiler.trace(model, options.example_inputs)
        from aotc.targets.bundle import graph_digest
        return graph, {"name": graph.name, "kind": "python", "sha256": graph_digest(graph)}
    spec = os.fspath(model)
    if is_python_model_spec(spec):
        from aotc.compiler.frontend import load_python_model
        graph = load_python_model(spec, dict(options.example_inputs or {}))
        file = Path(spec.rsplit(":", 1)[0])
        return graph, {"name": spec, "kind": "python", "sha256": _file_sha256(file)}
    if options.example_inputs:
        raise AotcError("--example-input is for a Python model (FILE.py:factory); an ONNX model's shapes are fixed "
                        "with --input-shape.")
    path = Path(spec)
    graph = compiler.load_onnx(path, input_shapes=options.input_shapes)
    return graph, {"name": path.name, "kind": "onnx", "sha256": _file_sha256(path)}


def _file_sha256(path: Path) -> str:
    from aotc.compiler.user_files import file_sha256
    return file_sha256(path) if path.is_file() else ""


CALIBRATED_PASSES = ("quantize_int8", "prune_heads")  # the passes that read PassContext.calibration


def build_pass_manager(options: CompileOptions, target=None, log: Callable[[str], None] | None = None,
                       activation_ranges: Mapping[str, tuple[float, float]] | None = None):
    """The PassManager `options` ask for: the generic pipeline (default, none or given), head pruning and INT8
    quantization at their places after fusion, then `target`'s own passes. With `activation_ranges` (another
    shape bucket's), quantize_int8 uses them and the calibration data is not read."""
    from aotc.passes import DEFAULT_PIPELINE, PassContext, PassManager, insert_pass, parse_pipeline
    qstep = quantization_step(options.quantize, _calibration_name(options.calibration), options.calibration_method,
                              options.calibration_percentile, options.calibration_samples, options.quantize_ops,
                              list(options.exclude_nodes or ()) or None, options.smoothquant, options.max_drop)
    pstep = pruning_step(options.prune_heads, options.prune_heads_spec, options.prune_heads_min_per_layer,
                         options.prune_heads_importance, _calibration_name(options.calibration),
                         options.prune_heads_samples)
    passes = options.passes
    if passes is None or passes == "default":
        pipeline = list(DEFAULT_PIPELINE)
    elif passes == "none":
        # pruning and quantization work on the fused graph: they bring the default pipeline with them
        pipeline = list(DEFAULT_PIPELINE) if (qstep or pstep) else []
    elif isinstance(passes, str):
        pipeline = parse_pipeline(passes)
    else:
        pipeline = [(s, {}) if isinstance(s, str) else (s[0], dict(s[1])) for s in passes]
    if pstep:
        pipeline = insert_pass(pipeline, *pstep)
    if qstep:
        pipeline = insert_pass(pipeline, qstep, QUANTIZE_AFTER)
    if options.calibration is not None and not any(
            (s if isinstance(s, str) else s[0]) in CALIBRATED_PASSES for s in pipeline):
        raise AotcError(f"--calibration {_calibration_name(options.calibration)} is read only by --quantize int8 and "
                        "--prune-heads (or their passes in --passes); add one of them, or drop --calibration.")
    if target is not None:
        pipeline += target.pipeline()
    context = PassContext(calibration=None if activation_ranges else _calibration_data(options.calibration),
                          supports=target.supports if target is not None else None,
                          activation_ranges=dict(activation_ranges) if activation_ranges else None)
    return PassManager(pipeline, disabled=options.disable_pass or (), verify_each=options.verify,
                       print_ir_after=options.print_ir_after or (), print_pass_times=options.print_pass_times,
                       context=context)


def _calibration_name(calibration) -> str | None:
    if calibration is None:
        return None
    return os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "<arrays>"


def _calibration_data(calibration):
    if calibration is None or not isinstance(calibration, (str, os.PathLike)):
        return calibration
    from aotc.compiler.calibration import load_calibration
    return load_calibration(calibration)


def run_pipeline(graph: Graph, pm, log: Callable[[str], None] | None = None, target_name: str = "") -> list:
    """Run `pm` on `graph`, telling `log` what pruning, quantization and the target's fallbacks did; returns
    what ran, as the manifest records it."""
    from aotc.passes.fit_to_target import format_fallbacks
    from aotc.passes.prequantized import format_prequantized
    from .pruning_options import pruning_summary
    from .quantization_options import format_summary
    if pm.context.has_calibration():
        pm.context.calibration_feeds(graph)  # a mismatch with the model's inputs fails here, before any pass runs
    pm.run(graph)
    if log is not None:
        reports = pm.context.reports
        if "prune_heads" in reports:
            log(pruning_summary(pm))
        if "quantize_int8" in reports:
            log(format_summary(reports["quantize_int8"]))
        if "fuse_prequantized" in reports:
            log(format_prequantized(reports["fuse_prequantized"]))
        if "fit_to_target" in reports:
            log(format_fallbacks(reports["fit_to_target"], target_name))
    return json.loads(json.dumps(pm.applied(), sort_keys=True, default=str))


def compile(model, output: str | os.PathLike, target="host", *, target_options: Mapping[str, Any] | None = None,
            quiet: bool = True, verbose: bool = False, log: Callable[[str], None] | None = None,
            **options: Any) -> Bundle:
    """Compile `model` (an ONNX file, FILE.py:factory, a torch.nn.Module or function with example_inputs, or an
    aotc Graph) for `target` into the bundle directory `output`; the keywords are CompileOptions' fields.
    Reports (pruning, quantization, fallbacks, the bundle written) go to `log` (default: stderr unless
    `quiet`); with `verbose`, every step too (each kernel). Returns the Bundle."""
    from aotc.targets.base import get_target, scratch_build_context
    from aotc.targets.bundle import BundleWriter, model_id_for, model_manifest
    try:
        opts = CompileOptions(**options)
    except TypeError:
        known = ", ".join(f.name for f in dataclasses.fields(CompileOptions))
        bad = ", ".join(sorted(set(options) - {f.name for f in dataclasses.fields(CompileOptions)}))
        raise TypeError(f"aotc.compile() got unknown option(s) {bad}; its options are {known}.") from None
    if log is None and not quiet:
        log = _stderr
    tgt = get_target(target, **dict(target_options or {}))
    out = Path(output)
    signing_key = None
    if opts.sign is not None:
        from aotc.targets.signing import load_signing_key
        signing_key = load_signing_key(os.fspath(opts.sign))
    max_memory = opts.max_memory
    if isinstance(max_memory, str):
        from aotc.targets.memory_limit import parse_memory_size
        max_memory = parse_memory_size(max_memory)
    if opts.buckets is not None:  # one bundle holding a variant per bucket
        from .buckets import compile_bucketed

        def prepare(variant_opts: CompileOptions, keep_imported: bool, report: bool, activation_ranges=None):
            graph, source = load_model(model, variant_opts)
            imported = graph.copy() if keep_imported else None
            pm = build_pass_manager(variant_opts, tgt, activation_ranges=activation_ranges)
            passes = run_pipeline(graph, pm, log if report else None, tgt.name)
            return graph, source, passes, imported, pm.context
        compile_bucketed(model, out, tgt, opts, prepare, log, verbose, signing_key, max_memory)
        return Bundle(out)
    if opts.pad:
        raise AotcError("--pad gives the value inputs are padded with up to a shape bucket; it needs --bucket.")
    pm = build_pass_manager(opts, tgt)
    with BundleWriter(out) as writer:  # an -o that cannot be written fails here, before any work
        graph, source = load_model(model, opts)
        passes = run_pipeline(graph, pm, log, tgt.name)
        model_id = model_id_for(compiler.__version__, tgt.manifest(), source, passes, graph)
        with scratch_build_context(model_id, compiler.__version__, log if verbose else None, max_memory) as ctx:
            build = tgt.compile(graph, ctx)
        manifest = model_manifest(compiler.__version__, model_id, tgt.manifest(), source, graph, passes,
                                  build.manifest)
        writer.write(build.files, manifest, signing_key=signing_key)
    if log is not None and build.summary:
        log(f"wrote {out}: {build.summary}")
    return Bundle(out)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


__all__ = ["Bundle", "CompileOptions", "compile", "load", "build_pass_manager", "load_model", "run_pipeline"]


def inspect(model: str | os.PathLike, input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict:
    """What `aotc inspect --json` prints: for a bundle directory its manifest; for an ONNX file its inputs,
    outputs, op histogram, parameters, FLOPs, how it is quantized and the ops no target supports (under
    "error", None when it can be compiled as it is)."""
    if Path(model).is_dir():
        from aotc.bundle_summary import read_manifest
        return read_manifest(model)
    from aotc.compiler.model_summary import summarize_onnx
    report, error = summarize_onnx(str(model), dict(input_shapes or {}))
    report["error"] = str(error) if error else None
    return report

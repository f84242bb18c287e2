"""Named passes and the pipeline that runs them, in the spirit of MLIR's pass
manager: each pass is registered under a name with documented options; a
pipeline is an ordered list of (name, options); the manager can verify the
graph after every pass, print the IR after chosen passes, and time them.

Data a pass needs beyond the graph and its options travels in one
`PassContext` the manager carries: calibration data (sample inputs, see
compiler/calibration.py) and the reports passes leave for the bundle
manifest. A pass that wants it declares a keyword parameter named `context`;
every other pass keeps the plain `fn(graph, **options)` form.
"""
from __future__ import annotations

import inspect
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TextIO

from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph
from aotc.compiler.verifier import verify

PassFn = Callable[..., int]  # (graph, **options) -> number of rewrites; mutates the graph in place


@dataclass
class PassContext:
    """What the caller hands to data-driven passes, beside the graph.

    `calibration`: sample inputs, as a mapping of arrays (an .npz's contents) or a list of feeds;
    see compiler/calibration.py for the layouts. Passes read it through `calibration_feeds(graph)`,
    which checks it against the graph's inputs once and caches the result.
    `reports`: {pass name: JSON-able dict} a pass leaves for the caller (printed by the CLI, written to
    the bundle manifest by `PassManager.applied()`).
    `supports`: the target's `supports(node) -> None | reason` when compiling for one (target passes such as
    fit_to_target read it); None otherwise.
    `activation_ranges`: {value name: (lo, hi)}, the activation ranges quantize_int8 used. Given, it quantizes
    with them instead of calibrating (a shape bucket takes the ranges calibrated on another bucket of the same
    model, so every bucket computes with the same scales); else quantize_int8 leaves the ranges it calibrated.
    """
    calibration: Any = None
    reports: dict[str, Any] = field(default_factory=dict)
    supports: Callable[[Any], str | None] | None = None
    activation_ranges: dict[str, tuple[float, float]] | None = None
    _feeds: Any = field(default=None, repr=False, init=False)

    def has_calibration(self) -> bool:
        return self.calibration is not None

    def calibration_feeds(self, graph: Graph) -> list:
        """The calibration data as feeds matching `graph`'s inputs ([] when there is none)."""
        if self.calibration is None:
            return []
        from aotc.compiler.calibration import calibration_feeds
        key = tuple((v.name, v.shape, str(v.dtype)) for v in graph.inputs)
        if self._feeds is None or self._feeds[0] != key:
            self._feeds = (key, calibration_feeds(graph, self.calibration))
        return self._feeds[1]


@dataclass
class PassInfo:
    name: str
    fn: PassFn
    doc: str
    options: dict[str, Any] = field(default_factory=dict)
    takes_context: bool = False  # fn has a `context` parameter: it receives the PassContext


PASSES: dict[str, PassInfo] = {}

# The default pipeline, written down once. Pruning and quantization are opt-in
# and slot in after fusion (see ARCHITECTURE.md).
DEFAULT_PIPELINE: list[str] = [
    "canonicalize",
    "prepare_prequantized",
    "fold_constants",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
    "fold_batchnorm",
    "fuse_layernorm",
    "fuse_gelu",
    "fuse_attention",
    "fuse_skip_layernorm",
    "fuse_matmul_epilogue",
    "fuse_conv_epilogue",
    "fuse_prequantized",
    "eliminate_dead_code",
]


def register_pass(name: str, **defaults: Any) -> Callable[[PassFn], PassFn]:
    """Register `fn(graph, **options) -> rewrites` under `name`; its docstring is the pass's help."""
    def wrap(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise RuntimeError(f"pass {name} registered twice")
        takes_context = "context" in inspect.signature(fn).parameters
        PASSES[name] = PassInfo(name, fn, (fn.__doc__ or "").strip(), dict(defaults), takes_context)
        return fn
    return wrap


class PipelineError(AotcError):
    """A pipeline names an unknown pass or option."""


_STEP = re.compile(r"\s*([A-Za-z_][\w]*)\s*(?:\{([^}]*)\})?\s*")


def _parse_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_pipeline(text: str) -> list[tuple[str, dict[str, Any]]]:
    """'canonicalize,prune_heads{fraction=0.25}' -> [('canonicalize', {}), ('prune_heads', {'fraction': 0.25})]."""
    steps, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(f"Cannot read the pass pipeline {text!r} at position {pos}: write names separated "
                                "by commas, options in braces, e.g. canonicalize,fuse_gelu,prune_heads{fraction=0.25}.")
        opts = {}
        for item in filter(None, (s.strip() for s in (m.group(2) or "").split(";"))):
            k, _, v = item.partition("=")
            opts[k.strip()] = _parse_value(v.strip())
        steps.append((m.group(1), opts))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise PipelineError(f"Expected ',' after pass {m.group(1)!r} in {text!r}.")
            pos += 1
    return steps


@dataclass
class PassRecord:
    name: str
    options: dict[str, Any]
    seconds: float
    nodes_before: int
    nodes_after: int
    rewrites: int


class PassManager:
    def __init__(self, pipeline: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
                 disabled: Sequence[str] = (), verify_each: bool = False,
                 print_ir_after: Sequence[str] = (), print_pass_times: bool = False, out: TextIO | None = None,
                 context: PassContext | None = None):
        from aotc import passes  # noqa: F401  (registers every pass)
        steps = [(s, {}) if isinstance(s, str) else (s[0], dict(s[1])) for s in
                 (DEFAULT_PIPELINE if pipeline is None else pipeline)]
        unknown = sorted({n for n, _ in steps} - set(PASSES)) + sorted(set(disabled) - set(PASSES))
        unknown += [p for p in print_ir_after if p != "all" and p not in PASSES]
        if unknown:
            raise PipelineError(f"Unknown pass(es): {', '.join(unknown)}. Known passes: {', '.join(sorted(PASSES))} "
                                "(`aotc passes` lists them with their options).")
        for name, opts in steps:
            bad = sorted(set(opts) - set(PASSES[name].options))
            if bad:
                known = ", ".join(PASSES[name].options) or "none"
                raise PipelineError(f"Pass {name} has no option(s) {', '.join(bad)} (its options: {known}).")
        self.steps = [(n, {**PASSES[n].options, **o}) for n, o in steps if n not in set(disabled)]
        self.verify_each = verify_each
        self.print_ir_after = set(print_ir_after)
        self.print_pass_times = print_pass_times
        self.out = out or sys.stderr
        self.records: list[PassRecord] = []
        self.context = context if context is not None else PassContext()

    def run(self, graph: Graph) -> Graph:
        # Passes compute with numpy (constant folding, calibration, head scores): on one BLAS thread, whose
        # summation order is the same on every machine, so the same model gives the same graph everywhere
        # (compiler.interpret says why).
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run(graph)

    def _run(self, graph: Graph) -> Graph:
        if self.verify_each:
            verify(graph, after="<input>")
        for name, opts in self.steps:
            before = len(graph.nodes)
            t0 = time.perf_counter()
            info = PASSES[name]
            rewrites = info.fn(graph, **opts, **({"context": self.context} if info.takes_context else {}))
            dt = time.perf_counter() - t0
            self.records.append(PassRecord(name, opts, dt, before, len(graph.nodes), int(rewrites or 0)))
            if self.verify_each:
                verify(graph, after=name)
            if "all" in self.print_ir_after or name in self.print_ir_after:
                print(f"// ----- IR after {name} ({before} -> {len(graph.nodes)} nodes) -----", file=self.out)
                print(graph, file=self.out)
        if self.print_pass_times:
            self.out.write(self.format_times())
        return graph

    def format_times(self) -> str:
        total = sum(r.seconds for r in self.records) or 1e-9
        lines = [f"{'pass':<34} {'ms':>9} {'%':>5} {'nodes':>13} {'rewrites':>8}"]
        for r in self.records:
            lines.append(f"{r.name:<34} {r.seconds * 1e3:>9.2f} {100 * r.seconds / total:>5.1f} "
                         f"{r.nodes_before:>6}->{r.nodes_after:<6} {r.rewrites:>8}")
        lines.append(f"{'total':<34} {total * 1e3:>9.2f}")
        return "\n".join(lines) + "\n"

    def applied(self) -> list[dict[str, Any]]:
        """What ran, for the bundle manifest (with the pass's report where it left one)."""
        steps = []
        for n, o in self.steps:
            step = {"name": n, "options": o}
            if n in self.context.reports:
                step["report"] = self.context.reports[n]
            steps.append(step)
        return steps


def insert_pass(pipeline: Sequence[str | tuple[str, dict[str, Any]]], step: str | tuple[str, dict[str, Any]],
                after_prefixes: Sequence[str] = ("fuse_",)) -> list[tuple[str, dict[str, Any]]]:
    """Put an opt-in pass at its place in `pipeline`: right after the last step whose name starts with
    one of `after_prefixes` (e.g. prune_heads after fusion; quantization after ("fuse_", "prune_")),
    or at the end when there is none. Refuses a pass the pipeline already has."""
    steps = [(s, {}) if isinstance(s, str) else (s[0], dict(s[1])) for s in pipeline]
    name, opts = (step, {}) if isinstance(step, str) else (step[0], dict(step[1]))
    if any(n == name for n, _ in steps):
        raise PipelineError(f"The pipeline already runs {name}; give its options once (either in --passes or "
                            "with its own flags).")
    at = max((i + 1 for i, (n, _) in enumerate(steps) if n.startswith(tuple(after_prefixes))), default=len(steps))
    return steps[:at] + [(name, opts)] + steps[at:]


def run_pipeline(graph: Graph, pipeline: Sequence[str | tuple[str, dict[str, Any]]] | None = None, **kwargs) -> Graph:
    return PassManager(pipeline, **kwargs).run(graph)

"""INT8 post-training quantization of a float graph: choose the sites,
calibrate activation ranges, (optionally) smooth activation outliers into the
weights, insert explicit QuantizeLinear/DequantizeLinear, fuse them into int8
ops, and (optionally) fall back to float for the layers the output is most
sensitive to. The result is a report, JSON-able, for the bundle manifest.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from aotc.compiler.interpreter import interpret
from aotc.compiler.ir import Graph
from .calibrate import METHODS, QuantizationError, calibrate
from .qdq import DEFAULT_QUANTIZE_OPS, QUANTIZABLE_OPS, Site, activation_values, find_sites, insert_qdq

SCHEME = {
    "weights": "int8, symmetric (zero point 0, range [-127, 127]), one scale per output channel",
    "activations": "uint8, asymmetric, one scale and zero point per tensor (calibrated)",
    "accumulator": "int32",
    "epilogue": "float32: acc * (x_scale * w_scale[channel]) + bias, then activation and residual; "
                "requantized to uint8 where only int8 ops read the result",
    "float_ops": "LayerNormalization, Softmax, GELU and the attention core (scores, softmax, weighted sum) "
                 "stay float32",
    "embeddings": "int8 rows, one scale per row; only gathered rows are dequantized",
}


@dataclass
class QuantConfig:
    """Options of INT8 quantization (the `quantize_int8` pass and `aotc --quantize int8` flags)."""
    method: str = "minmax"            # minmax | percentile | entropy
    percentile: float = 99.99         # for method=percentile
    samples: int | None = None        # use the first N calibration samples (None: all)
    quantize_ops: Sequence[str] | None = None   # op types to quantize (None: every one with an int8 kernel)
    exclude_nodes: Sequence[str] = ()  # node names kept float
    smoothquant: float | None = None  # SmoothQuant alpha in [0, 1], None: off
    max_drop: float | None = None     # sensitivity fallback: max output error (1 - cosine) on the calibration set
    requantize: bool = True
    num_bins: int = 2048

    def check(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"Unknown calibration method {self.method!r}; choose one of "
                                    f"{', '.join(METHODS)}.")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise QuantizationError(f"The calibration percentile must be in (50, 100], got {self.percentile}.")
        if self.samples is not None and int(self.samples) < 1:
            raise QuantizationError(f"--calibration-samples must be at least 1, got {self.samples}.")
        unknown = sorted(set(split_names(self.quantize_ops)) - set(QUANTIZABLE_OPS))
        if unknown:
            raise QuantizationError(
                f"aotc has no int8 kernel for {', '.join(unknown)}, so it cannot quantize them; quantizable op "
                f"types: {', '.join(QUANTIZABLE_OPS)} (LayerNormalization, Softmax and GELU always stay float, "
                "GELU inside a matmul's epilogue).")
        if self.smoothquant is not None and not 0.0 <= float(self.smoothquant) <= 1.0:
            raise QuantizationError(f"The SmoothQuant alpha must be in [0, 1], got {self.smoothquant}.")
        if self.max_drop is not None and not 0.0 <= float(self.max_drop) < 1.0:
            raise QuantizationError(f"--max-drop is an output error (1 - cosine) in [0, 1), got {self.max_drop}.")


def split_names(v: str | Iterable[str] | None) -> list[str]:
    """'a,b' or ['a', 'b'] -> ['a', 'b']."""
    if v is None:
        return []
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return [str(s) for s in v]


# -- measuring --------------------------------------------------------------------
def output_error(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> float:
    """1 - cosine similarity of the flattened float outputs, averaged over the outputs."""
    errs = []
    for k, w in want.items():
        if w.dtype.kind != "f":
            continue
        a, b = got[k].astype(np.float64).reshape(-1), w.astype(np.float64).reshape(-1)
        den = np.linalg.norm(a) * np.linalg.norm(b)
        errs.append(0.0 if den == 0 and np.array_equal(a, b) else 1.0 - float(a @ b / den) if den else 1.0)
    return float(np.mean(errs)) if errs else 0.0


def mean_output_error(graph: Graph, feeds: Sequence[dict], references: Sequence[dict]) -> float:
    return float(np.mean([output_error(interpret(graph, f), r) for f, r in zip(feeds, references)]))


def copy_graph(graph: Graph) -> Graph:
    """A deep copy that shares the (read-only) constant arrays."""
    return graph.copy()


def constant_bytes(graph: Graph) -> int:
    return graph.parameter_bytes()


# -- building ---------------------------------------------------------------------
def _apply(graph: Graph, site_names: set[str], sites: Sequence[Site], ranges, requantize: bool) -> Graph:
    """Quantize the named sites of `graph` in place (Q/DQ, then int8 ops)."""
    from ..fuse_quantized import fuse_quantized_ops
    chosen = [s for s in sites if s.name in site_names]
    insert_qdq(graph, chosen, ranges)
    fuse_quantized_ops(graph, requantize=requantize)
    return graph


def _trial(graph: Graph, site_names: set[str], ranges, requantize: bool) -> Graph:
    g = copy_graph(graph)
    sites = [s for s in _sites_by_name(g) if s.name in site_names]
    return _apply(g, site_names, sites, ranges, requantize)


def _sites_by_name(graph: Graph) -> list[Site]:
    from .qdq import site_for
    out = []
    for n in graph.nodes:
        s = site_for(n) if n.op_type in QUANTIZABLE_OPS else None
        if isinstance(s, Site):
            out.append(s)
    return out


@dataclass
class QuantReport:
    scheme: dict
    method: str
    percentile: float | None
    samples: int
    quantized: list[dict] = field(default_factory=list)
    float_nodes: list[dict] = field(default_factory=list)
    smoothquant: dict | None = None
    sensitivity: dict | None = None
    output_error: dict | None = None
    constant_bytes: dict | None = None
    op_histogram: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["float"] = d.pop("float_nodes")
        return d


def quantize_graph(graph: Graph, config: QuantConfig | None = None, calibration: Any = None, **options) -> dict:
    """Quantize `graph` to INT8 in place; returns the report (a JSON-able dict).

    `calibration`: a passes.PassContext, or calibration data in any form compiler/calibration.py accepts (a list of
    feed dicts, a dict of arrays as an .npz holds), or a Python iterable/generator of feed dicts (the first
    `samples` are taken). `options` are QuantConfig fields (when `config` is None)."""
    from ..pass_manager import PassContext
    config = config or QuantConfig(**options)
    config.check()
    # Ranges calibrated elsewhere (another shape bucket of the same model): the same sites, no calibration run.
    given = None
    if isinstance(calibration, PassContext) and not calibration.has_calibration():
        given = calibration.activation_ranges
    if given is not None:
        if config.smoothquant is not None or config.max_drop is not None:
            raise QuantizationError("--smoothquant and --max-drop run the model on the calibration data at its own "
                                    "shape; with shape buckets, quantize without them.")
        feeds = []
    else:
        calibration = _calibration_context(calibration, config)
        feeds = calibration.calibration_feeds(graph)
        if config.samples is not None:
            feeds = feeds[:int(config.samples)]
    bytes_before = constant_bytes(graph)
    quantize_ops = split_names(config.quantize_ops) or list(DEFAULT_QUANTIZE_OPS)
    sites, skipped = find_sites(graph, quantize_ops, split_names(config.exclude_nodes))
    report = QuantReport(SCHEME, config.method, float(config.percentile) if config.method == "percentile" else None,
                         len(feeds))
    names = {s.name for s in sites}

    if given is not None:
        ranges, references = given, None
        missing = sorted(set(activation_values(sites)) - set(ranges))
        if missing:
            raise QuantizationError(
                f"No calibrated range for {len(missing)} activation(s) of this shape ({', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}): the graph at this shape differs from the one that was "
                "calibrated. Compile this shape on its own with --calibration data of its shape.")
    else:
        if config.smoothquant is not None:
            from .smoothquant import smooth_sites
            report.smoothquant = smooth_sites(graph, sites, feeds, float(config.smoothquant))
        cal = calibrate(graph, feeds, activation_values(sites), config.method, float(config.percentile),
                        config.num_bins, keep_outputs=True)
        ranges, references = cal.ranges, cal.outputs
        if config.max_drop is not None and sites:
            from .sensitivity import choose_fallback
            fallback, report.sensitivity = choose_fallback(
                lambda keep: mean_output_error(_trial(graph, keep, ranges, config.requantize), feeds, references),
                [s.name for s in sites], float(config.max_drop))
            names -= set(fallback)
        calibration.activation_ranges = dict(ranges)  # for the caller (other shape buckets of this model)

    kinds = {s.name: (s.node.op_type, s.kind) for s in sites}
    _apply(graph, names, sites, ranges, config.requantize)
    new_ops = {n.name: n.op_type for n in graph.nodes}
    for s in sites:
        op, _ = kinds[s.name]
        if s.name in names:
            report.quantized.append({"node": s.name, "op": op, "as": new_ops.get(s.name, "Gather of int8 rows, Cast, Mul by row scales")})
        else:
            report.float_nodes.append({"node": s.name, "op": op, "reason": "sensitivity fallback (max_drop)"})
    for name, why in skipped.items():
        report.float_nodes.append({"node": name, "reason": why})
    report.output_error = {"metric": "1 - cosine(float, int8), mean over calibration samples and outputs",
                           "value": mean_output_error(graph, feeds, references) if feeds else None}
    if given is not None:
        report.output_error["why"] = "ranges calibrated on another shape of this model"
    bytes_after = constant_bytes(graph)
    report.constant_bytes = {"float": bytes_before, "int8": bytes_after,
                             "ratio": bytes_before / bytes_after if bytes_after else None}
    report.op_histogram = graph.op_histogram()
    return report.to_dict()


def _calibration_context(calibration: Any, config: QuantConfig):
    """The calibration data as a PassContext, or the one-paragraph error for none or the wrong kind."""
    from ..pass_manager import PassContext
    if calibration is None or (isinstance(calibration, PassContext) and not calibration.has_calibration()):
        raise QuantizationError(
            "INT8 quantization calibrates activation ranges by running the model on sample inputs, and none were "
            "given: pass --calibration FILE.npz (one array per model input; Python: calibration=a list or generator "
            "of feed dicts, or passes.PassContext(calibration=...)).")
    if isinstance(calibration, PassContext):
        return calibration
    if not isinstance(calibration, (Mapping, Sequence)) or isinstance(calibration, (str, bytes)):
        if isinstance(calibration, (str, bytes)) or not isinstance(calibration, Iterable):
            raise QuantizationError(f"Calibration data must be feeds (a list or generator of dicts) or a dict of "
                                    f"arrays, not {type(calibration).__name__}; the CLI reads .npz files.")
        calibration = list(itertools.islice(calibration, config.samples))  # a generator
    return PassContext(calibration=calibration)

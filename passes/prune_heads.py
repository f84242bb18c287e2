"""Attention-head pruning: score every head of every fused `Attention` op on
calibration data, rank them globally, and remove the least important ones
structurally, so parameters and FLOPs really fall.

Where it runs: after `fuse_attention` (it works on `Attention` ops and the
output projection that consumes them) and before quantization (so INT8 scales
are calibrated on the pruned graph). It is not in the default pipeline; the
CLI inserts it after the fusion passes when asked (`--prune-heads 0.25`,
`--prune-heads-spec 0:3,5:11`), a Python caller with
`passes.insert_pass(pipeline, ("prune_heads", {...}))`.

Numbering: layer i is the i-th Attention op in graph (topological) order,
head j is the j-th block of `head_dim` columns of its Q/K/V projections; both
count from 0, and refer to the graph *before* pruning.

Importance (no labels: a head matters as much as the model's own outputs
change without it):

* ``drift`` (default): for each head, zero its slice of the Attention output
  (exactly what removing it does) and measure the mean squared change of the
  model's float outputs over the calibration feeds. It measures the quantity
  we want to keep small, in the units of the output, so heads of different
  layers compare directly (a global ranking needs that). Cost: one
  re-execution of the graph downstream of the head's layer per head and feed.
  It scores heads one at a time, so it misses interactions between heads that
  are removed together.
* ``contribution``: the mean L2 norm, over calibration tokens, of the head's
  contribution through the output projection (ctx_h @ Wo_h). One forward pass;
  blind to how later layers and LayerNorms amplify or absorb a head, so its
  global ranking across layers is rougher.
* ``weight``: the Frobenius norm of the head's value-output map Wv_h @ Wo_h.
  Needs no data at all; ignores the attention pattern and the inputs.
* ``random``: a seeded random ranking, the baseline the others must beat.

Why drift is the default: it is the only one that measures the change of the
model's outputs itself, and on MiniLM-L6 it keeps the embeddings closest to the
unpruned model (docs/pruning.md has the numbers for every method). A
Fisher-style score needs gradients (the reference interpreter has none), and
with the model's own outputs as targets its first-order term is zero at the
unpruned point anyway; drift is the finite-difference form of the same idea.

Selection: the `round(fraction × all heads)` least important heads go, over
all layers at once, except that a layer never drops below `min_per_layer`
heads (at least 1: removing a whole attention block would change the graph's
structure, not just its sizes).

Removal: the kept heads' columns of Wq/Wk/Wv (and bq/bk/bv) stay, as do the
matching input rows of the output projection (the MatMul or FusedMatMul that
must be the Attention output's only consumer, with a constant 2-D weight);
masks with a per-head axis are sliced too; `num_heads` is updated. A graph in
which an Attention output goes anywhere else is refused before anything is
changed.

The report (heads removed per layer, parameters and FLOPs before/after, the
output drift on the calibration feeds) is left in `context.reports
["prune_heads"]` as a JSON-able dict; `format_report` prints it.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from aotc.compiler import progress
from aotc.compiler.errors import AotcError
from aotc.compiler.interpreter import interpret
from aotc.compiler.ir import Graph, Node, Value

from .pass_manager import PassContext, register_pass

IMPORTANCE_METHODS = ("drift", "contribution", "weight", "random")
PROJECTIONS = ("MatMul", "FusedMatMul")
# Attention inputs: x_q, x_kv, Wq, bq, Wk, bk, Wv, bv, add_mask, keep_mask
_WEIGHTS, _BIASES, _MASKS = (2, 4, 6), (3, 5, 7), (8, 9)


class PruneError(AotcError):
    """Head pruning cannot do what was asked (bad options, no attention, an unsliceable graph)."""


@dataclass
class AttentionSite:
    """One Attention op and the output projection whose weight rows belong to its heads."""
    layer: int
    node: Node
    projection: Node
    num_heads: int
    head_dim: int

    def head_columns(self, heads: Sequence[int]) -> np.ndarray:
        d = self.head_dim
        return np.concatenate([np.arange(h * d, (h + 1) * d) for h in heads]) if len(heads) else np.zeros(0, np.int64)


# -- finding the heads -----------------------------------------------------------------------------
def attention_sites(graph: Graph) -> list[AttentionSite]:
    """Every Attention op with its output projection; refuses (PruneError) when there is none or when an
    Attention output reaches anything that cannot be sliced along its heads."""
    attn = [n for n in graph.nodes if n.op_type == "Attention"]
    if not attn and any(n.op_type == "QuantizedAttention" for n in graph.nodes):
        raise PruneError("Head pruning works on float Attention ops, and this graph's attention is already "
                         "quantized (QuantizedAttention); run prune_heads before quantize_int8 (aotc puts it "
                         "there when both --prune-heads and --quantize are given).")
    if not attn:
        hist = ", ".join(f"{k} {v}" for k, v in list(graph.op_histogram().items())[:8])
        raise PruneError("Head pruning found no Attention ops in the graph, so there are no heads to prune. It works "
                         "on the fused Attention op, so fuse_attention must run first (it is in the default "
                         "pipeline); if it did, this model has no multi-head attention aotc recognizes "
                         f"(its ops: {hist}).")
    consumers = graph.consumers()
    sites, problems = [], []
    for i, n in enumerate(attn):
        out = n.outputs[0]
        users = consumers.get(out.name, [])
        h, d = n.attrs["num_heads"], n.attrs["head_dim"]
        where = f"layer {i} (node {n.name!r})"
        if out in graph.outputs:
            problems.append(f"{where}: its output is a graph output")
            continue
        if len(users) != 1:
            problems.append(f"{where}: its output feeds {len(users)} nodes "
                            f"({', '.join(u.op_type for u in users) or 'none'}), not one output projection")
            continue
        p = users[0]
        w = p.inputs[1] if len(p.inputs) > 1 else None
        if p.op_type not in PROJECTIONS or p.inputs[0] is not out or any(v is out for v in p.inputs[1:]):
            problems.append(f"{where}: its output feeds a {p.op_type} ({p.name!r}), which cannot be sliced by head "
                            "(an output projection MatMul/FusedMatMul taking it as the left operand is needed)")
        elif w is None or w.const is None or w.rank != 2 or w.shape[0] != h * d:
            problems.append(f"{where}: its output projection {p.name!r} has no constant [{h * d}, N] weight "
                            f"({w.type_str if w is not None else 'none'})")
        else:
            for j in _MASKS:
                m = n.inputs[j]
                if m is not None and m.rank >= 3 and m.shape[m.rank - 3] == h and h > 1 and m.const is None:
                    problems.append(f"{where}: its {'additive' if j == 8 else 'boolean'} mask {m.name!r} has a "
                                    "per-head axis and is computed at run time, so it cannot be sliced")
            sites.append(AttentionSite(i, n, p, h, d))
    if problems:
        raise PruneError("Head pruning cannot remove heads structurally here: " + "; ".join(problems) + ". Pruning "
                         "slices the Q/K/V projections and the rows of the one output projection after each "
                         "Attention op; run it right after fusion, before passes that change that structure.")
    return sites


# -- options ---------------------------------------------------------------------------------------
def parse_spec(spec: str | Mapping[int, Sequence[int]] | Sequence[tuple[int, int]] | None) -> dict[int, list[int]]:
    """'0:3,0:5,4:1' (or {0: [3, 5], 4: [1]}, or [(0, 3), ...]) -> {layer: sorted heads}."""
    if spec is None or spec == "":
        return {}
    pairs: list[tuple[int, int]] = []
    if isinstance(spec, str):
        for item in filter(None, (s.strip() for s in spec.replace(";", ",").split(","))):
            layer, sep, head = item.partition(":")
            try:
                if not sep:
                    raise ValueError
                pairs.append((int(layer), int(head)))
            except ValueError:
                raise PruneError(f"Cannot read {item!r} in the head-pruning spec {spec!r}: write LAYER:HEAD pairs "
                                 "separated by commas, counting from 0, e.g. 0:3,0:5,4:1.") from None
    elif isinstance(spec, Mapping):
        pairs = [(int(layer), int(h)) for layer, hs in spec.items() for h in hs]
    else:
        pairs = [(int(layer), int(h)) for layer, h in spec]
    out: dict[int, list[int]] = {}
    for layer, h in pairs:
        out.setdefault(layer, [])
        if h not in out[layer]:
            out[layer].append(h)
    return {k: sorted(v) for k, v in sorted(out.items())}


def check_options(fraction: float | None, spec: Any, min_per_layer: int, importance: str) -> None:
    """Option errors that need no graph (the CLI calls this before importing the model)."""
    if fraction is not None and spec not in (None, "", {}, []):
        raise PruneError("Head pruning takes either a fraction of heads to remove or an explicit spec of heads, "
                         "not both.")
    if fraction is None and spec in (None, "", {}, []):
        raise PruneError("Head pruning needs a fraction of heads to remove (e.g. fraction=0.25, --prune-heads 0.25) "
                         "or an explicit spec (spec=0:3,4:1, --prune-heads-spec 0:3,4:1).")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < float(fraction) < 1:
            raise PruneError(f"The fraction of heads to prune must be a number strictly between 0 and 1, got "
                             f"{fraction!r} (0.25 removes a quarter of all heads).")
    if isinstance(min_per_layer, bool) or not isinstance(min_per_layer, int) or min_per_layer < 1:
        raise PruneError(f"min_per_layer must be an integer of at least 1 (every layer keeps a head), got "
                         f"{min_per_layer!r}.")
    if importance not in IMPORTANCE_METHODS:
        raise PruneError(f"Unknown head-importance method {importance!r}; choose one of "
                         f"{', '.join(IMPORTANCE_METHODS)} (drift is the default).")
    parse_spec(spec)


# -- importance ------------------------------------------------------------------------------------
def _float_outputs(graph: Graph) -> list[Value]:
    return [v for v in graph.outputs if v.dtype.is_float]


def _downstream(graph: Graph, value: Value) -> list[Node]:
    """The nodes whose results depend on `value`, in graph order."""
    dirty, nodes = {value.name}, []
    for n in graph.nodes:
        if any(v is not None and v.name in dirty for v in n.inputs):
            nodes.append(n)
            dirty.update(o.name for o in n.outputs)
    return nodes


def _outside_inputs(nodes: Sequence[Node]) -> set[str]:
    """Names of the non-constant values `nodes` read but do not compute."""
    inside = {o.name for n in nodes for o in n.outputs}
    return {v.name for n in nodes for v in n.inputs if v is not None and v.const is None and v.name not in inside}


def _run_nodes(nodes: Sequence[Node], env: Mapping[str, np.ndarray], overrides: dict[str, np.ndarray],
               wanted: Sequence[str]) -> dict[str, np.ndarray]:
    """Re-execute `nodes` with `overrides` in place of some values of a finished run, whose values the
    nodes read from outside are in `env` (constants come from the graph)."""
    local = dict(overrides)
    for n in nodes:
        args = [None if v is None else local[v.name] if v.name in local else v.const if v.const is not None
                else env[v.name] for v in n.inputs]
        for o, arr in zip(n.outputs, n.op.run(args, n.attrs)):
            local[o.name] = arr
    return {k: local.get(k, env.get(k)) for k in wanted}


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def drift_scores(graph: Graph, sites: Sequence[AttentionSite], feeds: Sequence[Mapping[str, np.ndarray]]
                 ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Per head: mean squared change of the float outputs when the head's output is zeroed (higher = more
    important). Also returns the unpruned outputs per feed, for the drift report."""
    outs = [v.name for v in _float_outputs(graph)]
    tails = [_downstream(graph, s.node.outputs[0]) for s in sites]
    # Keep only what the re-executions read (each layer's Attention output and the values its downstream
    # nodes take from before it), not every intermediate: scoring memory stays near one forward pass.
    keep = set(outs).union(*(_outside_inputs(t) for t in tails), (s.node.outputs[0].name for s in sites))
    scores = [np.zeros(s.num_heads) for s in sites]
    baselines = []
    heads = sum(s.num_heads for s in sites)
    with progress.task("scoring attention heads (drift)", total=len(feeds) * heads) as step:
        for feed in feeds:
            _drift_of_feed(graph, sites, tails, outs, keep, feed, scores, baselines, len(feeds), step)
    return scores, baselines


def _drift_of_feed(graph, sites, tails, outs, keep, feed, scores, baselines, n_feeds, step) -> None:
    """One calibration feed's share of every head's drift score."""
    env = {k: np.asarray(v) for k, v in feed.items() if k in keep}

    def observe(node: Node, results: list[np.ndarray]) -> None:
        env.update((o.name, r) for o, r in zip(node.outputs, results) if o.name in keep)

    outputs = interpret(graph, feed, observer=observe)
    baselines.append(outputs)
    base = {k: outputs[k] for k in outs}
    for site, tail, acc in zip(sites, tails, scores):
        name = site.node.outputs[0].name
        ctx = env[name]
        for h in range(site.num_heads):
            masked = ctx.copy()
            masked[..., h * site.head_dim:(h + 1) * site.head_dim] = 0
            got = _run_nodes(tail, env, {name: masked}, outs)
            acc[h] += sum(_mse(got[k], base[k]) for k in outs) / n_feeds
            step.advance()


def contribution_scores(graph: Graph, sites: Sequence[AttentionSite], feeds: Sequence[Mapping[str, np.ndarray]]
                        ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Per head: mean L2 norm over tokens of ctx_h @ Wo_h (the head's additive share of the projection)."""
    by_node = {id(s.node): i for i, s in enumerate(sites)}
    scores = [np.zeros(s.num_heads) for s in sites]
    baselines = []

    def observe(node: Node, results: list[np.ndarray]) -> None:
        i = by_node.get(id(node))
        if i is None:
            return
        s = sites[i]
        ctx, wo, d = results[0], s.projection.inputs[1].const, s.head_dim
        rows = ctx.reshape(-1, ctx.shape[-1]).astype(np.float64)
        for h in range(s.num_heads):
            part = rows[:, h * d:(h + 1) * d] @ wo[h * d:(h + 1) * d].astype(np.float64)
            scores[i][h] += float(np.linalg.norm(part, axis=-1).mean()) / len(feeds)

    with progress.task("scoring attention heads (contribution)", total=len(feeds)) as step:
        for feed in feeds:
            baselines.append(interpret(graph, feed, observer=observe))
            step.advance()
    return scores, baselines


def weight_scores(sites: Sequence[AttentionSite]) -> list[np.ndarray]:
    """Per head: ‖Wv_h @ Wo_h‖_F, the size of the head's value-output map (data-free)."""
    scores = []
    for s in sites:
        wv, wo, d = s.node.inputs[6].const.astype(np.float64), s.projection.inputs[1].const.astype(np.float64), \
            s.head_dim
        scores.append(np.array([np.linalg.norm(wv[:, h * d:(h + 1) * d] @ wo[h * d:(h + 1) * d])
                                for h in range(s.num_heads)]))
    return scores


def random_scores(sites: Sequence[AttentionSite], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(s.num_heads) for s in sites]


def select_heads(scores: Sequence[np.ndarray], count: int, min_per_layer: int) -> dict[int, list[int]]:
    """The `count` lowest-scoring heads over all layers, each layer keeping `min_per_layer` heads
    (ties broken by layer, then head, so the choice is deterministic)."""
    order = sorted((float(s), layer, h) for layer, arr in enumerate(scores) for h, s in enumerate(arr))
    left = [len(a) for a in scores]
    chosen: dict[int, list[int]] = {}
    taken = 0
    for _, layer, h in order:
        if taken == count:
            break
        if left[layer] - 1 < min_per_layer:
            continue
        chosen.setdefault(layer, []).append(h)
        left[layer] -= 1
        taken += 1
    return {k: sorted(v) for k, v in sorted(chosen.items())}


# -- removal ---------------------------------------------------------------------------------------
def _use_count(graph: Graph, v: Value) -> int:
    return sum(1 for n in graph.nodes for x in n.inputs if x is v) + sum(1 for o in graph.outputs if o is v)


def _set_const(graph: Graph, node: Node, index: int, data: np.ndarray) -> None:
    """Give input `index` of `node` the constant `data`: in place when nothing else reads the old constant
    (its name, e.g. the model's parameter name, survives), else as a new constant."""
    v = node.inputs[index]
    data = np.ascontiguousarray(data)
    if _use_count(graph, v) == 1:
        v.const, v.shape = data, tuple(data.shape)
    else:
        node.inputs[index] = graph.add_const(f"{v.name}/pruned", data)


def remove_heads(graph: Graph, site: AttentionSite, heads: Sequence[int]) -> None:
    """Remove `heads` of one Attention op structurally (see the module doc)."""
    keep = [h for h in range(site.num_heads) if h not in set(heads)]
    cols = site.head_columns(keep)
    n = site.node
    for i in _WEIGHTS:
        _set_const(graph, n, i, n.inputs[i].const[:, cols])
    for i in _BIASES:
        if n.inputs[i] is not None:
            _set_const(graph, n, i, n.inputs[i].const.reshape(-1)[cols])
    for i in _MASKS:
        m = n.inputs[i]
        if m is not None and m.rank >= 3 and m.shape[m.rank - 3] == site.num_heads and site.num_heads > 1:
            _set_const(graph, n, i, np.take(m.const, keep, axis=m.rank - 3))
    n.attrs = {**n.attrs, "num_heads": len(keep)}
    out = n.outputs[0]
    out.shape = out.shape[:-1] + (len(keep) * site.head_dim,)
    _set_const(graph, site.projection, 1, site.projection.inputs[1].const[cols])


# -- the report ------------------------------------------------------------------------------------
def graph_flops(graph: Graph) -> int:
    return int(sum(n.op.flops(n.inputs, n.outputs, n.attrs) for n in graph.nodes))


def attention_cost(sites: Sequence[AttentionSite]) -> tuple[int, int]:
    """(parameters, FLOPs) of the attention blocks alone: Q/K/V/output projections and attention itself."""
    params = flops = 0
    for s in sites:
        params += sum(v.size for v in s.node.inputs[2:8] if v is not None) + s.projection.inputs[1].size
        flops += s.node.op.flops(s.node.inputs, s.node.outputs, s.node.attrs)
        flops += s.projection.op.flops(s.projection.inputs, s.projection.outputs, s.projection.attrs)
    return params, flops


def output_drift(graph: Graph, feeds: Sequence[Mapping[str, np.ndarray]],
                 baselines: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float] | None:
    """How far the (pruned) graph's float outputs moved from `baselines` on `feeds`: MSE, MSE relative to the
    outputs' mean square, max |Δ|, and the mean cosine of output vectors (rows along the last axis)."""
    if not feeds:
        return None
    outs = _float_outputs(graph)
    if not outs:
        return None
    se = sq = n_el = 0.0
    max_abs, cos_sum, cos_n = 0.0, 0.0, 0
    for feed, base in zip(feeds, baselines):
        got = interpret(graph, feed)
        for v in outs:
            a, b = got[v.name].astype(np.float64), np.asarray(base[v.name], np.float64)
            se += float(((a - b) ** 2).sum())
            sq += float((b ** 2).sum())
            n_el += a.size
            max_abs = max(max_abs, float(np.abs(a - b).max(initial=0.0)))
            ra, rb = a.reshape(-1, a.shape[-1] if a.ndim else 1), b.reshape(-1, b.shape[-1] if b.ndim else 1)
            cos = (ra * rb).sum(-1) / np.maximum(np.linalg.norm(ra, axis=-1) * np.linalg.norm(rb, axis=-1), 1e-30)
            cos_sum += float(cos.sum())
            cos_n += cos.size
    return {"feeds": len(feeds), "mse": se / max(n_el, 1), "relative_mse": se / sq if sq else 0.0,
            "max_abs": max_abs, "mean_cosine": cos_sum / max(cos_n, 1)}


def format_report(r: Mapping[str, Any]) -> str:
    """The report as a few lines for a terminal."""
    def pct(a, b):
        return f"{100 * (1 - b / a):.1f}%" if a else "n/a"
    how = (f"fraction {r['fraction']:g}, importance {r['importance']}" if r.get("fraction") is not None
           else "explicit spec")
    lines = [f"prune_heads: removed {r['heads_removed']} of {r['heads_before']} heads ({how}, "
             f"min {r['min_per_layer']} per layer)"]
    for layer in r["layers"]:
        removed = ",".join(map(str, layer["removed"])) or "-"
        lines.append(f"  layer {layer['layer']}: {layer['heads_before']} -> {layer['heads_after']} heads "
                     f"(removed {removed})  {layer['node']}")
    pb, pa, fb, fa = r["params_before"], r["params_after"], r["flops_before"], r["flops_after"]
    lines.append(f"  parameters {pb:,} -> {pa:,} (-{pct(pb, pa)}); FLOPs {fb:,} -> {fa:,} (-{pct(fb, fa)})")
    if "attention_params_before" in r:
        lines.append(f"  attention blocks alone: parameters "
                     f"-{pct(r['attention_params_before'], r['attention_params_after'])}, "
                     f"FLOPs -{pct(r['attention_flops_before'], r['attention_flops_after'])}")
    d = r.get("drift")
    if d:
        lines.append(f"  output drift on {d['feeds']} calibration feed(s): MSE {d['mse']:.3g} "
                     f"(relative {d['relative_mse']:.3g}), max |Δ| {d['max_abs']:.3g}, "
                     f"mean cosine {d['mean_cosine']:.5f}")
    else:
        lines.append("  output drift: not measured (no calibration data)")
    return "\n".join(lines)


# -- the pass --------------------------------------------------------------------------------------
def prune_attention_heads(graph: Graph, fraction: float | None = None, spec: Any = None, min_per_layer: int = 1,
                          importance: str = "drift", seed: int = 0, calibration: Any = None,
                          samples: int | None = None, measure_drift: bool = True) -> dict[str, Any]:
    """Prune heads of `graph` in place and return the report (a JSON-able dict). `calibration` is a
    PassContext, or calibration data in any form compiler/calibration.py accepts, or None; `samples` uses
    only the first that many calibration feeds (drift scoring costs about one forward pass per head and
    feed)."""
    check_options(fraction, spec, min_per_layer, importance)
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise PruneError(f"samples (the calibration feeds head pruning uses) must be a positive integer, got "
                         f"{samples!r}.")
    ctx = calibration if isinstance(calibration, PassContext) else PassContext(calibration=calibration)
    sites = attention_sites(graph)
    total = sum(s.num_heads for s in sites)
    feeds = ctx.calibration_feeds(graph)[:samples]
    scores, baselines = None, []
    if fraction is not None:
        count = int(round(float(fraction) * total))
        room = sum(max(s.num_heads - min_per_layer, 0) for s in sites)
        if count > room:
            raise PruneError(f"Pruning {fraction:g} of the heads asks for {count} of {total}, but with "
                             f"min_per_layer={min_per_layer} at most {room} can go "
                             f"({len(sites)} layers of {', '.join(str(s.num_heads) for s in sites)} heads).")
        if importance in ("drift", "contribution") and not feeds:
            raise PruneError(f"Head importance {importance!r} runs the model on calibration data, and none was "
                             "given: pass --calibration FILE.npz (Python: PassContext(calibration=...)), or choose "
                             "importance 'weight', which needs no data.")
        if importance == "drift":
            scores, baselines = drift_scores(graph, sites, feeds)
        elif importance == "contribution":
            scores, baselines = contribution_scores(graph, sites, feeds)
        elif importance == "weight":
            scores = weight_scores(sites)
        else:
            scores = random_scores(sites, seed)
        chosen = select_heads(scores, count, min_per_layer)
    else:
        chosen = parse_spec(spec)
        problems = []
        for layer, heads in chosen.items():
            if not 0 <= layer < len(sites):
                problems.append(f"layer {layer} does not exist (the graph has layers 0..{len(sites) - 1})")
                continue
            h = sites[layer].num_heads
            bad = [x for x in heads if not 0 <= x < h]
            if bad:
                problems.append(f"layer {layer} has heads 0..{h - 1}, not {', '.join(map(str, bad))}")
            elif h - len(heads) < min_per_layer:
                problems.append(f"layer {layer} would keep {h - len(heads)} of {h} heads, fewer than "
                                f"min_per_layer={min_per_layer}")
        if problems:
            raise PruneError("The head-pruning spec does not fit the model: " + "; ".join(problems) + ".")
    if measure_drift and feeds and not baselines:
        baselines = [interpret(graph, f) for f in feeds]

    params_before, flops_before = graph.parameter_count(), graph_flops(graph)
    attn_before = attention_cost(sites)
    for layer, heads in chosen.items():
        remove_heads(graph, sites[layer], heads)
    graph.remove_unused()
    attn_after = attention_cost(sites)
    report: dict[str, Any] = {
        "importance": importance if fraction is not None else "spec",
        "fraction": float(fraction) if fraction is not None else None,
        "min_per_layer": min_per_layer,
        "heads_before": total,
        "heads_removed": sum(len(v) for v in chosen.values()),
        "removed": {str(k): v for k, v in chosen.items()},
        "layers": [{"layer": s.layer, "node": s.node.name, "heads_before": s.num_heads,
                    "heads_after": s.num_heads - len(chosen.get(s.layer, [])), "removed": chosen.get(s.layer, []),
                    **({"importance": [float(x) for x in scores[s.layer]]} if scores is not None else {})}
                   for s in sites],
        "params_before": params_before, "params_after": graph.parameter_count(),
        "flops_before": flops_before, "flops_after": graph_flops(graph),
        "attention_params_before": attn_before[0], "attention_params_after": attn_after[0],
        "attention_flops_before": attn_before[1], "attention_flops_after": attn_after[1],
        "drift": output_drift(graph, feeds, baselines) if measure_drift else None,
    }
    return report


@register_pass("prune_heads", fraction=None, spec="", min_per_layer=1, importance="drift", seed=0, samples=None)
def prune_heads(graph: Graph, fraction: float | None = None, spec: Any = "", min_per_layer: int = 1,
                importance: str = "drift", seed: int = 0, samples: int | None = None,
                context: PassContext | None = None) -> int:
    """Remove attention heads structurally: `fraction` of all heads, least important first (global ranking,
    at least `min_per_layer` kept per layer), or the explicit `spec` LAYER:HEAD,... (from 0, layers in
    graph order). importance: drift (default; output change on calibration data when the head is zeroed),
    contribution, weight (no data needed) or random (seeded). Runs after fusion; calibration data comes
    from the PassContext (aotc: --calibration FILE.npz), the first `samples` feeds only if given. Leaves a
    report in context.reports."""
    ctx = context if context is not None else PassContext()
    report = prune_attention_heads(graph, fraction=fraction, spec=spec, min_per_layer=min_per_layer,
                                   importance=importance, seed=seed, calibration=ctx, samples=samples)
    ctx.reports["prune_heads"] = report
    return report["heads_removed"]

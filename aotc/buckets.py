"""Shape buckets: one bundle, one compiled variant per combination of sizes of the model's named dimensions.

    aotc.compile("minilm.onnx", "out/minilm", buckets={"batch": (1, 8), "seq": (16, 32, 64, 128)},
                 pad={"input_ids": 0, "attention_mask": 0})

`buckets` is either {dimension: sizes} (the cross product) or a list of {dimension: size} (exactly those
buckets). Each bucket is the model compiled at those sizes (the same pass pipeline as a single-shape compile);
the target builds them together (Target.compile_buckets: x86 and arm64 share one weights.bin) and the bundle
holds one folder per bucket (targets/bucket_bundle.py). At run time the runtime picks the smallest bucket that
holds the inputs, pads inputs that have a pad value and slices the outputs back (runtime_stub/buckets.py).

Padding is exact only where the model ignores padded positions (a BERT-style attention mask). That is checked
here, on example data, by running the smallest bucket's inputs padded into a larger bucket through the
reference interpreter; a difference is reported as a warning and recorded in the manifest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from aotc import compiler
from aotc.compiler.calibration import CalibrationError
from aotc.compiler.errors import AotcError

# Above this relative difference at valid positions, padding is reported as changing the result.
PADDING_TOLERANCE = 1e-4


class BucketError(AotcError):
    """The --bucket / --buckets / --pad options do not fit the model or the target."""


def bucket_sizes(buckets) -> list[dict[str, int]]:
    """Every bucket as {dimension: size}, smallest first (by the product of its sizes): the cross product of a
    {dimension: sizes} mapping, or a list of {dimension: size} as given."""
    if isinstance(buckets, Mapping):
        dims = list(buckets)
        values = [sorted({_size(d, s) for s in (buckets[d] if isinstance(buckets[d], (list, tuple)) else
                                                 [buckets[d]])}) for d in dims]
        combos = [dict(zip(dims, c)) for c in itertools.product(*values)]
    else:
        combos = [{d: _size(d, s) for d, s in dict(b).items()} for b in buckets]
        if not combos:
            raise BucketError("--buckets lists no bucket.")
        dims = list(combos[0])
        for b in combos:
            if sorted(b) != sorted(dims):
                raise BucketError(f"Every bucket must size the same dimensions: {_label(combos[0])} sizes "
                                  f"{', '.join(dims)}, {_label(b)} sizes {', '.join(b)}.")
    if not dims:
        raise BucketError("--bucket names no dimension.")
    unique = {tuple(b[d] for d in dims): b for b in combos}
    return sorted(({d: b[d] for d in dims} for b in unique.values()),
                  key=lambda b: (math.prod(b.values()), tuple(b.values())))


def _size(dim: str, s) -> int:
    try:
        v = int(s)
    except (TypeError, ValueError):
        v = 0
    if v < 1 or str(v) != str(s).strip():
        raise BucketError(f"--bucket {dim}={s}: a bucket size is a whole number of at least 1.")
    return v


def _label(sizes: Mapping[str, int]) -> str:
    return ",".join(f"{d}={n}" for d, n in sizes.items())


def folder_names(buckets: list[dict[str, int]]) -> list[str]:
    """A folder name per bucket (batch1_seq16): the dimension names' letters and digits and the sizes."""
    names = ["_".join(re.sub(r"[^A-Za-z0-9]", "", d) + str(n) for d, n in b.items()) for b in buckets]
    if len(set(names)) != len(names) or not all(names):
        names = [f"bucket{i}" for i in range(len(buckets))]
    return names


def input_dims(model_path: str, dims: Sequence[str], pad: Mapping[str, Any],
               input_shapes: Mapping[str, Any]) -> tuple[dict[str, list], dict[str, list]]:
    """Each input's and output's declared dimension names ({name: [dim_param or None per axis]}), once the
    bucketed dimensions, the pad values and the fixed shapes are checked against the model."""
    from aotc.compiler.onnx_import import declared_dims, graph_input_protos, read_onnx_model
    proto = read_onnx_model(model_path)
    ins = {p.name: [d if isinstance(d, str) and d != "?" else None for d in declared_dims(p)]
           for p in graph_input_protos(proto)}
    outs = {p.name: [d if isinstance(d, str) and d != "?" else None for d in declared_dims(p)]
            for p in proto.graph.output}
    named = sorted({d for axes in ins.values() for d in axes if d})
    unknown = [d for d in dims if d not in named]
    if unknown:
        have = (f"its inputs' named dimensions are {', '.join(map(repr, named))}" if named else
                "its inputs have no named (dim_param) dimensions, so it has one fixed shape")
        raise BucketError(f"--bucket {unknown[0]}: the model has no input dimension named {unknown[0]!r}; {have}.")
    for d in dims:
        if d in input_shapes:
            raise BucketError(f"--input-shape {d}=... and --bucket {d}=... both size {d!r}; give one of them.")
    for name, axes in ins.items():
        if name in input_shapes and any(a in dims for a in axes):
            raise BucketError(f"--input-shape {name}=... fixes the shape of {name!r}, whose dimensions "
                              f"{', '.join(a for a in axes if a in dims)} are bucketed; size them with --bucket "
                              f"and the others with --input-shape DIM=SIZE.")
    bad = [p for p in pad if p not in ins]
    if bad:
        raise BucketError(f"--pad {bad[0]}: the model has no input {bad[0]!r}; its inputs are "
                          f"{', '.join(map(repr, ins))}.")
    return ins, outs


def output_dims(outputs_by_bucket: list[list[tuple]], buckets: list[dict[str, int]], declared: Mapping[str, list],
                names: list[str]) -> list[list[str | None]]:
    """Which bucketed dimension each output axis carries (sliced back at run time): the model's declared name
    where it is one, else the dimension whose size the axis has in every bucket."""
    dims = list(buckets[0])
    result = []
    for i, name in enumerate(names):
        axes = []
        for k in range(len(outputs_by_bucket[0][i])):
            sizes = [shapes[i][k] for shapes in outputs_by_bucket]
            decl = declared.get(name, [])
            if k < len(decl) and decl[k] in dims:
                axes.append(decl[k])
                continue
            fits = [d for d in dims if all(s == b[d] for s, b in zip(sizes, buckets))]
            if len(fits) == 1:
                axes.append(fits[0])
            elif len(set(sizes)) == 1:
                axes.append(None)
            else:
                raise BucketError(f"Output {name!r} axis {k} changes with the buckets ({sizes}) but not as one "
                                  f"bucketed dimension ({', '.join(dims)}), so aotc cannot slice it back after "
                                  "padding; bucket other dimensions.")
        result.append(axes)
    return result


def example_feeds(graph) -> dict[str, np.ndarray]:
    """Example inputs for the padding check: ones for integer inputs (a full attention mask, token id 1),
    N(0, 1) for float inputs, True for bool."""
    r = np.random.default_rng(0)
    feeds = {}
    for v in graph.inputs:
        dt = np.dtype(v.dtype.value) if v.dtype.value != "bfloat16" else np.dtype(np.float32)
        if dt.kind == "f":
            feeds[v.name] = r.standard_normal(v.shape).astype(dt)
        else:
            feeds[v.name] = np.ones(v.shape, dt)
    return feeds


def check_padding(small, big, small_sizes, big_sizes, in_dims, out_dims, pad) -> dict:
    """Run the smallest bucket's example inputs, and the same inputs padded into a larger bucket, through the
    reference interpreter; the largest relative difference of the outputs at the valid positions."""
    feeds = example_feeds(small)
    padded = {}
    for name, arr in feeds.items():
        axes = in_dims[name]
        want = [big_sizes[a] if a in big_sizes else n for a, n in zip(axes, arr.shape)]
        if list(arr.shape) != want:
            if name not in pad:
                return {"checked": False, "why": f"input {name!r} has no pad value"}
            arr = np.pad(arr, [(0, w - n) for w, n in zip(want, arr.shape)], constant_values=pad[name])
        padded[name] = arr
    want = compiler.interpret(small, feeds)
    got = compiler.interpret(big, padded)
    worst = 0.0
    for out, axes in zip(small.outputs, out_dims):
        a = np.asarray(got[out.name], np.float64)
        a = a[tuple(slice(0, small_sizes[d]) if d else slice(None) for d in axes)]
        b = np.asarray(want[out.name], np.float64)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) if b.size else 0.0)
    return {"checked": True, "from": _label(small_sizes), "into": _label(big_sizes),
            "max_relative_difference": worst, "exact": worst <= PADDING_TOLERANCE}


def _check_case(buckets: list[dict[str, int]]) -> tuple[int, int] | None:
    """The two buckets the padding check compares: the smallest, and the smallest bucket that is larger in every
    dimension that has more than one size, else one that holds the smallest and is larger in some dimension
    (None: no bucket holds another, so no input is ever padded across two of them)."""
    varied = [d for d in buckets[0] if len({b[d] for b in buckets}) > 1]
    holds = [j for j, b in enumerate(buckets) if j and all(b[d] >= buckets[0][d] for d in b) and b != buckets[0]]
    larger = [j for j in holds if all(buckets[j][d] > buckets[0][d] for d in varied)]
    return (0, (larger or holds)[0]) if holds else None


def _chosen_on_the_calibrated_bucket(opts, context) -> dict[str, Any]:
    """The options every other bucket compiles with: the heads pruning removed on the calibrated bucket as an
    explicit spec (no scoring, so no calibration data for pruning), and no calibration data at all unless INT8
    still needs the option (its ranges come from the context, the data is not read)."""
    same: dict[str, Any] = {}
    if opts.prune_heads is not None:
        removed = context.reports["prune_heads"]["removed"]
        spec = ",".join(f"{layer}:{h}" for layer, heads in sorted(removed.items(), key=lambda kv: int(kv[0]))
                        for h in heads)
        same.update(prune_heads=None, prune_heads_spec=spec or None, prune_heads_importance="drift",
                    prune_heads_samples=None)
    if not opts.quantize:
        same["calibration"] = None
    return same


def compile_bucketed(model, out: Path, tgt, opts, prepare: Callable, log: Callable[[str], None] | None,
                     verbose: bool, signing_key, max_memory) -> None:
    """aotc.compile with CompileOptions.buckets: every bucket compiled, one bundle written (see the module).
    `prepare(options, keep_imported, report)` is aotc.compile's load + pass pipeline for one bucket's options:
    (final graph, source description, passes applied, the imported graph if asked for)."""
    from aotc.targets.base import BucketVariant, scratch_build_context
    from aotc.targets.bucket_bundle import bucket_files
    from aotc.targets.bundle import BUCKETS_FORMAT_VERSION, BundleWriter, io_description, model_id_for, model_manifest

    why = tgt.buckets_unsupported()
    if why:
        raise BucketError(why)
    if not isinstance(model, (str, Path)) or str(model).endswith(".py") or ":" in Path(str(model)).name:
        raise BucketError("--bucket sizes an ONNX model's named (dim_param) dimensions; give an ONNX file.")
    if opts.smoothquant is not None or opts.max_drop is not None:
        raise BucketError("--smoothquant and --max-drop run the model on the calibration data at its own shape; "
                          "with --bucket, quantize without them.")
    buckets = bucket_sizes(opts.buckets)
    pad = dict(opts.pad or {})
    given = dict(opts.input_shapes or {})
    in_dims, declared_out = input_dims(str(model), list(buckets[0]), pad, given)
    folders = folder_names(buckets)

    case = _check_case(buckets)
    a, b = case or (-1, -1)
    # What reads calibration data runs on the largest bucket (the data must have its shape); every other bucket
    # reuses its decisions, so all buckets compute the same model: INT8 with the same activation ranges (one set
    # of scales), head pruning of the same heads (as an explicit --prune-heads-spec).
    calibrated = max(range(len(buckets)), key=lambda i: math.prod(buckets[i].values())) \
        if opts.quantize or opts.prune_heads is not None else 0
    order = [calibrated] + [i for i in range(len(buckets)) if i != calibrated]
    with BundleWriter(out) as writer:
        done, loaded, ranges, same = {}, {}, None, {}
        for i in order:
            vopts = dataclasses.replace(opts, buckets=None, pad=None, **same,
                                        input_shapes={**given, **{d: (n,) for d, n in buckets[i].items()}})
            # The padding check reads the model as imported; the pipeline's reports are told once.
            try:
                graph, source, applied, imported, context = prepare(vopts, i in (a, b), i == order[0],
                                                                    activation_ranges=ranges)
            except CalibrationError as e:
                raise CalibrationError(f"With --bucket, --quantize and --prune-heads read the calibration data on "
                                       f"the largest bucket ({_label(buckets[i])}) and apply what they chose to every "
                                       f"other bucket: {e}") from None
            if i == order[0]:
                ranges = context.activation_ranges if opts.quantize else None
                same = _chosen_on_the_calibrated_bucket(opts, context)
            if imported is not None:
                loaded[i] = imported
            done[i] = (graph, source, applied)
        variants, out_shapes, sources, passes = [], [], [], []
        for i, (sizes, folder) in enumerate(zip(buckets, folders)):
            graph, source, applied = done[i]
            out_shapes.append([o.shape for o in graph.outputs])
            variants.append(BucketVariant(folder, sizes, graph,
                                          model_id_for(compiler.__version__, tgt.manifest(), source, applied, graph)))
            sources.append(source)
            passes.append(applied)
        out_dims = output_dims(out_shapes, buckets, declared_out, [o.name for o in variants[0].graph.outputs])
        padding = check_padding(loaded[a], loaded[b], buckets[a], buckets[b], in_dims, out_dims, pad) if case else \
            {"checked": False, "why": "no bucket holds another"}
        if log is not None and padding.get("checked") and not padding["exact"]:
            log(f"warning: padding changes the model's outputs at valid positions (relative difference "
                f"{padding['max_relative_difference']:.3g} from {padding['from']} padded into {padding['into']}): "
                "the model does not mask padded positions, so inputs smaller than their bucket get other results "
                "than at their own size; give pad values that the model ignores (an attention mask's 0) or "
                "exact buckets.")
        model_id = hashlib.sha256("".join(v.model_id for v in variants).encode()).hexdigest()[:32]
        with scratch_build_context(model_id, compiler.__version__, log if verbose else None, max_memory) as ctx:
            builds = tgt.compile_buckets(variants, ctx)
        per_bucket, listing = [], []
        for v, build, source, applied in zip(variants, builds, sources, passes):
            manifest = model_manifest(compiler.__version__, v.model_id, tgt.manifest(), source, v.graph, applied,
                                      {"bucket": {"name": v.name, "sizes": v.sizes}, **build.manifest})
            per_bucket.append((v.name, build.files, manifest))
            listing.append({"name": v.name, "sizes": v.sizes,
                            **{k: build.manifest[k] for k in ("arena_bytes", "weight_bytes", "kernels", "flops")
                               if k in build.manifest}})
        files, links = bucket_files(per_bucket)
        top_inputs = io_description(variants[-1].graph.inputs)
        for item in top_inputs:
            item["dims"] = [d if d in buckets[0] else None for d in in_dims[item["name"]]]
        top_outputs = io_description(variants[-1].graph.outputs)
        for item, axes in zip(top_outputs, out_dims):
            item["dims"] = axes
        manifest = {"format_version": BUCKETS_FORMAT_VERSION, "aotc_version": compiler.__version__,
                    "model_id": model_id, "target": tgt.manifest(), "source_model": sources[0],
                    "inputs": top_inputs, "outputs": top_outputs, "passes": passes[-1],
                    "buckets": {"dims": list(buckets[0]), "pad": {k: pad[k] for k in sorted(pad)},
                                "variants": listing, "padding_check": padding}}
        writer.write(files, manifest, signing_key=signing_key, links=links)
    if log is not None:
        shared = sum(len(d) for n, d in files.items() if "/" not in n)
        log(f"wrote {out}: {len(variants)} buckets ({', '.join(folders)}) for {tgt.name}; {shared} B shared by all "
            "buckets (weights.bin and the runtime)")


def bucket_options(bucket: Sequence[str] | None, buckets: Sequence[str] | None, pad: Sequence[str] | None) -> dict:
    """CompileOptions' buckets/pad from `aotc compile`'s --bucket, --buckets and --pad."""
    if bucket and buckets:
        raise BucketError("Give either --bucket (the cross product of each dimension's sizes) or --buckets (each "
                          "bucket listed), not both.")
    out: dict[str, Any] = {}
    if bucket:
        out["buckets"] = parse_bucket_option(bucket)
    elif buckets:
        out["buckets"] = parse_buckets_option(buckets)
    if pad:
        out["pad"] = parse_pad_option(pad)
    return out


def parse_bucket_option(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """--bucket NAME=V1,V2,... (repeatable) as {dimension: sizes}."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, values = str(item).partition("=")
        if not sep or not name or not values:
            raise BucketError(f"--bucket {item!r} is not NAME=V1,V2,... (e.g. --bucket seq=16,32,64,128).")
        if name in out:
            raise BucketError(f"--bucket names {name!r} twice; give all its sizes in one --bucket {name}=V1,V2.")
        out[name] = tuple(_size(name, v) for v in values.split(","))
    return out


def parse_buckets_option(items: Sequence[str]) -> list[dict[str, int]]:
    """--buckets NAME=V,NAME=V (repeatable, one bucket each) as a list of {dimension: size}."""
    out = []
    for item in items:
        bucket: dict[str, int] = {}
        for part in str(item).split(","):
            name, sep, value = part.partition("=")
            if not sep or not name or name in bucket:
                raise BucketError(f"--buckets {item!r} is not one bucket NAME=V,NAME=V (e.g. batch=1,seq=32).")
            bucket[name] = _size(name, value)
        out.append(bucket)
    return out


def parse_pad_option(items: Sequence[str]) -> dict[str, float | int]:
    """--pad INPUT=VALUE (repeatable)."""
    out: dict[str, float | int] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        try:
            v: float | int = int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
        except ValueError:
            v = math.nan
        if not sep or not name or not math.isfinite(v):
            raise BucketError(f"--pad {item!r} is not INPUT=VALUE with a finite number (e.g. --pad attention_mask=0).")
        out[name] = v
    return out


__all__ = ["BucketError", "bucket_sizes", "compile_bucketed", "parse_bucket_option", "parse_buckets_option",
           "parse_pad_option", "PADDING_TOLERANCE"]

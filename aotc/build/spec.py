"""The build spec (`aotc.toml`): models, targets and variants, and the artifacts they make.

    [models.mlp]
    path = "models/mlp.onnx"            # relative to the spec's folder
    input_shapes = { x = [16, 64] }
    calibration = "data/mlp_cal.npz"

    [targets.x86]
    target = "x86-avx512"               # default: the table's name
    [targets.arm64]
    target = "arm64-neon"
    cpu_features = ["dotprod"]          # any option of that target

    [variants.fp32]
    [variants.int8]
    quantize = "int8"                   # any CompileOptions field
    target_options = { precision = "fp32" }   # applied to the targets that have the option

    [[artifacts]]                       # optional: without it, every model x target x variant
    model = "mlp"                       # a name or a list; left out: all
    variant = ["fp32", "int8"]

Every mistake is found here, before anything compiles, and named by the spec file and the key."""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aotc.compiler.errors import AotcError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (pyproject.toml's dependency for 3.10)
    import tomli as tomllib

from ..api import CALIBRATED_PASSES, CompileOptions

DEFAULT_SPEC = "aotc.toml"
# CompileOptions fields a spec cannot set: a Python model's example arrays, and printing (a build prints its
# own progress). Signing needs the private key on every worker: sign the release's bundles afterwards.
NOT_IN_SPEC = {"example_inputs", "print_ir_after", "print_pass_times", "sign"}
# The TOML types of the options whose values aotc.compile would otherwise only check deep in a worker; a field
# not listed here (e.g. one added to CompileOptions later) is handed to aotc.compile as it is.
NUMBER = (int, float)
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "input_shapes": (dict,), "passes": (str, list), "disable_pass": (list,), "verify": (bool,),
    "quantize": (str,), "calibration": (str,), "calibration_method": (str,), "calibration_percentile": NUMBER,
    "calibration_samples": (int,), "quantize_ops": (str,), "exclude_nodes": (list,), "smoothquant": NUMBER,
    "max_drop": NUMBER, "prune_heads": NUMBER, "prune_heads_spec": (str,), "prune_heads_min_per_layer": (int,),
    "prune_heads_importance": (str,), "prune_heads_samples": (int,), "max_memory": (int, str),
}
TOP_LEVEL = ("build", "models", "targets", "variants", "artifacts")
BUILD_KEYS = ("output", "cache")
ARTIFACT_KEYS = ("model", "target", "variant", "name")


def calibrates(options: dict[str, Any]) -> bool:
    """Whether these options run a pass that reads calibration data."""
    passes = options.get("passes") or ""
    named = passes if isinstance(passes, str) else " ".join(map(str, passes))
    return bool(options.get("quantize") or options.get("prune_heads") is not None
                or any(p in named for p in CALIBRATED_PASSES))


class BuildSpecError(AotcError):
    """The build spec cannot be read, or a key in it is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path                    # absolute
    options: dict[str, Any]       # CompileOptions fields, paths absolute


@dataclass(frozen=True)
class TargetEntry:
    name: str                     # the table's name in the spec
    target: str                   # the registered target (or alias)
    options: dict[str, Any]       # its target options


@dataclass(frozen=True)
class VariantEntry:
    name: str
    options: dict[str, Any]
    target_options: dict[str, Any]


@dataclass(frozen=True)
class Artifact:
    """One bundle of the matrix: a model, a target and a variant, and where the spec asked for it."""
    name: str
    model: ModelEntry
    target: TargetEntry
    variant: VariantEntry
    where: str                    # e.g. "aotc.toml [[artifacts]] #2", for error messages

    def compile_options(self) -> dict[str, Any]:
        """CompileOptions fields: the model's, then the variant's (a variant's value wins). A model's
        calibration data goes only to the variants that calibrate (aotc.compile refuses it elsewhere)."""
        opts = {**self.model.options, **self.variant.options}
        if "calibration" not in self.variant.options and not calibrates(opts):
            opts.pop("calibration", None)
        return opts

    def target_options(self) -> dict[str, Any]:
        """The target's options, then the variant's that this target has (the rest are for other targets)."""
        from aotc.targets.base import find_spec
        spec, _ = find_spec(self.target.target)
        own = {k: v for k, v in self.variant.target_options.items() if spec.option(k) is not None}
        return {**self.target.options, **own}


@dataclass(frozen=True)
class BuildSpec:
    path: Path
    output: Path
    cache: Path
    artifacts: tuple[Artifact, ...]


def load_spec(path: str | os.PathLike) -> BuildSpec:
    """Read and check a build spec; relative paths in it are relative to its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / DEFAULT_SPEC
    if not path.is_file():
        raise BuildSpecError(f"Build spec {str(path)!r} does not exist; write an {DEFAULT_SPEC} (docs/build.md "
                             "shows one) or name the spec: aotc build PATH/TO/aotc.toml.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BuildSpecError(f"{path.name} is not valid TOML: {e}.") from None
    reader = _Reader(path)
    reader.known_keys(data, TOP_LEVEL, "")
    build = reader.table(data, "build", "[build]")
    reader.known_keys(build, BUILD_KEYS, "[build]")
    models = {n: reader.model(n, t) for n, t in reader.tables(data, "models", required=True).items()}
    targets = {n: reader.target(n, t) for n, t in reader.tables(data, "targets", required=True).items()}
    variants = {n: reader.variant(n, t) for n, t in reader.tables(data, "variants").items()} or \
        {"default": VariantEntry("default", {}, {})}
    artifacts = reader.artifacts(data.get("artifacts"), models, targets, variants)
    for art in artifacts:  # target options are checked per artifact: a variant's may meet the target's
        reader.check_target(art)
    base = path.parent
    return BuildSpec(path=path, output=base / reader.string(build, "output", "[build]", "dist"),
                     cache=base / reader.string(build, "cache", "[build]", ".aotc-cache"),
                     artifacts=tuple(artifacts))


class _Reader:
    """Reads one spec's tables; every error names the spec file and the key."""

    def __init__(self, path: Path):
        self.path, self.base = path, path.parent

    def error(self, where: str, msg: str) -> BuildSpecError:
        return BuildSpecError(f"{self.path.name} {where}: {msg}".replace(" : ", ": "))

    def known_keys(self, table: dict, allowed, where: str) -> None:
        bad = sorted(set(table) - set(allowed))
        if bad:
            raise self.error(where or "(top level)", f"unknown key(s) {', '.join(bad)}; the keys here are "
                             f"{', '.join(allowed)}.")

    def table(self, data: dict, key: str, where: str) -> dict:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, got {type(value).__name__}.")
        return value

    def tables(self, data: dict, key: str, required: bool = False) -> dict[str, dict]:
        group = self.table(data, key, f"[{key}]")
        if required and not group:
            raise self.error(f"[{key}]", f"the spec declares no {key}; add at least one [{key}.NAME] table.")
        for name, value in group.items():
            if not isinstance(value, dict):
                raise self.error(f"[{key}.{name}]", f"must be a table, got {type(value).__name__}.")
        return group

    def string(self, table: dict, key: str, where: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(f"{where} {key}", f"must be a non-empty string, got {value!r}.")
        return value

    def file(self, table: dict, key: str, where: str) -> Path:
        rel = self.string(table, key, where)
        path = (self.base / rel).resolve()
        if not path.is_file():
            raise self.error(f"{where} {key}", f"file {rel!r} does not exist (paths are relative to the spec's "
                             f"folder, {self.base}).")
        return path

    def options(self, table: dict, where: str, extra: tuple[str, ...]) -> dict[str, Any]:
        """CompileOptions fields of a model or variant table, type-checked; calibration as an absolute path."""
        fields = {f.name for f in dataclasses.fields(CompileOptions)} - NOT_IN_SPEC
        bad = sorted(set(table) - fields - set(extra))
        if bad:
            raise self.error(where, f"unknown key(s) {', '.join(bad)}; a {where.split('.')[0][1:]} table takes "
                             f"{', '.join(extra)} and these compile options: {', '.join(sorted(fields))}.")
        opts = {}
        for key, value in table.items():
            if key in extra:
                continue
            types = OPTION_TYPES.get(key)
            if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
                names = " or ".join(t.__name__ for t in types)
                raise self.error(f"{where} {key}", f"must be a {names}, got {value!r}.")
            opts[key] = value
        if "input_shapes" in opts:
            opts["input_shapes"] = self.input_shapes(opts["input_shapes"], f"{where} input_shapes")
        if "calibration" in opts:
            opts["calibration"] = str(self.file(table, "calibration", where))
        return opts

    def input_shapes(self, shapes: dict, where: str) -> dict[str, list[int]]:
        out = {}
        for name, dims in shapes.items():
            dims = [dims] if isinstance(dims, int) and not isinstance(dims, bool) else dims
            if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                     for d in dims):
                raise self.error(f"{where}.{name}", f"must be a list of positive integers (e.g. [1, 128]), or one "
                                 f"integer for a named dimension (batch = 4); got {dims!r}.")
            out[name] = list(dims)
        return out

    def model(self, name: str, table: dict) -> ModelEntry:
        where = f"[models.{name}]"
        if "path" not in table:
            raise self.error(where, "has no path; give the model file: path = \"models/NAME.onnx\".")
        return ModelEntry(name, self.file(table, "path", where), self.options(table, where, ("path",)))

    def target(self, name: str, table: dict) -> TargetEntry:
        target = self.string(table, "target", f"[targets.{name}]", name)
        return TargetEntry(name, target, {k: v for k, v in table.items() if k != "target"})

    def variant(self, name: str, table: dict) -> VariantEntry:
        where = f"[variants.{name}]"
        tops = table.get("target_options", {})
        if not isinstance(tops, dict):
            raise self.error(f"{where} target_options", f"must be a table, got {tops!r}.")
        from aotc.targets.base import all_target_options
        known = {o.name for o in all_target_options()}
        bad = sorted(set(tops) - known)
        if bad:
            raise self.error(f"{where} target_options", f"no target has option(s) {', '.join(bad)}; target "
                             f"options are {', '.join(sorted(known))} (`aotc targets` says which target has which).")
        return VariantEntry(name, self.options(table, where, ("target_options",)), dict(tops))

    def artifacts(self, entries, models, targets, variants) -> list[Artifact]:
        if entries is None:
            entries, explicit = [{}], False
        elif not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self.error("[[artifacts]]", "must be an array of tables ([[artifacts]] entries).")
        else:
            explicit = True
        found: dict[str, Artifact] = {}
        for i, entry in enumerate(entries, 1):
            where = f"[[artifacts]] #{i}" if explicit else "(models x targets x variants)"
            self.known_keys(entry, ARTIFACT_KEYS, where)
            picks = [self.pick(entry, key, group, where) for key, group in
                     (("model", models), ("target", targets), ("variant", variants))]
            combos = [(m, t, v) for m in picks[0] for t in picks[1] for v in picks[2]]
            if "name" in entry and len(combos) != 1:
                raise self.error(f"{where} name", f"names one artifact, but the entry makes {len(combos)}; give "
                                 "one model, target and variant, or drop name.")
            for m, t, v in combos:
                name = entry["name"] if "name" in entry else "-".join((m.name, t.name, v.name))
                if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                    raise self.error(f"{where} name", f"{name!r} is not a folder name for the bundle.")
                if name in found:
                    raise self.error(where, f"makes artifact {name!r} twice (also {found[name].where}).")
                found[name] = Artifact(name, m, t, v, f"{self.path.name} {where}")
        return [found[n] for n in sorted(found)]

    def pick(self, entry: dict, key: str, group: dict, where: str) -> list:
        if key not in entry:
            return [group[n] for n in sorted(group)]
        names = entry[key] if isinstance(entry[key], list) else [entry[key]]
        plural = {"model": "models", "target": "targets", "variant": "variants"}[key]
        for n in names:
            if n not in group:
                raise self.error(f"{where} {key}", f"{n!r} is not declared; the spec's {plural} are "
                                 f"{', '.join(sorted(group))}.")
        return [group[n] for n in names]

    def check_target(self, art: Artifact) -> None:
        """The target and its options, configured the way the worker will (unknown names and bad values)."""
        from aotc.targets.base import get_target
        try:
            get_target(art.target.target, **art.target_options())
        except AotcError as e:
            raise self.error(f"[targets.{art.target.name}]", f"{e}") from None

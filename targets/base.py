"""The Target interface and the target registry.

A target is a registration, not a branch. Each target package (one folder
under targets/) registers a `TargetSpec` from its `__init__.py`: the name and
aliases, a typed options schema (what `aotc compile --help` and `aotc
targets` show), whether this machine is one it runs natively (`--target
host`), and two lazily imported entry points: the factory that builds a
configured `Target`, and how `aotc run` executes its bundles here. Keeping
the entry points as "module:function" strings keeps the registry cheap to
read: `aotc targets` imports no TVM and no vendor SDK.

A configured `Target` says what it can do (`capabilities`, read by
lowerings instead of testing names), which target passes the pass manager
runs after the generic pipeline (`pipeline`), which nodes it can run
(`supports`, so int8 the target lacks stays in float) and how it turns the
final graph into bundle files (`compile`). The generic bundle writer
(targets/bundle.py) adds the manifest, checksums and the atomic rename.

Adding a target is one new folder whose `__init__.py` calls
`register_target`; nothing else in aotc names it.
"""
from __future__ import annotations

import importlib
import pkgutil
import shutil
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aotc.compiler.errors import AotcError
from aotc.compiler.ir import Graph, Node


class UnknownTargetError(AotcError):
    """The --target name (or one of its options) is not one aotc knows."""


class CannotRunHereError(AotcError):
    """This machine cannot execute a bundle of this target; the message says what it needs."""


@dataclass(frozen=True)
class TargetOption:
    """One option of a target's schema. `name` is the Python keyword (`mcpu`); the CLI flag is `--mcpu`."""
    name: str
    help: str
    type: type = str                  # str, int, float or bool
    choices: tuple[str, ...] = ()     # a closed set, shown in --help
    multiple: bool = False            # repeatable; the value is a tuple
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any, target: str) -> Any:
        """The option's value in its declared type, or a clear error naming the target and the flag."""
        if value is None:
            return self.default
        if self.multiple:
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            return tuple(self._one(v, target) for v in items)
        return self._one(value, target)

    def _one(self, value: Any, target: str) -> Any:
        try:
            v = self.type(value) if not (self.type is bool and isinstance(value, str)) else \
                {"true": True, "1": True, "false": False, "0": False}[value.lower()]
        except (TypeError, ValueError, KeyError):
            raise UnknownTargetError(f"{self.flag} {value!r} for target {target} is not a "
                                     f"{self.type.__name__}.") from None
        if self.choices and v not in self.choices:
            raise UnknownTargetError(f"{self.flag} {value!r} for target {target} is not one of "
                                     f"{', '.join(self.choices)}.")
        return v


@dataclass(frozen=True)
class Capabilities:
    """What a configured target offers; lowerings and passes read these instead of testing target names."""
    level: str = "kernels"            # "kernels": aotc generates and links every kernel; "graph": the graph is
    #                                   translated for a vendor compiler/runtime (Core ML, Ascend)
    vector_lanes_f32: int = 0         # float32 lanes of one vector register
    int8_dot: str | None = None       # the int8 dot-product instruction the int8 kernels use ("vpdpbusd", "sdot")
    dtypes: tuple[str, ...] = ("float32",)
    conv_block: int = 0               # channels per block of the NCHWc convolution layout (0: NCHW)

    def as_dict(self) -> dict:
        return {"level": self.level, "vector_lanes_f32": self.vector_lanes_f32, "int8_dot": self.int8_dot,
                "dtypes": list(self.dtypes), "conv_block": self.conv_block}


@dataclass
class BuildContext:
    """What `Target.compile` gets besides the graph: a scratch folder, the bundle's identity, progress output."""
    workdir: Path
    model_id: str
    aotc_version: str
    progress: Callable[[str], None] = lambda msg: None
    max_memory: int | None = None  # bytes of run-time memory a bundle may need (None: the target's default)


@contextmanager
def scratch_build_context(model_id: str, aotc_version: str, progress: Callable[[str], None] | None,
                          max_memory: int | None):
    """A BuildContext over a scratch folder that is removed afterwards, whatever happens."""
    work = Path(tempfile.mkdtemp(prefix="aotc-build-"))
    try:
        yield BuildContext(work, model_id, aotc_version, progress or (lambda msg: None), max_memory=max_memory)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class TargetBuild:
    """What a target contributes to a bundle: its files (name -> bytes, beside manifest.json), the manifest
    fields it owns (e.g. arena_bytes, kernels) and a one-line summary for the CLI."""
    files: dict[str, bytes]
    manifest: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass
class BucketVariant:
    """One shape bucket of a bucketed compile: its name (b1_s16), the size of each bucketed dimension, the
    model's graph at those sizes after the pass pipeline, and its model id."""
    name: str
    sizes: dict[str, int]
    graph: Graph
    model_id: str


class BucketsUnsupportedError(AotcError):
    """The target has no shape buckets (yet)."""


class Target(ABC):
    """A configured target (a registration's factory makes one from the user's options)."""

    name: str
    description: str = ""
    capabilities: Capabilities = Capabilities()

    def manifest(self) -> dict:
        """The target as the manifest records it (name, options that change the code, capabilities)."""
        return {"name": self.name, "description": self.description, "capabilities": self.capabilities.as_dict()}

    def pipeline(self) -> list[tuple[str, dict]]:
        """Target passes, run by the PassManager after the generic pipeline and recorded in the manifest."""
        return []

    def toolchain_versions(self) -> dict[str, str]:
        """The tools this target compiles with and their versions ({"tvm": "0.27.0", "cc": "gcc (Debian ...)"}),
        only those it uses: `aotc build` keys its cache on them (targets/toolchains.py reads them)."""
        return {}

    def supports(self, node: Node) -> str | None:
        """None when this target runs `node` as it is; otherwise why not (one short clause)."""
        return None

    @abstractmethod
    def compile(self, graph: Graph, ctx: BuildContext) -> TargetBuild:
        """Turn the final graph into bundle files; raise AotcError (naming nodes) for what it cannot."""

    # Shape buckets (aotc compile --bucket): one bundle, one compiled variant per bucket, the runtime picking the
    # smallest that holds the inputs. A target that implements them overrides `compile_buckets`; the default
    # refuses. How each target maps them natively: kernel targets build one model.so per bucket over one shared
    # weights.bin (x86, arm64: CpuTarget.compile_buckets); CUDA would capture one CUDA graph per bucket in one
    # model.so; Core ML would give the ML Program `EnumeratedShapes`; Ascend would pass the buckets as
    # `--dynamic_dims` gears on the atc line. The generic side (aotc/buckets.py, targets/bucket_bundle.py,
    # runtime_stub/buckets.py) is shared.
    def compile_buckets(self, variants: list[BucketVariant], ctx: BuildContext) -> list[TargetBuild]:
        """One TargetBuild per variant, in order (each a complete single-shape bundle's files; files with the
        same bytes in every variant, such as a shared weights.bin, are stored once by the bundle writer)."""
        raise BucketsUnsupportedError(self.buckets_unsupported())

    def buckets_unsupported(self) -> str | None:
        """None when this target compiles shape buckets; otherwise the error message."""
        if type(self).compile_buckets is not Target.compile_buckets:
            return None
        have = ", ".join(s.name for s in target_specs() if _implements_buckets(s)) or "none"
        return (f"Target {self.name} does not implement shape buckets (--bucket/--buckets) yet (targets that do: "
                f"{have}); compile one bundle per shape with --input-shape instead.")


# -- the registry -------------------------------------------------------------------------------------------
class LoadedBundle(ABC):
    """A bundle ready to run on this machine (what a registration's loader returns)."""

    @abstractmethod
    def run(self, feeds: Mapping[str, Any]) -> dict:
        """{input name: array} -> {output name: array}."""

    def set_num_threads(self, n: int) -> None:
        """Threads for later runs (a loader whose runtime has no thread pool ignores it)."""


@dataclass(frozen=True)
class TargetSpec:
    """A target's registration.

    factory: "module:function", called as function(name, **options) -> Target.
    loader:  "module:function", called as function(bundle_dir, manifest, public_key=None) -> LoadedBundle (the
             signature and file hashes are already checked when a key is given): how `aotc run` and
             `aotc.load(...).run` execute the target's bundles here; it raises CannotRunHereError, saying what is
             missing, on a machine that cannot run them.
    host:    "module:function" -> options for this machine when it runs the target natively, else None
             (`--target host` takes the first match in `host_rank` order).
    aliases: other names, each with the options it implies (`arm64-neon-dotprod` = arm64-neon +dotprod).
    reference: "module:function", called as function(bundle_dir, feeds) -> outputs: a reference run of what the
             bundle hands a vendor compiler (e.g. its ONNX model in onnxruntime) for `aotc run --reference`;
             None where the target has none.
    """
    name: str
    description: str
    factory: str
    loader: str
    options: tuple[TargetOption, ...] = ()
    aliases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    host: str | None = None
    host_rank: int = 100
    reference: str | None = None

    def option(self, name: str) -> TargetOption | None:
        return next((o for o in self.options if o.name == name), None)


_REGISTRY: dict[str, TargetSpec] = {}
_loaded = False


def register_target(spec: TargetSpec) -> TargetSpec:
    for name in (spec.name, *spec.aliases):
        if name in _names() or name == "host":
            raise RuntimeError(f"target name {name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _names() -> set[str]:
    return {n for s in _REGISTRY.values() for n in (s.name, *s.aliases)}


def _load_all() -> None:
    """Import every target package (each registers itself), in name order so listings are stable."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from aotc import targets
    for info in sorted(pkgutil.iter_modules(targets.__path__), key=lambda m: m.name):
        if info.ispkg:
            importlib.import_module(f"aotc.targets.{info.name}")


def target_specs() -> list[TargetSpec]:
    _load_all()
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def resolve(entry: str) -> Callable:
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def find_spec(name: str) -> tuple[TargetSpec, dict[str, Any]]:
    """The registration behind a target name or alias, and the options the alias implies."""
    _load_all()
    for spec in _REGISTRY.values():
        if name == spec.name:
            return spec, {}
        if name in spec.aliases:
            return spec, dict(spec.aliases[name])
    known = ", ".join(["host"] + sorted(_names()))
    raise UnknownTargetError(f"Unknown target {name!r}; aotc knows: {known}. `aotc targets` lists them with their "
                             "options.")


def host_spec() -> tuple[TargetSpec, dict[str, Any]]:
    """The best registered target this machine runs natively."""
    import platform
    for spec in sorted(target_specs(), key=lambda s: (s.host_rank, s.name)):
        if spec.host is not None:
            options = resolve(spec.host)()
            if options is not None:
                return spec, dict(options)
    raise UnknownTargetError(f"--target host: aotc has no target that runs natively on this {platform.machine()} "
                             f"machine; name one with --target (`aotc targets` lists them).")


def get_target(name: str | Target = "host", **options: Any) -> Target:
    """A configured Target from a name or alias ("host": this machine's best) and the target's options.
    Options left as None take the target's defaults; an option the target does not have is an error."""
    if isinstance(name, Target):
        if any(v is not None for v in options.values()):
            raise UnknownTargetError("Give target options either to the Target object or as keywords, not both.")
        return name
    spec, implied = host_spec() if name == "host" else find_spec(name)
    given = {k: v for k, v in options.items() if v is not None and v != () and v != []}
    foreign = [k for k in given if spec.option(k) is None]
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(foreign))
        owners = sorted({s.name for s in target_specs() for k in foreign if s.option(k) is not None})
        where = f" (it applies to {', '.join(owners)})" if owners else ""
        raise UnknownTargetError(f"{flags} is not an option of target {spec.name}{where}.")
    values = {}
    for opt in spec.options:
        v = opt.convert(given.get(opt.name), spec.name)
        if opt.multiple and opt.name in implied:
            v = tuple(implied[opt.name]) + tuple(v or ())
        elif opt.name in implied and opt.name not in given:
            v = implied[opt.name]
        values[opt.name] = v
    return resolve(spec.factory)(spec.name, **values)


def loader_for(manifest: Mapping[str, Any]) -> Callable[..., LoadedBundle]:
    """How this machine loads a bundle with `manifest` (its target's registered loader)."""
    target = manifest.get("target") if isinstance(manifest, Mapping) else None
    name = target.get("name") if isinstance(target, Mapping) else None
    if not isinstance(name, str):
        raise UnknownTargetError("The bundle's manifest names no target; it was not written by aotc compile.")
    spec, _ = find_spec(name)
    return resolve(spec.loader)


def reference_runner_for(manifest: Mapping[str, Any]) -> Callable[..., dict]:
    """The bundle's target's reference run (`aotc run --reference`); an error for a target without one."""
    spec, _ = find_spec(manifest["target"]["name"]) if isinstance(manifest.get("target"), Mapping) else (None, None)
    if spec is None or spec.reference is None:
        have = ", ".join(s.name for s in target_specs() if s.reference) or "none"
        raise UnknownTargetError(f"--reference: target {spec.name if spec else '?'} has no reference run (targets "
                                 f"with one: {have}); run the bundle without --reference.")
    return resolve(spec.reference)


def describe_targets() -> list[dict]:
    """Every registered target with its aliases and options (what `aotc targets --json` prints)."""
    out = []
    for s in target_specs():
        out.append({"name": s.name, "description": s.description, "aliases": sorted(s.aliases),
                    "native_on_this_machine": s.host is not None and resolve(s.host)() is not None,
                    "options": [{"name": o.name, "flag": o.flag, "type": o.type.__name__, "help": o.help,
                                 "choices": list(o.choices), "multiple": o.multiple, "default": o.default}
                                for o in s.options]})
    return out


def all_target_options() -> list[TargetOption]:
    """The union of every target's options, one per name (what the CLI turns into flags)."""
    seen: dict[str, TargetOption] = {}
    for s in target_specs():
        for o in s.options:
            seen.setdefault(o.name, o)
    return list(seen.values())


def _implements_buckets(spec: TargetSpec) -> bool:
    """Whether the registration's Target class overrides compile_buckets (its factory module is imported; that
    is cheap for every registered target, whose heavy imports are lazy)."""
    module = importlib.import_module(spec.factory.partition(":")[0])
    return any(isinstance(c, type) and issubclass(c, Target) and c.compile_buckets is not Target.compile_buckets
               for c in vars(module).values())


def option_owners(name: str) -> list[str]:
    return [s.name for s in target_specs() if s.option(name) is not None]


class BundleRunError(AotcError):
    """A bundle could not be loaded or run (the runtime's message says why)."""


class InProcessBundle(LoadedBundle):
    """The default loader's result: the thin runtime (runtime_stub), in this process."""

    def __init__(self, bundle_dir, manifest=None, public_key=None):
        from aotc import runtime_stub
        self._errors = runtime_stub.RuntimeStubError
        try:
            self.model = runtime_stub.load(bundle_dir, public_key=public_key)  # the C loader reads verified bytes
        except runtime_stub.RuntimeStubError as e:
            raise BundleRunError(f"{e}.") from None

    def run(self, feeds):
        try:
            return self.model.run(feeds)
        except self._errors as e:
            raise BundleRunError(f"{e}.") from None

    def set_num_threads(self, n: int) -> None:
        self.model.set_num_threads(n)

"""The op registry: every op is defined once, as a subclass of `OpDef`, with
its attribute schema, shape/dtype inference and a NumPy reference kernel.

Modelled on onnx.reference (one small class per op with a NumPy `run`) and on
JAX primitives (abstract evaluation beside the implementation). Static
parameters that ONNX passes as constant inputs (Reshape's shape, Slice's
starts, ...) are attributes here, so every shape in the IR is static.
"""
from __future__ import annotations

import enum
from typing import Any, ClassVar, Sequence

import numpy as np

from ..dtypes import DType
from ..errors import AotcError, ShapeError

REQUIRED = object()

# Attribute kinds: how a value is normalized and (by the exporter) written.
INT, FLOAT, STRING, INTS, FLOATS, TENSOR = "int", "float", "string", "ints", "floats", "tensor"


class Attr:
    def __init__(self, kind: str, default: Any = REQUIRED):
        self.kind = kind
        self.default = default

    def normalize(self, v: Any) -> Any:
        """The value in its canonical Python form; OpDefinitionError (naming the kind wanted) if it is
        not one. Values come from model files, so a list where a number belongs, a NaN where an
        integer belongs or a non-UTF-8 string are user errors, not crashes."""
        if v is None:
            return None
        if self.kind in (INT, FLOAT):
            what = "a single integer" if self.kind == INT else "a single number"
            arr = _numeric(v, what)
            if arr.size != 1:
                raise OpDefinitionError(f"must be {what}, got {arr.size} values")
            return _ints(arr)[0] if self.kind == INT else float(arr.reshape(-1)[0])
        if self.kind == STRING:
            if isinstance(v, bytes):
                try:
                    return v.decode()
                except UnicodeDecodeError:
                    raise OpDefinitionError(f"must be UTF-8 text, got bytes {v[:20]!r}") from None
            if not isinstance(v, (str, enum.Enum)):
                raise OpDefinitionError(f"must be a string, got {type(v).__name__}")
            return str(v)
        if self.kind == INTS:
            return _ints(_numeric(v, "a list of integers"))
        if self.kind == FLOATS:
            return [float(x) for x in _numeric(v, "a list of numbers").reshape(-1)]
        if self.kind == TENSOR:
            arr = np.asarray(v)
            if arr.dtype.kind in "OSUc":
                raise OpDefinitionError(f"must be a numeric tensor, got {arr.dtype}")
            return arr
        raise ValueError(self.kind)


def _numeric(v: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(v)
    except ValueError:  # ragged nested lists
        raise OpDefinitionError(f"must be {what}, got {str(v)[:40]}") from None
    if arr.dtype.kind not in "biuf" and arr.dtype != DType.bfloat16.numpy:
        raise OpDefinitionError(f"must be {what}, got {type(v).__name__} {str(v)[:40]}")
    return arr


def _ints(arr: np.ndarray) -> list[int]:
    flat = arr.reshape(-1)
    if flat.dtype.kind == "f" or flat.dtype == DType.bfloat16.numpy:
        flat = flat.astype(np.float64)
        if not np.all(np.isfinite(flat) & (flat == np.round(flat))) or np.any(np.abs(flat) >= 2.0 ** 63):
            raise OpDefinitionError(f"must be whole numbers, got {flat[:5].tolist()}")
    return [int(x) for x in flat]


class OpDefinitionError(AotcError):
    """A node's attributes or inputs do not fit its op's definition."""


class OpDef:
    """Base of every op definition. Subclasses set `name`, `attrs`,
    `num_inputs` and implement `infer` and `run`."""

    name: ClassVar[str]
    attrs: ClassVar[dict[str, Attr]] = {}
    num_inputs: ClassVar[tuple[int, int]] = (1, 1)  # (min, max) inputs
    # Positions below min that may hold None (an omitted optional input before a present one).
    optional_inputs: ClassVar[frozenset[int]] = frozenset()
    num_outputs: ClassVar[int] = 1
    onnx_op: ClassVar[bool] = True  # False for aotc's own ops (exported in the ai.aotc domain)
    domain: ClassVar[str] = ""  # another vendor's ONNX domain the op is imported from (com.microsoft)

    def normalize_attrs(self, attrs: dict[str, Any], node_name: str = "") -> dict[str, Any]:
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise OpDefinitionError(
                f"Node {node_name!r} ({self.name}) has attribute(s) {', '.join(unknown)} that aotc's "
                f"{self.name} does not know (known: {', '.join(sorted(self.attrs)) or 'none'}).")
        out = {}
        for k, spec in self.attrs.items():
            if k in attrs and attrs[k] is not None:
                try:
                    out[k] = spec.normalize(attrs[k])
                except OpDefinitionError as e:
                    raise OpDefinitionError(f"Node {node_name!r} ({self.name}): attribute {k!r} {e}.") from None
            elif spec.default is REQUIRED:
                raise OpDefinitionError(f"Node {node_name!r} ({self.name}) is missing required attribute {k!r}.")
            else:
                out[k] = spec.default
        return out

    def infer(self, inputs: Sequence[Any], attrs: dict[str, Any]) -> list[tuple[tuple[int, ...], DType]]:
        """Output (shape, dtype) pairs from the inputs' Values (shape, dtype, const)."""
        raise NotImplementedError

    def run(self, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        """The NumPy reference kernel."""
        raise NotImplementedError

    # The op reads only the parts of its first input that reach the output (Gather, Slice): counted as output
    # bytes, not the whole input, in bytes moved (a 30k-row embedding table is not streamed per lookup).
    reads_part_of_input0: ClassVar[bool] = False
    # The pass of the default pipeline that rewrites this op into others before any target lowers it (ONNX's
    # QOperator ops become Q/DQ around float ops); such an op needs a reference kernel but no target kernel.
    rewritten_by: ClassVar[str | None] = None

    def flops(self, inputs: Sequence[Any], outputs: Sequence[Any], attrs: dict[str, Any]) -> int:
        """Floating-point operations one execution performs (multiply-add = 2)."""
        return 0


_REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    if cls.name in _REGISTRY:
        raise RuntimeError(f"op {cls.name} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OpDefinitionError(f"aotc has no op named {name!r}.") from None


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def registered_ops() -> list[str]:
    return sorted(_REGISTRY)


def ops_targets_see() -> list[str]:
    """The registered ops a target may be asked to lower: all but those the default pipeline rewrites."""
    return [name for name in registered_ops() if _REGISTRY[name].rewritten_by is None]


# -- helpers shared by the op families ---------------------------------------
def broadcast_shapes(*shapes: Sequence[int], where: str = "") -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise ShapeError(f"{where}: shapes {', '.join(str(list(s)) for s in shapes)} do not broadcast "
                         "(NumPy rules).") from None


def require_present(inputs: Sequence[Any], where: str) -> None:
    """Variadic ops have no optional inputs: an omitted one (ONNX's empty name) is an error."""
    missing = [i for i, v in enumerate(inputs) if v is None]
    if missing:
        raise ShapeError(f"{where}: input(s) #{', #'.join(map(str, missing))} are empty; every input of "
                         f"{where} must be a tensor.")


def norm_axis(axis: int, rank: int, where: str = "") -> int:
    """`axis` in [0, rank). A scalar has no axis: every op indexing a shape with one refuses it."""
    if not -rank <= axis < rank:
        raise ShapeError(f"{where}: axis {axis} is out of range for a rank-{rank} tensor.")
    return axis % rank


def as_out(x: Any, dtype: np.dtype) -> np.ndarray:
    """Kernels return arrays of exactly the inferred dtype (NumPy promotes freely)."""
    return np.asarray(x).astype(dtype, copy=False)

"""The op registry: every op is defined once, as a subclass of `OpDef`, with
its attribute schema, shape/dtype inference and a NumPy reference kernel.

Modelled on onnx.reference (one small class per op with a NumPy `run`) and on
JAX primitives (abstract evaluation beside the implementation). Static
parameters that ONNX passes as constant inputs (Reshape's shape, Slice's
starts, ...) are attributes here, so every shape in the IR is static.
"""
from __future__ import annotations

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
        if v is None:
            return None
        if self.kind == INT:
            return int(v)
        if self.kind == FLOAT:
            return float(v)
        if self.kind == STRING:
            return v.decode() if isinstance(v, bytes) else str(v)
        if self.kind == INTS:
            return [int(x) for x in np.asarray(v).reshape(-1)]
        if self.kind == FLOATS:
            return [float(x) for x in np.asarray(v).reshape(-1)]
        if self.kind == TENSOR:
            return np.asarray(v)
        raise ValueError(self.kind)


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

    def normalize_attrs(self, attrs: dict[str, Any], node_name: str = "") -> dict[str, Any]:
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise OpDefinitionError(
                f"Node {node_name!r} ({self.name}) has attribute(s) {', '.join(unknown)} that aotc's "
                f"{self.name} does not know (known: {', '.join(sorted(self.attrs)) or 'none'}).")
        out = {}
        for k, spec in self.attrs.items():
            if k in attrs and attrs[k] is not None:
                out[k] = spec.normalize(attrs[k])
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


def norm_axis(axis: int, rank: int, where: str = "") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{where}: axis {axis} is out of range for a rank-{rank} tensor.")
    return axis % rank if rank else 0


def as_out(x: Any, dtype: np.dtype) -> np.ndarray:
    """Kernels return arrays of exactly the inferred dtype (NumPy promotes freely)."""
    return np.asarray(x).astype(dtype, copy=False)

"""Errors aotc reports to users.

Every error a user can cause (bad model, bad shapes, bad flags) derives from
`AotcError`; the CLI prints its message as one paragraph and exits with code 2.
Anything else is a bug in aotc and keeps its traceback.
"""
from __future__ import annotations


class AotcError(Exception):
    """A problem with the user's input, explained in a single paragraph."""

    exit_code = 2


class ModelLoadError(AotcError):
    """The model file is missing, truncated, or not a model."""


class UnsupportedOpsError(AotcError):
    """The model uses op types aotc has no definition for."""

    def __init__(self, unsupported: dict[str, list[str]], counts: dict[str, int] | None = None):
        self.unsupported = unsupported
        counts = counts or {k: len(v) for k, v in unsupported.items()}
        parts = []
        for op in sorted(unsupported):
            names = unsupported[op]
            shown = ", ".join(repr(n) for n in names[:3])
            more = f" and {counts[op] - 3} more" if counts[op] > 3 else ""
            parts.append(f"{op} ×{counts[op]} (e.g. {shown}{more})")
        super().__init__(
            f"The model uses {len(unsupported)} op type(s) aotc does not support: "
            + "; ".join(parts)
            + ". Replace them in the exporter (e.g. a different torch.onnx opset or module), "
            "or open an issue naming these ops. `aotc inspect MODEL` lists every op the model uses."
        )


class ShapeError(AotcError):
    """Static shapes are missing or inconsistent."""


class InputError(AotcError):
    """Inputs given at run time do not match the graph's inputs."""


class VerificationError(AotcError):
    """The IR graph is malformed (a compiler bug if it follows a pass)."""

    exit_code = 3

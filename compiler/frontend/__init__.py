"""aotc's PyTorch frontend: trace torch.nn.Modules and Python functions into the IR, with
Python control flow on tensors converted to torch.where (see rewrite.py for how).

Import-light on purpose: `compiler` re-exports `trace` and `bounded` without importing torch.
"""
from __future__ import annotations

from .errors import (BranchMismatchError, DataDependentValueError, LoopBoundError, ModelSpecError,  # noqa: F401
                     SideEffectError, TraceError, UnboundedLoopError, UnsupportedControlFlowError)


def bounded(cond, max_iters: int):
    """Mark a `while` loop whose condition depends on tensors as running at most `max_iters` times:

        while aotc.bounded(x.abs().max() > 1, max_iters=8):
            x = x / 2

    When traced, the loop is unrolled `max_iters` times and each iteration's results are kept
    only while the condition holds, so the compiled model matches eager PyTorch for every input
    that needs at most `max_iters` iterations (tracing fails if the example inputs need more).
    Run eagerly, it is just `cond`: the bound is the user's promise.
    """
    return cond


_TORCH_PURPOSE = "Tracing PyTorch models (aotc trace, aotc compile FILE.py:factory, aotc.trace)"


def _require_torch() -> None:
    from ..optional_dependencies import require
    require("torch", _TORCH_PURPOSE, extra="torch")


def trace(model_or_fn, example_inputs, **kwargs):
    _require_torch()
    from .tracer import trace as _trace
    return _trace(model_or_fn, example_inputs, **kwargs)


trace.__doc__ = "Trace a torch.nn.Module or a Python function into an aotc Graph (see frontend.tracer.trace)."


def load_python_model(spec: str, example_inputs, **kwargs):
    """`FILE.py:factory` + {input name: example array} -> the traced IR graph."""
    _require_torch()  # before the user's file, whose own `import torch` would fail with no hint
    from .loader import load_python_model as _load
    return _load(spec, example_inputs, **kwargs)


def parse_example_inputs(specs):
    """['input_ids=1x128:int64', 'x=data.npy', ...] -> {name: example array} (see loader.py)."""
    from .loader import parse_example_inputs as _parse
    return _parse(specs)


def is_python_model_spec(model: str) -> bool:
    """Whether a model argument is `path/to/file.py:factory` (trace it) rather than a model file."""
    path, sep, attr = model.rpartition(":")
    return bool(sep and attr and path.endswith(".py") and attr.isidentifier())


def converted_source(fn):
    """The rewritten Python source aotc traces in place of `fn` (None if it runs unconverted)."""
    from .convert import converted_source as _src
    return _src(fn)

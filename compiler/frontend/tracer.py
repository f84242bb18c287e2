"""`trace`: a torch.nn.Module or a Python function over tensors → an aotc IR graph.

The user's code is converted (control flow on tensors → torch.where), run under the trace
guard and recorded by torch.onnx.export's TorchScript tracer (opset 17, in memory); the
ONNX model is then imported with `load_onnx`, so a traced model goes through exactly the
pipeline an ONNX file does. The legacy tracer is the right recorder here: it records the
one path the converted program takes, and conversion plus the guard make that path the
same for every input; torch.export would refuse the data-dependent branches it never sees
converted, and adds nothing for static shapes.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import traceback
import warnings
from typing import Mapping, Sequence

import numpy as np

from ..errors import AotcError
from ..ir import Graph
from .errors import TraceError

OPSET = 17


def _as_tensor(torch, v):
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    return v


def _as_tensors(torch, v):
    """NumPy arrays (also inside tuples, lists and dicts) as tensors."""
    if isinstance(v, (tuple, list)) and not hasattr(v, "_fields"):
        return type(v)(_as_tensors(torch, x) for x in v)
    if isinstance(v, dict):
        return {k: _as_tensors(torch, x) for k, x in v.items()}
    return _as_tensor(torch, v)


def _leaves(value, name: str):
    """(graph input name, tensor) for every tensor in an example value, nested tuples, lists and
    dicts included (`pair` = (a, b) gives pair_0, pair_1)."""
    import torch
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{name}_{i}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{name}_{k}")


def _rebuild(value, it):
    """`value` with its tensors, in _leaves order, replaced by the next ones from `it`."""
    import torch
    if isinstance(value, torch.Tensor):
        return next(it)
    if isinstance(value, (tuple, list)):
        items = [_rebuild(v, it) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _rebuild(v, it) for k, v in value.items()}
    return value


def _param_leaves(bound: inspect.BoundArguments):
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            for k, v in value.items():
                yield from _leaves(v, k)
        else:  # *args: args_0, args_1, ...
            yield from _leaves(value, name)


def _bind(fn, example_inputs) -> tuple[inspect.BoundArguments, list[str]]:
    """Bind the example inputs to the callable's parameters; the tensors among them become the
    graph's inputs, named after their parameters."""
    import torch
    sig = inspect.signature(fn)
    if isinstance(example_inputs, Mapping):
        args, kwargs = (), {k: _as_tensors(torch, v) for k, v in example_inputs.items()}
    else:
        if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
            example_inputs = (example_inputs,)
        args, kwargs = tuple(_as_tensors(torch, v) for v in example_inputs), {}
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        params = ", ".join(sig.parameters)
        raise AotcError(f"The example inputs do not fit {getattr(fn, '__qualname__', fn)}({params}): {e}. Give one "
                        "example per parameter, by position or by name.") from None
    names = [n for n, _ in _param_leaves(bound)]
    if not names:
        raise AotcError("None of the example inputs is a tensor, so the traced graph would have no inputs. Pass "
                        "torch tensors (or NumPy arrays) as example inputs.")
    if len(set(names)) != len(names):
        raise AotcError(f"The example inputs give graph input names more than once ({', '.join(names)}); pass "
                        "input_names=.")
    return bound, names


def _replace_tensors(bound: inspect.BoundArguments, tensors: Sequence) -> tuple[tuple, dict]:
    """The bound call with its tensors, in order, swapped for `tensors` (the tracer's inputs)."""
    it = iter(tensors)
    sig = bound.signature
    args, kwargs = [], {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        value = _rebuild(value, it)
        if kind == inspect.Parameter.VAR_POSITIONAL:
            args += list(value)
        elif kind == inspect.Parameter.VAR_KEYWORD:
            kwargs.update(value)
        elif kind == inspect.Parameter.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    return tuple(args), kwargs


def _flatten_outputs(out, path: str, acc: list) -> None:
    import torch
    from .undefined import Undefined
    if isinstance(out, torch.Tensor):
        acc.append((path, out))
    elif isinstance(out, Undefined):
        out.fail()
    elif isinstance(out, Mapping) or dataclasses.is_dataclass(out):
        items = out.items() if isinstance(out, Mapping) else \
            ((f.name, getattr(out, f.name)) for f in dataclasses.fields(out))
        for k, v in items:
            if v is not None:
                _flatten_outputs(v, f"{path}.{k}" if path else str(k), acc)
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            if v is not None:  # e.g. an optional output the model did not compute
                _flatten_outputs(v, f"{path}.{i}" if path else f"output_{i}", acc)
    else:
        raise TraceError(f"the traced function returns {type(out).__name__} {out!r} at output "
                         f"{path or 'output'}; a compiled graph's outputs are tensors.",
                         hint="Return tensors (or tuples/dicts of tensors).")


def _rename_outputs(model, names: Sequence[str]) -> None:
    """Give the ONNX graph's outputs the user-facing names (the tracer numbers them)."""
    old = [o.name for o in model.graph.output]
    if len(names) != len(old):
        raise AotcError(f"output_names has {len(names)} name(s), but the function returns {len(old)} tensor(s).")
    taken = {v for n in model.graph.node for v in list(n.input) + list(n.output)} | \
        {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    mapping = {}
    for o, new in zip(old, names):
        if o == new:
            continue
        if new in taken and new not in old:
            raise AotcError(f"Output name {new!r} clashes with a value inside the traced graph; choose another.")
        mapping[o] = new
    for n in model.graph.node:
        n.input[:] = [mapping.get(i, i) for i in n.input]
        n.output[:] = [mapping.get(i, i) for i in n.output]
    for o in model.graph.output:
        o.name = mapping.get(o.name, o.name)


def _as_user_error(e: Exception) -> Exception:
    """An exception from running the model (a shape error in its forward, a failing assert) is the
    user's to fix, not an aotc bug: name the user's innermost line. One the exporter raises after
    the model ran says so. One raised inside the frontend stays a bug (keeps its traceback)."""
    from .usercode import is_frontend_file, is_user_file
    tb = traceback.extract_tb(e.__traceback__)
    if tb and tb[-1].name == "__torch_function__" and (tb[-1].line or "").startswith("out = func("):
        tb = tb[:-1]  # the guard only forwarded a torch call that failed
    if tb and is_frontend_file(tb[-1].filename):
        return e
    msg = " ".join(f"{type(e).__name__}: {e}".split())
    frames = [f for f in tb if is_user_file(f.filename)]
    if frames:
        return TraceError(f"running the model to trace it raised {msg}", frames[-1].filename, frames[-1].lineno,
                          "The model must run on the example inputs (their shapes and dtypes become the "
                          "compiled graph's).")
    return AotcError(f"torch.onnx.export (TorchScript) could not record the traced model: {msg}. The model ran; "
                     "this is the exporter's limit (an op or construct it cannot express in ONNX opset 17).")


def _unwrap_error(e: BaseException) -> AotcError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, AotcError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def trace(model_or_fn, example_inputs, *, input_names: Sequence[str] | None = None,
          output_names: Sequence[str] | None = None, convert_modules: Sequence[str] = (),
          opset: int = OPSET, return_onnx: bool = False) -> Graph:
    """Trace a torch.nn.Module or a Python function over tensors into a static IR graph.

    `example_inputs`: a tensor, a tuple (by position) or a dict (by parameter name) of tensors or
    NumPy arrays; non-tensor values are baked in as constants. Their shapes and dtypes fix the
    graph's; their values matter only to check `aotc.bounded` loop bounds. The graph's inputs are
    named after the parameters, its outputs `output` (one tensor), `output_0`, ... (a tuple) or by
    key (a dict / ModelOutput), unless `output_names` says otherwise.

    Python control flow in the user's code (`if`/`elif`/`else`, early `return`, `and`/`or`/`not`,
    `x if c else y`, `while aotc.bounded(c, max_iters=n)`) whose condition depends on the inputs is
    compiled for every input (both branches, selected with torch.where); a condition that does
    not is decided while tracing, as Python would. Functions and methods the code calls are
    converted when they are the user's (outside site-packages and the standard library), or
    come from a module listed in `convert_modules`.

    `return_onnx=True` returns the recorded ONNX ModelProto instead of importing it (to run it
    elsewhere, e.g. in onnxruntime, or to see what the exporter produced).
    """
    import onnx
    import torch

    from . import convert
    from .guard import TraceGuard, guarding

    module = model_or_fn if isinstance(model_or_fn, torch.nn.Module) else None
    fn = model_or_fn.forward if module is not None else model_or_fn
    if not callable(fn):
        raise AotcError(f"trace() needs a torch.nn.Module or a function, not {type(model_or_fn).__name__}.")
    bound, names = _bind(fn, example_inputs)
    if input_names is not None:
        if len(input_names) != len(names):
            raise AotcError(f"input_names has {len(input_names)} name(s), but there are {len(names)} tensor "
                            f"inputs ({', '.join(names)}).")
        names = list(input_names)
    example_tensors = [t for _, t in _param_leaves(bound)]
    opts = convert.ConvertOptions(convert_modules)
    out_paths: list[str] = []

    class Traced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if module is not None:
                self.model = module  # its parameters become the graph's initializers

        def forward(self, *tensors):
            guard = TraceGuard()
            with guarding(guard):
                for t in tensors:
                    guard.mark_dynamic(t)
                args, kwargs = _replace_tensors(bound, tensors)
                out = convert.call(fn)(*args, **kwargs)
                if guard.refused is not None:  # raised, then swallowed by an `except` on the way
                    raise guard.refused
                flat: list = []
                _flatten_outputs(out, "", flat)
            if not flat:
                raise TraceError("the traced function returns no tensors.")
            out_paths[:] = [p for p, _ in flat]
            return tuple(t for _, t in flat) if len(flat) > 1 else flat[0][1]

    buf = io.BytesIO()
    wrapper = Traced()
    # A compiled model is for inference: trace in eval mode (dropout off, batch-norm running
    # statistics), and leave every submodule's mode as the user had it.
    modes = [(m, m.training) for m in wrapper.modules()]
    wrapper.eval()
    convert._OPTIONS.append(opts)
    try:
        if module is not None:
            for m in module.modules():
                convert.convert_module(m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            try:
                torch.onnx.export(wrapper, tuple(example_tensors), buf, input_names=names, opset_version=opset,
                                  dynamo=False, do_constant_folding=True)
            except Exception as e:
                user = _unwrap_error(e)
                if user is not None:
                    raise user.with_traceback(None) from None
                raise _as_user_error(e) from e
    finally:
        convert._OPTIONS.pop()
        for m in opts.patched:
            m.__dict__.pop("forward", None)
        for m, training in modes:
            m.training = training
    proto = onnx.load_model_from_string(buf.getvalue())
    final = list(output_names) if output_names is not None else \
        (["output"] if out_paths == [""] else [p or "output" for p in out_paths])
    _rename_outputs(proto, final)
    if return_onnx:
        return proto
    graph = _load(proto)
    graph.name = getattr(model_or_fn, "__name__", None) or type(model_or_fn).__name__
    return graph


def _load(proto) -> Graph:
    from ..onnx_import import load_onnx
    return load_onnx(proto)

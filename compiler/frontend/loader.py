"""The command-line way in: `FILE.py:factory` specs and `--example-input` specs.

    aotc trace model.py:make_model --example-input input_ids=1x128:int64 -o model.onnx

`make_model()` (no arguments) returns the torch.nn.Module (or function) to trace; it loads
its own weights. An example input is `NAME=DIMS[:DTYPE]` (DTYPE defaults to float32) or
`NAME=FILE.npy`. Generated values (ones for integers and booleans, a fixed normal draw for
floats) do not shape the compiled graph: control flow on them is converted, and the trace
guard refuses any Python decision on them. They matter only for checking `aotc.bounded`
loop bounds; give real data with a .npy file when that matters.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import AotcError
from ..ir import Graph
from .errors import ModelSpecError, display_path

_DTYPES = {"float32": np.float32, "float": np.float32, "f32": np.float32, "float16": np.float16,
           "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32, "int8": np.int8,
           "uint8": np.uint8, "bool": np.bool_}


def parse_example_input(spec: str) -> tuple[str, np.ndarray]:
    """'input_ids=1x128:int64' -> ('input_ids', ones((1, 128), int64)); 'x=data.npy' loads the file."""
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise ModelSpecError(f"--example-input {spec!r} is not NAME=DIMS[:DTYPE] or NAME=FILE.npy; write e.g. "
                             "--example-input input_ids=1x128:int64.")
    if rest.endswith(".npy"):
        if not os.path.isfile(rest):
            raise ModelSpecError(f"--example-input {spec!r}: file {rest!r} does not exist.")
        return name, np.load(rest)
    dims, _, dtype_name = rest.partition(":")
    dtype_name = dtype_name.strip().lower() or "float32"
    if dtype_name not in _DTYPES:
        raise ModelSpecError(f"--example-input {spec!r}: unknown dtype {dtype_name!r}; use one of "
                             f"{', '.join(sorted(_DTYPES))}.")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims.strip() not in ("", "scalar") else ()
    except ValueError:
        raise ModelSpecError(f"--example-input {spec!r}: cannot read dimensions {dims!r}; write them separated "
                             "by 'x', e.g. 1x128 (or 'scalar').") from None
    if any(d < 0 for d in shape):
        raise ModelSpecError(f"--example-input {spec!r} has a negative dimension.")
    dtype = _DTYPES[dtype_name]
    if np.issubdtype(dtype, np.floating):
        value = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    else:
        value = np.ones(shape, dtype)
    return name, value


def parse_example_inputs(specs: Sequence[str] | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for spec in specs or []:
        name, value = parse_example_input(spec)
        if name in out:
            raise ModelSpecError(f"--example-input gives {name!r} twice.")
        out[name] = value
    return out


def _import_file(path: Path):
    name = "aotc_user_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise ModelSpecError(f"{display_path(e.filename or str(path))}:{e.lineno}: syntax error: {e.msg}.") from None
    except Exception as e:
        del sys.modules[name]
        raise ModelSpecError(f"Importing {display_path(str(path))} raised {type(e).__name__}: {e}"
                             f"{_where(e, path)}.") from e
    finally:
        sys.path.remove(str(path.parent))
    return module


def _where(e: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.realpath(f.filename).startswith(
        str(path.resolve().parent))]
    return f" at {display_path(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""


def load_factory(spec: str):
    """Import FILE.py and call its factory; returns what the factory returns."""
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text or not attr:
        raise ModelSpecError(f"{spec!r} is not FILE.py:FACTORY; write e.g. models/net.py:make_model (FACTORY "
                             "is a function in the file that returns the module).")
    path = Path(path_text)
    if not path.is_file():
        raise ModelSpecError(f"Python file {path_text!r} does not exist (resolved from {os.getcwd()!r}).")
    module = _import_file(path)
    factory = getattr(module, attr, None)
    if factory is None:
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        raise ModelSpecError(f"{path_text} has no {attr!r}; functions and classes defined there: "
                             f"{', '.join(found) or 'none'}.")
    try:
        model = factory()
    except AotcError:
        raise
    except Exception as e:
        raise ModelSpecError(f"Calling {attr}() from {path_text} raised {type(e).__name__}: {e}"
                             f"{_where(e, path)}.") from e
    if not callable(model):
        raise ModelSpecError(f"{attr}() from {path_text} returned {type(model).__name__}, not a torch.nn.Module "
                             "or function.")
    return model


def load_python_model(spec: str, example_inputs: Mapping[str, np.ndarray], **trace_kwargs) -> Graph:
    """`FILE.py:factory` + {input name: example array} → the traced IR graph (what `aotc compile`
    and `aotc trace` call for a Python model)."""
    from .tracer import trace
    model = load_factory(spec)
    return trace(model, dict(example_inputs), **trace_kwargs)

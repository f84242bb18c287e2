"""Calibration data: sample inputs that data-driven passes run the model on
(attention-head importance today, INT8 range calibration next).

A pass never reads files. The caller loads the data once, puts it in the
`PassContext` the `PassManager` carries (`passes.PassContext(calibration=...)`),
and a pass asks the context for it with `context.calibration_feeds(graph)`:
a list of feeds, each a {input name: array} dict that matches the graph's
inputs exactly (names, shapes, dtypes), ready for `compiler.interpret`.

Calibration data may be given as

* a list of feeds (dicts) — each must match the model's inputs exactly;
* a mapping {name: array} (what `np.load` of an .npz gives), in one of two
  layouts, chosen per file:

  - **one key per input** (`input_ids`, `attention_mask`, ...). An array with
    the input's rank holds samples concatenated along axis 0: its length must
    be a multiple of the model's batch size B and it is cut into feeds of B
    rows (a batch-1 model takes one row per feed; this is what a tokenizer
    gives: `np.savez(f, input_ids=ids[N,S], attention_mask=mask[N,S])`).
    An array with one more leading axis is a stack of whole feeds,
    `arr[i]` being feed i (`np.stack` of N feeds: [N, *input shape]).
  - **one key per input and feed**: `NAME/0`, `NAME/1`, ... each one whole
    feed with exactly the input's shape; indices run from 0 without gaps.

  Every input needs the same number of feeds; dtypes must match exactly
  (no silent casts: int32 token ids for an int64 input are an error).

.npz files are read with `allow_pickle=False`: calibration data is arrays,
never code.
"""
from __future__ import annotations

import os
import re
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import AotcError
from .ir import Graph, Value

CalibrationData = Any  # Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]

_INDEXED = re.compile(r"^(.*)/(\d+)$")


class CalibrationError(AotcError):
    """Calibration data is missing, unreadable, or does not match the model's inputs."""


def load_calibration(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an .npz file of calibration arrays (see the module doc for the layouts)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise CalibrationError(f"Calibration file {p} does not exist.")
    try:
        npz = np.load(p, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CalibrationError(f"Calibration file {p} holds a single array; it must be an .npz archive "
                                   "with one array per model input (np.savez(path, input_ids=..., ...)).")
        with npz:
            data = {k: npz[k] for k in npz.files}
    except CalibrationError:
        raise
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise CalibrationError(f"Calibration file {p} could not be read without pickle ({e}); save plain numeric "
                               "arrays with np.savez.") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise CalibrationError(f"Calibration file {p} is not a readable .npz archive ({e}).") from None
    if not data:
        raise CalibrationError(f"Calibration file {p} is empty; it must hold one array per model input.")
    return data


def _describe_inputs(inputs: Sequence[Value]) -> str:
    return ", ".join(f"{v.name} {v.type_str}" for v in inputs)


def calibration_feeds(graph: Graph, data: CalibrationData, source: str = "calibration data"
                      ) -> list[dict[str, np.ndarray]]:
    """Normalize `data` (see the module doc) into feeds matching `graph`'s inputs; every problem
    found is named in one CalibrationError."""
    inputs = list(graph.inputs)
    expect = {v.name: v for v in inputs}
    hint = (f"The model takes {_describe_inputs(inputs)}; give per input either samples concatenated along axis 0, "
            "a stack of whole feeds [N, *shape], or keys NAME/0, NAME/1, ... (see compiler/calibration.py).")
    if isinstance(data, Mapping):
        feeds = _from_mapping(data, expect, source, hint)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        feeds = [dict(f) for f in data]
    else:
        raise CalibrationError(f"The {source} is a {type(data).__name__}; expected a mapping of arrays or a list "
                               f"of feeds. {hint}")
    if not feeds:
        raise CalibrationError(f"The {source} holds no samples. {hint}")
    problems: list[str] = []
    for i, feed in enumerate(feeds):
        where = f"feed {i}: " if len(feeds) > 1 else ""
        missing = [n for n in expect if n not in feed]
        extra = [n for n in feed if n not in expect]
        if missing:
            problems.append(f"{where}missing input(s) {', '.join(missing)}")
        if extra:
            problems.append(f"{where}unknown input(s) {', '.join(extra)}")
        for name, v in expect.items():
            if name in feed:
                arr = np.asarray(feed[name])
                if arr.dtype != v.dtype.numpy:
                    problems.append(f"{where}{name} has dtype {arr.dtype}, the model's input is {v.dtype}")
                if tuple(arr.shape) != v.shape:
                    problems.append(f"{where}{name} has shape {list(arr.shape)}, the model's input is {list(v.shape)}")
                feed[name] = arr
        if len(problems) >= 6:
            break
    if problems:
        raise CalibrationError(f"The {source} does not match the model's inputs: " + "; ".join(problems[:6])
                               + (" (and more)" if len(problems) > 6 else "") + f". {hint}")
    return feeds


def _from_mapping(data: Mapping[str, np.ndarray], expect: dict[str, Value], source: str, hint: str
                  ) -> list[dict[str, np.ndarray]]:
    indexed: dict[str, dict[int, np.ndarray]] = {}
    plain: dict[str, np.ndarray] = {}
    for key, arr in data.items():
        m = _INDEXED.match(key)
        if key not in expect and m and m.group(1) in expect:
            indexed.setdefault(m.group(1), {})[int(m.group(2))] = np.asarray(arr)
        else:
            plain[key] = np.asarray(arr)
    if indexed and plain:
        raise CalibrationError(f"The {source} mixes per-feed keys (NAME/i: {', '.join(sorted(indexed))}) with "
                               f"whole-input keys ({', '.join(sorted(plain))}); use one layout. {hint}")
    if indexed:
        counts = {name: len(d) for name, d in indexed.items()}
        problems = [f"{name} has indices {sorted(d)[:5]}{'...' if len(d) > 5 else ''}, not 0..{len(d) - 1}"
                    for name, d in indexed.items() if sorted(d) != list(range(len(d)))]
        if len(set(counts.values())) > 1:
            problems.append("inputs have different numbers of feeds (" +
                            ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
        missing = [n for n in expect if n not in indexed]
        if missing:
            problems.append(f"missing input(s) {', '.join(missing)}")
        if problems:
            raise CalibrationError(f"The {source} does not match the model's inputs: {'; '.join(problems)}. {hint}")
        n = next(iter(counts.values()))
        return [{name: indexed[name][i] for name in indexed} for i in range(n)]
    missing = [n for n in expect if n not in plain]
    extra = [n for n in plain if n not in expect]
    problems = []
    if missing:
        problems.append(f"missing input(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unknown key(s) {', '.join(extra)}")
    split: dict[str, list[np.ndarray]] = {}
    for name, v in expect.items():
        if name not in plain:
            continue
        arr = plain[name]
        if arr.dtype != v.dtype.numpy:
            problems.append(f"{name} has dtype {arr.dtype}, the model's input is {v.dtype}")
        if arr.ndim == v.rank + 1 and tuple(arr.shape[1:]) == v.shape:
            split[name] = list(arr)
        elif arr.ndim == v.rank and v.rank >= 1 and tuple(arr.shape[1:]) == v.shape[1:] and v.shape[0] > 0 \
                and arr.shape[0] % v.shape[0] == 0 and arr.shape[0] > 0:
            b = v.shape[0]
            split[name] = [arr[i:i + b] for i in range(0, arr.shape[0], b)]
        else:
            rows = f"[N*{v.shape[0]},{','.join(map(str, v.shape[1:]))}]" if v.rank else "[N]"
            problems.append(f"{name} has shape {list(arr.shape)}, which is neither samples along axis 0 {rows} "
                            f"nor a stack of feeds [N,{','.join(map(str, v.shape))}] for the input {v.type_str}")
    counts = {k: len(v) for k, v in split.items()}
    if len(set(counts.values())) > 1:
        problems.append("inputs give different numbers of feeds (" + ", ".join(f"{k} {v}" for k, v in counts.items())
                        + ")")
    if problems:
        raise CalibrationError(f"The {source} does not match the model's inputs: {'; '.join(problems)}. {hint}")
    n = next(iter(counts.values()), 0)
    return [{name: split[name][i] for name in split} for i in range(n)]

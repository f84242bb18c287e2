"""Runs any IR graph with the ops' NumPy reference kernels.

This is the semantic ground truth inside aotc: calibration, head-importance
scoring and every differential test go through it. An observer sees every
intermediate value as it is produced.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .errors import InputError
from .ir import Graph, Node

Observer = Callable[[Node, list[np.ndarray]], None]


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate input names, shapes and dtypes; every problem in one message."""
    problems = []
    expected = {v.name: v for v in graph.inputs}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing:
        problems.append(f"missing input(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unknown input(s) {', '.join(extra)} (the model's inputs are {', '.join(expected)})")
    out = {}
    for name, v in expected.items():
        if name not in feeds:
            continue
        arr = np.asarray(feeds[name])
        if arr.dtype != v.dtype.numpy:
            problems.append(f"input {name} has dtype {arr.dtype}, expected {v.dtype}")
        if tuple(arr.shape) != v.shape:
            problems.append(f"input {name} has shape {list(arr.shape)}, expected {list(v.shape)}")
        out[name] = arr
    if problems:
        raise InputError("Inputs do not match the model: " + "; ".join(problems) + ".")
    return out


def interpret(graph: Graph, feeds: Mapping[str, np.ndarray], observer: Observer | None = None,
              keep_all: bool = False) -> dict[str, np.ndarray]:
    """Execute `graph` on `feeds` ({input name: array}) and return {output name: array}.

    With `keep_all`, every intermediate value is returned too (by value name).
    Otherwise values are freed after their last use, so big models fit.

    numpy's BLAS runs on one thread here: a multi-threaded sgemm sums in an order that depends on the
    thread count (MiniLM's outputs moved by 1.3e-5 between 1 and 2 threads), and what the interpreter
    computes decides INT8 scales and pruned heads at compile time, so a bundle would depend on the
    compiling machine's core count; the reference is also the same on every machine.
    """
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        return _interpret(graph, feeds, observer, keep_all)


def _interpret(graph: Graph, feeds: Mapping[str, np.ndarray], observer: Observer | None,
               keep_all: bool) -> dict[str, np.ndarray]:
    env: dict[str, np.ndarray] = dict(check_feeds(graph, feeds))
    for name, v in graph.initializers.items():
        env[name] = v.const
    last_use: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v is not None:
                last_use[v.name] = i
    keep = {v.name for v in graph.outputs}
    for i, node in enumerate(graph.nodes):
        args = [env[v.name] if v is not None else None for v in node.inputs]
        results = node.op.run(args, node.attrs)
        for val, arr in zip(node.outputs, results):
            if arr.shape != val.shape or arr.dtype != val.dtype.numpy:
                raise AssertionError(f"reference kernel {node.op_type} for node {node.name!r} returned "
                                     f"{arr.dtype}{list(arr.shape)}, inferred {val.type_str}")
            env[val.name] = arr
        if observer is not None:
            observer(node, results)
        if not keep_all:
            for v in node.inputs:
                if v is not None and last_use.get(v.name) == i and v.name not in keep \
                        and v.name not in graph.initializers:
                    env.pop(v.name, None)
    if keep_all:
        return env
    return {v.name: env[v.name] for v in graph.outputs}

"""Ops that move data without arithmetic: Reshape, Transpose, Squeeze,
Unsqueeze, Flatten, Concat, Split, Slice, Gather, Expand, Tile, Trilu, and
the shape-computing ops (Shape, Size, ConstantOfShape, Range) that the
importer folds away once shapes are static."""
from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..errors import ShapeError
from .registry import (INT, INTS, TENSOR, Attr, OpDef, as_out, broadcast_shapes, norm_axis, register,
                       require_present)


def _contiguous(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy only when needed; unlike np.ascontiguousarray it keeps a 0-d array 0-d."""
    return np.require(a, requirements="C")


def _const_of(v, op: str, what: str) -> np.ndarray:
    if v.const is None:
        raise ShapeError(f"{op}'s {what} must be known at compile time, but it is computed from the model's "
                         "inputs. aotc needs static shapes: fix the input shapes with --input-shape.")
    return v.const


def _unique_axes(axes: list[int], op: str) -> list[int]:
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{op}: axes {axes} (normalized) name an axis twice.")
    return axes


def reshape_target(in_shape, shape, allowzero: int, where: str = "Reshape") -> tuple[int, ...]:
    out = [in_shape[i] if (d == 0 and not allowzero and i < len(in_shape)) else d for i, d in enumerate(shape)]
    total = int(np.prod(in_shape, dtype=np.int64))
    if out.count(-1) > 1:
        raise ShapeError(f"{where}: more than one -1 in target shape {list(shape)}.")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise ShapeError(f"{where}: cannot reshape {list(in_shape)} to {list(shape)}.")
        out[out.index(-1)] = total // known
    if int(np.prod(out, dtype=np.int64)) != total:
        raise ShapeError(f"{where}: cannot reshape {list(in_shape)} ({total} elements) to {list(shape)}.")
    return tuple(out)


@register
class Reshape(OpDef):
    name = "Reshape"
    attrs = {"shape": Attr(INTS), "allowzero": Attr(INT, 0)}

    def infer(self, inputs, attrs):
        return [(reshape_target(inputs[0].shape, attrs["shape"], attrs["allowzero"]), inputs[0].dtype)]

    def run(self, inputs, attrs):
        return [inputs[0].reshape(reshape_target(inputs[0].shape, attrs["shape"], attrs["allowzero"]))]


@register
class Transpose(OpDef):
    name = "Transpose"
    attrs = {"perm": Attr(INTS, None)}

    @staticmethod
    def perm(rank, attrs):
        p = attrs["perm"]
        return list(range(rank))[::-1] if p is None else p

    def infer(self, inputs, attrs):
        x = inputs[0]
        p = self.perm(x.rank, attrs)
        if sorted(p) != list(range(x.rank)):
            raise ShapeError(f"Transpose: perm {p} is not a permutation of {x.rank} axes.")
        return [(tuple(x.shape[i] for i in p), x.dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        return [_contiguous(np.transpose(x, self.perm(x.ndim, attrs)))]


@register
class Squeeze(OpDef):
    name = "Squeeze"
    attrs = {"axes": Attr(INTS, None)}

    @staticmethod
    def axes(shape, attrs):
        if attrs["axes"] is None:
            return [i for i, d in enumerate(shape) if d == 1]
        axes = _unique_axes([norm_axis(a, len(shape), "Squeeze") for a in attrs["axes"]], "Squeeze")
        for a in axes:
            if shape[a] != 1:
                raise ShapeError(f"Squeeze: axis {a} of shape {list(shape)} is not 1.")
        return axes

    def infer(self, inputs, attrs):
        x = inputs[0]
        axes = self.axes(x.shape, attrs)
        return [(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        return [np.squeeze(x, axis=tuple(self.axes(x.shape, attrs)))]


@register
class Unsqueeze(OpDef):
    name = "Unsqueeze"
    attrs = {"axes": Attr(INTS)}

    @staticmethod
    def out_shape(shape, axes):
        rank = len(shape) + len(axes)
        axes = sorted(_unique_axes([norm_axis(a, rank, "Unsqueeze") for a in axes], "Unsqueeze"))
        out, it = [], iter(shape)
        for i in range(rank):
            out.append(1 if i in axes else next(it))
        return tuple(out)

    def infer(self, inputs, attrs):
        return [(self.out_shape(inputs[0].shape, attrs["axes"]), inputs[0].dtype)]

    def run(self, inputs, attrs):
        return [inputs[0].reshape(self.out_shape(inputs[0].shape, attrs["axes"]))]


@register
class Flatten(OpDef):
    name = "Flatten"
    attrs = {"axis": Attr(INT, 1)}

    @staticmethod
    def out_shape(shape, axis):
        axis = axis + len(shape) if axis < 0 else axis  # ONNX: a negative axis counts from the rank, not rank + 1
        return (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))

    def infer(self, inputs, attrs):
        return [(self.out_shape(inputs[0].shape, attrs["axis"]), inputs[0].dtype)]

    def run(self, inputs, attrs):
        return [inputs[0].reshape(self.out_shape(inputs[0].shape, attrs["axis"]))]


@register
class Concat(OpDef):
    name = "Concat"
    attrs = {"axis": Attr(INT)}
    num_inputs = (1, 1 << 16)

    def infer(self, inputs, attrs):
        require_present(inputs, self.name)
        first = inputs[0]
        axis = norm_axis(attrs["axis"], first.rank, "Concat")
        for v in inputs[1:]:
            if v.rank != first.rank or v.dtype != first.dtype or any(
                    a != b for i, (a, b) in enumerate(zip(v.shape, first.shape)) if i != axis):
                raise ShapeError(f"Concat on axis {axis}: inputs {', '.join(x.type_str for x in inputs)} "
                                 "do not agree outside that axis.")
        shape = list(first.shape)
        shape[axis] = sum(v.shape[axis] for v in inputs)
        return [(tuple(shape), first.dtype)]

    def run(self, inputs, attrs):
        return [np.concatenate(inputs, axis=attrs["axis"])]


@register
class Split(OpDef):
    name = "Split"
    attrs = {"axis": Attr(INT, 0), "split": Attr(INTS, None), "num_outputs": Attr(INT, None)}
    num_outputs = 1 << 16

    @staticmethod
    def sizes(shape, attrs):
        axis = norm_axis(attrs["axis"], len(shape), "Split")
        n = shape[axis]
        if attrs["split"] is not None:
            if any(s < 0 for s in attrs["split"]):
                raise ShapeError(f"Split: sizes {attrs['split']} include a negative size.")
            if sum(attrs["split"]) != n:
                raise ShapeError(f"Split: sizes {attrs['split']} do not add up to {n}.")
            return axis, list(attrs["split"])
        k = attrs["num_outputs"] or 1
        if k < 1:
            raise ShapeError(f"Split: num_outputs is {k}; it must be at least 1.")
        chunk = -(-n // k)  # ceil, as ONNX-18 does for uneven splits
        if (k - 1) * chunk >= n > 0:
            # e.g. 5 into 4: chunks of 2 leave nothing (or less) for the last output; onnxruntime rejects it too.
            raise ShapeError(f"Split: {n} elements on axis {axis} cannot be split into {k} outputs of at most "
                             f"{chunk} with only the last one smaller.")
        sizes = [min(chunk, n - i * chunk) for i in range(k)]
        return axis, sizes

    def infer(self, inputs, attrs):
        x = inputs[0]
        axis, sizes = self.sizes(x.shape, attrs)
        return [(tuple(s if i == axis else d for i, d in enumerate(x.shape)), x.dtype) for s in sizes]

    def run(self, inputs, attrs):
        x = inputs[0]
        axis, sizes = self.sizes(x.shape, attrs)
        return [_contiguous(p) for p in np.split(x, np.cumsum(sizes)[:-1], axis=axis)]


def slice_index(shape, attrs) -> tuple[slice, ...]:
    idx = [slice(None)] * len(shape)
    axes = attrs["axes"] if attrs["axes"] is not None else list(range(len(attrs["starts"])))
    steps = attrs["steps"] if attrs["steps"] is not None else [1] * len(axes)
    for s, e, a, st in zip(attrs["starts"], attrs["ends"], axes, steps):
        a = norm_axis(a, len(shape), "Slice")
        if st == 0:
            raise ShapeError("Slice: a step of 0 is not allowed.")
        n = shape[a]
        # ONNX clamps out-of-range starts/ends (e.g. INT64_MAX for "to the end").
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            # A negative step clamps starts to [0, n-1] (a start before the first element means the first one,
            # not -1, which Python would read as the last) and ends to [-1, n-1] (-1: through element 0).
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
        idx[a] = slice(s, e if e >= 0 else None, st)
    return tuple(idx)


@register
class Slice(OpDef):
    name = "Slice"
    reads_part_of_input0 = True
    attrs = {"starts": Attr(INTS), "ends": Attr(INTS), "axes": Attr(INTS, None), "steps": Attr(INTS, None)}

    def infer(self, inputs, attrs):
        x = inputs[0]
        idx = slice_index(x.shape, attrs)
        shape = tuple(len(range(*sl.indices(d))) for sl, d in zip(idx, x.shape))
        return [(shape, x.dtype)]

    def run(self, inputs, attrs):
        return [_contiguous(inputs[0][slice_index(inputs[0].shape, attrs)])]


@register
class Gather(OpDef):
    name = "Gather"
    reads_part_of_input0 = True
    attrs = {"axis": Attr(INT, 0)}
    num_inputs = (2, 2)

    def infer(self, inputs, attrs):
        data, idx = inputs
        if idx.dtype not in (DType.int32, DType.int64):
            raise ShapeError(f"Gather: indices must be int32 or int64, got {idx.dtype}.")
        axis = norm_axis(attrs["axis"], data.rank, "Gather")
        n = data.shape[axis] if data.rank else 0
        if idx.const is not None and idx.const.size and (idx.const.min() < -n or idx.const.max() >= n):
            # constant indices fold at import: out of range is the model's error, found before running it
            raise ShapeError(f"Gather: constant indices {idx.const.reshape(-1)[:5].tolist()} are out of range "
                             f"[{-n}, {n}) on axis {axis}.")
        return [(data.shape[:axis] + idx.shape + data.shape[axis + 1:], data.dtype)]

    def run(self, inputs, attrs):
        data, idx = inputs
        axis = attrs["axis"] % data.ndim
        n = data.shape[axis]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"Gather: index out of range [{-n}, {n}) on axis {axis}.")
        return [np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)]


@register
class Expand(OpDef):
    name = "Expand"
    attrs = {"shape": Attr(INTS)}

    def infer(self, inputs, attrs):
        return [(broadcast_shapes(inputs[0].shape, attrs["shape"], where="Expand"), inputs[0].dtype)]

    def run(self, inputs, attrs):
        x = inputs[0]
        return [_contiguous(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(attrs["shape"]))))]


@register
class Tile(OpDef):
    name = "Tile"
    attrs = {"repeats": Attr(INTS)}

    def infer(self, inputs, attrs):
        x = inputs[0]
        if len(attrs["repeats"]) != x.rank:
            raise ShapeError(f"Tile: {len(attrs['repeats'])} repeats for a rank-{x.rank} tensor.")
        return [(tuple(d * r for d, r in zip(x.shape, attrs["repeats"])), x.dtype)]

    def run(self, inputs, attrs):
        return [np.tile(inputs[0], attrs["repeats"])]


@register
class Trilu(OpDef):
    name = "Trilu"
    attrs = {"upper": Attr(INT, 1), "k": Attr(INT, 0)}

    def infer(self, inputs, attrs):
        if inputs[0].rank < 2:
            raise ShapeError("Trilu needs a tensor of rank >= 2.")
        return [(inputs[0].shape, inputs[0].dtype)]

    def run(self, inputs, attrs):
        x, k = inputs[0], attrs["k"]
        return [np.triu(x, k) if attrs["upper"] else np.tril(x, k)]


@register
class Shape(OpDef):
    name = "Shape"
    attrs = {"start": Attr(INT, 0), "end": Attr(INT, None)}

    @staticmethod
    def dims(shape, attrs):
        return list(shape)[slice(attrs["start"], attrs["end"])]

    def infer(self, inputs, attrs):
        return [((len(self.dims(inputs[0].shape, attrs)),), DType.int64)]

    def run(self, inputs, attrs):
        return [np.array(self.dims(inputs[0].shape, attrs), dtype=np.int64)]


@register
class Size(OpDef):
    name = "Size"

    def infer(self, inputs, attrs):
        return [((), DType.int64)]

    def run(self, inputs, attrs):
        return [np.array(inputs[0].size, dtype=np.int64)]


@register
class ConstantOfShape(OpDef):
    """The ONNX shape input becomes the `shape` attribute; `value` a 1-element tensor."""
    name = "ConstantOfShape"
    attrs = {"shape": Attr(INTS), "value": Attr(TENSOR, None)}
    num_inputs = (0, 0)

    @staticmethod
    def fill(attrs):
        return np.zeros(1, np.float32) if attrs["value"] is None else attrs["value"].reshape(-1)[:1]

    def infer(self, inputs, attrs):
        if attrs["value"] is not None and attrs["value"].size != 1:
            raise ShapeError(f"ConstantOfShape: value must hold one element, it holds {attrs['value'].size}.")
        return [(tuple(attrs["shape"]), DType.from_numpy(self.fill(attrs).dtype))]

    def run(self, inputs, attrs):
        return [np.full(attrs["shape"], self.fill(attrs)[0], dtype=self.fill(attrs).dtype)]


@register
class Range(OpDef):
    """Only static ranges: start/limit/delta must be constants."""
    name = "Range"
    num_inputs = (3, 3)

    def infer(self, inputs, attrs):
        s, l, d = (_const_of(v, "Range", n) for v, n in zip(inputs, ("start", "limit", "delta")))
        if any(v.size != 1 for v in (s, l, d)):
            raise ShapeError("Range: start, limit and delta must each hold one value.")
        if d.item() == 0 or not all(np.isfinite(float(v.item())) for v in (s, l, d)):
            raise ShapeError(f"Range: start {s.item()}, limit {l.item()}, delta {d.item()}: the delta must be "
                             "non-zero and all three finite.")
        n = max(int(np.ceil((float(l.item()) - float(s.item())) / float(d.item()))), 0)
        return [((n,), inputs[0].dtype)]

    def run(self, inputs, attrs):
        s, l, d = inputs
        return [np.arange(s.item(), l.item(), d.item()).astype(s.dtype)]


@register
class GatherElements(OpDef):
    name = "GatherElements"
    reads_part_of_input0 = True
    attrs = {"axis": Attr(INT, 0)}
    num_inputs = (2, 2)

    def infer(self, inputs, attrs):
        data, idx = inputs
        norm_axis(attrs["axis"], data.rank, self.name)
        if idx.rank != data.rank:
            raise ShapeError(f"GatherElements: indices rank {idx.rank} differs from data rank {data.rank}.")
        return [(idx.shape, data.dtype)]

    def run(self, inputs, attrs):
        data, idx = inputs
        axis = attrs["axis"] % data.ndim
        idx = np.where(idx < 0, idx + data.shape[axis], idx)
        # Off the gather axis, indices may be shorter than data; take_along_axis would broadcast them instead.
        data = data[tuple(slice(None) if i == axis else slice(0, d) for i, d in enumerate(idx.shape))]
        return [np.take_along_axis(data, idx, axis=axis)]


@register
class GatherND(OpDef):
    name = "GatherND"
    reads_part_of_input0 = True
    attrs = {"batch_dims": Attr(INT, 0)}
    num_inputs = (2, 2)

    def infer(self, inputs, attrs):
        data, idx = inputs
        if idx.rank == 0:
            raise ShapeError("GatherND: indices must have rank 1 or more (the last axis indexes data).")
        b, k = attrs["batch_dims"], idx.shape[-1]
        if b + k > data.rank:
            raise ShapeError(f"GatherND: index depth {k} + batch_dims {b} exceeds data rank {data.rank}.")
        return [(idx.shape[:-1] + data.shape[b + k:], data.dtype)]

    def run(self, inputs, attrs):
        data, idx = inputs
        b = attrs["batch_dims"]
        batch = int(np.prod(data.shape[:b], dtype=np.int64))
        d = data.reshape((batch,) + data.shape[b:])
        i = idx.reshape((batch, -1, idx.shape[-1]))
        i = np.where(i < 0, i + np.array(d.shape[1:1 + idx.shape[-1]]), i)
        out = np.stack([d[j][tuple(i[j].T)] for j in range(batch)])
        shape = idx.shape[:-1] + data.shape[b + idx.shape[-1]:]
        return [_contiguous(out.reshape(shape))]

"""A NumPy evaluator of saved Core ML ML Programs: the numeric check of coreml bundles on machines without
Core ML (Linux). It reads the package as Core ML would — Manifest.json, the model spec (protobuf) and the
weight blobs — and evaluates the MIL operations aotc's lowering and coremltools' passes emit, following the
MIL op definitions (coremltools.converters.mil.mil.ops.defs, opsets iOS15-iOS18). It shares no code with
the lowering (it imports only NumPy, SciPy's erf and the spec's protobuf classes), so a mistake in the
lowering shows up as a difference from aotc's interpreter.

Precision: each op computes in float32 from its inputs and rounds its result to the type the spec declares
for its output, so an fp16 program is evaluated with fp16 storage between ops (what Core ML's GPU and Neural
Engine do; their accumulation inside an op may differ). `coremltools`' own `value_inference` is not used: it
lacks conv, batch_norm and the constexpr ops.

    outputs = MilPackage("bundle/model.mlpackage").run({"x": x})
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import scipy.special
from numpy.lib.stride_tricks import sliding_window_view


class MilEvalError(Exception):
    """The package holds something this evaluator does not know (an op, a dtype, a blob)."""


_NP = {"BOOL": np.bool_, "FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64, "INT8": np.int8,
       "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16,
       "UINT32": np.uint32, "UINT64": np.uint64}
_CAST = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_, "int8": np.int8,
         "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}
BLOB_SENTINEL = 0xDEADBEEF


class MilPackage:
    def __init__(self, path: str | Path):
        from coremltools.proto import MIL_pb2, Model_pb2
        self._mil = MIL_pb2
        self.path = Path(path)
        manifest = json.loads((self.path / "Manifest.json").read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        self.spec_path = self.path / "Data" / root["path"]
        self.spec = Model_pb2.Model()
        self.spec.ParseFromString(self.spec_path.read_bytes())
        func = self.spec.mlProgram.functions["main"]
        self.block = func.block_specializations[func.opset]
        self.inputs = {i.name: i for i in func.inputs}
        self.ops = list(self.block.operations)

    @property
    def op_types(self) -> list[str]:
        return [op.type for op in self.ops]

    # -- values ------------------------------------------------------------------------------------------
    def _dtype(self, tensor_type) -> np.dtype:
        name = self._mil.DataType.Name(tensor_type.dataType)
        if name not in _NP and name != "STRING":
            raise MilEvalError(f"data type {name} is not known to the evaluator")
        return np.dtype(_NP[name]) if name != "STRING" else np.dtype(object)

    def _shape(self, tensor_type) -> tuple[int, ...]:
        return tuple(d.constant.size for d in tensor_type.dimensions)

    def value(self, v) -> np.ndarray:
        """A MIL proto Value (immediate or in a weight blob) as a NumPy array."""
        tt = v.type.tensorType
        dt, shape = self._dtype(tt), self._shape(tt)
        if v.HasField("blobFileValue"):
            return self._blob(v.blobFileValue, dt, shape)
        t = v.immediateValue.tensor
        kind = t.WhichOneof("value")
        if kind == "strings":
            data = list(t.strings.values)
            return np.array(data[0] if not shape else data, dtype=object)
        if kind == "bytes":
            return np.frombuffer(t.bytes.values, dt).reshape(shape).copy()
        field = {"floats": t.floats, "ints": t.ints, "bools": t.bools, "longInts": t.longInts,
                 "doubles": t.doubles}[kind]
        return np.array(list(field.values)).astype(dt).reshape(shape)

    def _blob(self, ref, dt: np.dtype, shape) -> np.ndarray:
        """The MIL blob storage format: at `offset` a 64-byte record (sentinel, data type, size, data offset)."""
        name = ref.fileName.replace("@model_path/", "")
        data = (self.spec_path.parent / name).read_bytes()
        sentinel, _, size, offset = struct.unpack_from("<IIQQ", data, ref.offset)
        if sentinel != BLOB_SENTINEL:
            raise MilEvalError(f"no blob record at offset {ref.offset} of {name}")
        arr = np.frombuffer(data, dt, count=size // dt.itemsize, offset=offset)
        return arr.reshape(shape).copy()

    # -- evaluation --------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {}
        for name, spec in self.inputs.items():
            tt = spec.type.tensorType
            env[name] = np.asarray(feeds[name]).astype(self._dtype(tt)).reshape(self._shape(tt))
        for op in self.ops:
            args = _Args(self, op, env)
            if op.type not in OPS:
                raise MilEvalError(f"MIL op {op.type!r} is not known to the evaluator")
            outs = OPS[op.type](args)
            outs = outs if isinstance(outs, list) else [outs]
            for spec, out in zip(op.outputs, outs):
                tt = spec.type.tensorType
                dt = self._dtype(tt)
                with np.errstate(over="ignore", invalid="ignore"):
                    arr = np.asarray(out)
                    if dt.kind in "iu" and arr.dtype.kind == "f":
                        arr = np.trunc(arr)
                    arr = arr.astype(dt)
                want = self._shape(tt)
                if tt.rank and arr.shape != want:
                    raise MilEvalError(f"{op.type} {spec.name}: evaluated shape {arr.shape}, spec says {want}")
                env[spec.name] = arr
        return {name: env[name] for name in self.block.outputs}


class _Args:
    """An op's arguments by name: bound inputs (names or immediate values) first, then attributes."""

    def __init__(self, pkg: MilPackage, op, env):
        self.pkg, self.op, self.env = pkg, op, env

    def _one(self, binding):
        return self.env[binding.name] if binding.name else self.pkg.value(binding.value)

    def get(self, name, default=None):
        if name in self.op.inputs:
            bindings = self.op.inputs[name].arguments
            return self._one(bindings[0])
        if name in self.op.attributes:
            return self.pkg.value(self.op.attributes[name])
        return default

    def f(self, name, default=None):
        """The argument as a float32 array (fp16 inputs computed in float32)."""
        v = self.get(name, default)
        return None if v is None else np.asarray(v).astype(np.float32) if np.asarray(v).dtype.kind == "f" else v

    def many(self, name):
        return [self._one(b) for b in self.op.inputs[name].arguments]

    def scalar(self, name, default=None):
        v = self.get(name)
        return default if v is None else np.asarray(v).reshape(-1)[0].item() if np.asarray(v).dtype != object \
            else np.asarray(v).reshape(-1)[0]

    def ints(self, name, default=None):
        v = self.get(name)
        return default if v is None else [int(i) for i in np.asarray(v).reshape(-1)]

    def out_dtype(self, i=0) -> np.dtype:
        return self.pkg._dtype(self.op.outputs[i].type.tensorType)


OPS: dict = {}


def op(*names):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


# -- constants, casts ----------------------------------------------------------------------------------------
@op("const")
def _const(a):
    return a.get("val")


@op("identity")
def _identity(a):
    return a.get("x")


@op("cast")
def _cast(a):
    x = a.get("x")
    to = np.dtype(_CAST[a.scalar("dtype")])
    if to.kind in "iu" and x.dtype.kind == "f":
        x = np.trunc(x)
    return x.astype(to)


# -- elementwise ---------------------------------------------------------------------------------------------
def _binary(fn):
    def run(a):
        return fn(a.f("x"), a.f("y"))
    return run


for _name, _fn in {"add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
                   "pow": np.power, "maximum": np.maximum, "minimum": np.minimum, "floor_div": np.floor_divide,
                   "mod": np.mod, "equal": np.equal, "not_equal": np.not_equal, "less": np.less,
                   "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
                   "logical_and": np.logical_and, "logical_or": np.logical_or,
                   "logical_xor": np.logical_xor}.items():
    OPS[_name] = _binary(_fn)

_UNARY = {"abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x),
          "tanh": np.tanh, "erf": scipy.special.erf, "sin": np.sin, "cos": np.cos, "floor": np.floor,
          "ceil": np.ceil, "sign": np.sign, "relu": lambda x: np.maximum(x, 0), "sigmoid": scipy.special.expit,
          "softplus": lambda x: np.logaddexp(0, x), "silu": lambda x: x * scipy.special.expit(x),
          "round": np.rint,  # MIL: "0.5 is rounded to 0", i.e. half to even
          "square": np.square, "logical_not": np.logical_not, "exp2": np.exp2}
for _name, _fn in _UNARY.items():
    OPS[_name] = (lambda fn: lambda a: fn(a.f("x")))(_fn)


@op("inverse")
def _inverse(a):
    return 1.0 / (a.f("x") + np.float32(a.scalar("epsilon", 1e-4)))


@op("gelu")
def _gelu(a):
    x, mode = a.f("x"), a.scalar("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return x * scipy.special.expit(1.702 * x)


@op("leaky_relu")
def _leaky_relu(a):
    x = a.f("x")
    return np.where(x >= 0, x, x * np.float32(a.scalar("alpha", 0.01)))


@op("elu")
def _elu(a):
    x = a.f("x")
    return np.where(x > 0, x, np.float32(a.scalar("alpha", 1.0)) * np.expm1(np.minimum(x, 0)))


@op("sigmoid_hard")
def _sigmoid_hard(a):
    return np.clip(a.f("x") * np.float32(a.scalar("alpha", 0.2)) + np.float32(a.scalar("beta", 0.5)), 0, 1)


@op("clip")
def _clip(a):
    return np.clip(a.f("x"), a.scalar("alpha"), a.scalar("beta"))


@op("select")
def _select(a):
    return np.where(a.get("cond"), a.f("a"), a.f("b"))


# -- data movement -------------------------------------------------------------------------------------------
@op("reshape")
def _reshape(a):
    return a.get("x").reshape(a.ints("shape"))


@op("transpose")
def _transpose(a):
    return np.transpose(a.get("x"), a.ints("perm"))


@op("expand_dims")
def _expand_dims(a):
    x = a.get("x")
    for ax in sorted(i % (x.ndim + len(a.ints("axes"))) for i in a.ints("axes")):
        x = np.expand_dims(x, ax)
    return x


@op("squeeze")
def _squeeze(a):
    x = a.get("x")
    axes = a.ints("axes")
    return np.squeeze(x, tuple(axes)) if axes is not None else np.squeeze(x)


@op("concat")
def _concat(a):
    if a.scalar("interleave", False):
        raise MilEvalError("concat with interleave is not known to the evaluator")
    return np.concatenate(a.many("values"), axis=a.scalar("axis"))


@op("split")
def _split(a):
    x, axis = a.get("x"), a.scalar("axis")
    sizes = a.ints("split_sizes")
    if sizes is None:
        n = a.scalar("num_splits")
        sizes = [x.shape[axis] // n] * n
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@op("slice_by_index")
def _slice_by_index(a):
    x = a.get("x")
    r = x.ndim
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * r)
    bm, em, sm = (a.ints(n, [0] * r) for n in ("begin_mask", "end_mask", "squeeze_mask"))
    idx = []
    for i in range(r):
        if sm[i]:
            idx.append(begin[i])
            continue
        idx.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return x[tuple(idx)]


@op("slice_by_size")
def _slice_by_size(a):
    x = a.get("x")
    begin, size = a.ints("begin"), a.ints("size")
    return x[tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))]


@op("gather")
def _gather(a):
    x, idx, axis = a.get("x"), a.get("indices"), a.scalar("axis", 0)
    if a.scalar("batch_dims", 0):
        raise MilEvalError("gather with batch_dims is not known to the evaluator")
    n = x.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise MilEvalError(f"gather index out of range [{-n}, {n})")
    return np.take(x, idx.astype(np.int64), axis=axis)


@op("gather_along_axis")
def _gather_along_axis(a):
    return np.take_along_axis(a.get("x"), a.get("indices").astype(np.int64), axis=a.scalar("axis", 0))


@op("gather_nd")
def _gather_nd(a):
    x, idx, b = a.get("x"), a.get("indices").astype(np.int64), a.scalar("batch_dims", 0)
    xs = x.reshape((-1,) + x.shape[b:])
    ids = idx.reshape((xs.shape[0], -1, idx.shape[-1]))
    out = np.stack([xs[j][tuple(ids[j].T)] for j in range(xs.shape[0])])
    return out.reshape(idx.shape[:-1] + x.shape[b + idx.shape[-1]:])


@op("tile")
def _tile(a):
    return np.tile(a.get("x"), a.ints("reps"))


@op("reverse")
def _reverse(a):
    return np.flip(a.get("x"), axis=tuple(a.ints("axes")))


@op("pad")
def _pad(a):
    x, pads = a.get("x"), a.ints("pad")
    n = len(pads) // 2
    width = [(0, 0)] * (x.ndim - n) + [(pads[2 * i], pads[2 * i + 1]) for i in range(n)]
    mode = a.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, width, constant_values=np.asarray(a.scalar("constant_val", 0.0)).astype(x.dtype))
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge"}[mode])


# -- reductions, normalization -------------------------------------------------------------------------------
def _reduce(fn):
    def run(a):
        x = a.f("x")
        axes = a.ints("axes")
        axes = tuple(range(x.ndim)) if axes is None else tuple(i % x.ndim for i in axes)
        return fn(x, axes, bool(a.scalar("keep_dims", False)))
    return run


for _name, _fn in {"reduce_sum": lambda x, ax, k: np.sum(x, ax, keepdims=k),
                   "reduce_mean": lambda x, ax, k: np.mean(x, ax, keepdims=k),
                   "reduce_max": lambda x, ax, k: np.max(x, ax, keepdims=k),
                   "reduce_min": lambda x, ax, k: np.min(x, ax, keepdims=k),
                   "reduce_prod": lambda x, ax, k: np.prod(x, ax, keepdims=k),
                   "reduce_l2_norm": lambda x, ax, k: np.sqrt(np.sum(x * x, ax, keepdims=k)),
                   "reduce_sum_square": lambda x, ax, k: np.sum(x * x, ax, keepdims=k),
                   "reduce_log_sum_exp": lambda x, ax, k: scipy.special.logsumexp(x, ax, keepdims=k)}.items():
    OPS[_name] = _reduce(_fn)


def _argreduce(fn):
    def run(a):
        x, axis = a.f("x"), a.scalar("axis", -1)
        i = fn(x, axis=axis)
        return np.expand_dims(i, axis) if a.scalar("keep_dims", False) else i
    return run


OPS["reduce_argmax"] = _argreduce(np.argmax)
OPS["reduce_argmin"] = _argreduce(np.argmin)


@op("softmax")
def _softmax(a):
    x, axis = a.f("x"), a.scalar("axis", -1)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@op("layer_norm")
def _layer_norm(a):
    x = a.f("x")
    axes = tuple(i % x.ndim for i in (a.ints("axes") or range(x.ndim)))
    mean = x.mean(axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + np.float32(a.scalar("epsilon", 1e-5)))
    g, b = a.f("gamma"), a.f("beta")
    return y * (1 if g is None else g) + (0 if b is None else b)


def _channels(v, rank):
    return v.reshape((-1,) + (1,) * (rank - 2))


@op("batch_norm")
def _batch_norm(a):
    x = a.f("x")
    y = (x - _channels(a.f("mean"), x.ndim)) / np.sqrt(_channels(a.f("variance"), x.ndim)
                                                      + np.float32(a.scalar("epsilon", 1e-5)))
    g, b = a.f("gamma"), a.f("beta")
    return y * (1 if g is None else _channels(g, x.ndim)) + (0 if b is None else _channels(b, x.ndim))


@op("instance_norm")
def _instance_norm(a):
    x = a.f("x")
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + np.float32(a.scalar("epsilon", 1e-5)))
    g, b = a.f("gamma"), a.f("beta")
    return y * (1 if g is None else _channels(g, x.ndim)) + (0 if b is None else _channels(b, x.ndim))


@op("local_response_norm")
def _lrn(a):
    x, size = a.f("x"), a.scalar("size")
    sq = np.pad(np.square(x), [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
    total = sliding_window_view(sq, size, axis=1).sum(-1)
    return x / np.power(a.scalar("k", 1.0) + a.scalar("alpha", 1e-4) / size * total, a.scalar("beta", 0.75))


# -- products ------------------------------------------------------------------------------------------------
@op("matmul")
def _matmul(a):
    x, y = a.f("x"), a.f("y")
    if a.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if a.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("linear")
def _linear(a):
    y = a.f("x") @ a.f("weight").T
    b = a.f("bias")
    return y if b is None else y + b


def _explicit_pads(a, x_sp, kernel, strides, dils):
    """MIL pad_type (valid/same/same_lower/custom) as (begin, end) per spatial axis."""
    kind = a.scalar("pad_type", "valid")
    n = len(x_sp)
    if kind == "custom":
        p = a.ints("pad", [0] * 2 * n)
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if kind == "valid":
        return [(0, 0)] * n
    out = []
    for d, k, s, dl in zip(x_sp, kernel, strides, dils):
        need = max(0, (-(-d // s) - 1) * s + (k - 1) * dl + 1 - d)
        out.append((need // 2, need - need // 2) if kind == "same" else (need - need // 2, need // 2))
    return out


def _correlate(x, w, strides, dils, groups, pads, bias):
    """Grouped N-D cross-correlation: x [N, C, *D], w [M, C/groups, *K], pads (begin, end) per axis."""
    n_sp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    ek = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dils)]
    win = sliding_window_view(xp, ek, axis=tuple(range(2, 2 + n_sp)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dils)]  # (N, C, *O, *K)
    cg, mg = x.shape[1] // groups, w.shape[0] // groups
    sp, kk = "opqr"[:n_sp], "klmn"[:n_sp]
    win = win.reshape((x.shape[0], groups, cg) + win.shape[2:])
    wg = w.reshape((groups, mg, cg) + w.shape[2:])
    y = np.einsum(f"bgc{sp}{kk},gmc{kk}->bgm{sp}", win, wg, optimize=True)
    y = y.reshape((x.shape[0], groups * mg) + y.shape[3:])
    return y if bias is None else y + _channels(bias, y.ndim)


@op("conv")
def _conv(a):
    x, w = a.f("x"), a.f("weight")
    n_sp = x.ndim - 2
    strides, dils = a.ints("strides", [1] * n_sp), a.ints("dilations", [1] * n_sp)
    pads = _explicit_pads(a, x.shape[2:], w.shape[2:], strides, dils)
    return _correlate(x, w, strides, dils, a.scalar("groups", 1), pads, a.f("bias"))


@op("conv_transpose")
def _conv_transpose(a):
    """Zero-stuff the input by the stride, pad by dil*(k-1) minus the pads, correlate with the flipped kernel."""
    x, w = a.f("x"), a.f("weight")  # w: [C_in, C_out/groups, *K]
    n_sp = x.ndim - 2
    kernel = w.shape[2:]
    strides = a.ints("strides", [1] * n_sp)
    dils = a.ints("dilations", [1] * n_sp)
    g = a.scalar("groups", 1)
    if a.scalar("pad_type", "valid") not in ("custom", "valid"):
        raise MilEvalError("conv_transpose pad_type same is not known to the evaluator")
    pads = _explicit_pads(a, x.shape[2:], kernel, strides, dils)
    stuffed_shape = x.shape[:2] + tuple((d - 1) * s + 1 for d, s in zip(x.shape[2:], strides))
    z = np.zeros(stuffed_shape, np.float32)
    z[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = x
    width = []
    for (b, e), k, dl in zip(pads, kernel, dils):
        width.append(((k - 1) * dl - b, (k - 1) * dl - e))
    crop = tuple(slice(max(-b, 0), z.shape[2 + i] - max(-e, 0)) for i, (b, e) in enumerate(width))
    z = z[(slice(None), slice(None)) + crop]
    z = np.pad(z, [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in width])
    cg, mg = x.shape[1] // g, w.shape[1]
    # the equivalent forward convolution's weight: [C_out, C_in/groups, *K], flipped spatially
    wf = np.flip(w, axis=tuple(range(2, 2 + n_sp))).reshape((g, cg, mg) + kernel)
    wf = np.swapaxes(wf, 1, 2).reshape((g * mg, cg) + kernel)
    y = _correlate(z, wf, [1] * n_sp, dils, g, [(0, 0)] * n_sp, a.f("bias"))
    shape = a.ints("output_shape")
    if shape is not None and list(y.shape[2:]) != list(shape[-n_sp:]):
        raise MilEvalError(f"conv_transpose output {y.shape} differs from output_shape {shape}")
    return y


def _pool(reduce_fn, fill):
    def run(a):
        x = a.f("x")
        kernel = a.ints("kernel_sizes")
        n_sp = len(kernel)
        strides = a.ints("strides", [1] * n_sp)
        if a.scalar("ceil_mode", False):
            raise MilEvalError("pooling with ceil_mode is not known to the evaluator")
        pads = _explicit_pads(a, x.shape[2:], kernel, strides, [1] * n_sp)
        xp = np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=fill)
        win = sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + n_sp)))
        win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]
        k_axes = tuple(range(-n_sp, 0))
        if reduce_fn == "max":
            return win.max(axis=k_axes)
        total = np.where(np.isnan(win), 0, win).sum(axis=k_axes)
        if a.scalar("exclude_padding_from_average", False):
            ones = np.pad(np.ones((1, 1) + x.shape[2:], np.float32), [(0, 0), (0, 0)] + pads)
            cw = sliding_window_view(ones, kernel, axis=tuple(range(2, 2 + n_sp)))
            count = cw[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)].sum(axis=k_axes)
        else:
            count = np.prod(kernel)
        return total / count
    return run


OPS["max_pool"] = _pool("max", -np.inf)
OPS["avg_pool"] = _pool("avg", 0.0)


@op("scaled_dot_product_attention")
def _sdpa(a):
    q, k, v, m = a.f("query"), a.f("key"), a.f("value"), a.get("attn_mask")
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(np.float32(q.shape[-1]))
    if m is not None:
        s = np.where(m, s, -np.inf) if m.dtype == np.bool_ else s + m.astype(np.float32)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


# -- quantization --------------------------------------------------------------------------------------------
def _along(v, rank, axis):
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = v.size
    return v.reshape(shape)


@op("constexpr_affine_dequantize")
def _constexpr_affine_dequantize(a):
    q = a.get("quantized_data")
    axis = a.scalar("axis", 0)
    zp = _along(a.get("zero_point"), q.ndim, axis).astype(np.float32)
    return (q.astype(np.float32) - zp) * _along(a.f("scale"), q.ndim, axis)


@op("dequantize")
def _dequantize(a):
    x = a.get("input")
    axis = a.scalar("axis", 0)
    zp = a.get("zero_point")
    zp = np.float32(0) if zp is None else _along(zp, x.ndim, axis).astype(np.float32)
    return (x.astype(np.float32) - zp) * _along(a.f("scale"), x.ndim, axis)


@op("quantize")
def _quantize(a):
    x = a.f("input")
    axis = a.scalar("axis", 0)
    to = np.dtype(_CAST[a.scalar("output_dtype")])
    zp = a.get("zero_point")
    zp = np.float32(0) if zp is None else _along(zp, x.ndim, axis).astype(np.float32)
    info = np.iinfo(to)
    return np.clip(np.rint(x / _along(a.f("scale"), x.ndim, axis)) + zp, info.min, info.max)

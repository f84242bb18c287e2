"""The ops the model families aotc benchmarks rarely contain, so they came last: ConvTranspose,
InstanceNormalization, LRN, ReduceProd, and the shape-computing ops (Shape, Size, ConstantOfShape,
Range).

Every shape in aotc is static, so Shape, Size and Range (whose start/limit/delta must be constants)
are compile-time constants: the importer and `fold_constants` normally fold them, and they only reach
the target when a graph output is one of them or the result is too big to fold. They are computed here
by the op's own reference kernel and copied out of a derived constant, except where the result is big
(ConstantOfShape, long Ranges): a fill / index kernel then writes it, so weights.bin does not grow by
the output's size."""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node, Value

from .lower_elementwise import dtype_of, injective_call, tvm_dtype
from .lower_reduce import (placeholders, reduce_index, row_view, generic_reduce_call, row_call, row_moments,
                           row_reduce, schedule_rows)
from .lowering import Alias, Call, LoweringContext, NoLoweringError, attrs_key, in_bounds, lowers, operand, sig
from .schedules import pick_vec, prim_func

# Ranges with more elements than this are computed by a kernel instead of stored in weights.bin.
RANGE_CONST_MAX_ELEMENTS = 1 << 16


# -- shape-computing ops ----------------------------------------------------------------------------
def _copy_from_const(node: Node, ctx: LoweringContext, data: np.ndarray) -> list:
    """A copy kernel from a derived constant holding the node's (compile-time) result."""
    y = node.outputs[0]
    data = np.asarray(data)
    if tuple(data.shape) != tuple(y.shape) or DType.from_numpy(data.dtype) != y.dtype:
        raise NoLoweringError(f"the reference result {data.dtype}{list(data.shape)} does not match the inferred "
                              f"{y.type_str}")
    if y.size == 0:
        return []  # nothing to write; the (empty) output still gets a place in the arena
    tvm_dtype(y.dtype)  # NoLoweringError for dtypes without kernels
    c = ctx.derived_const(f"{node.name}.{node.op_type.lower()}_value", lambda: data.reshape(y.shape))
    # The key names only shapes/dtypes: Shape nodes with different results share one copy kernel.
    call = injective_call(node, ctx, [c], y, lambda ld, i: ld[0](i))
    call.key = f"const_copy|{sig(*call.operands)}"
    return [call]


def _static_stand_in(v: Value):
    """What the reference kernel of a shape-only op needs of an input: its data if constant, else a
    zero-strided array with the (static) shape."""
    if v is None:
        return None
    return v.const if v.const is not None else np.broadcast_to(np.zeros((), v.dtype.numpy), v.shape)


@lowers("Shape", "Size")
def lower_shape_of(node: Node, ctx: LoweringContext):
    """Only the static shape is read, never the data: the result is a constant for any input."""
    (result,) = node.op.run([_static_stand_in(v) for v in node.inputs], node.attrs)
    return _copy_from_const(node, ctx, result)


@lowers("ConstantOfShape")
def lower_constant_of_shape(node: Node, ctx: LoweringContext):
    """A fill kernel with the value as an immediate: big fills (attention masks) cost no weights."""
    from tvm import tirx as T
    y = node.outputs[0]
    if y.size == 0:
        return []
    dt = tvm_dtype(y.dtype)
    fill = node.op.fill(node.attrs)[0]
    if y.dtype == DType.bool:
        value = bool(fill)
    elif y.dtype == DType.float32 or y.dtype == DType.float16:
        value = float(fill)
    else:
        value = int(fill)
    call = injective_call(node, ctx, [], y, None, raw=lambda t, i: T.const(value, dt), out_shape=(y.size,))
    call.key = f"fill|{y.dtype}|{value!r}|{y.size}"
    return [call]


@lowers("Range")
def lower_range(node: Node, ctx: LoweringContext):
    start, limit, delta = node.inputs
    y = node.outputs[0]
    if any(v.const is None for v in (start, limit, delta)):
        raise NoLoweringError("start, limit and delta must be constants (aotc has static shapes only)")
    if y.size <= RANGE_CONST_MAX_ELEMENTS:
        (result,) = node.op.run([start.const, limit.const, delta.const], node.attrs)
        return _copy_from_const(node, ctx, result)
    return [_range_kernel(node, ctx, start.const.item(), delta.const.item())]


def _range_kernel(node: Node, ctx: LoweringContext, s, d) -> Call:
    """y[i] = start + i*delta computed by the kernel. Integers are exact. Floats follow NumPy's arange
    (the reference), which works in float64: y[1] = start + delta, then y[i] = start + i*(y[1] - start),
    rounded to the output dtype once."""
    from tvm import tirx as T
    y = node.outputs[0]
    dt = tvm_dtype(y.dtype)
    if y.dtype in (DType.int32, DType.int64):
        def f(t, idx):
            i = T.Cast("int64", idx[0])
            return T.Cast(dt, T.const(int(s), "int64") + i * T.const(int(d), "int64"))
    elif y.dtype == DType.float32:
        s, d = float(s), float(d)
        second = s + d
        step = second - s

        def f(t, idx):
            i = T.Cast("float64", idx[0])
            v = T.Select(idx[0] == 1, T.const(second, "float64"), T.const(s, "float64") + i * T.const(step, "float64"))
            return T.Cast(dt, v)
    else:
        raise NoLoweringError(f"a {y.dtype} Range longer than {RANGE_CONST_MAX_ELEMENTS} has no CPU kernel yet")
    call = injective_call(node, ctx, [], y, None, raw=f)
    call.key = f"range|{y.dtype}|{s!r}|{d!r}|{y.size}"
    return call


# -- ReduceProd -------------------------------------------------------------------------------------
@lowers("ReduceProd")
def lower_reduce_prod(node: Node, ctx: LoweringContext):
    """The same dispatch as lower_reduce's other reductions: trailing axes as a row kernel with vector
    partial products, any other axes as one plain TE reduction; the product is a TE comm_reducer."""
    x, y = node.inputs[0], node.outputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"{x.dtype} ReduceProd has no CPU kernel yet")
    axes = node.op.axes(x.rank, node.attrs)
    if not axes:  # noop_with_empty_axes: the product over no axis is the input itself
        if x.size == 0:
            return []
        return [injective_call(node, ctx, [x], y, lambda ld, i: ld[0](i))]
    if tuple(axes) != tuple(range(x.rank - len(axes), x.rank)):
        return [generic_reduce_call(node, ctx, x, y, axes, node.op_type, kind="prod")]
    rows, length = row_view(x, x.rank - len(axes))
    length = max(length, 1)
    lanes = ctx.lanes

    def build(ops):
        from tvm import te
        (xt,) = placeholders(ops)
        tot, st = row_reduce(xt, rows, length, "prod", lanes, "tot")
        out = te.compute((rows,), lambda r: tot[r], name="out")
        return prim_func([xt, out], lambda sch: schedule_rows(sch, "out", st, rows, length, lanes))
    return [row_call(node, ctx, x, y, rows, length, build)]


# -- InstanceNormalization ----------------------------------------------------------------------------
@lowers("InstanceNormalization")
def lower_instance_norm(node: Node, ctx: LoweringContext):
    """LayerNormalization's row kernel with one row per (image, channel) over the spatial axes; the
    scale and bias of row r are those of channel r % C. Two passes over the row (mean, then the mean of
    squared deviations), as the reference does, so a large mean does not cancel the variance."""
    x, scale, bias = node.inputs
    y = node.outputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"{x.dtype} InstanceNormalization has no CPU kernel yet")
    c = x.shape[1]
    rows, length = row_view(x, 2)
    if length == 0 or rows == 0:
        return []
    lanes, eps = ctx.lanes, node.attrs["epsilon"]

    def build(ops):
        from tvm import te
        from tvm import tirx as T
        xt, sc, bi = placeholders(ops)
        f32 = "float32"
        mean, var, moment_stages = row_moments(xt, rows, length, lanes)
        # scale * rstd once per row: the element loop is one subtract and one multiply-add.
        k = te.compute((rows,), lambda r: sc[r % c] / T.sqrt(var(r) + T.const(eps, f32)), name="k")
        out = te.compute((rows, length), lambda r, l: (xt[r, l] - mean[r]) * k[r] + bi[r % c], name="out")
        stages = moment_stages + ["k"]
        return prim_func([xt, sc, bi, out], lambda sch: schedule_rows(sch, "out", stages, rows, length, lanes))
    return [row_call(node, ctx, x, y, rows, length, build, extra_inputs=[scale, bias], extra_key=f"c={c}")]


# -- LRN -----------------------------------------------------------------------------------------------
@lowers("LRN")
def lower_lrn(node: Node, ctx: LoweringContext):
    """y = x / (bias + alpha/size * sum of x^2 over channels c-(size-1)//2 .. c+size//2)^beta (ONNX), on x
    viewed as [N, C, 1, S] (S = the spatial size): schedule_direct_conv's rule then keeps a vector of
    `vec` pixels of one channel in registers over the `size` channel taps (the tap's bounds check depends
    on the channel only, not on the pixel) and applies the power while the sum is in registers."""
    from .lower_nn import schedule_direct_conv
    x, y = node.inputs[0], node.outputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"{x.dtype} LRN has no CPU kernel yet")
    nb, c = x.shape[:2]
    sp = math.prod(x.shape[2:])
    if x.size == 0:
        return []
    size = node.attrs["size"]
    lo = (size - 1) // 2
    alpha, beta, bias = node.attrs["alpha"], node.attrs["beta"], node.attrs["bias"]
    shape4 = (nb, c, 1, sp)
    ops = [operand(x, shape4), operand(y, shape4)]
    key = f"lrn|{attrs_key(node)}|{sig(*ops)}"
    lanes = ctx.lanes
    vec = pick_vec(sp, lanes)

    def build():
        from tvm import te
        from tvm import tirx as T
        f32 = "float32"
        X = te.placeholder(shape4, f32, name="X")
        k = te.reduce_axis((0, size), name="k")

        def tap(n, cc, h, s):
            j = cc - lo + k
            v = X[n, T.min(T.max(j, 0), c - 1), h, s]
            return T.Select(in_bounds(j >= 0, j < c), v * v, T.const(0.0, f32))
        acc = te.compute(shape4, lambda n, cc, h, s: te.sum(tap(n, cc, h, s), axis=[k]), name="acc")

        def f(n, cc, h, s):
            base = T.const(bias, f32) + T.const(alpha / size, f32) * acc[n, cc, h, s]
            return X[n, cc, h, s] * _pow_neg(base, beta)
        out = te.compute(shape4, f, name="out")
        return prim_func([X, out], lambda sch: schedule_direct_conv(sch, "acc", shape4, lanes, 1, 1, vec,
                                                                    epilogue="out"))
    return [Call(key, build, ops, node, flops=node.op.flops(node.inputs, node.outputs, node.attrs))]


def _pow_neg(base, beta: float):
    """base^-beta. The usual exponents (0.75: AlexNet/GoogLeNet and the ONNX default; 0.5; 1) are sqrt and
    division, which vectorize; any other exponent calls powf (LLVM has no vector powf, so it is scalar)."""
    from tvm import tirx as T
    one = T.const(1.0, "float32")
    if beta == 0.75:
        r = T.sqrt(base)
        return one / (r * T.sqrt(r))
    if beta == 0.5:
        return one / T.sqrt(base)
    if beta == 1.0:
        return one / base
    return T.pow(base, T.const(-beta, "float32"))


# -- ConvTranspose -------------------------------------------------------------------------------------
@lowers("ConvTranspose")
def lower_conv_transpose(node: Node, ctx: LoweringContext):
    """ConvTranspose as a stride-1 Conv over a zero-inserted, padded copy of the input, with the weights
    flipped and their channel axes swapped (per group) at compile time; the Conv is lowered by lower_nn's
    register-tiled direct / depthwise / pointwise kernels, bias included.

    Why this rewrite: a direct "gather" ConvTranspose needs a divisibility test per tap and output pixel
    and reads the input with stride-dependent gathers, while the rewrite reuses the tuned Conv kernels
    (vector loads along output rows, channel tiles in registers). The cost is the multiplications by the
    inserted zeros: stride s wastes a factor s_h*s_w of the Conv's FLOPs (none at stride 1). A
    sub-pixel (phase) decomposition into s_h*s_w smaller Convs would avoid that, at the price of an
    interleaving pass; upsampling ConvTransposes are rare in the models aotc targets.

    Geometry (per spatial axis, kernel k, dilation d, stride s, begin padding pb, output size o): output
    pixel u of the un-cropped result gets x[i]*W[t] for u = i*s + t*d. A stride-1 Conv with dilation d
    and flipped taps over Xp[p] = x[i] if p = i*s + (k-1)*d - pb (else 0), p < o + (k-1)*d, gives
    y[o'] = sum_t Xp[o' + (k-1-t)*d] W[t], which is x[i]*W[t] exactly where o' + pb = i*s + t*d."""
    from tvm import tirx as T
    from aotc.compiler.ops import get_op
    from aotc.compiler.ops.nn import ConvTranspose
    from .lower_nn import lower_conv

    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    if x.dtype != DType.float32:
        raise NoLoweringError(f"{x.dtype} ConvTranspose has no CPU kernel yet")
    if x.rank not in (3, 4):
        raise NoLoweringError("only 1-D and 2-D ConvTranspose have a CPU kernel yet")
    if w.const is None:
        raise NoLoweringError("a non-constant ConvTranspose weight has no CPU kernel yet")
    if b is not None and b.const is None:
        raise NoLoweringError("a non-constant ConvTranspose bias has no CPU kernel yet")
    if y.size == 0:
        return []
    kernel, out, strides, dils, pb = ConvTranspose.geometry(x.shape, w.shape, node.attrs)
    # 1-D as 2-D with a height of 1 (the Conv kernels are 2-D).
    one_d = x.rank == 3
    x_shape = x.shape[:2] + (1,) * one_d + x.shape[2:]
    w_shape = w.shape[:2] + (1,) * one_d + w.shape[2:]
    if one_d:
        kernel, out, strides, dils, pb = [1] + kernel, [1] + out, [1] + strides, [1] + dils, [0] + pb
    g = node.attrs["group"]
    nb, c = x_shape[:2]
    cg, mg = c // g, w_shape[1]
    m = mg * g
    wf_data = w.const.reshape((g, cg, mg) + tuple(kernel)).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    wf = ctx.derived_const(f"{w.name}.convT_as_conv_g{g}",
                           lambda: wf_data.reshape((m, cg) + tuple(kernel)).astype(np.float32))

    # The zero-inserted, padded input, sized so the stride-1 Conv gives exactly the output.
    off = [(k - 1) * d - p for k, d, p in zip(kernel, dils, pb)]
    xp_shape = (nb, c) + tuple(o + (k - 1) * d for o, k, d in zip(out, kernel, dils))
    xp = ctx.temp(y.name + ".zero_inserted", xp_shape, x.dtype)
    h, wd = x_shape[2:]

    # Xp[p] = x[(p - off) / s]: the numerators are shifted by a multiple of s to stay non-negative, so
    # the division and remainder have no sign cases. (With floordiv/floormod of the possibly negative
    # p - off, the generated code read wrong input addresses at stride 3, e.g. strides [3, 1].)
    shift = [-(-max(o, 0) // s) for o, s in zip(off, strides)]

    def insert(t, idx):
        n, cc, ph, pw = idx
        dt = dtype_of(ph)
        qh = ph + T.const(shift[0] * strides[0] - off[0], dt)
        qw = pw + T.const(shift[1] * strides[1] - off[1], dt)
        ih = T.truncdiv(qh, strides[0]) - T.const(shift[0], dt)
        iw = T.truncdiv(qw, strides[1]) - T.const(shift[1], dt)
        hit = in_bounds(T.truncmod(qh, strides[0]) == 0, T.truncmod(qw, strides[1]) == 0, ih >= 0, ih < h,
                        iw >= 0, iw < wd)
        src = (n, cc, T.min(T.max(ih, 0), h - 1), T.min(T.max(iw, 0), wd - 1))
        return T.Select(hit, t[0][src], T.const(0.0, "float32"))
    insert_call = injective_call(node, ctx, [x], xp, None, raw=insert, in_shapes=[x_shape])
    insert_call.key = f"convT_insert|{strides}|{off}|{sig(*insert_call.operands)}"

    y4 = ctx.temp(y.name + ".as2d", (nb, m) + tuple(out), y.dtype) if one_d else y
    cattrs = get_op("Conv").normalize_attrs({"group": g, "dilations": list(dils), "strides": [1, 1],
                                             "pads": [0, 0, 0, 0], "kernel_shape": list(kernel)}, node.name)
    conv = Node("Conv", f"{node.name}/as_conv", [xp, wf] + ([b] if b is not None else []), [y4], cattrs)
    steps = [insert_call] + list(lower_conv(conv, ctx))
    if one_d:
        steps.append(Alias(y4, y, node))
    return steps

"""QuantizedConv on x86-avx512 (NCHW uint8 activations, int8 weights; semantics in compiler/ops/quant.py).

Two kernels:

* Pointwise (1x1, unit stride, no padding, one group) convolutions are an int8 GEMM on VNNI.
  Y[n, m, p] = Σ_c W[m, c] X[n, c, p] with vectors along pixels: one `vpdpbusd` takes 16 pixels x 4
  channels of uint8 activations (a 64-byte block) and multiplies them by 4 int8 weights of one output
  channel broadcast to every lane. NCHW keeps the 4 channels of a pixel P bytes apart, so a pack kernel
  first writes X4[n, C/4, P16, 4] (channels padded to a multiple of 4 with weight 0, pixels to a multiple
  of 16); the weights need no packing ([M, C] already keeps 4 channels of one row together). Vectors
  along pixels write the NCHW output with plain stores and take the per-channel epilogue constants
  (scale, bias) as broadcasts; the accumulator tile is MR output channels x 16·P pixels. As in
  QuantizedMatMul, the activation zero point never enters the loop (- x_zp·Σ_c W[m, c], a constant).

* Every other convolution (depthwise, strided, padded, grouped, the stem) is a direct convolution over
  flattened rows (the scheme of the float path's flat depthwise kernel): a first kernel writes the
  phase-split input padded with x_zp (the real 0), still uint8, so each tap is one unit-stride vector load;
  the products x·w are accumulated in float32 when that is exact (|partial sum| <= K·255·128 <= 2**24 for
  K = C/group·kh·kw <= 514: every depthwise conv, the 3x3x3 stem), because the float FMA pipes are faster
  than AVX-512's vpmulld, otherwise in int32; a third kernel subtracts x_zp·Σw (exact either way, so
  float32(acc) equals the reference's int32 accumulator) and runs the epilogue.

Depthwise convs stay int8 (measured on EfficientNet-Lite0 b1, one thread, kernel time from AOTC_PROFILE):
leaving them float (`--exclude-nodes` on the 13 depthwise convs, which then run the float NCHW16c kernels
with layout conversions around them and a QuantizeLinear after) took 9.3 ms against 8.0 ms all-int8, for a
top-1 agreement with fp32 of 0.861 against 0.806 on the 36 photo crops (2 images): more accurate, not faster.
"""
from __future__ import annotations

import math

import numpy as np

from aotc.compiler.dtypes import DType
from aotc.compiler.ir import Node
from aotc.compiler.ops.nn import Conv

from .dequantize_reads import dequantizing, read_through
from .lower_elementwise import dtype_of, injective_call, tvm_dtype
from .lowering import Call, LoweringContext, NoLoweringError, lowers, operand, sig
from .int8_common import activation_expr, integer_requant_constants, quantize_expr, scalar_const, tiles_per_block
from .lower_quant import VNNI_K, VNNI_N, pick_tile
from .lower_nn import phase_split_call
from .schedules import PARALLEL_MIN_ELEMENTS, pick_vec, prim_func

FLOAT_EXACT_K = (1 << 24) // (255 * 128)  # 514: the longest reduction whose float32 partial sums stay exact


def _opt(node: Node, i: int):
    return node.inputs[i] if len(node.inputs) > i else None


class _QEpilogue:
    """float32(acc) * s[m] + bias[m], activation and residual (FusedConv's order), optional requantization:
    the reference's float epilogue (QuantizedConv.run), built once for both kernels."""

    def __init__(self, node: Node, residual_dq=None):
        a = node.attrs
        self.residual_dq = residual_dq  # a residual the model dequantizes, read as 8 bits (dequantize_reads.py)
        self.residual_dtype = residual_dq.dtype if residual_dq is not None else "float32"
        self.attrs = {"activation": a.get("activation") or "none", "act_alpha": a.get("act_alpha"),
                      "act_beta": a.get("act_beta"), "residual_before_activation": a.get("residual_before_activation") or 0}
        ys, yz = _opt(node, 7), _opt(node, 8)
        self.requant = None
        self.integer = a.get("requantization") == "integer"
        if ys is not None:
            # integer requantization: the scale operand already carries 1 / y_scale (integer_requant_constants)
            self.requant = (1.0 if self.integer else float(np.float32(scalar_const(
                ys, "y_scale", node))), int(scalar_const(yz, "y_zero_point", node)), tvm_dtype(node.outputs[0].dtype))

    def key(self) -> str:
        return f"{sorted(self.attrs.items())}|rq={self.requant}|int={self.integer}|res={self.residual_dq}"

    def __call__(self, acc_f32, scale, bias, res):
        y = acc_f32 * scale
        if bias is not None:
            y = y + bias
        if res is not None and self.attrs["residual_before_activation"]:
            y = y + res
        y = activation_expr(y, self.attrs)
        if res is not None and not self.attrs["residual_before_activation"]:
            y = y + res
        if self.requant is not None:
            y = quantize_expr(y, *self.requant, reciprocal=True)
        return y


@lowers("QuantizedConv")
def lower_quantized_conv(node: Node, ctx: LoweringContext):
    x, xs, xz, w, ws = node.inputs[:5]
    bias, res = _opt(node, 5), _opt(node, 6)
    if ctx.target.capabilities.int8_dot != "vpdpbusd":
        raise NoLoweringError(f"QuantizedConv needs AVX-512 VNNI (vpdpbusd); the {ctx.target.name} target has no "
                              "int8 convolution kernel yet")
    if x.rank != 4:
        raise NoLoweringError("only 2-D QuantizedConv has a CPU kernel")
    if x.dtype != DType.uint8:
        raise NoLoweringError("QuantizedConv with int8 activations has no x86 kernel (vpdpbusd takes u8 x s8)")
    if w.const is None or ws.const is None or (bias is not None and bias.const is None):
        raise NoLoweringError("QuantizedConv needs constant weights, scales and bias on the CPU")
    cattrs = {k: node.attrs[k] for k in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")}
    kernel, out, strides, dils, pb, pe = Conv.geometry(x.shape, w.shape, cattrs)
    xscale, xzp = float(np.float32(scalar_const(xs, "x_scale", node))), int(scalar_const(xz, "x_zero_point", node))
    m = w.shape[0]
    key = f"{w.name}|{xscale!r}|{xzp}"
    (res,), (rdq,) = read_through([res], ctx)
    epi = _QEpilogue(node, rdq)
    pointwise = kernel == [1, 1] and strides == [1, 1] and node.attrs["group"] == 1 and not any(pb) and not any(pe)
    # x_zp·Σw per output channel: the kernels compute float32(acc - zp_sums) * scale
    zp_sums = ctx.derived_const(f"{w.name}|{xzp}.zp_wsum", lambda: (xzp * w.const.reshape(m, -1).astype(np.int64)
                                                                    .sum(1)).astype(np.int32))
    if node.attrs.get("requantization") == "integer":
        zp_sums, scale = integer_requant_constants(node, ctx, key, zp_sums, bias, m)
        bias = None
    else:
        scale = ctx.derived_const(f"{key}.{ws.name}.scale", lambda: (np.float32(xscale) * np.broadcast_to(
            ws.const.reshape(-1).astype(np.float32), (m,))).astype(np.float32))
    if pointwise:
        return pointwise_vnni_steps(node, ctx, x, xzp, w, zp_sums, scale, bias, res, epi)
    return direct_conv_steps(node, ctx, x, xzp, w, zp_sums, scale, bias, res, epi, kernel, out, strides, dils, pb, pe)


# -- pointwise: VNNI GEMM over a channel-interleaved copy of the input ---------------------------------------
def pack_nchw4(node: Node, ctx: LoweringContext, x, xzp: int, cp: int, pp: int):
    """X4[n, c4, p] = the bytes x[n, 4·c4 + j, p], j = 0..3, as one little-endian int32 (byte j = channel
    4·c4 + j, the order vpdpbusd pairs with the weight word); padding channels and pixels hold x_zp (their
    weights are 0, their outputs are never stored). Computing whole int32 words keeps the kernel a plain
    vectorized map over pixels (4 loads, shifts and ors), where writing the bytes one by one was a
    scalar interleave (1.2 GB/s, a fifth of int8 EfficientNet's time)."""
    from tvm import tirx as T
    nb, c = x.shape[:2]
    p = math.prod(x.shape[2:])
    tmp = ctx.temp(node.outputs[0].name + ".nchw4", (nb, cp // 4, pp), DType.int32)

    def f(t, o):
        nn, c4, pix = o
        dt = dtype_of(pix)
        word = None
        for j in range(4):
            ch = c4 * T.const(4, dt) + T.const(j, dt)
            v = T.Cast("int32", t[0][nn, T.min(ch, T.const(c - 1, dt)) if c % 4 else ch,
                                     T.min(pix, T.const(p - 1, dt)) if pp != p else pix])
            if c % 4 or pp != p:
                # padding holds x_zp: a blend by 0/1 integers, not a select, whose condition would let the
                # simplifier drop the clamps above (the padding lanes then read past x); vector booleans here
                # crash TVM's LLVM codegen, so the flags are integer arithmetic too
                keep = T.const(1, "int32")
                for idx, bound in ((ch, c), (pix, p)):
                    flag = T.min(T.max(T.const(bound, dt) - idx, T.const(0, dt)), T.const(1, dt))
                    keep = keep * T.Cast("int32", flag)
                v = keep * v + (T.const(1, "int32") - keep) * T.const(xzp, "int32")
            v = T.shift_left(v, T.const(8 * j, "int32")) if j else v
            word = v if word is None else T.bitwise_or(word, v)
        return word
    call = injective_call(node, ctx, [x], tmp, None, raw=f, in_shapes=[(nb, c, p)])
    call.key = f"qconv_pack_nchw4|{xzp}|{sig(*call.operands)}"
    return call, tmp


def pointwise_vnni_steps(node: Node, ctx: LoweringContext, x, xzp: int, w, colsum, scale, bias, res, epi):
    nb, c = x.shape[:2]
    p = math.prod(x.shape[2:])
    m = w.shape[0]
    cp = -(-c // VNNI_K) * VNNI_K
    pp = -(-p // VNNI_N) * VNNI_N
    pack, x4 = pack_nchw4(node, ctx, x, xzp, cp, pp)
    wp = ctx.derived_const(f"{w.name}.vnni_pw", lambda: np.pad(w.const.reshape(m, c), ((0, 0), (0, cp - c)))
                           .reshape(m, cp // VNNI_K, VNNI_K))
    y = node.outputs[0]
    ops = [operand(x4), operand(wp), operand(colsum), operand(scale)]
    if bias is not None:
        ops.append(operand(bias, (m,)))
    if res is not None:
        ops.append(operand(res, (nb, m, p)))
    ops.append(operand(y, (nb, m, p)))
    mr, panels = pick_tile(m, pp)  # rows = output channels, panels = 16-pixel vectors
    call_key = f"qconv_pw_vnni|{epi.key()}|{sig(*ops)}"

    def build():
        from tvm import te
        from tvm import tirx as T
        X4 = te.placeholder(x4.shape, "int32", name="X4")
        W = te.placeholder(wp.shape, "int8", name="Wp")
        CS = te.placeholder((m,), "int32", name="rowsum")
        S = te.placeholder((m,), "float32", name="scale")
        args = [X4, W, CS, S]
        Bias = Res = None
        if bias is not None:
            Bias = te.placeholder((m,), "float32", name="bias")
            args.append(Bias)
        if res is not None:
            Res = te.placeholder((nb, m, p), epi.residual_dtype, name="residual")
            args.append(Res)
        kk = te.reduce_axis((0, cp), name="k")
        # byte kk % 4 of the word (written `(word >> k * 8) & 255`, as the tensor intrinsic's description)
        acc = te.compute((nb, m, pp), lambda n, i, j: te.sum(
            T.bitwise_and(T.shift_right(X4[n, kk // VNNI_K, j], (kk % VNNI_K) * 8), 255)
            * W[i, kk // VNNI_K, kk % VNNI_K].astype("int32"), axis=kk), name="acc")
        Y = te.compute((nb, m, p), lambda n, i, j: epi(
            (acc[n, i, j] - CS[i]).astype("float32"), S[i], Bias[i] if Bias is not None else None,
            dequantizing(Res, epi.residual_dq)[n, i, j] if Res is not None else None), name="Y")
        return prim_func(args + [Y], lambda sch: schedule_pointwise_vnni(sch, nb * m * pp, mr, panels))

    return [pack, Call(call_key, build, ops, node, flops=2 * nb * m * p * c)]


_VEC_U8_VNNI = "aotc_dot_16x4_u8words_s8bcast"


def _register_vector_u8_intrin() -> str:
    """C[16] += Σ_k byte_k(A[i])·B[k]: 16 words of 4 uint8 activations (one 64-byte vector) times 4 int8 weights
    broadcast to every lane (the mirror image of lower_quant's intrinsic, which broadcasts the activations)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T
    try:
        TensorIntrin.get(_VEC_U8_VNNI)
        return _VEC_U8_VNNI
    except Exception:  # noqa: BLE001  (not registered yet)
        pass

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((16,), "int32", offset_factor=1), B: T.Buffer((4,), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16], B[0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.bitwise_and(T.shift_right(A[vi], vk * 8), 255) * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((16,), "int32", offset_factor=1), B: T.Buffer((4,), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:16], B[0:4])
            T.writes(C[0:16])
            # vpdpbusd's second operand is the unsigned one: the activation block; the third, signed, the
            # weight word broadcast (LLVM folds it into an {1to16} memory operand).
            b_i32 = T.reinterpret(B.vload([0], "int8x4"), dtype="int32")
            b_i8x64 = T.reinterpret(T.broadcast(b_i32, 16), dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), T.reinterpret(A.vload([0], dtype="int32x16"), dtype="int8x64"),
                b_i8x64, dtype="int32x16")

    TensorIntrin.register(_VEC_U8_VNNI, desc, impl)
    return _VEC_U8_VNNI


def schedule_pointwise_vnni(sch, work: int, mr: int, panels: int) -> None:
    """Per (image, channel tile, block of pixel tiles): for each pixel tile, MR x P zmm accumulators over all
    input channels (per 4 channels P activation blocks and MR broadcast weight words feed MR·P vpdpbusd);
    the epilogue then runs over the block's tiles."""
    intrin = _register_vector_u8_intrin()
    blk = sch.get_sblock("acc")
    ln, lm, lp, lk = sch.get_loops(blk)
    tiles = int(sch.get(lp).extent) // (panels * VNNI_N)
    per_block = tiles_per_block(tiles, mr * panels * VNNI_N * 4)
    mo, mi = sch.split(lm, [None, mr])
    pb, pt, pj, pi = sch.split(lp, [None, per_block, panels, VNNI_N])
    ko, ki = sch.split(lk, [None, VNNI_K])
    sch.reorder(ln, mo, pb, pt, ko, mi, pj, pi, ki)
    outer = sch.fuse(ln, mo, pb)
    ep = sch.get_sblock("Y")
    sch.reverse_compute_at(ep, outer)
    sch.vectorize(sch.split(sch.get_loops(ep)[-1], [None, VNNI_N])[-1])
    if work >= PARALLEL_MIN_ELEMENTS // 4:
        sch.parallel(outer)
    init = sch.decompose_reduction(blk, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(pi, intrin)
    sch.unroll(pj)
    sch.unroll(mi)


# -- everything else: direct convolution over flattened rows of a phase-split copy ---------------------------
def direct_conv_steps(node, ctx, x, xzp, w, zsum, scale, bias, res, epi, kernel, out, strides, dils, pb, pe):
    nb, c, h, wd = x.shape
    m = w.shape[0]
    g = node.attrs["group"]
    cg, mg = c // g, m // g
    kh, kw = kernel
    oh, ow = out
    sh, sw = strides
    dh, dw = dils
    lanes = ctx.lanes
    k_len = cg * kh * kw
    acc_dt = "float32" if k_len <= FLOAT_EXACT_K else "int32"
    hp, wp = h + pb[0] + pe[0], wd + pb[1] + pe[1]
    h2, w2 = -(-hp // sh), -(-wp // sw)
    tile = 4 * lanes if oh * w2 >= 8 * lanes else lanes
    ppad = -(-(oh * w2) // tile) * tile
    max_off = ((kh - 1) * dh // sh) * w2 + (kw - 1) * dw // sw
    extra_rows = max(0, -(-(ppad + max_off - h2 * w2) // w2))
    flat = (h2 + extra_rows) * w2
    # the phase-split copy, still uint8 (x_zp, the real 0, outside). Bytes rather than float(x - x_zp): the copy
    # and the convolution's reads move a quarter of the data; the zero point leaves the loop as - x_zp·Σw[m], a
    # constant, like the GEMMs'.
    split_call, xs_val = phase_split_call(node, ctx, x, pb, pe, strides, extra_rows, fill=xzp)
    # int8 weights, converted where they are broadcast (once per channel and tap per tile): a float32 copy
    # would add 0.6 MB to int8 EfficientNet-Lite0's 4.8 MB
    wq = ctx.derived_const(f"{w.name}.direct", lambda: w.const.reshape(m, k_len))
    y = node.outputs[0]
    # The accumulators of flat positions go to an arena temporary, read by a second kernel for the epilogue
    # (TVM cannot place the epilogue inside the channel loop: it cannot invert i·W2 + j). Inside one kernel
    # they were a TVM workspace: 1.9 MB for 144 channels of 56x56, beyond the driver's per-thread workspace
    # stack, so a fresh heap block per call, 1.1 ms instead of 0.35 ms for that conv.
    acc_val = ctx.temp(node.outputs[0].name + ".acc", (nb, m, ppad), DType.float32 if acc_dt == "float32"
                       else DType.int32)
    ops = [operand(xs_val, (nb, c, sh * sw, flat)), operand(wq), operand(acc_val)]
    vregs = tile // lanes
    tile_c = next(t for t in (4, 2, 1) if mg % t == 0 and t * vregs <= 8)
    key = f"qconv_direct|{kh},{kw},{sh},{sw},{dh},{dw},{g}|{acc_dt}|{sig(*ops)}"
    big = nb * m * oh * ow >= PARALLEL_MIN_ELEMENTS

    def build():
        from tvm import te
        X = te.placeholder((nb, c, sh * sw, flat), "uint8", name="X")
        W = te.placeholder((m, k_len), "int8", name="W")
        rh = te.reduce_axis((0, kh), name="rh")
        rw = te.reduce_axis((0, kw), name="rw")

        def tap(n, ci, q):
            return X[n, ci, ((rh * dh) % sh) * sw + (rw * dw) % sw,
                     q + ((rh * dh) // sh) * w2 + (rw * dw) // sw].astype(acc_dt)
        if cg == 1:
            acc = te.compute((nb, m, ppad), lambda n, mm, q: te.sum(
                tap(n, mm // mg, q) * W[mm, rh * kw + rw].astype(acc_dt), axis=[rh, rw]), name="acc")
        else:
            rc = te.reduce_axis((0, cg), name="rc")
            acc = te.compute((nb, m, ppad), lambda n, mm, q: te.sum(
                tap(n, (mm // mg) * cg + rc, q) * W[mm, (rc * kh + rh) * kw + rw].astype(acc_dt), axis=[rc, rh, rw]),
                name="acc")

        def sched(sch):
            blk = sch.get_sblock("acc")
            loops = sch.get_loops(blk)
            ln, lc, lq = loops[:3]
            red = loops[3:]
            co, ci = sch.split(lc, [None, tile_c])
            qo, qt, qv = sch.split(lq, [None, vregs, lanes])
            sch.reorder(ln, co, qo, *red, ci, qt, qv)
            sch.unroll(ci)
            sch.unroll(qt)
            sch.vectorize(qv)
            outer = sch.fuse(ln, co)
            if big:
                sch.parallel(outer)
            init = sch.decompose_reduction(blk, red[0])
            sch.vectorize(sch.get_loops(init)[-1])
        return prim_func([X, W, acc], sched)

    eops = [operand(acc_val), operand(zsum), operand(scale)]
    if bias is not None:
        eops.append(operand(bias, (m,)))
    if res is not None:
        eops.append(operand(res))
    eops.append(operand(y))
    ekey = f"qconv_direct_epilogue|{w2}|{acc_dt}|{epi.key()}|{sig(*eops)}"

    def build_epilogue():
        from tvm import te
        A = te.placeholder((nb, m, ppad), acc_dt, name="acc")
        ZS = te.placeholder((m,), "int32", name="zp_wsum")
        S = te.placeholder((m,), "float32", name="scale")
        args = [A, ZS, S]
        Bias = Res = None
        if bias is not None:
            Bias = te.placeholder((m,), "float32", name="bias")
            args.append(Bias)
        if res is not None:
            Res = te.placeholder(y.shape, epi.residual_dtype, name="residual")
            args.append(Res)
        # Σ x·w and x_zp·Σw are exact integers (in float32 too, below 2**24), so is their difference; with
        # integer requantization ZS also holds the int32 bias, which need not be below 2**24: subtracted in int32
        sums_dt = "int32" if epi.integer else acc_dt
        Y = te.compute(y.shape, lambda n, mm, i, j: epi(
            (A[n, mm, i * w2 + j].astype(sums_dt) - ZS[mm].astype(sums_dt)).astype("float32"), S[mm],
            Bias[mm] if Bias is not None else None, dequantizing(Res, epi.residual_dq)[n, mm, i, j] if Res is not None else None), name="Y")

        def sched(sch):
            el = sch.get_loops(sch.get_sblock("Y"))
            f = sch.fuse(el[0], el[1])
            if big:
                sch.parallel(f)
            # vectorized along output rows, by the widest vector that divides them (odd widths are legalized
            # lane by lane, see schedules.pick_vec)
            vec_y = pick_vec(ow, lanes)
            if vec_y > 1:
                sch.vectorize(sch.split(el[-1], [None, vec_y])[-1])
        return prim_func(args + [Y], sched)

    return [split_call, Call(key, build, ops, node, flops=2 * y.size * k_len),
            Call(ekey, build_epilogue, eops, node, flops=y.size)]

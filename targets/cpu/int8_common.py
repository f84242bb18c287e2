"""Pieces every CPU int8 kernel shares (x86 VNNI GEMMs and convolutions, arm64 sdot GEMMs): constant
scalar operands, the float epilogue's activation, requantization, and the int8 GEMM's operand list."""
from __future__ import annotations

import numpy as np

from aotc.compiler.ir import Node

from .dequantize_reads import dequantizing, read_through
from .lower_elementwise import tvm_dtype, unary_expr
from .lowering import LoweringContext, NoLoweringError, operand

# epilogue activation -> (unary op, attributes) in lower_elementwise's terms
ACT_AS_UNARY = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
                 "hardswish": ("HardSwish", {}), "gelu": ("Gelu", {"approximate": "none"}),
                 "gelu_tanh": ("Gelu", {"approximate": "tanh"})}


def scalar_const(v, what: str, node: Node):
    if v is None or v.const is None or v.const.size != 1:
        raise NoLoweringError(f"{what} must be a constant scalar for the CPU int8 kernels")
    return v.const.reshape(()).item()


def activation_expr(y, attrs):
    from tvm import tirx as T
    kind = attrs["activation"]
    if kind == "none":
        return y
    if kind == "clip":
        if attrs["act_alpha"] is not None:
            y = T.max(y, T.const(attrs["act_alpha"], "float32"))
        if attrs["act_beta"] is not None:
            y = T.min(y, T.const(attrs["act_beta"], "float32"))
        return y
    if kind == "leakyrelu":
        return unary_expr("LeakyRelu", y, "float32", {"alpha": attrs["act_alpha"]})
    if kind == "hardsigmoid":
        return unary_expr("HardSigmoid", y, "float32", {"alpha": attrs["act_alpha"], "beta": attrs["act_beta"]})
    if kind == "silu":
        return y * unary_expr("Sigmoid", y, "float32", {})
    op, a = ACT_AS_UNARY[kind]
    return unary_expr(op, y, "float32", a)


def quantize_params(node: Node) -> tuple[float, int, str]:
    """A per-tensor QuantizeLinear's (float32 scale, zero point, output TIR dtype)."""
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    scale = float(np.float32(scalar_const(node.inputs[1], "the scale", node)))
    return scale, int(scalar_const(zp, "the zero point", node)) if zp is not None else 0, tvm_dtype(node.outputs[0].dtype)


def quantize_expr(y, scale: float, zp: int, qdtype: str, reciprocal: bool = False, vector_round: bool = True):
    """saturate(round_half_even(y / scale) + zp), as QuantizeLinear. With `reciprocal`, y * float32(1 / scale):
    vdivps on zmm issues once per 10-16 cycles and bounded the requantizing epilogues of short-K GEMMs (a
    16 -> 96 channel conv writes 1.2 M outputs for 38 M multiply-adds); the product differs from the quotient
    by at most an ulp, which moves the result by one step only where y / scale lies that close to a .5 tie."""
    from tvm import tirx as T
    lo, hi = (0, 255) if qdtype == "uint8" else (-128, 127)
    if scale == 1.0:
        q = y  # integer requantization: y already carries the output scale (integer_requant_constants)
    elif reciprocal:
        q = y * T.const(float(np.float32(1.0) / np.float32(scale)), "float32")
    else:
        q = y / T.const(scale, "float32")
    # Clamped to the integer bounds before rounding (the same result: the bounds are integers) and rounded by
    # LLVM's nearbyint (half to even in the default rounding mode) called directly: TVM's vectorizer cannot
    # vectorize T.nearbyint and scalarizes the whole epilogue loop, which LLVM then re-vectorized across
    # output channels with gathers and byte extracts wherever nothing else bounded the value (a conv without
    # activation: 4x slower requantizing epilogues; with a Clip activation LLVM happened to pick the pixel loop).
    # `vector_round` False: a target whose kernels are not LLVM CPU code (CUDA reuses these computes) gets
    # TVM's nearbyint, which every codegen knows.
    q = T.max(T.min(q, T.const(float(hi - zp), "float32")), T.const(float(lo - zp), "float32"))
    q = T.call_llvm_pure_intrin("float32", "llvm.nearbyint", q) if vector_round else T.nearbyint(q)
    return T.Cast(qdtype, T.Cast("int32", q) + T.const(zp, "int32"))


def int8_gemm_compute(m: int, k: int, n: int, acc_n: int, a_dtype: str, b_shape, b_at, has_bias: bool,
                      has_residual: bool, epi: dict, requant, reciprocal: bool = False):
    """The TE every target's int8 GEMM kernel computes, over the operands int8_gemm_operands gives:
    acc[m, acc_n] = sum_k A[m, k] * B(j, k) (B packed as the target's dot instruction reads it, `b_at(B, j, k)`;
    acc_n >= n: padding columns computed and never stored), then C[m, n] = requantize?(activation((acc - colsum)
    * scale + bias, residual before or after)). Returns (placeholders in operand order, C)."""
    from tvm import te
    A = te.placeholder((m, k), a_dtype, name="A")
    B = te.placeholder(tuple(b_shape), "int8", name="Bp")
    CS = te.placeholder((n,), "int32", name="colsum")
    S = te.placeholder((n,), "float32", name="scale")
    args = [A, B, CS, S]
    Bias = te.placeholder((n,), "float32", name="bias") if has_bias else None
    rdq = epi.get("residual_dq")  # a residual the model dequantizes: read as 8 bits (dequantize_reads.py)
    Res = te.placeholder((m, n), rdq.dtype if rdq else "float32", name="residual") if has_residual else None
    args += [t for t in (Bias, Res) if t is not None]
    kk = te.reduce_axis((0, k), name="k")
    acc = te.compute((m, acc_n), lambda i, j: te.sum(A[i, kk].astype("int32") * b_at(B, j, kk).astype("int32"),
                                                     axis=kk), name="acc")

    def epilogue(i, j):
        y = (acc[i, j] - CS[j]).astype("float32") * S[j]
        if Bias is not None:
            y = y + Bias[j]
        if Res is not None and epi["residual_before_activation"]:
            y = y + dequantizing(Res, rdq)[i, j]
        y = activation_expr(y, epi)
        if Res is not None and not epi["residual_before_activation"]:
            y = y + dequantizing(Res, rdq)[i, j]
        if requant is not None:
            y = quantize_expr(y, requant[0], requant[1], requant[2], reciprocal=reciprocal)
        return y
    return args, te.compute((m, n), epilogue, name="C")


def integer_requant_constants(node: Node, ctx: LoweringContext, key: str, zp_sums, bias, n: int):
    """requantization="integer" (compiler/ops/quant.py): out = round(float32(acc + bias_i32) * m[n]) + y_zp. A
    kernel computing float32(acc - zp_sums) * scale then QuantizeLinear with scale 1 does exactly that when
    zp_sums (x_zp·Σw) has the int32 bias subtracted and scale is m. Returns (those zp sums, m)."""
    from aotc.compiler.ops.quant import requant_multiplier
    xs, ws, ys = (node.inputs[i].const for i in (1, 4, 7))
    mult = ctx.derived_const(f"{key}.{node.inputs[4].name}.{node.inputs[7].name}.requant",
                             lambda: requant_multiplier(xs, ws, ys, n))
    if bias is None:
        return zp_sums, mult
    sums = ctx.derived_const(f"{zp_sums.name}-{bias.name}", lambda: (
        zp_sums.const.astype(np.int64) - bias.const.astype(np.int64)).astype(np.int32))
    return sums, mult


def has_float_bias(bias, attrs) -> bool:
    """Whether the kernel takes the bias as a float operand (integer requantization folds it into the sums)."""
    return bias is not None and attrs.get("requantization") != "integer"


def int8_gemm_operands(node: Node, ctx: LoweringContext, a, bp, colsum, key: str, xscale: float, ws, bias, res,
                       ys, yz, out, attrs, m: int, k: int, n: int):
    """What every target's int8 GEMM kernel takes: the operands [A [M, K], packed B, zero-point column sums,
    combined scale x_scale·w_scale[n], bias?, residual?, out [M, N]], the requantization (y_scale, y_zp, out
    dtype) or None, and the float epilogue's attributes. Integer requantization folds the int32 bias into the
    column sums and y_scale into the scale (integer_requant_constants): no bias operand, requantization by 1."""
    if attrs.get("requantization") == "integer":
        colsum, scale = integer_requant_constants(node, ctx, key, colsum, bias, n)
        ops = [operand(a, (m, k)), operand(bp), operand(colsum), operand(scale), operand(out, (m, n))]
        requant = (1.0, int(scalar_const(yz, "y_zero_point", node)), tvm_dtype(out.dtype))
        epi = {"activation": "none", "act_alpha": None, "act_beta": None, "residual_before_activation": 0,
               "residual_dq": None}
        return ops, requant, epi
    scale = ctx.derived_const(f"{key}.{ws.name}.scale", lambda: (np.float32(xscale) * np.broadcast_to(
        ws.const.reshape(-1).astype(np.float32), (n,))).astype(np.float32))
    (res,), (rdq,) = read_through([res], ctx)
    ops = [operand(a, (m, k)), operand(bp), operand(colsum), operand(scale)]
    if bias is not None:
        ops.append(operand(bias, (n,)))
    if res is not None:
        ops.append(operand(res, (m, n)))
    ops.append(operand(out, (m, n)))
    requant = None
    if ys is not None:
        requant = (float(np.float32(scalar_const(ys, "y_scale", node))), int(scalar_const(yz, "y_zero_point", node)),
                   tvm_dtype(out.dtype))
    epi = {k_: attrs.get(k_) for k_ in ("activation", "act_alpha", "act_beta", "residual_before_activation")}
    epi["activation"] = epi["activation"] or "none"
    epi["residual_before_activation"] = epi["residual_before_activation"] or 0
    epi["residual_dq"] = rdq
    return ops, requant, epi


def tiles_per_block(tiles: int, tile_bytes: int) -> int:
    """Register tiles that share one accumulator buffer. TVM 0.27 takes every intermediate buffer of these
    kernels (the accumulator tile too, whatever its scope or size) from TVMBackendAllocWorkspace at its
    allocation point, i.e. once per register tile. When the driver served that with posix_memalign/free, it cost
    more than the tile's vpdpbusd for short K (16 -> 96 channels at 112x112: 1.8 ms in a bundle against
    0.6 ms under TVM's pooled workspace) and halved the MiniLM GEMMs; the driver's per-thread workspace stack
    (1 MB) makes each call cheap now, and a block of about 16 KB per allocation still makes them rare and
    stays L1-resident for the epilogue that reads it."""
    for t in range(max(1, min(tiles, 16384 // tile_bytes)), 0, -1):
        if tiles % t == 0:
            return t
    return 1

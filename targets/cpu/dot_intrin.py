"""Tensor intrinsics for int8 dot products with the accumulator in a local (register) tile: one
instruction adds, into each of `lanes` int32 accumulators, the sum of 4 byte products between a
broadcast group of 4 activations and that lane's 4 weights (x86 `vpdpbusd`, uint8 x int8, 16 lanes;
ARM `sdot`, int8 x int8, 4 lanes). TVM ships the same computations with the accumulator in global
memory; tensorizing a register tile needs it local."""
from __future__ import annotations


def register_broadcast_dot(name: str, lanes: int, a_dtype: str, llvm_intrinsic: str) -> str:
    """Register (once) C[lanes] += Σ_k A[k]·B[i, k] (k < 4) lowered to `llvm_intrinsic`(C, A broadcast, B)
    with A of `a_dtype` and B int8; returns the intrinsic's name for `sch.tensorize`."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T
    try:
        TensorIntrin.get(name)
        return name
    except Exception:  # noqa: BLE001  (not registered yet)
        pass
    a_vec, acc_vec, byte_vec = f"{a_dtype}x4", f"int32x{lanes}", f"int8x{4 * lanes}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), a_dtype, offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), a_dtype, offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # The 4 activation bytes as one int32 broadcast to every lane, seen as bytes again (this LLVM
            # declares both intrinsics on byte vectors).
            a_i32 = T.reinterpret(A.vload([0], a_vec), dtype="int32")
            a_bytes = T.reinterpret(T.broadcast(a_i32, lanes), dtype=byte_vec)
            # B's lanes x 4 bytes as the one flat vector they are in memory (a vector load along B's last
            # axis would run past its 4 columns: bounds_check.py would, rightly, not prove it in range)
            b_flat = T.decl_buffer((4 * lanes,), "int8", data=B.data, elem_offset=B.elem_offset)
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                C.vload([0], dtype=acc_vec), a_bytes, b_flat.vload([0], dtype=byte_vec), dtype=acc_vec)

    TensorIntrin.register(name, desc, impl)
    return name

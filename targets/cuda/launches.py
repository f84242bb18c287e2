"""Each kernel launch of a lowered PrimFunc, read from the host half of TVM's lowered module.

TVM's host code for a CUDA PrimFunc unpacks its arguments (`x_handle = args[i]`, `x = decl_buffer(data=
x_handle->data)`, views of it) and launches each device kernel with `call_ffi_kernel(name, x.data, ...,
launch values, launch_params=[blockIdx.x, ..., threadIdx.x, ..., tirx.use_dyn_shared_memory])`. Following each
pointer argument back through those bindings to `args[i]` gives the PrimFunc parameter it is; the launch values
give grid, block and dynamic shared memory. Anything else (a scalar argument, a workspace the host would
allocate) is refused by name: the AOT driver has no TVM runtime to provide it."""
from __future__ import annotations

from dataclasses import dataclass

from aotc.compiler.errors import AotcError


class LaunchReadError(AotcError):
    """A lowered kernel's host code does something the AOT driver cannot reproduce."""


@dataclass(frozen=True)
class Launch:
    kernel: str                  # CUDA symbol (extern "C" __global__)
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dyn_smem: int                # bytes of dynamic shared memory
    params: tuple[int, ...]      # PrimFunc parameter index of each kernel argument, in the kernel's order
    #                              (index >= the PrimFunc's parameter count: workspace index - that count)


def _walk(stmt, binds: list, decls: list, calls: list, workspaces: list) -> None:
    kind = type(stmt).__name__
    if kind == "Evaluate":
        v = stmt.value
        if type(v).__name__ == "Call" and getattr(v.op, "name", "") == "tirx.call_ffi_kernel":
            calls.append(v)
        elif type(v).__name__ == "Call" and "Workspace" in getattr(v.op, "name", ""):
            raise LaunchReadError("allocates a device workspace at run time")
        return
    if kind in ("Bind", "LetStmt"):
        binds.append((stmt.var, stmt.value))
    elif kind == "DeclBuffer":
        decls.append((stmt.buffer, stmt.data))
    elif kind in ("AllocBuffer", "Allocate"):
        workspaces.append(stmt.buffer)
    for s in getattr(stmt, "seq", ()) or ():
        _walk(s, binds, decls, calls, workspaces)
    for field in ("body", "then_case", "else_case"):
        child = getattr(stmt, field, None)
        if child is not None:
            _walk(child, binds, decls, calls, workspaces)


def _arg_index(expr, binds, decls, depth=0, ws=(), nparams=0) -> int | None:
    """The `args[i]` that `expr` (a pointer in the host code) comes from, or None."""
    if depth > 16 or expr is None:
        return None
    kind = type(expr).__name__
    if kind == "Call":
        name = getattr(expr.op, "name", "")
        if name == "tirx.tvm_struct_get":
            base, _, field = expr.args[0], expr.args[1], int(expr.args[2])
            if field == 15 and getattr(base, "name", None) == "args":  # args[i].v_ptr: the i-th argument
                return int(expr.args[1])
            return _arg_index(base, binds, decls, depth + 1, ws, nparams)
        if name == "tirx.if_then_else":  # the handle of a DLTensor or of a tensor object: same argument
            return _arg_index(expr.args[2], binds, decls, depth + 1, ws, nparams)
        if name == "tirx.buffer_data":  # x.data: what x's declaration points it at
            buf = expr.args[0]
            for b, data in decls:
                if b.same_as(buf):
                    return _arg_index(data, binds, decls, depth + 1, ws, nparams)
            return next((nparams + k for k, w in enumerate(ws) if w.same_as(buf)), None)
        for a in expr.args:
            i = _arg_index(a, binds, decls, depth + 1, ws, nparams)
            if i is not None:
                return i
        return None
    if kind == "Var":
        for var, value in binds:
            if var.same_as(expr):
                return _arg_index(value, binds, decls, depth + 1, ws, nparams)
    return None


def _nbytes(buf) -> int:
    ty = buf.ty
    n = 1
    for d in ty.shape:
        n *= int(d)
    return n * max(tvm_dtype_bits(ty.dtype) // 8, 1)


def tvm_dtype_bits(dtype) -> int:
    import re
    m = re.search(r"(\d+)", str(dtype))
    return int(m.group(1)) if m else 8


def launches_of(host_func, prim_func, what: str) -> tuple[list[Launch], list[int]]:
    """The launches, and the bytes of each intermediate buffer TVM's host code would allocate (the driver
    places them in the arena: parameter index len(prim_func.params) + k is workspace k)."""
    binds, decls, calls, workspaces = [], [], [], []
    try:
        _walk(host_func.body, binds, decls, calls, workspaces)
    except LaunchReadError as e:
        raise LaunchReadError(f"The CUDA kernel for {what} {e}, which the AOT driver does not provide.") from None
    nparams = len(prim_func.params)
    out = []
    for c in calls:
        name = str(c.args[0].value)
        tags = [str(t) for t in c.attrs.launch_params]
        nvals = len(tags)
        ptrs, vals = list(c.args[1:len(c.args) - nvals]), list(c.args[len(c.args) - nvals:])
        params = []
        for p in ptrs:
            i = _arg_index(p, binds, decls, 0, workspaces, nparams)
            if i is None:
                raise LaunchReadError(f"The CUDA kernel {name} for {what} takes an argument ({p}) that is not one "
                                      f"of its tensors; the AOT driver passes tensors only.")
            params.append(i)
        dims = {t: int(v) for t, v in zip(tags, vals)}
        grid = tuple(dims.get(f"blockIdx.{a}", 1) for a in "xyz")
        block = tuple(dims.get(f"threadIdx.{a}", 1) for a in "xyz")
        out.append(Launch(name, grid, block, dims.get("tirx.use_dyn_shared_memory", 0), tuple(params)))
    if not out:
        raise LaunchReadError(f"TVM's lowering of {what} launches no CUDA kernel.")
    return out, [_nbytes(w) for w in workspaces]

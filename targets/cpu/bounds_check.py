"""A compile-time check that a kernel reads and writes only inside its buffers, after TVM's simplifier.

A select evaluates both of its values, so a guarded read (padding, a ragged tile, the other input of a Concat)
must clamp its indices; TVM's simplifier, given the select's condition as comparisons, proves such a clamp
redundant and drops it (lowering.in_bounds is the cure). Nothing at run time shows the resulting reads: the
values are discarded, and only a page fault past the arena or a slow denormal betrays them. TVM's OOBChecker
proves every index in range from the loop and block domains; this runs it on the simplified kernel.

`AOTC_CHECK_BOUNDS=1` makes the CPU targets check every kernel they build (tests/test_kernel_bounds.py does,
over graphs that cover the guarded reads); a failure names the kernel and the node it was built for."""
from __future__ import annotations

import os


def checking() -> bool:
    return os.environ.get("AOTC_CHECK_BOUNDS", "") not in ("", "0")


def out_of_bounds_access(func, target) -> str | None:
    """None when every buffer access of `func` is provably in bounds after simplification; else TVM's message."""
    import tvm
    from tvm import s_tir, tirx
    mod = tvm.IRModule({"main": func})
    with target:
        mod = tirx.transform.StmtSimplify()(mod)
        try:
            s_tir.analysis.OOBChecker()(mod)
        except Exception as e:  # TVM raises its InternalError with the access and the bounds it proved
            return str(e).strip().splitlines()[-1]
    return None

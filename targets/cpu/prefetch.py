"""Software prefetch of the next packed weight panel in register-tiled GEMMs and pointwise convolutions.

A batch-1 model reads every weight once per inference, from memory. The packed GEMM walks B one column panel
([K, NR], ~100-300 KB) at a time: its first row tile pulls the whole panel from DRAM at the rate the FMAs
consume it (several times a core's streaming bandwidth), and the other row tiles then reuse it from L2 while
the memory bus idles. Cold GEMMs ran at 70-80% of peak against 90% hot (64x768 @ 768x2304 ×12 distinct
weights, one core). Prefetching the next panel evenly over all row tiles of the current one keeps the bus
busy the whole time instead. A pointwise convolution on a small map (ResNet's last stage: 49 pixels) is the
same GEMM with pixels as rows and an output block group's weights as the panel.

TVM's Python API has no statement mutator, so the prefetches go in through TVMScript: the scheduled
function is printed, the statements are inserted at the head of one loop's body, and the text is parsed
back (a round trip TVMScript guarantees). The loop they go in must not be the innermost reduction loop:
LLVM keeps the accumulators in registers only across loops without calls."""
from __future__ import annotations

import re

LINE_FLOATS = 16  # float32 values per 64-byte cache line
LOCALITY_L2 = 2  # llvm.prefetch locality: the panel is reused from L2, it would only crowd L1


def with_panel_prefetch(func, buffer: str, panels: int, k: int, nr: int, row_tiles: int, k_step: int):
    """`func`, a scheduled packed GEMM whose outermost loop runs over (panel, row tile) pairs, panel-major, and
    whose reduction runs as loop `k_0` over groups of `k_step` steps, with prefetches at the head of each
    group: over the `row_tiles` row tiles x K / k_step groups of panel j, the cache lines of panel j + 1 of
    `buffer` ([panels, K, NR]) in order. Unchanged when there is one panel."""
    groups = k // k_step

    def line_index(line: str) -> str:
        e = f"{line} * {LINE_FLOATS}"
        return f"{e} // {nr}, {e} % {nr}"
    return _with_next_panel_prefetch(func, buffer, panels, k * nr // LINE_FLOATS, "k_0", groups, row_tiles,
                                     lambda outer: f"{outer} // {row_tiles}",
                                     lambda outer, loop: f"{outer} % {row_tiles} * {groups} + {loop}", line_index)


def with_pointwise_prefetch(func, buffer: str, groups: int, cin: int, nb: int, k_blocks: int, pixel_tiles: int):
    """`func`, a scheduled K-blocked pointwise convolution (conv_tiles._schedule_pointwise_kblocked: the
    outermost loop over output block groups, then `rco_0` over K_BLOCKS input channel blocks, then `q_0`
    over the pixel tiles) with prefetches at the head of each pixel tile: over the K_BLOCKS x PIXEL_TILES
    tiles of group g, the cache lines of group g + 1's weights in `buffer` ([groups, cin, NB, c]), in order.
    Unchanged when there is one group."""
    def line_index(line: str) -> str:
        return f"{line} // {nb}, {line} % {nb}, 0"
    return _with_next_panel_prefetch(func, buffer, groups, cin * nb, "q_0", k_blocks * pixel_tiles, 1,
                                     lambda outer: f"{outer} % {groups}",
                                     lambda outer, loop: f"rco_0 * {pixel_tiles} + {loop}", line_index)


def _with_next_panel_prefetch(func, buffer, panels, lines, loop_var, loop_steps, tiles, panel_of, step_of,
                              line_index):
    """The common part: at the head of `loop_var`'s body, prefetch this step's share of panel
    panel_of(outer) + 1's `lines` cache lines, the steps of a panel numbered step_of(outer, loop_var) from 0
    to loop_steps * tiles - 1; line_index(line) is the index of a line's first float after the panel's."""
    if panels < 2:
        return func
    from tvm.script import from_source
    text = func.script()
    outer = re.search(r"^\s*for ([\w, ]+) in ", text, re.M)  # the outermost loop: one variable, not a grid
    text = _split_grid_after(text, loop_var)
    loop = re.search(rf"^(\s*)for (?:[\w, ]+, )?{loop_var} in (?:range\(\d+\)|T\.grid\([\d, ]+\)):\n", text,
                     re.M)
    if outer is None or "," in outer.group(1) or loop is None or outer.group(1) == loop_var:
        return func
    o = outer.group(1)
    per_step = -(-lines // (loop_steps * tiles))
    step = f"({step_of(o, loop_var)})"
    panel = f"T.min({panel_of(o)} + 1, {panels - 1})"
    stmts = ""
    for q in range(per_step):
        line = f"T.min({step} * {per_step} + {q}, {lines - 1})"
        stmts += (f'{loop.group(1)}    T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", '
                  f'T.address_of({buffer}[{panel}, {line_index(line)}]), T.int32(0), T.int32({LOCALITY_L2}), '
                  f'T.int32(1)))\n')
    try:
        return from_source(text[:loop.end()] + stmts + text[loop.end():])
    except Exception:  # noqa: BLE001 -- a hint that does not parse is left out; the kernel is correct without it
        return func


def _split_grid_after(text: str, var: str) -> str:
    """TVMScript prints perfectly nested loops as one `for a, b, c in T.grid(x, y, z):`; write the loops up to
    and including `var` as one header and the rest as another nested in it, so a statement can go at the
    head of `var`'s body."""
    grids = re.finditer(r"^(\s*)for ([\w, ]+) in T\.grid\(([\d, ]+)\):\n", text, re.M)
    m = next((g for g in grids if var in [n.strip() for n in g.group(2).split(",")]), None)
    if m is None:
        return text
    names = [n.strip() for n in m.group(2).split(",")]
    extents = [e.strip() for e in m.group(3).split(",")]
    cut = names.index(var) + 1
    if cut == len(names):
        return text

    def header(ns, es, indent):
        if len(ns) == 1:
            return f"{indent}for {ns[0]} in range({es[0]}):\n"
        return f"{indent}for {', '.join(ns)} in T.grid({', '.join(es)}):\n"
    base = m.group(1)
    head = header(names[:cut], extents[:cut], base) + header(names[cut:], extents[cut:], base + "    ")
    rest = text[m.end():].split("\n")
    body = []
    while rest and (rest[0].startswith(base + " ") or not rest[0].strip()):
        body.append("    " + rest.pop(0) if rest[0].strip() else rest.pop(0))
    return text[:m.start()] + head + "\n".join(body + rest)

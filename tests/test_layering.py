"""The house reads top-down: aotc (API + CLI) -> targets -> passes -> compiler, and runtime_stub imports none
of them. Checked on the source (every import statement, module-level or inside a function), so a lazy import
cannot hide a layering violation or an import circle."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aotc", "targets", "passes", "compiler", "runtime_stub")
# What each layer may import from the others (itself always).
ALLOWED = {
    "aotc": {"targets", "passes", "compiler", "runtime_stub"},
    "targets": {"passes", "compiler", "runtime_stub"},
    "passes": {"compiler"},
    "compiler": set(),
    "runtime_stub": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, resolved to absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
        block.body = []  # imports for type annotations only: no run-time dependency
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def import_graph() -> nx.DiGraph:
    mods = source_modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for imp in imports_of(path):
            if imp in mods and imp != name:
                g.add_edge(name, imp)
    return g


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for src, dst in import_graph().edges:
        a, b = src.split(".")[0], dst.split(".")[0]
        if a != b and b not in ALLOWED[a]:
            bad.append(f"{src} -> {dst}")
    assert not bad, "layering violations:\n" + "\n".join(sorted(bad))


# The one accepted circle: the control-flow converter hands converted code the run-time module as a closure
# cell, and that module's call hook converts the functions converted code calls, on the fly. They are one
# mechanism split in two files for size; both imports are lazy on one side.
ACCEPTED_CIRCLES = [["compiler.frontend.convert", "compiler.frontend.runtime"]]


def test_no_import_circle_between_modules():
    """A package importing its own submodules (registration in __init__.py) is not a circle of code; any other
    strongly connected set of modules is."""
    g = import_graph()
    g.remove_edges_from([(a, b) for a, b in list(g.edges) if b.startswith(a + ".")])
    circles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    circles = [c for c in circles if c not in ACCEPTED_CIRCLES]
    assert not circles, f"import circles: {circles}"


def test_targets_do_not_name_each_other():
    """A target package (a folder of targets/) imports no other target package, except arm64 and cuda the
    shared CPU family they build on; the shared modules beside them (base, bundle, signing, ...) are for all."""
    # cuda builds its kernels from the CPU family's lowering rules (their TE computes, without the CPU
    # schedules) and plans its device arena with the CPU family's planner (the same lifetimes).
    allowed = {"arm64": {"cpu"}, "cuda": {"cpu"}}
    bad = []
    for src, dst in import_graph().edges:
        s, d = src.split("."), dst.split(".")
        if s[0] == d[0] == "targets" and len(s) > 1 and len(d) > 1 and s[1] != d[1]:
            if (ROOT / "targets" / d[1]).is_dir() and d[1] not in allowed.get(s[1], set()):
                bad.append(f"{src} -> {dst}")
    assert not bad, bad


@pytest.mark.parametrize("pkg", ["compiler", "passes", "targets"])
def test_no_target_name_tests(pkg):
    """Hardware differences come from capabilities, not `target.name.startswith(...)`."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / pkg).rglob("*.py")
                 if "name.startswith(\"arm64" in p.read_text() or "name.startswith(\"x86" in p.read_text()]
    assert not offenders, offenders

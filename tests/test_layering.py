"""The house reads top-down: aotc (API + CLI) -> targets -> passes -> compiler, and runtime_stub imports none
of them. Checked on the source (every import statement, module-level or inside a function), so a lazy import
cannot hide a layering violation or an import circle.

Modules are named as they are imported: compiler/ir.py is `aotc.compiler.ir` (compiler/, passes/, targets/
and runtime_stub/ are subpackages of aotc, docs in aotc/__init__.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aotc", "targets", "passes", "compiler", "runtime_stub")
SUBPACKAGES = PACKAGES[1:]  # source folders beside aotc/ that are imported as aotc.<folder>
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
    if parts[0] in SUBPACKAGES:
        parts.insert(0, "aotc")
    return ".".join(parts)


def layer(module: str) -> str:
    """aotc.compiler.ir -> compiler; aotc.cli -> aotc."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else parts[0]


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
            if not (mod == "aotc" and all(a.name in SUBPACKAGES for a in node.names)):
                out.add(mod)  # `from aotc import compiler` loads aotc/__init__.py, which imports nothing
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def source_modules() -> dict[str, Path]:
    # aotc/compiler etc. are links to the folders beside aotc/: walk each folder once, by its real path.
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if not any(part in SUBPACKAGES for part in p.relative_to(ROOT).parts[1:2]) or pkg != "aotc"]
    return {module_name(p): p for p in files}


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
        a, b = layer(src), layer(dst)
        if a != b and b not in ALLOWED[a]:
            bad.append(f"{src} -> {dst}")
    assert not bad, "layering violations:\n" + "\n".join(sorted(bad))


# The one accepted circle: the control-flow converter hands converted code the run-time module as a closure
# cell, and that module's call hook converts the functions converted code calls, on the fly. They are one
# mechanism split in two files for size; both imports are lazy on one side.
ACCEPTED_CIRCLES = [["aotc.compiler.frontend.convert", "aotc.compiler.frontend.runtime"]]


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
        s, d = src.split(".")[1:], dst.split(".")[1:]
        if s and d and s[0] == d[0] == "targets" and len(s) > 1 and len(d) > 1 and s[1] != d[1]:
            if (ROOT / "targets" / d[1]).is_dir() and d[1] not in allowed.get(s[1], set()):
                bad.append(f"{src} -> {dst}")
    assert not bad, bad


@pytest.mark.parametrize("pkg", ["compiler", "passes", "targets"])
def test_no_target_name_tests(pkg):
    """Hardware differences come from capabilities, not `target.name.startswith(...)`."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / pkg).rglob("*.py")
                 if "name.startswith(\"arm64" in p.read_text() or "name.startswith(\"x86" in p.read_text()]
    assert not offenders, offenders


def test_every_import_uses_the_aotc_namespace():
    """The installed wheel has no top-level `compiler`, `passes`, `targets` or `runtime_stub`: an import of one
    of those names (anywhere: package, tests, bench, examples) works in a checkout and fails once installed."""
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or (rel.parts[0] == "aotc" and len(rel.parts) > 2
                                            and rel.parts[1] in SUBPACKAGES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module
                     else [])
            bad += [f"{rel}:{node.lineno}: {n}" for n in names if n.split(".")[0] in SUBPACKAGES]
    assert not bad, "imports outside the aotc namespace:\n" + "\n".join(bad)


def test_the_runtime_imports_itself_relatively():
    """runtime_stub's modules import each other with relative imports only, so the same files work as
    aotc.runtime_stub and under any other package name (the runtime-only distribution)."""
    bad = [f"{p.name}: {imp}" for p in (ROOT / "runtime_stub").rglob("*.py") for imp in imports_of(p)
           if imp.split(".")[0] == "aotc" and not imp.startswith("aotc.runtime_stub")]
    absolute = [f"{p.name}:{n.lineno}" for p in (ROOT / "runtime_stub").rglob("*.py")
                for n in ast.walk(ast.parse(p.read_text()))
                if isinstance(n, ast.ImportFrom) and not n.level and (n.module or "").startswith("aotc")]
    assert not bad and not absolute, bad + absolute

"""Static facts about Python statements the rewriter needs: which names a block assigns,
whether it returns, breaks out of a loop or always ends, and which of its statements
change things outside it."""
from __future__ import annotations

import ast
from typing import Iterator

from .sites import Effect

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
# Methods of Python containers (and nn.Module) that change the receiver.
MUTATING_METHODS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem",
                    "appendleft", "extendleft", "popleft", "discard", "add_module", "register_buffer",
                    "register_parameter", "register_module"}


def walk(nodes, into_loops: bool = True) -> Iterator[ast.AST]:
    """Nodes of `nodes` (a node or a list), not descending into nested functions, classes and
    lambdas (whose bodies are other scopes), nor into loops when `into_loops` is false."""
    stack = list(nodes) if isinstance(nodes, list) else [nodes]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, _SCOPES):
            continue
        if not into_loops and isinstance(n, _LOOPS):
            continue
        stack.extend(ast.iter_child_nodes(n))


def target_names(t) -> Iterator[str]:
    if isinstance(t, ast.Name):
        yield t.id
    elif isinstance(t, (ast.Tuple, ast.List)):
        for e in t.elts:
            yield from target_names(e)
    elif isinstance(t, ast.Starred):
        yield from target_names(t.value)


def assigned_names(stmts: list[ast.stmt]) -> list[str]:
    """Names the statements bind in the enclosing function scope, in order of first binding."""
    seen: dict[str, None] = {}
    for n in walk(stmts):
        if isinstance(n, _COMPREHENSIONS):
            continue
        names: list[str] = []
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names = [n.id]
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [n.name]
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names = [(a.asname or a.name).split(".")[0] for a in n.names if a.name != "*"]
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names = [n.name]
        elif isinstance(n, ast.NamedExpr):
            names = list(target_names(n.target))
        for name in names:
            seen.setdefault(name, None)
    # walk() pops from the end; report in source order
    return sorted(seen, key=lambda s: _first_line(stmts, s))


def _first_line(stmts, name) -> tuple[int, int]:
    for n in walk(stmts):
        if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store):
            return (n.lineno, n.col_offset)
    return (1 << 30, 0)


def declared_outer(fn: ast.FunctionDef) -> dict[str, str]:
    """Names the function declares `global` or `nonlocal`: {name: 'global' | 'nonlocal'}."""
    out = {}
    for n in walk(fn.body):
        if isinstance(n, ast.Global):
            out.update({x: "global" for x in n.names})
        elif isinstance(n, ast.Nonlocal):
            out.update({x: "nonlocal" for x in n.names})
    return out


def contains_return(stmts) -> bool:
    return any(isinstance(n, ast.Return) for n in walk(stmts))


def contains_yield(stmts) -> bool:
    return any(isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await)) for n in walk(stmts))


def loop_jumps(stmts) -> list[ast.stmt]:
    """`break`/`continue` statements that leave the loop enclosing `stmts` (not a loop inside them)."""
    return [n for n in walk(stmts, into_loops=False) if isinstance(n, (ast.Break, ast.Continue))]


def always_ends(stmts: list[ast.stmt]) -> bool:
    """Whether every path through the block ends in `return` or `raise`."""
    for s in stmts:
        if isinstance(s, (ast.Return, ast.Raise)):
            return True
        if isinstance(s, ast.If) and s.orelse and always_ends(s.body) and always_ends(s.orelse):
            return True
    return False


def root_name(expr) -> str | None:
    """`self` for `self.a.b[0]`; None when the root is not a plain name."""
    while isinstance(expr, (ast.Attribute, ast.Subscript)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def side_effects(stmts: list[ast.stmt], outer_declared: dict[str, str], scope: str = "the branch",
                 item_assignment: bool = True) -> list[Effect]:
    """Statements that change state living outside the block: attribute and item assignment on
    objects not created in it, container mutation, global/nonlocal writes, setattr.

    `item_assignment=False` leaves `a[i] = v` to the run-time check (a function's parameter may
    well be a tensor its caller created inside the same branch)."""
    local = set(assigned_names(stmts)) - set(outer_declared)
    effects = []

    def outside(expr) -> bool:
        r = root_name(expr)
        return r is None or r not in local

    for n in walk(stmts):
        targets = []
        if isinstance(n, ast.Assign):
            targets = n.targets
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)) and n.value is not None:
            targets = [n.target]
        elif isinstance(n, ast.Delete):
            targets = n.targets
        flat = []
        for t in targets:
            flat.extend(t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])
        for t in flat:
            if isinstance(t, ast.Starred):
                t = t.value
            if isinstance(t, ast.Subscript) and not item_assignment:
                continue
            if isinstance(t, (ast.Attribute, ast.Subscript)) and outside(t.value):
                verb = "deletes" if isinstance(n, ast.Delete) else "assigns to"
                effects.append(Effect(n.lineno, f"the statement {verb} `{ast.unparse(t)}`, which lives outside "
                                      f"{scope},"))
            elif isinstance(t, ast.Name) and t.id in outer_declared:
                effects.append(Effect(n.lineno, f"the statement assigns the {outer_declared[t.id]} variable "
                                      f"`{t.id}`"))
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Attribute) and f.attr in MUTATING_METHODS and outside(f.value):
                effects.append(Effect(n.lineno, f"`{ast.unparse(f)}(...)` changes `{ast.unparse(f.value)}`, "
                                      f"which lives outside {scope},"))
            elif isinstance(f, ast.Name) and f.id in ("setattr", "delattr"):
                effects.append(Effect(n.lineno, f"`{f.id}(...)` changes an object outside {scope}"))
    effects.sort(key=lambda e: e.lineno)
    return effects


def find_bounded(test: ast.expr):
    """(cond, max_iters) for a `while` test written `bounded(cond, max_iters)` (or `x.bounded(...)`)."""
    if not isinstance(test, ast.Call):
        return None
    f = test.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    if name != "bounded":
        return None
    args = list(test.args)
    kw = {k.arg: k.value for k in test.keywords}
    cond = args.pop(0) if args else kw.get("cond")
    limit = args.pop(0) if args else kw.get("max_iters")
    if cond is None or limit is None:
        return None
    return cond, limit

"""The AST rewrite that turns a function's data-dependent control flow into calls of
the runtime helpers (`runtime.py`), in the spirit of PaddlePaddle's dynamic-to-static.

    if test:                         def _aotc_then_7(y): <body>;   return (y,)
        <body>               ->      def _aotc_else_7(y): <orelse>; return (y,)
    else:                            (y,) = _aotc_rt.if_(test, _aotc_then_7, _aotc_else_7,
        <orelse>                                         _aotc_rt.load(locals(), ('y',)), 7)

Each branch becomes a function taking the variables the `if` assigns and returning their
new values, so the runtime can run one branch (a Python condition) or both and merge with
torch.where (a tensor condition). An `if` that returns is first made the last statement of
its block by moving the statements after it into the branches that fall through; then each
branch returns the function's result. In loops, `break`/`continue`/`return` become flag
variables (see `lower_jumps`). `while aotc.bounded(cond, n):` becomes a masked, unrolled
loop; `and`/`or`/`not`, `a if c else b` and `a < b < c` become runtime calls; every call
goes through `_aotc_rt.call`, which converts the user's own functions and methods on first
use.
Generated nodes carry the line of the construct they replace, so tracebacks and errors
point at the user's source.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, replace

from .analysis import (always_ends, assigned_names, contains_return, contains_yield, declared_outer, find_bounded,
                       loop_jumps, side_effects, target_names, walk)
from .errors import UnsupportedControlFlowError
from .sites import Site, register

RT = "_aotc_rt"
PREFIX = "_aotc_"
# Generated branch/loop functions are local to the code that defines them; generated flag
# variables (`_aotc_break_3`) are ordinary variables, merged like the user's.
_GENERATED_FUNCTIONS = tuple(f"{PREFIX}{k}_" for k in ("then", "else", "cond", "body"))


def _gen_call(attr: str, args: list[ast.expr]) -> ast.Call:
    call = ast.Call(func=ast.Attribute(value=ast.Name(RT, ast.Load()), attr=attr, ctx=ast.Load()), args=args,
                    keywords=[])
    call._aotc = True
    return call


def _names_tuple(names, ctx) -> ast.Tuple:
    return ast.Tuple(elts=[ast.Name(n, ctx()) for n in names], ctx=ctx())


def _def(name: str, params: list[str], body: list[ast.stmt]) -> ast.FunctionDef:
    args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], vararg=None, kwonlyargs=[],
                         kw_defaults=[], kwarg=None, defaults=[])
    fn = ast.FunctionDef(name=name, args=args, body=body or [ast.Pass()], decorator_list=[], returns=None,
                         type_comment=None)
    if "type_params" in ast.FunctionDef._fields:
        fn.type_params = []
    return fn


def _lambda(expr: ast.expr) -> ast.Lambda:
    args = ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    return ast.Lambda(args=args, body=expr)


def _located(nodes, at: ast.AST):
    """Give generated nodes the first line of the construct they replace (one line only: the
    interpreter reports a method call at its attribute's last line)."""
    for n in nodes:
        for m in ast.walk(n):
            if isinstance(m, (ast.expr, ast.stmt, ast.arg)) and getattr(m, "lineno", None) is None:
                m.lineno = m.end_lineno = at.lineno
                m.col_offset = m.end_col_offset = at.col_offset
    return nodes


def _exits(stmts) -> bool:
    """Whether the statements leave the enclosing loop's iteration (break, continue, return)."""
    return bool(loop_jumps(stmts)) or contains_return(stmts)


@dataclass(frozen=True)
class _Ctx:
    declared: dict  # names the user function declares global/nonlocal
    in_loop: bool  # break/continue here would leave an enclosing loop
    tail: bool  # the block is the function body or the body of a branch that returns the result


class FunctionRewriter:
    def __init__(self, filename: str, class_name: str | None, first_arg: str | None):
        self.filename = filename
        self.class_name = class_name
        self.first_arg = first_arg
        # (name, first line) of each user function rewritten (the top one and nested ones) ->
        # what it changes outside itself; checked when it is called inside a tensor branch
        self.effects: dict[tuple[str, int], list] = {}

    def rewrite(self, fn: ast.FunctionDef) -> ast.FunctionDef:
        fn.decorator_list = []
        if self.class_name and self.class_name.lstrip("_"):
            fn = _Mangler(self.class_name).visit(fn)
        fn = self.function(fn)
        fn = _ExpressionRewriter(self).visit(fn)
        ast.fix_missing_locations(fn)
        return fn

    def _site(self, kind: str, node: ast.AST, **kw) -> int:
        return register(Site(kind, self.filename, node.lineno, **kw))

    # -- statements -----------------------------------------------------------------------------
    def function(self, fn: ast.FunctionDef) -> ast.FunctionDef:
        if contains_yield(fn.body):
            return fn  # generators and coroutines run as written
        effects = side_effects(fn.body, declared_outer(fn), scope="the function", item_assignment=False)
        if effects:
            first_line = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
            self.effects[(fn.name, first_line)] = effects
        body = list(fn.body)
        if not always_ends(body):
            end = ast.Return(value=None)
            end.lineno = end.end_lineno = body[-1].end_lineno or body[-1].lineno
            end.col_offset = end.end_col_offset = 0
            body.append(end)
        fn.body = self.block(body, _Ctx(declared_outer(fn), in_loop=False, tail=True))
        return fn

    def block(self, stmts: list[ast.stmt], ctx: _Ctx) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        stmts = list(stmts)
        i = -1
        while i + 1 < len(stmts):
            i += 1
            s = stmts[i]
            if isinstance(s, (ast.While, ast.For)) and self._lowerable(s):
                # splice the lowered loop in: an `if` after it that returns needs what follows
                stmts[i:i + 1] = self.lower_jumps(s)
                i -= 1
                continue
            if isinstance(s, ast.If):
                if contains_return([s]):
                    if ctx.tail:
                        out.extend(self.return_if(s, stmts[i + 1:], ctx))
                        return out
                    out.append(self.guarded_if(s, ctx, "returns from inside a `with` or `try` block"))
                elif ctx.in_loop and loop_jumps(s.body + s.orelse):
                    out.append(self.guarded_if(s, ctx, "controls `break`/`continue` of a loop from inside a `try` "
                                                     "block"))
                else:
                    out.extend(self.value_if(s, ctx))
            elif isinstance(s, ast.While):
                out.extend(self.while_loop(s, ctx))
            elif isinstance(s, (ast.For, ast.AsyncFor)):
                s.body = self.block(s.body, replace(ctx, in_loop=True, tail=False))
                s.orelse = self.block(s.orelse, replace(ctx, tail=False))
                out.append(s)
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                s.body = self.block(s.body, replace(ctx, tail=False))
                out.append(s)
            elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
                inner = replace(ctx, tail=False)
                s.body, s.orelse, s.finalbody = (self.block(b, inner) for b in (s.body, s.orelse, s.finalbody))
                for h in s.handlers:
                    h.body = self.block(h.body, inner)
                out.append(s)
            elif isinstance(s, ast.FunctionDef):
                out.append(self.function(s))
            else:
                out.append(s)
        return out

    # -- break / continue ------------------------------------------------------------------------
    @staticmethod
    def _lowerable(loop) -> bool:
        """A loop whose break/continue/return can become flags: it has some, none inside a `try`
        (where `finally` would have to run), and it was not lowered already."""
        if getattr(loop, "_aotc_lowered", False):
            return False
        exits = loop_jumps(loop.body) + [n for n in walk(loop.body) if isinstance(n, ast.Return)]
        tries = [n for n in walk(loop.body) if isinstance(n, (ast.Try, getattr(ast, "TryStar", ast.Try)))]
        in_try = any(_exits(n.body + n.orelse + n.finalbody + [x for h in n.handlers for x in h.body])
                     for n in tries)
        return bool(exits) and not in_try

    def lower_jumps(self, loop) -> list[ast.stmt]:
        """`break` and `continue` become flags, Paddle-style, so a tensor condition can end a loop:

            for x in xs:                      _aotc_break_4 = False
                A                             for x in xs:
                if c:                             if not _aotc_break_4:
                    break           ->                A
                B                                     if c: _aotc_break_4 = True
                                                      if not _aotc_break_4: B
                                                  if _aotc_rt.loop_exit(_aotc_break_4, 9): break

        The flag is a Python bool while conditions are Python values (and then the loop really
        breaks); once a tensor condition sets it, it is a mask that freezes every later
        iteration's results. A bounded `while` folds the flag into its condition instead."""
        sid = self._site("loop", loop, note="while" if isinstance(loop, ast.While) else "for")
        jumps = loop_jumps(loop.body)
        returns = any(isinstance(n, ast.Return) for n in walk(loop.body))
        brk = f"{PREFIX}break_{sid}" if returns or any(isinstance(j, ast.Break) for j in jumps) else None
        cnt = f"{PREFIX}continue_{sid}" if any(isinstance(j, ast.Continue) for j in jumps) else None
        ret = (f"{PREFIX}returned_{sid}", f"{PREFIX}retval_{sid}") if returns else None
        flags = [f for f in (brk, cnt) if f]
        body = self._lower_block(loop.body, brk, cnt, flags, ret)
        new_body: list[ast.stmt] = []
        if cnt:
            new_body.append(ast.Assign(targets=[ast.Name(cnt, ast.Store())], value=ast.Constant(False)))
        lenient: set[str] = set()
        if brk and isinstance(loop, ast.For) and any(isinstance(j, ast.Break) for j in jumps):
            # The loop variable keeps its value from the iteration that broke, as in Python: it is
            # assigned from a fresh item variable inside the masked body.
            item = f"{PREFIX}item_{sid}"
            body.insert(0, _located([ast.Assign(targets=[loop.target], value=ast.Name(item, ast.Load()))],
                                    loop.target)[0])
            lenient = set(target_names(loop.target))
            loop.target = ast.Name(item, ast.Store())
        if brk:
            masked = ast.If(test=ast.UnaryOp(ast.Not(), ast.Name(brk, ast.Load())), body=body, orelse=[])
            masked._aotc_lenient = frozenset(lenient)
            new_body.append(masked)
        else:
            new_body.extend(body)
        pre, post = [], []
        if ret:  # `return v` in the loop: remember v, leave the loop, return it after the loop
            pre += [ast.Assign(targets=[ast.Name(ret[0], ast.Store())], value=ast.Constant(False)),
                    ast.Assign(targets=[ast.Name(ret[1], ast.Store())],
                               value=ast.Attribute(ast.Name(RT, ast.Load()), "NO_VALUE", ast.Load()))]
        bounded = find_bounded(loop.test) if isinstance(loop, ast.While) else None
        if brk:
            pre.append(ast.Assign(targets=[ast.Name(brk, ast.Store())], value=ast.Constant(False)))
            if bounded is not None:
                cond, _ = bounded
                new_cond = ast.BoolOp(ast.And(), [ast.UnaryOp(ast.Not(), ast.Name(brk, ast.Load())), cond])
                loop.test.args = [new_cond, bounded[1]]
                loop.test.keywords = []
            else:
                new_body.append(ast.If(test=_gen_call("loop_exit", [ast.Name(brk, ast.Load()), ast.Constant(sid)]),
                                       body=[ast.Break()], orelse=[]))
            if loop.orelse:
                post.append(ast.If(test=ast.UnaryOp(ast.Not(), ast.Name(brk, ast.Load())), body=loop.orelse,
                                   orelse=[]))
                loop.orelse = []
        if ret:
            post.append(ast.If(test=ast.Name(ret[0], ast.Load()), body=[ast.Return(ast.Name(ret[1], ast.Load()))],
                               orelse=[]))
        loop.body = new_body
        loop._aotc_lowered = True
        return _located(pre, loop) + [_located([loop], loop)[0]] + _located(post, loop)

    def _lower_block(self, stmts, brk, cnt, flags, ret) -> list[ast.stmt]:
        # a nested loop that returns is lowered first: what is left of it is an `if` that returns
        expanded: list[ast.stmt] = []
        for s in stmts:
            if isinstance(s, (ast.For, ast.While)) and contains_return([s]) and self._lowerable(s):
                expanded.extend(self.lower_jumps(s))
            else:
                expanded.append(s)
        stmts = expanded
        out: list[ast.stmt] = []
        for i, s in enumerate(stmts):
            if isinstance(s, (ast.Break, ast.Continue, ast.Return)):
                sets = []
                if isinstance(s, ast.Return):
                    sets = [(ret[1], s.value or ast.Constant(None)), (ret[0], ast.Constant(True))]
                sets.append((brk if not isinstance(s, ast.Continue) else cnt, ast.Constant(True)))
                out.extend(_located([ast.Assign(targets=[ast.Name(n, ast.Store())], value=v) for n, v in sets], s))
                return out  # what follows a jump never runs
            if not _exits([s]):
                out.append(s)
                continue
            if isinstance(s, ast.If):
                s.body = self._lower_block(s.body, brk, cnt, flags, ret)
                s.orelse = self._lower_block(s.orelse, brk, cnt, flags, ret)
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                s.body = self._lower_block(s.body, brk, cnt, flags, ret)
            out.append(s)
            rest = stmts[i + 1:]
            if rest:
                jumped = ast.Name(flags[0], ast.Load()) if len(flags) == 1 else \
                    ast.BoolOp(ast.Or(), [ast.Name(f, ast.Load()) for f in flags])
                out.append(_located([ast.If(test=ast.UnaryOp(ast.Not(), jumped),
                                            body=self._lower_block(rest, brk, cnt, flags, ret), orelse=[])], s)[0])
            return out
        return out

    def _branch_vars(self, stmts, ctx) -> tuple[list[str], list[ast.stmt]]:
        assigned = assigned_names(stmts)
        names = [n for n in assigned if not n.startswith(_GENERATED_FUNCTIONS) and n not in ctx.declared]
        decls = []
        for kind, cls in (("global", ast.Global), ("nonlocal", ast.Nonlocal)):
            d = [n for n in assigned if ctx.declared.get(n) == kind]
            if d:
                decls.append(cls(names=d))
        return names, decls

    def _load(self, names) -> ast.Call:
        loc = ast.Call(func=ast.Name("locals", ast.Load()), args=[], keywords=[])
        loc._aotc = True
        return _gen_call("load", [loc, ast.Tuple(elts=[ast.Constant(n) for n in names], ctx=ast.Load())])

    @staticmethod
    def _assign(names, value: ast.expr) -> ast.stmt:
        if not names:
            return ast.Expr(value=value)
        return ast.Assign(targets=[_names_tuple(names, ast.Store)], value=value)

    def value_if(self, s: ast.If, ctx: _Ctx) -> list[ast.stmt]:
        names, decls = self._branch_vars(s.body + s.orelse, ctx)
        sid = self._site("if", s, names=tuple(names), effects=side_effects(s.body + s.orelse, ctx.declared),
                         lenient=getattr(s, "_aotc_lenient", frozenset()))
        inner = replace(ctx, in_loop=False, tail=False)
        ret = ast.Return(value=_names_tuple(names, ast.Load))
        then_def = _def(f"{PREFIX}then_{sid}", names, decls + self.block(s.body, inner) + [ret])
        else_def = _def(f"{PREFIX}else_{sid}", names, decls + self.block(s.orelse, inner) + [copy.deepcopy(ret)])
        call = _gen_call("if_", [s.test, ast.Name(then_def.name, ast.Load()), ast.Name(else_def.name, ast.Load()),
                                 self._load(names), ast.Constant(sid)])
        return _located([then_def, else_def, self._assign(names, call)], s)

    def return_if(self, s: ast.If, rest: list[ast.stmt], ctx: _Ctx) -> list[ast.stmt]:
        body = s.body if always_ends(s.body) else s.body + copy.deepcopy(rest)
        orelse = s.orelse if s.orelse and always_ends(s.orelse) else s.orelse + copy.deepcopy(rest)
        names, decls = self._branch_vars(body + orelse, ctx)
        sid = self._site("if", s, names=tuple(names), effects=side_effects(body + orelse, ctx.declared))
        inner = replace(ctx, in_loop=False, tail=True)
        then_def = _def(f"{PREFIX}then_{sid}", names, decls + self.block(body, inner))
        else_def = _def(f"{PREFIX}else_{sid}", names, decls + self.block(orelse, inner))
        call = _gen_call("if_return", [s.test, ast.Name(then_def.name, ast.Load()),
                                       ast.Name(else_def.name, ast.Load()), self._load(names), ast.Constant(sid)])
        return _located([then_def, else_def, ast.Return(value=call)], s)

    def guarded_if(self, s: ast.If, ctx: _Ctx, note: str) -> ast.If:
        sid = self._site("guarded-if", s, note=note)
        s.test = _located([_gen_call("py_test", [s.test, ast.Constant(sid)])], s)[0]
        inner = replace(ctx, tail=False)
        s.body, s.orelse = self.block(s.body, inner), self.block(s.orelse, inner)
        return s

    def while_loop(self, s: ast.While, ctx: _Ctx) -> list[ast.stmt]:
        bounded = find_bounded(s.test)
        if bounded is None:
            sid = self._site("guarded-while", s)
            s.test = _located([_gen_call("loop_test", [s.test, ast.Constant(sid)])], s)[0]
            s.body = self.block(s.body, replace(ctx, in_loop=True, tail=False))
            s.orelse = self.block(s.orelse, replace(ctx, tail=False))
            return [s]
        cond, limit = bounded
        bad = loop_jumps(s.body) + [n for n in walk(s.body) if isinstance(n, ast.Return)]
        if bad:
            word = type(bad[0]).__name__.lower()
            raise UnsupportedControlFlowError(
                f"`{word}` inside a `while aotc.bounded(...)` loop is not supported here: the loop is unrolled "
                "with masks, so results must flow to the end of each iteration.", self.filename, bad[0].lineno,
                "Assign the result to a variable and `break` instead of returning (break and continue are "
                "supported outside `try` blocks).")
        names, decls = self._branch_vars(s.body, ctx)
        sid = self._site("while", s, names=tuple(names), effects=side_effects(s.body, ctx.declared))
        cond_def = _def(f"{PREFIX}cond_{sid}", names, [ast.Return(value=cond)])
        ret = ast.Return(value=_names_tuple(names, ast.Load))
        body_def = _def(f"{PREFIX}body_{sid}", names,
                        decls + self.block(s.body, replace(ctx, in_loop=False, tail=False)) + [ret])
        call = _gen_call("while_", [ast.Name(cond_def.name, ast.Load()), ast.Name(body_def.name, ast.Load()), limit,
                                    self._load(names), ast.Constant(sid)])
        return _located([cond_def, body_def, self._assign(names, call)], s) + \
            self.block(s.orelse, replace(ctx, tail=False))


class _ExpressionRewriter(ast.NodeTransformer):
    """`and`/`or`/`not`, conditional expressions and calls, everywhere in the function."""

    def __init__(self, owner: FunctionRewriter):
        self.owner = owner

    @staticmethod
    def _binds(exprs) -> bool:
        # a thunk (lambda) would change what a walrus binds or where a yield goes
        return any(isinstance(n, (ast.NamedExpr, ast.Yield, ast.YieldFrom, ast.Await)) for e in exprs
                   for n in ast.walk(e))

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        if getattr(node, "_aotc", False):
            return node
        f = node.func
        if isinstance(f, ast.Name) and f.id == "super":
            if not node.args and not node.keywords and self.owner.first_arg:
                # zero-argument super() reads the calling frame's first argument, which inside a
                # generated branch function is not `self`
                node.args = [ast.Name("__class__", ast.Load()), ast.Name(self.owner.first_arg, ast.Load())]
            return node
        if isinstance(f, ast.Name) and f.id in ("locals", "globals", "vars"):
            return node
        node.func = _located([_gen_call("call", [f])], f)[0]
        return node

    def visit_BoolOp(self, node: ast.BoolOp):
        self.generic_visit(node)
        if self._binds(node.values):
            return node
        kind = "and" if isinstance(node.op, ast.And) else "or"
        sid = self.owner._site(kind, node)
        call = _gen_call(f"{kind}_", [ast.Constant(sid)] + [_lambda(v) for v in node.values])
        return _located([call], node)[0]

    def visit_UnaryOp(self, node: ast.UnaryOp):
        self.generic_visit(node)
        if not isinstance(node.op, ast.Not):
            return node
        sid = self.owner._site("not", node)
        return _located([_gen_call("not_", [node.operand, ast.Constant(sid)])], node)[0]

    def visit_Compare(self, node: ast.Compare):
        """`a < b < c` is `(a < b) and (b < c)` with `b` evaluated once."""
        self.generic_visit(node)
        if len(node.ops) < 2 or self._binds([node.left, *node.comparators]):
            return node
        sid = self.owner._site("and", node)
        ops = ast.Tuple(elts=[ast.Constant(type(op).__name__) for op in node.ops], ctx=ast.Load())
        thunks = [_lambda(e) for e in (node.left, *node.comparators)]
        return _located([_gen_call("compare_chain", [ast.Constant(sid), ops, *thunks])], node)[0]

    def visit_IfExp(self, node: ast.IfExp):
        self.generic_visit(node)
        if self._binds([node.body, node.orelse]):
            return node
        sid = self.owner._site("ifexp", node)
        return _located([_gen_call("ifexp", [node.test, _lambda(node.body), _lambda(node.orelse),
                                             ast.Constant(sid)])], node)[0]


class _Mangler(ast.NodeTransformer):
    """Private names (`self.__x`) as the class body would have mangled them; the rewritten
    function is compiled outside its class."""

    def __init__(self, class_name: str):
        self.prefix = "_" + class_name.lstrip("_")

    def m(self, name):
        if name and name.startswith("__") and not name.endswith("__"):
            return self.prefix + name
        return name

    def visit_Name(self, node):
        node.id = self.m(node.id)
        return node

    def visit_Attribute(self, node):
        self.generic_visit(node)
        node.attr = self.m(node.attr)
        return node

    def visit_arg(self, node):
        node.arg = self.m(node.arg)
        return node

    def visit_keyword(self, node):
        self.generic_visit(node)
        node.arg = self.m(node.arg)
        return node

    def visit_Global(self, node):
        node.names = [self.m(n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global

    def visit_ClassDef(self, node):
        return node

"""Converting the user's functions: source → rewritten AST → a function object that shares
the original's globals, closure cells and defaults; and the call hook that converts the
user's functions, methods and modules lazily, the first time converted code calls them.

The rewritten function is compiled inside a factory whose parameters are the original's
free variables plus the runtime module, so the new code object reads them as closure
cells; the function is then rebuilt around the original's own cells, so `nonlocal`
writes and later rebinding behave exactly as before.
"""
from __future__ import annotations

import __future__
import ast
import inspect
import textwrap
import types
import warnings
import weakref

from .errors import AotcError
from .rewrite import RT, FunctionRewriter
from .usercode import CONVERTED_CODE, is_user_function

_TEMPLATES: dict[types.CodeType, types.CodeType | None] = {}
_SOURCES: dict[types.CodeType, str] = {}  # the rewritten source, for converted_source()
_EFFECTS: dict[types.CodeType, tuple] = {}  # converted code -> (qualname, [Effect]) for side-effecting functions
_BY_FUNCTION: "weakref.WeakKeyDictionary[types.FunctionType, types.FunctionType]" = weakref.WeakKeyDictionary()
_CO_GENERATOR_LIKE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


class ConvertOptions:
    """Per-trace settings: extra module prefixes to convert, and the modules whose `forward`
    was replaced for the trace (restored when it ends)."""

    def __init__(self, convert_modules=()):
        self.convert_modules = tuple(convert_modules)
        self.patched: list = []


_OPTIONS: list[ConvertOptions] = []


def _options() -> ConvertOptions:
    return _OPTIONS[-1] if _OPTIONS else ConvertOptions()


def _template(fn: types.FunctionType) -> types.CodeType | None:
    code = fn.__code__
    if code in _TEMPLATES:
        return _TEMPLATES[code]
    _TEMPLATES[code] = None
    if code.co_flags & _CO_GENERATOR_LIKE or fn.__name__ == "<lambda>":
        return None
    try:
        lines, start = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None  # no source to convert; the trace guard still catches data-dependent Python decisions
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef) or node.name != fn.__name__:
        return None
    ast.increment_lineno(tree, start - 1)
    class_name = _enclosing_class(fn.__qualname__)
    positional = node.args.posonlyargs + node.args.args
    is_method = len(fn.__qualname__.split(".")) >= 2 and fn.__qualname__.split(".")[-2] == class_name
    first_arg = positional[0].arg if positional and is_method else None
    filename = code.co_filename
    rewriter = FunctionRewriter(filename, class_name, first_arg)
    try:
        new_def = rewriter.rewrite(node)
        factory = ast.FunctionDef(
            name="_aotc_factory",
            args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=a) for a in (RT, *code.co_freevars)], vararg=None,
                               kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
            body=[new_def, ast.Return(value=ast.Name(new_def.name, ast.Load()))], decorator_list=[], returns=None,
            type_comment=None)
        if "type_params" in ast.FunctionDef._fields:
            factory.type_params = []
        ast.copy_location(factory, new_def)
        module = ast.Module(body=[factory], type_ignores=[])
        ast.fix_missing_locations(module)
        # the user's `from __future__ import annotations` (and friends) still apply to the new code
        compiled = compile(module, filename, "exec", flags=code.co_flags & _FUTURE_FLAGS, dont_inherit=True)
    except AotcError:
        raise
    except Exception as e:  # a construct the rewriter mishandles: run the function as written
        warnings.warn(f"aotc could not convert {fn.__qualname__} ({filename}:{start}): {type(e).__name__}: {e}; "
                      "it runs unconverted.", stacklevel=2)
        return None
    factory_code = next(c for c in compiled.co_consts if isinstance(c, types.CodeType))
    inner = next(c for c in factory_code.co_consts if isinstance(c, types.CodeType) and c.co_name == new_def.name)
    _TEMPLATES[code] = inner
    _SOURCES[code] = ast.unparse(new_def)
    _record_effects(inner, rewriter.effects, fn.__qualname__)
    _mark_converted(inner)
    return inner


def _record_effects(code: types.CodeType, effects: dict, qualname: str) -> None:
    """Attach each rewritten user function's side effects to its code object (nested ones too)."""
    found = effects.get((code.co_name, code.co_firstlineno))
    if found:
        _EFFECTS[code] = (qualname, found)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _record_effects(c, effects, f"{qualname}.<locals>.{c.co_name}")


def converted_source(fn) -> str | None:
    """The Python source aotc runs in place of `fn` (a function or method), or None when it
    runs `fn` as written. For debugging conversions; line numbers are not kept in this text."""
    fn = getattr(fn, "__func__", fn)
    fn = getattr(fn, "__aotc_original__", fn)
    if not isinstance(fn, types.FunctionType):
        return None
    _template(fn)
    return _SOURCES.get(fn.__code__)


def _enclosing_class(qualname: str) -> str | None:
    """The innermost class lexically enclosing a function, for name mangling: in
    'Net.__init__.<locals>.helper' it is Net (a part followed by '<locals>' is a function)."""
    parts = qualname.split(".")[:-1]
    for i in range(len(parts) - 1, -1, -1):
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if parts[i] != "<locals>" and nxt != "<locals>":
            return parts[i]
    return None


def _mark_converted(code: types.CodeType) -> None:
    """The rewritten code and every function nested in it (the user's inner helpers were
    rewritten along with it) must not be converted again."""
    CONVERTED_CODE.add(code)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _mark_converted(c)


def convert_function(fn: types.FunctionType) -> types.FunctionType:
    """The converted twin of `fn` (or `fn` itself when it cannot be converted)."""
    if fn.__code__ in CONVERTED_CODE:
        return fn
    done = _BY_FUNCTION.get(fn)
    if done is not None:
        return done
    inner = _template(fn)
    if inner is None:
        return fn
    from . import runtime
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    cells[RT] = types.CellType(runtime)
    closure = tuple(cells[name] for name in inner.co_freevars)
    new = types.FunctionType(inner, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__, new.__module__, new.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    new.__dict__.update(fn.__dict__)
    new.__annotations__ = dict(getattr(fn, "__annotations__", {}))
    new.__aotc_original__ = fn
    _BY_FUNCTION[fn] = new
    return new


def convert_module(module) -> None:
    """Route an nn.Module instance's `forward` through its converted twin for this trace."""
    opts = _options()
    if not _OPTIONS or "forward" in module.__dict__:
        return
    fwd = getattr(type(module), "forward", None)
    if isinstance(fwd, types.FunctionType) and is_user_function(fwd, opts.convert_modules):
        conv = convert_function(fwd)
        if conv is not fwd:
            module.forward = types.MethodType(conv, module)
            opts.patched.append(module)


def _check_effects_in_branch(conv):
    """A function that changes things outside itself, called while a branch of a tensor condition
    is traced, would do so on paths where eager PyTorch would not call it."""
    recorded = _EFFECTS.get(getattr(conv, "__code__", None))
    if recorded is None:
        return conv
    from .guard import active
    g = active()
    if g is None or not g.scopes:
        return conv
    from .errors import SideEffectError, format_location, user_frame
    qualname, effects = recorded
    scope = g.scopes[-1]
    user, _ = user_frame()
    called = f", called at {format_location(user.f_code.co_filename, user.f_lineno)}" if user else ""
    part = "the body of the bounded `while`" if scope.site.kind == "while" else \
        f"the {scope.which}-branch of the `{scope.site.kind}`"
    raise SideEffectError(
        f"{effects[0].what} in `{qualname}`{called} inside {part} at "
        f"{format_location(scope.site.filename, scope.site.lineno)}, whose condition depends on the model's "
        "inputs. aotc traces every branch of such control flow, so a function called there must not change "
        "anything outside itself (Python lists and dicts, attributes, tensors in place).",
        conv.__code__.co_filename, effects[0].lineno,
        "Return the value from the function and update state after the `if`.")


def call(f):
    """The call hook: what converted code actually calls in place of `f`."""
    return _check_effects_in_branch(_call(f))


def _call(f):
    t = type(f)
    if t is types.FunctionType:
        if f.__code__ in CONVERTED_CODE or not is_user_function(f, _options().convert_modules):
            return f
        return convert_function(f)
    if t is types.MethodType:
        func = f.__func__
        if type(func) is types.FunctionType and func.__code__ not in CONVERTED_CODE \
                and is_user_function(func, _options().convert_modules):
            conv = convert_function(func)
            return f if conv is func else types.MethodType(conv, f.__self__)
        return f
    if t in (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType, type):
        if f is max or f is min:  # tensor-aware, for `max(x.abs().max(), eps)` and the like
            from . import runtime
            return runtime.builtin_max if f is max else runtime.builtin_min
        return f
    torch_nn = _torch_module_class()
    if torch_nn is not None and isinstance(f, torch_nn):
        convert_module(f)
        return f
    c = getattr(t, "__call__", None)
    if type(c) is types.FunctionType and is_user_function(c, _options().convert_modules):
        conv = convert_function(c)
        if conv is not c:
            return types.MethodType(conv, f)
    return f


def _torch_module_class():
    import sys
    torch = sys.modules.get("torch")
    return torch.nn.Module if torch is not None else None

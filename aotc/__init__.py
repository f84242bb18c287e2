"""aotc: an ahead-of-time compiler for neural-network models.

    import aotc
    aotc.compile("model.onnx", "out/model", target="x86-avx512", input_shapes={"x": (1, 3, 224, 224)})
    outputs = aotc.load("out/model").run({"x": x})

One import package. The source tree's top-level folders are its subpackages: compiler/ is `aotc.compiler`,
passes/ `aotc.passes`, targets/ `aotc.targets`, runtime_stub/ `aotc.runtime_stub` (links in aotc/ in a
checkout, real folders in the wheel), so installing aotc adds no generic top-level names to site-packages.

Nothing heavy is imported here: the names below load their modules on first use, so a runtime-only install
(numpy and nothing else, docs/deployment.md) can `import aotc.runtime_stub` without the compiler's
dependencies. The API module is the top layer: it imports the compiler core, the passes and the targets;
none of those imports it.
"""
from __future__ import annotations

import importlib

# name -> module that defines it (loaded on first attribute access, PEP 562)
_LAZY = {
    "compile": "aotc.api", "load": "aotc.api", "inspect": "aotc.api", "Bundle": "aotc.api",
    "CompileOptions": "aotc.api", "trace": "aotc.compiler.frontend", "bounded": "aotc.compiler.frontend",
    "AotcError": "aotc.compiler.errors", "__version__": "aotc.compiler.version",
}
__all__ = sorted([*_LAZY, "list_targets"])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aotc' has no attribute {name!r}")
    if name == "__version__":
        from aotc.compiler.version import aotc_version
        value = aotc_version()
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Not `targets`: that name is the subpackage aotc.targets.
def list_targets() -> list[dict]:
    """Every registered target with its aliases and options (`aotc targets --json`)."""
    from aotc.targets.base import describe_targets
    return describe_targets()

"""aotc: an ahead-of-time compiler for neural-network models.

    import aotc
    aotc.compile("model.onnx", "out/model", target="x86-avx512", input_shapes={"x": (1, 3, 224, 224)})
    outputs = aotc.load("out/model").run({"x": x})

The API module is the top layer: it imports the compiler core (compiler/), the passes (passes/) and the
targets (targets/); none of those imports it.
"""
from compiler import __version__  # noqa: F401
from compiler.frontend import bounded, trace  # noqa: F401

from .api import Bundle, CompileOptions, compile, load  # noqa: F401


def targets() -> list[dict]:
    """Every registered target with its aliases and options (`aotc targets --json`)."""
    from targets.base import describe_targets
    return describe_targets()

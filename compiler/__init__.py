"""aotc's compiler: the IR, the op registry, ONNX import/export and the interpreter."""
from .dtypes import DType  # noqa: F401
from .errors import AotcError  # noqa: F401
from .frontend import bounded, trace  # noqa: F401
from .interpreter import interpret  # noqa: F401
from .ir import Graph, Node, Value  # noqa: F401
from .onnx_import import load_onnx  # noqa: F401
from .verifier import verify  # noqa: F401
from .version import aotc_version

__version__ = aotc_version()  # pyproject.toml's, the one place it is written

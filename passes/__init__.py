"""Graph-to-graph passes over the IR, each registered by name (see pass_manager.py).

Importing this package registers every pass.
"""
from .pass_manager import DEFAULT_PIPELINE, PASSES, PassManager, parse_pipeline, register_pass, run_pipeline  # noqa: F401
from . import canonicalize, cleanup, fold_constants  # noqa: F401,E402  (registration)
from . import fold_batchnorm, fuse_attention, fuse_epilogue, fuse_norms  # noqa: F401,E402
from . import fuse_quantized  # noqa: F401,E402

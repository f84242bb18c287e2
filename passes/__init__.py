"""Graph-to-graph passes over the IR, each registered by name (see pass_manager.py).

Importing this package registers every pass.
"""
from .pass_manager import (DEFAULT_PIPELINE, PASSES, PassContext, PassManager, insert_pass,  # noqa: F401
                           parse_pipeline, register_pass, run_pipeline)
from . import canonicalize, cleanup, fold_constants  # noqa: F401,E402  (registration)
from . import fold_batchnorm, fuse_attention, fuse_epilogue, fuse_norms  # noqa: F401,E402
from . import decompose_for_opset, decompose_fused, prune_heads  # noqa: F401,E402
from . import fuse_quantized  # noqa: F401,E402
from . import quantize_int8  # noqa: F401,E402
from . import decompose_quantized  # noqa: F401,E402
from . import prequantized  # noqa: F401,E402
from . import blocked_layout, fit_to_target, subpixel_conv_transpose  # noqa: F401,E402  (target passes: targets add them to their pipeline)

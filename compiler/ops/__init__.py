"""The op registry and every op family. Importing this package registers all ops."""
from .registry import (Attr, OpDef, OpDefinitionError, get_op, is_registered, ops_targets_see,  # noqa: F401
                       register, registered_ops)
from . import elementwise, linalg, nn, reduce, shape_ops  # noqa: F401  (registration side effects)
from . import fused  # noqa: F401,E402  (fused ops build on the families above)
from . import quant  # noqa: F401,E402  (int8 ops build on the fused epilogues)
from . import qlinear  # noqa: F401,E402  (onnxruntime's integer QLinearAdd / QLinearGlobalAveragePool)
from . import qoperator  # noqa: F401,E402  (ONNX QLinear*/ *Integer ops, on the quantization helpers)
from . import qoperator_ms  # noqa: F401,E402  (onnxruntime's com.microsoft QLinear* ops)
from . import layout  # noqa: F401,E402  (blocked-layout convolution, made by a target pass)

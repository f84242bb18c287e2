"""The op registry and every op family. Importing this package registers all ops."""
from .registry import Attr, OpDef, OpDefinitionError, get_op, is_registered, register, registered_ops  # noqa: F401
from . import elementwise, linalg, reduce, shape_ops  # noqa: F401  (registration side effects)

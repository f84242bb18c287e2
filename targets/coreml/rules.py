"""Every Core ML lowering, loaded in one place (lowering.py is the registry; the lower_*.py modules register
into it when imported), and what the target asks of them."""
from __future__ import annotations

from . import lower_elementwise, lower_linalg, lower_nn, lower_quant, lower_reduce, lower_shape  # noqa: F401
from .lowering import LOWERINGS, lower_graph, unsupported_nodes, why_unsupported  # noqa: F401

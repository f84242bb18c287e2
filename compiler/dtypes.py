"""The element types aotc's IR knows, and their mappings to NumPy and ONNX.

One table is the source of truth so that importer, exporter, interpreter and
(later) code generators agree on names and sizes.
"""
from __future__ import annotations

import enum

import ml_dtypes
import numpy as np
from onnx import TensorProto

from .errors import AotcError


class DType(enum.Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    int8 = "int8"
    uint8 = "uint8"
    int32 = "int32"
    int64 = "int64"
    bool = "bool"

    def __str__(self) -> str:  # keeps the IR text form short: float32[1,128]
        return self.value

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def onnx(self) -> int:
        return _TO_ONNX[self]

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.float32, DType.float16, DType.bfloat16)

    @property
    def is_int(self) -> bool:
        return self in (DType.int8, DType.uint8, DType.int32, DType.int64)

    @staticmethod
    def from_numpy(dtype) -> "DType":
        dtype = np.dtype(dtype)
        for k, v in _TO_NUMPY.items():
            if v == dtype:
                return k
        raise UnsupportedDTypeError(f"NumPy dtype {dtype}")

    @staticmethod
    def from_onnx(elem_type: int) -> "DType":
        for k, v in _TO_ONNX.items():
            if v == elem_type:
                return k
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else str(elem_type)
        raise UnsupportedDTypeError(f"ONNX element type {name}")


class UnsupportedDTypeError(AotcError, ValueError):
    """A user's model or tensor has an element type aotc does not handle (a user error, exit 2).
    Still a ValueError for callers that caught it as one."""

    def __init__(self, what: str):
        self.what = what
        supported = ", ".join(d.value for d in DType)
        super().__init__(f"{what} is not supported by aotc (supported element types: {supported})")


_TO_NUMPY = {
    DType.float32: np.dtype(np.float32),
    DType.float16: np.dtype(np.float16),
    DType.bfloat16: np.dtype(ml_dtypes.bfloat16),
    DType.int8: np.dtype(np.int8),
    DType.uint8: np.dtype(np.uint8),
    DType.int32: np.dtype(np.int32),
    DType.int64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
}

_TO_ONNX = {
    DType.float32: TensorProto.FLOAT,
    DType.float16: TensorProto.FLOAT16,
    DType.bfloat16: TensorProto.BFLOAT16,
    DType.int8: TensorProto.INT8,
    DType.uint8: TensorProto.UINT8,
    DType.int32: TensorProto.INT32,
    DType.int64: TensorProto.INT64,
    DType.bool: TensorProto.BOOL,
}

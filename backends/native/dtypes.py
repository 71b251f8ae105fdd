"""Element types across the native extension's boundary: the one table of narrow types.

numpy has no bfloat16, float8, float4, int4 or int2; ml_dtypes provides them, and the C++
engine holds them one element per byte (two for bfloat16), in ml_dtypes' layout. Such an
array crosses the boundary as its bits (a uint8 / uint16 view) plus its ONNX element type
code; results come back the same way and are viewed as the ml_dtypes type again.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir

DT = ir.DataType

# ONNX element type -> the numpy dtype users see (ml_dtypes) and the one that carries its bits.
NARROW: dict[ir.DataType, tuple[np.dtype, np.dtype]] = {
    DT.BFLOAT16: (np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16)),
    DT.FLOAT8E4M3FN: (np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(np.uint8)),
    DT.FLOAT8E4M3FNUZ: (np.dtype(ml_dtypes.float8_e4m3fnuz), np.dtype(np.uint8)),
    DT.FLOAT8E5M2: (np.dtype(ml_dtypes.float8_e5m2), np.dtype(np.uint8)),
    DT.FLOAT8E5M2FNUZ: (np.dtype(ml_dtypes.float8_e5m2fnuz), np.dtype(np.uint8)),
    DT.UINT4: (np.dtype(ml_dtypes.uint4), np.dtype(np.uint8)),
    DT.INT4: (np.dtype(ml_dtypes.int4), np.dtype(np.uint8)),
    DT.FLOAT4E2M1: (np.dtype(ml_dtypes.float4_e2m1fn), np.dtype(np.uint8)),
    DT.FLOAT8E8M0: (np.dtype(ml_dtypes.float8_e8m0fnu), np.dtype(np.uint8)),
    DT.UINT2: (np.dtype(ml_dtypes.uint2), np.dtype(np.uint8)),
    DT.INT2: (np.dtype(ml_dtypes.int2), np.dtype(np.uint8)),
}
NARROW_TYPES = frozenset(NARROW)
_CODE_OF = {dtype: int(t) for t, (dtype, _) in NARROW.items()}
_DTYPE_OF = {int(t): dtype for t, (dtype, _) in NARROW.items()}


def to_carrier(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """``arr`` as the extension takes it: (array, ONNX code), code 0 for numpy's own types."""
    code = _CODE_OF.get(arr.dtype)
    if code is None:
        return arr, 0
    return arr.view(NARROW[DT(code)][1]), code


def from_carrier(arr: np.ndarray, code: int) -> np.ndarray:
    """A result of the extension as the user's dtype (narrow types viewed as ml_dtypes)."""
    dtype = _DTYPE_OF.get(code)
    return arr if dtype is None else arr.view(dtype)

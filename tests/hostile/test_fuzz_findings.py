"""Regressions for what fuzz/fuzz_frontend.py found, below the validator that now stops them
first: the frontend's own guards must still turn them into kiln errors."""

from __future__ import annotations

import warnings

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper as h

from kiln.compiler import frontend
from kiln.errors import ModelError
from kiln.runtime import guards

from .cases import const, model, opaque_input_proto, vi


def test_shape_inference_unicode_error_becomes_model_error():
    with pytest.raises(ModelError, match="shape inference failed: UnicodeDecodeError"):
        frontend._infer_shapes(opaque_input_proto(), "m")


def test_guards_ignore_non_integer_shapes_without_warning():
    m = model([h.make_node("Expand", ["x", "s"], ["y"])], [vi("x", [1])], [vi("y", ["a", "b"])],
              inits=(const("s", [2 + 1j, 3], np.complex64),))
    imported = ir.from_proto(m)  # the validator now refuses it; the guards must cope anyway
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guards.check_model(imported, guards.Guards(2**30), "openvino")

"""Shared fixtures: small real models built in code, and the onnx package's light models."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

# importlib mode keeps test folders off sys.path; the shared model builders live here
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from model_builders import make_conv_model, make_two_input_model  # noqa: E402

from kiln.zoo import light_model  # noqa: E402


@pytest.fixture
def conv_model() -> onnx.ModelProto:
    return make_conv_model()


@pytest.fixture
def two_input_model() -> onnx.ModelProto:
    return make_two_input_model()


@pytest.fixture(scope="session")
def squeezenet_path():
    return light_model("squeezenet")

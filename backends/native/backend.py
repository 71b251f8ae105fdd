"""kiln's native C++ engine, seen through the Backend contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from kiln.backends.base import Availability, Backend, CompiledModel, CompileOptions
from kiln.backends.onnx_export import signature
from kiln.errors import BackendUnavailableError, UnsupportedError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.target import Target


def _extension():
    from kiln.backends.native import _native

    return _native


class NativeBackend(Backend):
    name = "native"

    def is_available(self) -> Availability:
        try:
            ext = _extension()
        except Exception as exc:
            return Availability(False, f"the native extension did not load: {exc}; reinstall "
                                "kiln so it is compiled")
        from kiln import __version__

        return Availability(True, f"kernels: {ext.isa()} (best on this CPU: {ext.best_isa()})",
                            __version__)

    def supports(self, node: ir.Node) -> bool:
        return self.refusal(node) is None

    def refusal(self, node: ir.Node) -> str | None:
        if node.domain not in ("", "ai.onnx"):
            return f"domain '{node.domain}' not implemented"
        if node.op_type not in ("Relu", "Add"):
            return f"{node.op_type} is not implemented by the native engine yet"
        for value in list(node.inputs) + list(node.outputs):
            if value is not None and value.dtype is not None and value.dtype.numpy() != np.float32:
                return f"{node.op_type} on {value.dtype} is not implemented (float32 only)"
        return None

    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        status = self.is_available()
        if not status.ok:
            raise BackendUnavailableError(f"native is unavailable: {status.reason}")
        refused = [f"{n.name or '?'} ({n.op_type}): {self.refusal(n)}"
                   for n in model.graph if not self.supports(n)]
        if refused:
            raise UnsupportedError("the native engine cannot run " + str(len(refused))
                                   + " node(s): " + "; ".join(refused[:10]))
        return _NativeCompiled(model)


class _NativeCompiled(CompiledModel):
    backend = "native"

    def __init__(self, model: ir.Model):
        self.inputs, self.outputs = signature(model)
        self._steps = [(n.op_type, [v.name for v in n.inputs], n.outputs[0].name)
                       for n in model.graph]
        self._ext = _extension()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        for op, args, out in self._steps:
            if op == "Relu":
                env[out] = self._ext.relu(env[args[0]])
            else:
                env[out] = self._ext.add(env[args[0]], env[args[1]])
        return {o.name: env[o.name] for o in self.outputs}

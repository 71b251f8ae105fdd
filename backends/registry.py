"""Backends found by name. Adding a backend = one module + one line in ``_BACKENDS``.

Backend modules are imported lazily so ``import kiln`` stays fast and works without the
heavy SDKs (OpenVINO, TensorRT) installed. ``KILN_DISABLE_BACKENDS=openvino,tensorrt`` makes
the named backends unavailable without importing them (a process that must not load an SDK:
the sanitizer runs, where OpenVINO's TBB binding cannot load).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kiln.errors import BackendUnavailableError, KilnError

if TYPE_CHECKING:
    from kiln.backends.base import Availability, Backend
    from kiln.compiler.target import Target
    from kiln.compiler.validate import Limits

# name -> "module:class"
_BACKENDS = {
    "onnxruntime": "kiln.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "kiln.backends.openvino:OpenVinoBackend",
    "native": "kiln.backends.native.backend:NativeBackend",
    "tensorrt": "kiln.backends.tensorrt:TensorRtBackend",
}

#: Keys of ``CompileOptions.extra`` each backend reads (declared here, next to the registry,
#: so a misspelt option is caught without importing every SDK; tests/backends/test_registry.py
#: checks each backend module reads no other).
BACKEND_OPTIONS = {
    "onnxruntime": frozenset({"allow_spinning", "ort_graph_optimization_level", "profile"}),
    "openvino": frozenset({"performance_hint", "profile"}),
    "native": frozenset({"max_tensor_bytes", "fold_constants", "profile"}),
    "tensorrt": frozenset({"trt_workspace_bytes", "trt_optimization_level", "dims", "profiles",
                           "profile"}),
}

_instances: dict[str, Backend] = {}


def backend_names() -> list[str]:
    """Every registered backend name, available here or not."""
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend registered under ``name`` (it may still be unavailable here)."""
    if name not in _BACKENDS:
        raise KilnError(f"unknown backend '{name}'; known backends: {', '.join(_BACKENDS)}")
    if name not in _instances:
        module_name, class_name = _BACKENDS[name].split(":")
        module = importlib.import_module(module_name)
        _instances[name] = getattr(module, class_name)()
    return _instances[name]


def availability(name: str) -> Availability:
    """``get_backend(name).is_available()``, never raising."""
    from kiln.backends.base import Availability

    disabled = {n.strip() for n in os.environ.get("KILN_DISABLE_BACKENDS", "").split(",")}
    if name in disabled:
        return Availability(False, "disabled by KILN_DISABLE_BACKENDS")
    try:
        return get_backend(name).is_available()
    except Exception as exc:  # an import-time failure is an unavailable backend
        return Availability(False, f"{type(exc).__name__}: {exc}")


def check_options(names: Sequence[str]) -> None:
    """KilnError for option keys no registered backend reads (a misspelling would otherwise
    be ignored without a word)."""
    known = frozenset().union(*BACKEND_OPTIONS.values())
    unknown = sorted(set(names) - known)
    if unknown:
        raise KilnError(f"unknown option(s) {', '.join(map(repr, unknown))}; backends read "
                        f"{', '.join(sorted(known))} (and kiln.compile takes device, dims, "
                        "fallback, min_partition_nodes, max_memory, timeout, "
                        "max_loop_iterations and the reduction options)")


def backend_limits(name: str) -> Limits | None:
    """The limits backend ``name`` states for the models it is handed (None: none of its own)."""
    return get_backend(name).limits() if name in _BACKENDS else None


def available_backends() -> list[str]:
    """Names of the backends that can run here, in registry order."""
    return [name for name in _BACKENDS if availability(name).ok]


def require(name: str) -> Backend:
    """The backend ``name``, or BackendUnavailableError saying why it cannot run here."""
    status = availability(name)
    if not status.ok:
        raise BackendUnavailableError(f"backend '{name}' is unavailable: {status.reason}")
    return get_backend(name)


# Preference order for backend="auto", per device kind.
_AUTO_ORDER = {"gpu": ("tensorrt", "onnxruntime"), "cpu": ("openvino", "onnxruntime")}


def choose_auto(target: Target) -> tuple[str, str]:
    """Pick a backend for ``target``; returns (name, why) so the choice can be recorded."""
    skipped = []
    for name in _AUTO_ORDER.get(target.kind, _AUTO_ORDER["cpu"]):
        status = availability(name)
        if status.ok:
            why = f"auto: first available for {target.kind} in {list(_AUTO_ORDER[target.kind])}"
            if skipped:
                why += f" (skipped {'; '.join(skipped)})"
            return name, why
        skipped.append(f"{name}: {status.reason}")
    raise BackendUnavailableError(
        "no backend can run here: " + "; ".join(skipped)
        + ". Install onnxruntime (`pip install onnxruntime`).")

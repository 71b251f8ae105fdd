"""Backends: each one compiles an IR model for a device and runs it.

A backend is one module plus one line in :mod:`kiln.backends.registry`.
"""

from kiln.backends.base import (
    Availability,
    Backend,
    CompiledModel,
    CompileOptions,
    TensorSpec,
)
from kiln.backends.registry import available_backends, backend_names, get_backend

__all__ = [
    "Availability",
    "Backend",
    "CompileOptions",
    "CompiledModel",
    "TensorSpec",
    "available_backends",
    "backend_names",
    "get_backend",
]

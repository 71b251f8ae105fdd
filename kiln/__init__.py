"""kiln: a hardware-aware inference compiler and runtime."""

from kiln._version import __version__
from kiln.errors import (
    ArtifactError,
    BackendUnavailableError,
    InputError,
    KilnError,
    ModelError,
    ResourceError,
    UnsupportedError,
)

__all__ = [
    "ArtifactError",
    "BackendUnavailableError",
    "InputError",
    "KilnError",
    "ModelError",
    "ResourceError",
    "UnsupportedError",
    "__version__",
]

from kiln.runtime.session import Session  # noqa: E402

__all__ += ["Session"]

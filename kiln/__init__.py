"""kiln: a hardware-aware inference compiler and runtime."""


def _defer_to_installed_copy() -> None:
    """Make ``python -m kiln`` work from the root of a source checkout.

    There the folder ``kiln/`` shadows the installed package, but ``kiln.compiler``,
    ``kiln.runtime`` and ``kiln.backends`` (and the compiled extension) exist only in the
    installed copy, which the wheel assembles from sibling folders. If this file sits in a
    checkout and an installed copy exists elsewhere on sys.path, load sub-modules from it.
    (An editable install has no such copy: its import hook maps the sub-packages itself.)
    """
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(here)
    if not os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        return
    for entry in sys.path:
        candidate = os.path.join(os.path.abspath(entry or os.curdir), "kiln")
        if candidate != here and os.path.isdir(os.path.join(candidate, "compiler")):
            __path__[:] = [candidate]  # noqa: F821 - the package's own __path__
            return


_defer_to_installed_copy()

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

from kiln.compiler.reduce import ReduceOptions
from kiln.runtime.compile import Compiled, compile  # noqa: A004 - kiln.compile is the API
from kiln.runtime.session import Session


def load(path, **options) -> Session:
    """Load a .kiln artifact (hashes and versions verified) as a ready Session."""
    return Session(path, **options)


__all__ += ["Compiled", "ReduceOptions", "Session", "compile", "load"]

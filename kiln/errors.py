"""The errors kiln raises. Every user-facing failure is a KilnError subclass whose message
says what was wrong and what to do about it."""

from __future__ import annotations


class KilnError(Exception):
    """Base class of every error kiln raises on purpose."""


class ModelError(KilnError):
    """The model cannot be imported: unreadable, malformed or an invalid graph."""


class UnsupportedError(KilnError):
    """An op, dtype or attribute that no selected backend here can run (names the node)."""


class InputError(KilnError):
    """Feeds that do not match the model's input signature (names the input)."""


class BackendUnavailableError(KilnError):
    """A backend that is not installed or has no device here (says how to get it)."""


class ArtifactError(KilnError):
    """A .kiln artifact that is corrupt, tampered with, truncated or of a wrong version."""


class ResourceError(KilnError):
    """A model or feed that would need more memory or time than kiln is allowed to use."""

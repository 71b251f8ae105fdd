"""The sha256 of the model a compile read, taken when something asks for it.

A compile records which model it came from (a .kiln manifest, ``Session.source_sha256``,
placement reports), but nothing on the way to the first inference reads that digest, and
hashing costs about 1 ms per MB read (60-90 ms of a 100 MB model's cold start). So the digest
of a model file is taken on first request, by reading the file again. What makes that the
digest of the model the compile read is the file's identity, noted when it was read: device,
inode, size and modification/change times. A file that no longer has that identity (rewritten,
replaced, removed) has an unknown digest, ``""``, and a warning says why. (File times tick
coarsely, every few milliseconds: a rewrite within the tick of the write before the read keeps
them; nothing short of hashing at the read would see it.) Serialized bytes in memory are
hashed at once (nothing could be read again later).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import onnx_ir as ir

#: ``ir.Model.meta`` key (in memory, never saved) of the imported model's ``SourceDigest``.
SOURCE_DIGEST = "kiln.source_digest"
#: ``ir.Model.meta`` key set by the frontend when the IR holds its file's graph as read: the
#: file (with the external-data files it names, noted by identity) holds the whole model and
#: the frontend changed nothing in it but the shapes it inferred. Passes leave it as it is:
#: only a caller that knows no pass changed the graph since may act on it
#: (``kiln.runtime.compile``, through ``SOURCE_FILE``).
GRAPH_AS_READ = "kiln.graph_as_read"
#: ``ir.Model.meta`` key of the ``SourceDigest`` of the file an engine may read itself instead
#: of kiln's serialization of the same graph: set by ``kiln.compile`` only around a build of a
#: graph no pass changed, and read through ``SourceDigest.file_as_read``.
SOURCE_FILE = "kiln.source_file"
#: Bytes read and hashed at a time.
_CHUNK_BYTES = 1 << 20


class SourceChangedWarning(UserWarning):
    """The model file changed after kiln read it: its digest is not recorded."""


def _identity(stat: os.stat_result) -> tuple[int, ...]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class SourceDigest:
    """sha256 (hex) of a source model: given, or of a file, hashed on the first
    ``hexdigest()`` while the file is still the one that was read."""

    def __init__(self, hexdigest: str = "", path: Path | None = None,
                 identity: tuple[int, ...] | None = None) -> None:
        self._hex = hexdigest
        self._path = path
        self._file = path  # kept once hashed: ``file_as_read``
        #: whether the model is its files as read (the file, and the external-data files
        #: noted with ``note_companion``), which an engine may then open itself
        self.alone = path is not None
        self._identity = identity
        self._companions: list[tuple[Path, tuple[int, ...]]] = []

    @classmethod
    def of_bytes(cls, data: bytes | bytearray | memoryview) -> SourceDigest:
        return cls(hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path: str | os.PathLike[str], stat: os.stat_result) -> SourceDigest:
        """The digest of the file at ``path`` as ``stat`` (taken before it was read)
        describes it."""
        return cls(path=Path(path), identity=_identity(stat))

    def hexdigest(self) -> str:
        """The sha256 in hex; "" when the file changed since it was read."""
        if self._path is not None:
            self._hex = self._hash_file(self._path)
            self._path = None  # hashed (or known to be unknowable) once
        return self._hex

    def note_companion(self, path: Path, stat: os.stat_result) -> None:
        """An external-data file the model read beside its own, as ``stat`` describes it."""
        self._companions.append((path, _identity(stat)))

    def file_as_read(self) -> Path | None:
        """The file this digest is of, while it and the external-data files noted beside it
        still have the identity they had when read; None for bytes, or a file rewritten,
        replaced or removed since."""
        if self._file is None:
            return None
        try:
            same = _identity(os.stat(self._file)) == self._identity and all(
                _identity(os.stat(path)) == identity for path, identity in self._companions)
        except OSError:
            return None
        return self._file if same else None

    def _hash_file(self, path: Path) -> str:
        try:
            with open(path, "rb") as f:
                if _identity(os.fstat(f.fileno())) == self._identity:
                    digest = _sha256_of(f)
                    if _identity(os.fstat(f.fileno())) == self._identity:  # not written meanwhile
                        return digest
        except OSError:
            pass
        warnings.warn(f"{path} changed after kiln read it: its sha256 is not recorded",
                      SourceChangedWarning, stacklevel=3)
        return ""


def _sha256_of(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    chunk = memoryview(bytearray(_CHUNK_BYTES))
    while size := f.readinto(chunk):
        digest.update(chunk[:size])
    return digest.hexdigest()


def source_sha256(model: ir.Model) -> str:
    """The sha256 of the model ``model`` was imported from ("" when unknown)."""
    digest = model.meta.get(SOURCE_DIGEST)
    return digest.hexdigest() if isinstance(digest, SourceDigest) else ""

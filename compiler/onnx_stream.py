"""Parse an ONNX file a field at a time, so the file's bytes and the parsed model are never both
held whole (with upb protobuf, ``ParseFromString`` of a file read whole peaks at twice the
weights).

Protobuf merges what it parses into a message: a repeated field appends, a singular message
field met again merges into the one it has. So a ModelProto is the merge of its top-level
fields parsed one by one, and its ``graph`` the merge of one-field graphs, in file order: the
result equals parsing the whole file. The scan reads only field headers (key, length); each
field's bytes are read, hashed (the file's sha256, as the frontend reports it) and merged, then
dropped. Anything but the plain layout (groups, a truncated field) answers None and the caller
parses the whole file, whose errors it reports.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

#: ModelProto.graph
_GRAPH_FIELD = 7
#: Small graph fields (nodes, value infos) merged together up to this many bytes per call.
_BATCH_BYTES = 1 << 20
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class _Layout(Exception):
    """The file is not laid out as this scan reads it: parse it whole instead."""


class _Reader:
    """Reads from ``f``, hashing every byte read."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.digest = hashlib.sha256()
        self.size = os.fstat(f.fileno()).st_size

    def length(self) -> tuple[int, bytes]:
        """A length varint, refused when it runs past the end of the file (a forged length
        must not make the scan allocate it)."""
        size, size_bytes = self.varint()
        if size < 0 or size > self.size - self.f.tell():
            raise _Layout("a length past the end of the file")
        return size, size_bytes

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Layout("truncated")
        self.digest.update(data)
        return data

    def read_into(self, buffer: bytearray, start: int) -> None:
        """Fill ``buffer`` from ``start`` to its end (one allocation for a whole tensor)."""
        view = memoryview(buffer)[start:]
        if self.f.readinto(view) != len(view):
            raise _Layout("truncated")
        self.digest.update(view)

    def varint(self) -> tuple[int, bytes]:
        """(value, its encoded bytes), or (-1, b"") at the end of the file."""
        raw = bytearray()
        value = shift = 0
        while True:
            byte = self.f.read(1)
            if not byte:
                if raw:
                    raise _Layout("truncated varint")
                return -1, b""
            self.digest.update(byte)
            raw += byte
            value |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return value, bytes(raw)
            shift += 7
            if shift > 63:
                raise _Layout("varint too long")

    def field(self, key: int, key_bytes: bytes) -> bytes:
        """The rest of the field whose key was just read, key included."""
        wire = key & 7
        if wire == _VARINT:
            _, value = self.varint()
            if not value:
                raise _Layout("truncated varint")
            return key_bytes + value
        if wire in (_FIXED64, _FIXED32):
            return key_bytes + self.read(8 if wire == _FIXED64 else 4)
        if wire == _LEN:
            size, size_bytes = self.length()
            return key_bytes + size_bytes + self.read(size)
        raise _Layout(f"wire type {wire}")  # groups: not in ONNX

    def payload_after(self, head: bytes, size: int) -> bytearray:
        """``head`` then the next ``size`` bytes of the file, in one buffer (a tensor's bytes
        are allocated once, not read and then copied)."""
        buffer = bytearray(len(head) + size)
        buffer[:len(head)] = head
        self.read_into(buffer, len(head))
        return buffer


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _graph_head(size: int) -> bytes:
    """The key and length of a ModelProto graph field of ``size`` bytes."""
    return _varint_bytes(_GRAPH_FIELD << 3 | _LEN) + _varint_bytes(size)


def _graph_chunk(fields: bytes | bytearray) -> bytes:
    """``fields`` (serialized GraphProto fields) as a ModelProto holding a graph of them."""
    return _graph_head(len(fields)) + fields  # bytes + bytearray: one copy, into bytes


def parse_file(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, str] | None:
    """(the model, the file's sha256 hex) parsed field by field; None when the file is not
    laid out as the scan expects or does not parse (the caller parses it whole)."""
    proto = onnx.ModelProto()
    with open(path, "rb") as f:
        reader = _Reader(f)
        try:
            while True:
                key, key_bytes = reader.varint()
                if key < 0:
                    break
                if key != (_GRAPH_FIELD << 3 | _LEN):
                    proto.MergeFromString(reader.field(key, key_bytes))
                    continue
                size, _ = reader.length()
                _merge_graph(reader, proto, f.tell() + size)
        except (_Layout, DecodeError, RecursionError):
            return None
    return proto, reader.digest.hexdigest()


def _merge_graph(reader: _Reader, proto: onnx.ModelProto, end: int) -> None:
    """Merge the graph fields up to file offset ``end`` into ``proto.graph``: small ones
    (nodes, value infos) batched, each large one (an initializer) from one buffer of its own
    that starts with the head of the ModelProto graph field wrapping it."""
    batch = bytearray()
    while reader.f.tell() < end:
        key, key_bytes = reader.varint()
        if key < 0:
            raise _Layout("truncated graph")
        if key & 7 == _LEN:
            size, size_bytes = reader.length()
            field_head = key_bytes + size_bytes
            if size > _BATCH_BYTES:  # alone, after what came before it (file order)
                proto.MergeFromString(_graph_chunk(batch))
                batch.clear()
                head = _graph_head(len(field_head) + size) + field_head
                proto.MergeFromString(reader.payload_after(head, size))
                continue
            field = field_head + reader.read(size)
        else:
            field = reader.field(key, key_bytes)
        if len(batch) + len(field) > _BATCH_BYTES:
            proto.MergeFromString(_graph_chunk(batch))
            batch.clear()
        batch += field
    if reader.f.tell() != end:
        raise _Layout("graph overruns its length")
    # an empty graph field still sets ModelProto.graph, as parsing it whole does
    proto.MergeFromString(_graph_chunk(batch))

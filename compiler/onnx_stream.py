"""Parse an ONNX file a field at a time, so the file's bytes and the parsed model are never both
held whole (with upb protobuf, ``ParseFromString`` of a file read whole peaks at twice the
weights).

Protobuf merges what it parses into a message: a repeated field appends, a singular message
field met again merges into the one it has. So a ModelProto is the merge of its top-level
fields parsed one by one, and its ``graph`` the merge of one-field graphs, in file order: the
result equals parsing the whole file. The scan reads only field headers (key, length); each
field's bytes are read and merged, then dropped. Anything but the plain layout (groups, a
truncated field) answers None and the caller parses the whole file, whose errors it reports.

Given a ``WeightsAside``, the raw values of the main graph's larger initializers never enter the
parsed model at all: they are copied from the model file to a weights file of kiln's own (by a
thread, while the scan and then the frontend's checks go on), and their TensorProtos say where
(external data), so the IR maps them once ``WeightsAside.finish`` has waited for the copies.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

#: ``ir.Model.meta`` key: the folder of kiln's own external-data file(s) holding the model's
#: weights (written while parsing, or by ``kiln.runtime.weights.offload_weights``).
WEIGHTS_DIR = "kiln.weights_dir"
#: ModelProto.graph
_GRAPH_FIELD = 7
#: GraphProto.initializer; TensorProto.raw_data, external_data, data_location
_INITIALIZER_KEY = 5 << 3 | 2
_RAW_DATA_KEY = 9 << 3 | 2
_EXTERNAL_FIELDS = (13, 14)
#: Raw values above this many bytes go aside (below it: shape inference reads values).
ASIDE_TENSOR_BYTES = 4096
#: Offsets of the values set aside: page-aligned, so they map and are dropped page by page.
_ASIDE_ALIGN = 4096
#: Bytes copied at a time from the model file to the weights file.
_COPY_BYTES = 1 << 20
#: Small graph fields (nodes, value infos) merged together up to this many bytes per call.
_BATCH_BYTES = 1 << 20
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class _Layout(Exception):
    """The file is not laid out as this scan reads it: parse it whole instead."""


class _Reader:
    """Reads from ``f``, refusing to run past its end. ``pos`` is where it stands in the file,
    counted as it reads: ``f.tell()`` asks the kernel each time (an lseek; YOLOv8n's scan
    asked ~2,500 times, ~3 ms)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size
        self.pos = f.tell()

    def length(self) -> tuple[int, bytes]:
        """A length varint, refused when it runs past the end of the file (a forged length
        must not make the scan allocate it)."""
        size, size_bytes = self.varint()
        if size < 0 or size > self.size - self.pos:
            raise _Layout("a length past the end of the file")
        return size, size_bytes

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _Layout("truncated")
        self.pos += n
        return data

    def read_into(self, buffer: bytearray, start: int) -> None:
        """Fill ``buffer`` from ``start`` to its end (one allocation for a whole tensor)."""
        view = memoryview(buffer)[start:]
        if self.f.readinto(view) != len(view):
            raise _Layout("truncated")
        self.pos += len(view)

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
            self.pos += 1
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

    def skip(self, n: int) -> None:
        """Move ``n`` bytes on without reading them."""
        self.pos = self.f.seek(self.pos + n)

    def payload_after(self, head: bytes, size: int) -> bytearray:
        """``head`` then the next ``size`` bytes of the file, in one buffer (a tensor's bytes
        are allocated once, not read and then copied)."""
        buffer = bytearray(len(head) + size)
        buffer[:len(head)] = head
        self.read_into(buffer, len(head))
        return buffer


#: External-data files a ``WeightsAside`` holds open for copies made later; values of files past
#: these are copied at once (a model saved one file per tensor has hundreds).
MAX_HELD_FILES = 64


class WeightsAside:
    """A temporary folder whose file ``FILE`` receives initializer values while a model is
    parsed (large raw values of the model file, large values of its external-data files);
    removed once this object and every tensor holding it are gone. The folder is made when
    the first value comes.

    The scan only decides where each value goes (``copy``, ``copy_from``); a thread of its
    own copies a large file's values meanwhile, while the scan goes on and the frontend
    checks the parsed graph. Values of external-data files are copied only when the file is
    first needed (an engine that opens the user's files itself never needs it). ``finish``
    waits for the copies: the file is whole only then."""

    FILE = "weights.bin"

    def __init__(self) -> None:
        self.folder = ""
        self._cleanup: weakref.finalize | None = None
        self._file: BinaryIO | None = None
        self.names: set[str] = set()
        self.source = "<model>"  # the model's name, for errors
        self._end = 0  # where the next value may start (before alignment)
        self._copier: _Copier | None = None
        #: copies made when the file is first needed: (source, source offset, offset, bytes)
        self._later: list[tuple[int, int, int, int]] = []
        #: the files those copies read, held open: (device, inode) -> (descriptor, identity)
        self._held: dict[tuple[int, int], tuple[int, tuple[int, int]]] = {}
        self._failure: OSError | None = None
        self._lock = threading.Lock()

    def copy(self, reader: _Reader, nbytes: int) -> int:
        """Place the next ``nbytes`` of ``reader`` in the file and skip past them; their
        offset there. The thread copies them (``finish`` waits for it)."""
        start = reader.pos
        if nbytes > reader.size - start:
            raise _Layout("truncated")
        reader.skip(nbytes)
        return self.copy_from(reader.f.fileno(), start, nbytes)

    def copy_from(self, source: int, start: int, nbytes: int, later: bool = False) -> int:
        """Place ``nbytes`` from offset ``start`` of open file ``source`` in the file (the
        caller may close ``source`` once this returns); their offset there. ``later``: copy
        them when the file is first needed, if the source is then as it is now."""
        if self._file is None:
            self.folder = tempfile.mkdtemp(prefix="kiln-weights-")
            self._cleanup = weakref.finalize(self, _remove, self.folder, self._held)
            self._file = open(os.path.join(self.folder, self.FILE), "wb", buffering=0)  # noqa: SIM115
        offset = -self._end % _ASIDE_ALIGN + self._end
        self._end = offset + nbytes
        if later and not self._past_held_files(source):
            self._later.append((self._hold(source), start, offset, nbytes))
            return offset
        if later:  # a model of many data files: copied now, not held open (descriptors run out)
            _copy_range(source, self._file.fileno(), start, offset, nbytes)
            return offset
        if self._copier is None:
            self._copier = _Copier(self._file.fileno())
            _COPYING.add(self)
        self._copier.jobs.put((self._copier.source(source), start, offset, nbytes))
        return offset

    def _past_held_files(self, fd: int) -> bool:
        """Whether holding ``fd``'s file open would pass ``MAX_HELD_FILES``."""
        if len(self._held) < MAX_HELD_FILES:
            return False
        info = os.fstat(fd)
        return (info.st_dev, info.st_ino) not in self._held

    def _hold(self, fd: int) -> int:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if key not in self._held:
            self._held[key] = (os.dup(fd), (info.st_size, info.st_mtime_ns))
        return self._held[key][0]

    def seal(self) -> None:
        """No more values come (the scan is over): the copying thread ends once it has copied
        those it has, whether or not anyone waits for them."""
        with self._lock:
            if self._copier is not None:
                self._copier.jobs.put(None)

    def finish(self) -> None:
        """Wait for every value to be in the file (at once when they are); an OSError, on
        this and every later call, when one could not be copied (the model file ended
        early, or an external-data file changed since it was read)."""
        with self._lock:
            copier, self._copier = self._copier, None
            _COPYING.discard(self)
            later, self._later = self._later, []
            try:
                if copier is not None:
                    copier.wait()
                if later and self._failure is None:
                    self._copy_later(later)
            except OSError as exc:
                self._failure = exc
            finally:
                if copier is not None or later:
                    _close_held(self._held)
                    self._close_file()
            if self._failure is not None:
                raise self._failure

    def _copy_later(self, jobs: list[tuple[int, int, int, int]]) -> None:
        """The copies left for when the file is needed, by the thread that needs it."""
        identity = {fd: kept for fd, kept in self._held.values()}
        for source, start, offset, nbytes in jobs:
            info = os.fstat(source)
            if (info.st_size, info.st_mtime_ns) != identity[source]:
                raise OSError("an external-data file changed after kiln read it")
            _copy_range(source, self._file.fileno(), start, offset, nbytes)  # type: ignore[union-attr]

    def discard(self) -> None:
        """Nothing goes aside after all (the file is parsed whole, or the model is refused):
        stop the copies and remove the folder now."""
        with self._lock:
            copier, self._copier = self._copier, None
            _COPYING.discard(self)
            if copier is not None:
                copier.cancel()
            self._later = []
            self._close_file()
            self.names.clear()
            if self._cleanup is not None:
                self._cleanup()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()


def _close_held(held: dict[tuple[int, int], tuple[int, tuple[int, int]]]) -> None:
    for fd, _ in held.values():
        os.close(fd)
    held.clear()


def _remove(folder: str, held: dict[tuple[int, int], tuple[int, tuple[int, int]]]) -> None:
    """A ``WeightsAside``'s end: the files it held open, and its folder."""
    _close_held(held)
    shutil.rmtree(folder, True)


#: The ``WeightsAside`` whose copies may still run: a fork waits for them (the child would
#: have the file half written and no thread writing the rest).
_COPYING: weakref.WeakSet[WeightsAside] = weakref.WeakSet()


def _finish_copies() -> None:
    for aside in list(_COPYING):
        try:
            aside.finish()
        except OSError:
            pass  # kept: every reader of that file, in the parent and the child, gets it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_finish_copies)


#: The interpreter's switch interval while weights are copied aside. The copying thread
#: needs the interpreter only between two copies, while the import's thread holds it all the
#: time: at the default 5 ms, each copy waited that long for the next to start, and almost
#: nothing was copied before the import first read a weight (light ResNet-50: its 70 copies
#: then took 36 ms of waiting in the first pass).
COPY_SWITCH_INTERVAL = 1e-4


class _SwitchInterval:
    """The shorter switch interval while any copier runs (process-wide, so counted); the
    interval set before comes back after the last one, unless someone changed it since."""

    _lock = threading.Lock()
    _copiers = 0
    _before = 0.0
    _ours = 0.0

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._copiers == 0:
                cls._before = sys.getswitchinterval()
                sys.setswitchinterval(min(cls._before, COPY_SWITCH_INTERVAL))
                cls._ours = sys.getswitchinterval()
            cls._copiers += 1

    @classmethod
    def leave(cls) -> None:
        with cls._lock:
            cls._copiers -= 1
            if cls._copiers == 0 and sys.getswitchinterval() == cls._ours:
                sys.setswitchinterval(cls._before)


class _Copier:
    """One thread copying (source, source offset, file offset, bytes) jobs to the weights
    file, in the order given. It owns duplicates of every descriptor (the scan closes the
    files it read, a discarded ``WeightsAside`` its weights file) and releases the
    interpreter while the kernel copies."""

    def __init__(self, dest: int) -> None:
        self.jobs: queue.SimpleQueue[tuple[int, int, int, int] | None] = queue.SimpleQueue()
        self._dest = os.dup(dest)
        self._sources: dict[tuple[int, int], int] = {}  # (device, inode) -> our descriptor
        self._sources_lock = threading.Lock()
        self._ended = False  # the thread is done: it took no more descriptors
        self._stop = False
        self.failure: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="kiln-weights-copy",
                                        daemon=True)
        _SwitchInterval.enter()
        try:
            self._thread.start()
        except BaseException:  # no thread, so nothing would give the interval back
            _SwitchInterval.leave()
            os.close(self._dest)
            raise

    def source(self, fd: int) -> int:
        """The copier's own descriptor of the file open as ``fd`` (one per file)."""
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        with self._sources_lock:
            if self._ended:  # it failed: no job runs any more
                return -1
            if key not in self._sources:
                self._sources[key] = os.dup(fd)
            return self._sources[key]

    def _run(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                if not self._stop:
                    _copy_range(job[0], self._dest, *job[1:])
        except OSError as exc:
            self.failure = exc
        finally:
            with self._sources_lock:
                self._ended = True
                for fd in self._sources.values():
                    os.close(fd)
            os.close(self._dest)
            _SwitchInterval.leave()

    def wait(self) -> None:
        self.jobs.put(None)
        self._thread.join()
        if self.failure is not None:
            raise self.failure

    def cancel(self) -> None:
        self._stop = True
        self.jobs.put(None)
        self._thread.join()


def _copy_range(source: int, dest: int, start: int, offset: int, nbytes: int) -> None:
    """Copy ``nbytes`` from offset ``start`` of ``source`` to ``offset`` of ``dest``: by the
    kernel where it can (``os.copy_file_range``: the bytes never pass through Python; MiniLM's
    86 MB of weights in 30 ms instead of 40), by reads and writes for the rest (no such call,
    another file system). OSError when ``source`` ends early."""
    done = _copy_in_kernel(source, dest, start, offset, nbytes)
    while done < nbytes:
        chunk = os.pread(source, min(nbytes - done, _COPY_BYTES), start + done)
        if not chunk:
            raise OSError(f"the model file ended {nbytes - done} bytes early at offset "
                          f"{start + done}: it changed while kiln read it")
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dest, view, offset + done)
            view = view[written:]
            done += written


def _copy_in_kernel(source: int, dest: int, start: int, offset: int, nbytes: int) -> int:
    """How many of the ``nbytes`` from offset ``start`` of ``source`` the kernel copied to
    ``offset`` of ``dest``. Fewer, down to 0, where the system cannot (no such call, another
    file system) or the source ends early: the caller copies the rest."""
    copy_range = getattr(os, "copy_file_range", None)
    done = 0
    if copy_range is None:
        return done
    try:
        while done < nbytes:
            count = copy_range(source, dest, nbytes - done, start + done, offset + done)
            if count == 0:  # the end of the source: the caller's read says it ended early
                break
            done += count
    except OSError:
        pass
    return done


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


def parse_file(path: str | os.PathLike[str], aside: WeightsAside | None = None
               ) -> onnx.ModelProto | None:
    """The model parsed field by field; None when the file is not laid out as the scan expects
    or does not parse (the caller parses it whole). With ``aside``, the main graph's
    initializers' raw values above ``ASIDE_TENSOR_BYTES`` go to its file and their tensors
    refer to it (``aside.names``), still being copied on return (``aside.finish()`` waits
    for them); on None nothing went there."""
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
                _merge_graph(reader, proto, reader.pos + size, aside)
        except (_Layout, DecodeError, RecursionError):
            if aside is not None:
                aside.discard()
            return None
    return proto


def _tensor_aside(reader: _Reader, end: int, aside: WeightsAside) -> bytes:
    """The TensorProto ending at file offset ``end``: re-serialized with its raw values in
    ``aside``'s file (as external data there) when they are larger than
    ``ASIDE_TENSOR_BYTES``, else its bytes as they are in the file."""
    fields = bytearray()
    placed = None
    raw_fields = external_fields = 0
    while reader.pos < end:
        key, key_bytes = reader.varint()
        if key < 0:
            raise _Layout("truncated tensor")
        external_fields += key >> 3 in _EXTERNAL_FIELDS
        if key != _RAW_DATA_KEY:
            fields += reader.field(key, key_bytes)
            continue
        raw_fields += 1
        size, size_bytes = reader.length()
        if size > ASIDE_TENSOR_BYTES:
            placed = (aside.copy(reader, size), size)
        else:
            fields += key_bytes + size_bytes + reader.read(size)
    if reader.pos != end:
        raise _Layout("tensor overruns its length")
    if placed is None:
        return bytes(fields)
    if raw_fields > 1 or external_fields:  # not one plain tensor: parsed whole, reported
        raise _Layout("raw data twice, or beside external data")
    parsed = onnx.TensorProto()
    parsed.ParseFromString(bytes(fields))
    point_into(parsed, WeightsAside.FILE, *placed)
    aside.names.add(parsed.name)
    return parsed.SerializeToString()


def external_tensors(proto: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, dict[str, str]]]:
    """Each tensor of ``proto`` (subgraphs included) held as external data, with its
    ``external_data`` entries (location, offset, length, ...) as a dict: the one walk every
    reader and rewriter of external references shares."""
    from onnx.external_data_helper import _get_all_tensors

    for tensor in _get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor, {entry.key: entry.value for entry in tensor.external_data}


def point_into(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``tensor``'s values external data: ``length`` bytes at ``offset`` of file
    ``location`` (relative to the model's folder)."""
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _merge_graph(reader: _Reader, proto: onnx.ModelProto, end: int,
                 aside: WeightsAside | None = None) -> None:
    """Merge the graph fields up to file offset ``end`` into ``proto.graph``: small ones
    (nodes, value infos) batched, each large one (an initializer) from one buffer of its own
    that starts with the head of the ModelProto graph field wrapping it."""
    batch = bytearray()
    while reader.pos < end:
        key, key_bytes = reader.varint()
        if key < 0:
            raise _Layout("truncated graph")
        if key & 7 == _LEN:
            size, size_bytes = reader.length()
            field_head = key_bytes + size_bytes
            if aside is not None and key == _INITIALIZER_KEY and size > ASIDE_TENSOR_BYTES:
                tensor = _tensor_aside(reader, reader.pos + size, aside)
                field = key_bytes + _varint_bytes(len(tensor)) + tensor
            elif size > _BATCH_BYTES:  # alone, after what came before it (file order)
                proto.MergeFromString(_graph_chunk(batch))
                batch.clear()
                head = _graph_head(len(field_head) + size) + field_head
                proto.MergeFromString(reader.payload_after(head, size))
                continue
            else:
                field = field_head + reader.read(size)
        else:
            field = reader.field(key, key_bytes)
        if len(batch) + len(field) > _BATCH_BYTES:
            proto.MergeFromString(_graph_chunk(batch))
            batch.clear()
        batch += field
    if reader.pos != end:
        raise _Layout("graph overruns its length")
    # an empty graph field still sets ModelProto.graph, as parsing it whole does
    proto.MergeFromString(_graph_chunk(batch))

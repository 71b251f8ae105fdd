"""The .kiln artifact: one zip file holding a manifest, the optimized model and backend blobs.

Layout (every member stored, never pickled):

    manifest.json   format + version, kiln version, source model sha256, pipeline and options,
                    target, backend name + version, input/output signature, placement, and the
                    sha256 and size of every other member
    model.onnx      the optimized graph (standard or kiln-domain ONNX, viewable in Netron)
                    without its large initializers' values: those are external data in
    weights.bin     the raw tensors, little-endian as ONNX lays them out, each at a 64-byte
                    aligned offset; the member's first byte is 4096-byte aligned in the file
    blobs/...       what the backend's ``CompiledModel.save_beside(folder, weights)`` wrote,
                    once the weights member was in the file (a blob may read them there)

Format 2.0 put the weights in their own member: model.onnx stays far below protobuf's 2 GiB
limit whatever the model's size, the weights are written once and stream in and out without a
second copy in memory, and a loaded artifact's tensors are memory-mapped from the .kiln file
itself (``attach_weights``). Format 1.x artifacts (weights inline in model.onnx) still load.

The zip comment carries the manifest's own sha256, so a change anywhere — manifest, model or
blob — is caught (zip CRCs catch accidental damage as well). ``load_artifact`` refuses hostile
member names (``..``, absolute paths, duplicates) before reading anything, and every failure
is a ``kiln.ArtifactError`` that says what is wrong. Writes are atomic: a temporary file in the
destination folder, then ``os.replace``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import mmap
import os
import posixpath
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln._version import __version__
from kiln.errors import ArtifactError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.backends.base import ArtifactWeights, Backend, CompileOptions
    from kiln.backends.onnx_export import StoredGraph
    from kiln.compiler.target import Target

FORMAT = "kiln-artifact"
FORMAT_MAJOR = 2
FORMAT_MINOR = 0
#: Format majors this kiln reads: 1.x held the weights inline in model.onnx.
READABLE_MAJORS = (1, 2)
MANIFEST = "manifest.json"
MODEL = "model.onnx"
WEIGHTS = "weights.bin"
BLOBS = "blobs/"
#: Initializers of at least this many bytes go to the weights member; smaller stay inline.
WEIGHT_MIN_BYTES = 1024
#: Offsets of tensors in the weights member, and of the member's data in the file.
WEIGHT_ALIGN = 64
MEMBER_ALIGN = 4096
_PAD_FIELD = 0x6B6C  # a zip extra field kiln uses as padding (ignored by zip readers)
_CHUNK = 8 << 20
_COMMENT_PREFIX = b"kiln-manifest-sha256:"
#: No artifact member may claim more than this (a guard against zip bombs): 16 GiB.
MAX_MEMBER_BYTES = 16 << 30
#: Blob members from this size on are mapped from the .kiln (copy-on-write) instead of read
#: into memory: an engine that imports its compiled model from a buffer (OpenVINO's blob) reads
#: it through the page cache, and the process does not hold the file's bytes beside the engine.
MAP_BLOB_BYTES = 16 << 20
#: Members from this size on are hashed on threads of their own when there are two or more.
_PARALLEL_HASH_BYTES = 1 << 20


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return _sha256_span(f, 0, os.fstat(f.fileno()).st_size)


@dataclasses.dataclass
class Artifact:
    """A loaded, verified artifact. ``blobs`` maps each blob's name (relative to ``blobs/``)
    to its bytes (from ``MAP_BLOB_BYTES`` on, a copy-on-write ``memoryview`` of the file);
    ``blob_dir`` is where they were also written when asked (else None)."""

    path: Path
    manifest: dict[str, Any]
    model_bytes: bytes
    blob_dir: Path | None
    blobs: dict[str, bytes | memoryview] = dataclasses.field(default_factory=dict, repr=False)
    #: (offset of the weights member's data in the file, its size); None in 1.x artifacts
    weights: tuple[int, int] | None = None
    #: the weights member's sha256 check when it runs beside the load (``check_weights``)
    _weights_check: concurrent.futures.Future | None = dataclasses.field(
        default=None, repr=False, compare=False)

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"]["name"])

    @property
    def backend_version(self) -> str | None:
        return self.manifest["backend"].get("version")

    @property
    def target(self) -> str:
        return str(self.manifest["target"])

    _parsed: ir.Model | None = dataclasses.field(default=None, repr=False, compare=False)

    def model(self) -> ir.Model:
        """The optimized graph, parsed once (every call returns the same object)."""
        import onnx
        import onnx_ir as ir

        if self._parsed is None:
            if not self.model_bytes:
                raise ArtifactError(f"{self.path}: the model bytes were released once a "
                                    "session was built from them; load the artifact again")
            proto = onnx.load_model_from_string(self.model_bytes)
            self.attach_weights(proto)
            self._parsed = self.weights_into(ir.from_proto(proto))
        return self._parsed

    def attach_weights(self, proto: Any, member: str = MODEL) -> None:
        """Point ``proto``'s external tensors (``member``'s references into weights.bin: those
        of model.onnx, or of a blob graph) at this artifact's file, at their offset in it;
        refuse any other location and any tensor whose bytes would leave the member or do not
        match its dims and type."""
        from kiln.compiler.onnx_stream import external_tensors, point_into

        file_name = self.path.resolve().name  # once: resolving is a syscall per path part
        for tensor, info in external_tensors(proto):
            where = f"{self.path}: tensor '{tensor.name}' of {member}"
            if self.weights is None or info.get("location") != WEIGHTS:
                raise ArtifactError(f"{where} refers to external data "
                                    f"'{info.get('location')}'; an artifact's weights live in "
                                    f"its {WEIGHTS} member only")
            start, size = self.weights
            try:
                offset, length = int(info.get("offset", "0")), int(info["length"])
            except (KeyError, ValueError) as exc:
                raise ArtifactError(f"{where} has no valid offset/length") from exc
            if offset < 0 or length < 0 or offset + length > size:
                raise ArtifactError(f"{where}: bytes {offset}..{offset + length} lie outside "
                                    f"{WEIGHTS} ({size} bytes)")
            need = _tensor_bytes(tensor)
            if need is not None and need != length:
                raise ArtifactError(f"{where} has {length} bytes; its dims and type need "
                                    f"{need}")
            point_into(tensor, file_name, start + offset, length)

    def weights_into(self, model: ir.Model) -> ir.Model:
        """Give ``model``'s external tensors (from a proto ``attach_weights`` fixed) the
        artifact's folder as their base, so they map the .kiln file on demand."""
        import onnx_ir as ir

        ir.external_data.set_base_dir(model.graph, str(self.path.resolve().parent))
        return model

    def check_weights(self) -> None:
        """Wait for the weights member's sha256 check started by ``load_artifact(...,
        check_weights_later=True)`` and raise ArtifactError when it failed (a no-op when the
        check already ran)."""
        check, self._weights_check = self._weights_check, None
        if check is not None:
            check.result()

    def release_payload(self) -> None:
        """Drop the model and blob bytes once an engine was built from them (the manifest and
        an already parsed ``model()`` stay): a session should not hold its weights twice."""
        self.model_bytes = b""
        self.blobs = {}

    def blob_miss(self, backend: str, backend_version: str | None, target: str) -> str | None:
        """Why the blobs cannot serve ``backend``/``target`` (None when they can)."""
        miss = blob_miss(self.manifest, backend, backend_version, target)
        if miss is not None and not self.blobs:  # nothing prebuilt: say what differs
            miss = miss.replace("blobs were", "the artifact was", 1)
        return miss


def _graph_into(model_bytes: bytes, file: Path, start: int) -> bytes:
    """model.onnx (``model_bytes``) with its external tensors pointing into ``file``, whose
    weights member's data begins at ``start``: the graph as a load of that file sees it."""
    import onnx

    from kiln.compiler.onnx_stream import external_tensors, point_into

    proto = onnx.load_model_from_string(model_bytes)
    for tensor, info in external_tensors(proto):
        point_into(tensor, file.name, start + int(info.get("offset", "0")), int(info["length"]))
    return proto.SerializeToString()


def blob_miss(manifest: Mapping[str, Any], backend: str, backend_version: str | None,
              target: str) -> str | None:
    """Explain why an artifact's blobs cannot be reused, or None when they can."""
    built = manifest.get("backend", {})
    if built.get("name") != backend:
        return f"blobs were built by backend '{built.get('name')}', not '{backend}'"
    if built.get("version") != backend_version:
        return (f"blobs were built by {backend} {built.get('version')}, "
                f"this machine has {backend} {backend_version}")
    if manifest.get("target") != target:
        return (f"blobs were built for target '{manifest.get('target')}', not '{target}'"
                + _lacking(str(manifest.get("target")), target))
    return None


def _lacking(built: str, target: str) -> str:
    """' (which lacks avx512f, ...)' when ``built`` names CPU features ``target`` has
    not (the artifact needs what this CPU does not have), else ''."""
    from kiln.compiler.target import Target
    from kiln.errors import KilnError

    try:
        need, have = Target.parse(built), Target.parse(target)
    except KilnError:
        return ""
    missing = sorted(need.features - have.features)
    return f" (which lacks {', '.join(missing)})" if missing else ""


def _check_name(name: str) -> None:
    """Refuse member names that could escape the extraction folder."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        raise ArtifactError(f"artifact member name {name!r} is absolute or malformed; refused")
    if len(name) > 1 and name[1] == ":":
        raise ArtifactError(f"artifact member name {name!r} has a drive letter; refused")
    parts = name.split("/")
    if any(part in ("..", ".") for part in parts) or posixpath.normpath(name) != name.rstrip("/"):
        raise ArtifactError(f"artifact member name {name!r} contains '..' or '.'; refused")


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _tensor_bytes(tensor: Any) -> int | None:
    """Bytes a TensorProto's dims and type need (None for a type onnx does not know)."""
    import math

    from kiln.compiler.validate import ONNX_DTYPES, raw_bytes

    if tensor.data_type not in ONNX_DTYPES:
        return None
    return raw_bytes(tensor.data_type, math.prod(tensor.dims))


def split_weights(model: ir.Model) -> tuple[bytes, list[tuple[int, Any]], int]:
    """model.onnx for ``model`` with its large initializers (and every one already on disk)
    as external data in ``weights.bin``, at 64-byte aligned offsets. Returns (model bytes,
    [(offset, source tensor)], member size). ``model`` is left as it was."""
    import onnx_ir as ir

    swapped: list[tuple[Any, Any]] = []
    layout: list[tuple[int, Any]] = []
    end = 0
    try:
        for graph in model.graphs():
            for value in graph.initializers.values():
                tensor = value.const_value
                if tensor is None or (tensor.nbytes < WEIGHT_MIN_BYTES
                                      and not isinstance(tensor, ir.ExternalTensor)):
                    continue
                offset = _align(end, WEIGHT_ALIGN)
                value.const_value = ir.ExternalTensor(WEIGHTS, offset, tensor.nbytes,
                                                      tensor.dtype,
                                                      shape=ir.Shape(tensor.shape.numpy()),
                                                      name=tensor.name or value.name or "")
                swapped.append((value, tensor))
                layout.append((offset, tensor))
                end = offset + tensor.nbytes
        model_bytes = ir.serde.serialize_model(model).SerializeToString()
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
    return model_bytes, layout, end


def _tensor_chunks(tensor: Any) -> Any:
    """A tensor's raw bytes in chunks: read from its file for an external tensor (no map, so
    nothing is added to the process's RSS), else its bytes in memory."""
    import onnx_ir as ir

    if isinstance(tensor, ir.ExternalTensor):
        left = tensor.length if tensor.length is not None else tensor.nbytes
        with open(tensor.path, "rb") as f:
            f.seek(tensor.offset or 0)
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise ArtifactError(f"weights file {tensor.path} ended early")
                left -= len(chunk)
                yield chunk
        return
    yield tensor.tobytes()


def _write_weights(zf: zipfile.ZipFile, layout: Sequence[tuple[int, Any]],
                   size: int) -> tuple[dict[str, Any], int]:
    """The weights member, streamed tensor by tensor; its data starts 4096-byte aligned.
    Returns (its manifest entry, the offset of its data in the file)."""
    info = zipfile.ZipInfo(WEIGHTS, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    assert zf.fp is not None
    header = zf.fp.tell()
    # local header (30) + name + extra + the zip64 sizes zipfile adds (20) when forced
    fixed = header + 30 + len(WEIGHTS) + 20 + 4
    info.extra = struct.pack("<HH", _PAD_FIELD, _align(fixed, MEMBER_ALIGN) - fixed) + bytes(
        _align(fixed, MEMBER_ALIGN) - fixed)
    digest = hashlib.sha256()
    written = 0
    with zf.open(info, "w", force_zip64=True) as out:
        start = zf.fp.tell()
        if start % MEMBER_ALIGN:  # the layout above is zipfile's; check it held
            raise ArtifactError("internal error: the weights member is not aligned")
        for offset, tensor in layout:
            pad = bytes(offset - written)
            out.write(pad)
            digest.update(pad)
            written = offset
            for chunk in _tensor_chunks(tensor):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
            if written != offset + tensor.nbytes:
                raise ArtifactError(f"tensor '{tensor.name}' gave {written - offset} bytes, "
                                    f"its dims and type need {tensor.nbytes}")
    assert written == size
    return {"sha256": digest.hexdigest(), "size": size}, start


#: Writes a compiled model's blobs into a folder, told where the artifact keeps the weights
#: (``CompiledModel.save_beside``); returns the names written.
BlobWriter = Callable[[Path, "ArtifactWeights | None"], Sequence[str]]


def _pack(path: Path, manifest: dict[str, Any], files: Mapping[str, bytes | Path],
          weights: tuple[Sequence[tuple[int, Any]], int] | None = None,
          write_blobs: BlobWriter | None = None) -> None:
    """Write the zip atomically: the weights, the other members, the blobs ``write_blobs``
    makes once the weights are in the file, then the manifest, then the comment."""
    members: dict[str, dict[str, Any]] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_STORED) as zf:
            start = None
            if weights is not None:
                members[WEIGHTS], start = _write_weights(zf, *weights)
            for name, content in files.items():
                _put(zf, members, name, content)
            if write_blobs is not None:
                assert zf.fp is not None
                zf.fp.flush()  # the blob writer reads the weights back from the file
                model_bytes = files[MODEL]
                assert isinstance(model_bytes, bytes)
                _put_blobs(zf, members, write_blobs, Path(tmp_name), model_bytes, start)
            manifest = {**manifest, "members": members}
            manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
            zf.writestr(MANIFEST, manifest_bytes)
            zf.comment = _COMMENT_PREFIX + sha256_bytes(manifest_bytes).encode()
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def _put(zf: zipfile.ZipFile, members: dict[str, dict[str, Any]], name: str,
         content: bytes | Path) -> None:
    """Write one member and list its size and sha256."""
    _check_name(name)
    if isinstance(content, Path):
        zf.write(content, name)
        members[name] = {"sha256": sha256_file(content), "size": content.stat().st_size}
    else:
        zf.writestr(name, content)
        members[name] = {"sha256": sha256_bytes(content), "size": len(content)}


def _put_blobs(zf: zipfile.ZipFile, members: dict[str, dict[str, Any]],
               write_blobs: BlobWriter, file: Path, model_bytes: bytes,
               start: int | None) -> None:
    """The blobs ``write_blobs`` makes, told where ``file`` (the artifact being written) holds
    the weights when it has a weights member starting at ``start``, stored under blobs/."""
    from kiln.backends.base import ArtifactWeights

    with tempfile.TemporaryDirectory(prefix="kiln-blobs-") as folder:
        shared = None
        if start is not None:
            # beside the artifact: the graph names the file its weights are in by name alone
            fd, graph = tempfile.mkstemp(prefix=f"{file.name}.", suffix=".onnx",
                                         dir=file.parent)
            with os.fdopen(fd, "wb") as out:
                out.write(_graph_into(model_bytes, file, start))
            shared = ArtifactWeights(file=file, graph=Path(graph), start=start, member=WEIGHTS)
        try:
            write_blobs(Path(folder), shared)
        finally:
            if shared is not None:
                shared.graph.unlink(missing_ok=True)
        root = Path(folder)
        for blob in sorted(p for p in root.rglob("*") if p.is_file()):
            _put(zf, members, BLOBS + blob.relative_to(root).as_posix(), blob)


def save_artifact(
    path: str | os.PathLike[str],
    model: ir.Model | bytes,
    *,
    backend: str,
    backend_version: str | None,
    target: str,
    source_sha256: str,
    pipeline: Sequence[str] = (),
    level: int | None = None,
    options: Mapping[str, Any] | None = None,
    inputs: Sequence[Mapping[str, Any]] = (),
    outputs: Sequence[Mapping[str, Any]] = (),
    placement: Any = None,
    blob_dir: str | os.PathLike[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    write_blobs: BlobWriter | None = None,
) -> Path:
    """Write a .kiln artifact; returns its path.

    ``model`` is the optimized graph (an onnx_ir model or serialized ONNX bytes); ``inputs``
    and ``outputs`` are signature entries (``TensorSpec.to_json()``); ``blob_dir`` is a folder
    a ``CompiledModel.save`` filled, stored under ``blobs/`` file by file. ``write_blobs``
    (a ``CompiledModel.save_beside``) instead writes them once the weights are in the file,
    so that a blob can read its constants from the artifact rather than hold them again.
    """
    weights = None
    if isinstance(model, bytes):
        model_bytes = model  # self-contained ONNX: weights inline
    else:
        model_bytes, layout, size = split_weights(model)
        weights = (layout, size) if layout else None
    files: dict[str, bytes | Path] = {MODEL: model_bytes}
    if blob_dir is not None:
        root = Path(blob_dir)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            files[BLOBS + file.relative_to(root).as_posix()] = file
    manifest = {
        "format": FORMAT,
        "format_version": {"major": FORMAT_MAJOR, "minor": FORMAT_MINOR},
        "kiln_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"sha256": source_sha256},
        "pipeline": {"level": level, "passes": list(pipeline), "options": dict(options or {})},
        "target": target,
        "backend": {"name": backend, "version": backend_version},
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "placement": placement,
        **dict(extra or {}),
    }
    out = Path(path)
    _pack(out, manifest, files, weights, write_blobs)
    return out


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise ArtifactError(f"artifact {path} does not exist or is not a file")
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path} is not a kiln artifact: not a readable zip file ({exc}); "
            "it may be truncated or a different kind of file") from exc


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    if info.file_size > MAX_MEMBER_BYTES:
        raise ArtifactError(f"{path}: member {info.filename} claims {info.file_size} bytes")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: member {info.filename} is damaged ({exc}); the file was modified or "
            "truncated — recompile it with `kiln compile`") from exc


def _check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: manifest.json is not a kiln artifact manifest")
    version = manifest.get("format_version")
    if not isinstance(version, dict) or not isinstance(version.get("major"), int):
        raise ArtifactError(f"{path}: manifest has no format_version.major")
    major, minor = version["major"], version.get("minor", 0)
    if major not in READABLE_MAJORS:
        newer = "newer" if major > FORMAT_MAJOR else "older"
        readable = " and ".join(f"{m}.x" for m in READABLE_MAJORS)
        raise ArtifactError(
            f"{path}: artifact format {major}.{minor} is {newer} than the {readable} "
            f"this kiln {__version__} reads; recompile the model with this kiln")
    for key in ("members", "backend", "target"):
        if key not in manifest:
            raise ArtifactError(f"{path}: manifest lacks '{key}'")
    return manifest


def load_artifact(path: str | os.PathLike[str], extract_to: str | os.PathLike[str] | None = None,
                  check_weights_later: bool = False) -> Artifact:
    """Open and verify a .kiln artifact.

    Checks, in order: zip readable; member names safe and unique; manifest hash (zip comment);
    format major version; every member listed in the manifest with matching size and sha256,
    and nothing unlisted. Blobs stay in memory (``Artifact.blobs``) and are also written under
    ``extract_to`` when given. Raises ``kiln.ArtifactError`` saying which check failed.

    ``check_weights_later``: hash the weights member on a thread of its own while the caller
    goes on (it holds only tensor values, bounds-checked by ``attach_weights``; the graph is
    checked before this returns); the caller must call ``Artifact.check_weights`` before it
    hands anything built from the artifact out.
    """
    path = Path(path)
    with _open(path) as zf:
        infos = zf.infolist()
        seen: set[str] = set()
        for info in infos:
            _check_name(info.filename)
            if info.filename in seen:
                raise ArtifactError(f"{path}: member {info.filename!r} appears twice; refused")
            seen.add(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArtifactError(f"{path}: member {info.filename!r} is a symlink; refused")
        by_name = {info.filename: info for info in infos}
        if MANIFEST not in by_name:
            raise ArtifactError(f"{path} is not a kiln artifact: it has no {MANIFEST}")
        manifest_bytes = _read(zf, by_name[MANIFEST], path)
        comment = zf.comment
        if not comment.startswith(_COMMENT_PREFIX):
            raise ArtifactError(f"{path}: the manifest checksum is missing; not written by kiln")
        if comment[len(_COMMENT_PREFIX):].decode(errors="replace") != sha256_bytes(
                manifest_bytes):
            raise ArtifactError(f"{path}: manifest.json does not match its checksum; the "
                                "artifact was modified")
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as exc:
            raise ArtifactError(f"{path}: manifest.json is not valid JSON ({exc})") from exc
        manifest = _check_manifest(manifest, path)
        members = manifest["members"]
        listed = set(members)
        present = set(by_name) - {MANIFEST}
        if listed != present:
            missing, unknown = sorted(listed - present), sorted(present - listed)
            raise ArtifactError(f"{path}: members do not match the manifest "
                                f"(missing {missing}, not listed {unknown})")
        if MODEL not in members:
            raise ArtifactError(f"{path}: the artifact holds no {MODEL}")
        # Each member but the weights read once into memory and hashed there: the bytes
        # checked are the bytes used. The weights are hashed as they stream past (file reads,
        # not a map: nothing stays in the process's RSS) and mapped later, tensor by tensor.
        weights = None
        with open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            weights_check = None
            if WEIGHTS in listed:
                weights = _member_span(raw, size, by_name[WEIGHTS], path)
                expected = members[WEIGHTS]
                if check_weights_later:
                    weights_check = _check_later(_check_member, path, WEIGHTS, weights, expected)
                else:
                    _check_member(path, WEIGHTS, weights, expected, raw)
            data, mapped = {}, {}
            for name in sorted(listed - {WEIGHTS}):
                info = by_name[name]
                if (name.startswith(BLOBS) and info.file_size >= MAP_BLOB_BYTES
                        and info.compress_type == zipfile.ZIP_STORED):
                    span = _member_span(raw, size, info, path)
                    _check_member(path, name, span, members[name], raw)  # streamed, not held
                    mapped[name] = _map_span(raw, span)
                else:
                    data[name] = _member_bytes(zf, raw, size, info, path)
        # sha256 releases the GIL on large buffers: hash large members side by side. Small
        # ones inline: starting and joining the threads took 0.4-26 ms (loaded machine) to
        # hash YOLOv8n's 140 kB model.onnx in 0.1 ms.
        if sum(len(d) >= _PARALLEL_HASH_BYTES for d in data.values()) > 1:
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                digests = dict(zip(data, pool.map(sha256_bytes, data.values())))
        else:
            digests = {name: sha256_bytes(content) for name, content in data.items()}
        for name, content in data.items():
            entry = members[name]
            if len(content) != entry.get("size") or digests[name] != entry.get("sha256"):
                raise ArtifactError(f"{path}: member {name} does not match its sha256 in "
                                    "the manifest; the artifact was modified")
        model_bytes = data.pop(MODEL)
        blobs = {n[len(BLOBS):]: d for n, d in (data | mapped).items() if n.startswith(BLOBS)}
        data.clear()
    blob_dir = _extract(blobs, extract_to, path) if blobs and extract_to else None
    return Artifact(path=path, manifest=manifest, model_bytes=model_bytes, blob_dir=blob_dir,
                    blobs=blobs, weights=weights, _weights_check=weights_check)


def _check_member(path: Path, name: str, span: tuple[int, int], expected: Mapping[str, Any],
                  raw: Any = None) -> None:
    """Raise ArtifactError unless member ``name`` at ``span`` (offset, size) of ``path`` has the
    size and sha256 the manifest lists; hashed as file reads stream past (through ``raw`` or a
    file of its own), so nothing of it stays in memory."""
    if span[1] != expected.get("size"):
        digest = None
    elif raw is not None:
        digest = _sha256_span(raw, *span)
    else:
        with open(path, "rb") as own:
            digest = _sha256_span(own, *span)
    if digest is None or digest != expected.get("sha256"):
        raise ArtifactError(f"{path}: member {name} does not match its sha256 in the "
                            "manifest; the artifact was modified")


def _map_span(raw: Any, span: tuple[int, int]) -> memoryview:
    """A writable copy-on-write view of ``span`` (offset, size) of the open file ``raw``: pages
    come from the page cache as they are read; a write stays private to this process."""
    begin, length = span
    start = begin - begin % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(raw.fileno(), length + begin - start, access=mmap.ACCESS_COPY,
                        offset=start)
    return memoryview(mapping)[begin - start:]


def _check_later(check: Callable[..., None], *args: Any) -> concurrent.futures.Future:
    """``check(*args)`` on a thread of its own (sha256 releases the GIL while it hashes)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-hash")
    try:
        return pool.submit(check, *args)
    finally:
        pool.shutdown(wait=False)


def _sha256_span(raw: Any, begin: int, length: int) -> str:
    # one buffer read into again and again: a fresh chunk per read leaves a thread's malloc
    # arena holding chunks after the hash (+14 MB of RSS beside an engine's import, measured)
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(_CHUNK, max(length, 0))))
    raw.seek(begin)
    while length > 0:
        read = raw.readinto(buffer[:min(len(buffer), length)])
        if not read:
            break
        digest.update(buffer[:read])
        length -= read
    return digest.hexdigest()


def _member_span(raw: Any, size: int, info: zipfile.ZipInfo, path: Path) -> tuple[int, int]:
    """(offset of a stored member's data in the file, its size), checked against the file."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ArtifactError(f"{path}: member {info.filename} is compressed; kiln stores it "
                            "uncompressed so that it can be mapped")
    if info.file_size > MAX_MEMBER_BYTES:
        raise ArtifactError(f"{path}: member {info.filename} claims {info.file_size} bytes")
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise ArtifactError(f"{path}: member {info.filename} has no local header; the file "
                            "was modified or truncated")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    begin = info.header_offset + 30 + name_len + extra_len
    if info.compress_size != info.file_size or begin + info.compress_size > size:
        raise ArtifactError(f"{path}: member {info.filename} runs past the end of the file; "
                            "it was truncated")
    return begin, info.file_size


def _member_bytes(zf: zipfile.ZipFile, raw: Any, size: int, info: zipfile.ZipInfo,
                  path: Path) -> bytes:
    """A member's bytes: read straight from the file for stored members (kiln writes only
    those; the sha256 check replaces zip's CRC), otherwise through zipfile."""
    if info.compress_type != zipfile.ZIP_STORED:
        return _read(zf, info, path)
    begin, length = _member_span(raw, size, info, path)
    raw.seek(begin)
    content = raw.read(length)
    if len(content) != length:
        raise ArtifactError(f"{path}: member {info.filename} was cut short while reading")
    return content


def _extract(blobs: Mapping[str, bytes], extract_to: str | os.PathLike[str], path: Path) -> Path:
    """Write ``blobs`` (relative name -> bytes) under ``extract_to``, refusing any name that
    would leave it."""
    blob_dir = Path(extract_to)
    root = blob_dir.resolve()
    for rel, data in blobs.items():
        dest = (root / rel).resolve()
        if root not in dest.parents:
            raise ArtifactError(f"{path}: blob {rel!r} would leave the blob folder; refused")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return blob_dir


def restore(artifact: Artifact, backend: Backend, target: Target, options: CompileOptions,
            model: ir.Model | None = None, log: Callable[[str], None] | None = None,
            ) -> tuple[Any, str | None]:
    """A CompiledModel for ``artifact`` on ``backend``: from its blobs when they fit, else
    rebuilt from model.onnx. Returns (compiled model, why the blobs were not used or None).

    ``backend`` is a ``kiln.backends.base.Backend``; ``target`` a ``Target``; ``options`` the
    ``CompileOptions`` asked for now (blobs built at another precision or for another device
    are not reused); ``model`` the artifact's graph when the caller already parsed it. The
    reason is also passed to ``log`` so a user sees why a load took as long as a compile.
    """
    return restore_as_decided(artifact, backend, target, options,
                              restore_miss(artifact, backend, target, options), model, log)


def restore_as_decided(artifact: Artifact, backend: Backend, target: Target,
                       options: CompileOptions, miss: str | None,
                       model: ir.Model | StoredGraph | None = None,
                       log: Callable[[str], None] | None = None) -> tuple[Any, str | None]:
    """``restore`` once ``restore_miss`` was asked (``miss``): a load decides once whether the
    blobs serve, and reads that decision twice (where the weights go, then what to build).
    ``model`` may be the artifact's ``StoredGraph`` for a backend that ``loads_stored_graph``;
    it then builds from the stored graph (no blobs) when the blobs do not serve; the load
    (``_load_checked``) passes one to no other backend."""
    from kiln.backends.onnx_export import StoredGraph

    model = model if model is not None else artifact.model()
    if miss is None:
        compiled = backend.load(artifact.blobs, model, target, options)
        miss = compiled.rebuilt_because  # the blob did not import here
        if miss is None:
            return compiled, None
        message = f"{artifact.path.name}: rebuilt from {MODEL} because {miss}"
        if log is not None:
            log(message)
        return compiled, message
    message = f"{artifact.path.name}: rebuilding from {MODEL} because {miss}"
    if log is not None:
        log(message)
    if isinstance(model, StoredGraph):
        return backend.load({}, model, target, options), message
    return backend.compile(model, target, options), message


def restore_miss(artifact: Artifact, backend: Backend, target: Target,
                 options: CompileOptions) -> str | None:
    """Why ``restore`` would rebuild ``artifact`` on ``backend`` rather than use its blobs
    (None: the blobs serve)."""
    miss = artifact.blob_miss(backend.name, backend.is_available().version, str(target))
    return miss if miss is not None else options_miss(artifact.manifest, options)


def options_miss(manifest: Mapping[str, Any], options: CompileOptions) -> str | None:
    """Why blobs compiled with the manifest's options cannot serve ``options`` (or None)."""
    built = manifest.get("pipeline", {}).get("options") or {}
    for field, now in (("precision", options.precision), ("device", options.device)):
        was = built.get(field)
        if was is not None and was != now:
            return f"blobs were built for {field} '{was}', not '{now}'"
    return None

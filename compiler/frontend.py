"""ONNX in, IR out: the only place kiln reads a user's model.

``import_model`` accepts a path, raw bytes or an ``onnx.ModelProto`` and returns an
``onnx_ir.Model`` that passed the ONNX checker and has inferred shapes. What it guarantees:

- old-IR models that list their initializers as graph inputs (the onnx model zoo does) get
  those initializers treated as constants, unless ``initializers_as_inputs=True`` keeps them
  overridable inputs;
- external data is read only from regular files inside the model's own folder, and only the
  bytes the tensor declares;
- a large file's weights never sit in memory whole: the parse copies them to a weights file of
  kiln's own, which the IR's tensors map (``model.meta[WEIGHTS_DIR]`` names its folder);
- a dim declared as ``-1`` or named ``?`` (Paddle2ONNX and older exporters' "dynamic")
  becomes an unnamed dim, as onnxruntime reads it, and opset imports of domains no node uses
  are dropped, so no backend is handed either;
- every failure is a ``kiln.ModelError`` naming what is wrong and where.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat as stat_module
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError, Message

from kiln.compiler.contrib import complete_types
from kiln.compiler.onnx_stream import (
    ASIDE_TENSOR_BYTES,
    WEIGHTS_DIR,
    WeightsAside,
    external_tensors,
    parse_file,
    point_into,
)
from kiln.compiler.source_digest import GRAPH_AS_READ, SOURCE_DIGEST, SourceDigest
from kiln.compiler.validate import (
    DYNAMIC_DIM,
    PROTOBUF_RECURSION_LIMIT,
    Limits,
    kiln_limits,
    raw_bytes,
    used_domains,
    validate_proto,
)
from kiln.errors import ModelError

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


def import_model(source: ModelSource, *, initializers_as_inputs: bool = False,
                 check: bool = True, infer_shapes: bool = True,
                 limits: list[Limits] | None = None) -> ir.Model:
    """Load ``source`` into the IR, checked and shape-inferred.

    ``kiln.compiler.validate`` checks the model first (versions against kiln's limits plus
    ``limits``, e.g. the chosen backend's; structure; dims; nesting depth).

    The returned model's ``meta`` holds the source's ``SourceDigest`` (``source_sha256``
    reads it) and ``kiln.source_name`` for reports and artifact manifests.
    """
    # a file's large values (its own, or its external data's) go to a weights file of
    # kiln's own; the folder is made only when one does
    aside = WeightsAside() if isinstance(source, (str, os.PathLike)) else None
    try:
        model, changed, name, digest = _import(source, aside, initializers_as_inputs, check,
                                               infer_shapes, limits)
    except BaseException:
        if aside is not None:
            aside.discard()
        raise
    model.meta[SOURCE_DIGEST] = digest
    model.meta["kiln.source_name"] = name
    if digest.alone and not changed:
        model.meta[GRAPH_AS_READ] = True
    return model


def _import(source: ModelSource, aside: WeightsAside | None, initializers_as_inputs: bool,
            check: bool, infer_shapes: bool, limits: list[Limits] | None
            ) -> tuple[ir.Model, bool, str, SourceDigest]:
    """``import_model``'s steps: (the model, whether normalizing changed the graph, the
    source's name, its digest). The values ``aside`` receives are copied by its thread while
    the graph is checked and converted, none of which reads them (MiniLM-L6: most of its
    86 MB beside ~40 ms of checks); the model's tensors map them, and what first reads the
    file waits for the copies."""
    proto, name, digest = load_proto(source, aside)
    if aside is not None and not aside.names:
        aside.discard()
        aside = None
    if aside is not None:
        aside.seal()
    lifted = _lift_large_constants(proto)
    if lifted is not None:
        proto = lifted
    # what went aside is external data of kiln's own; the user's was read in or copied aside
    validate_proto(proto, name, [kiln_limits(), *(limits or [])], external_ok=aside is not None)
    changed = normalize(proto) or lifted is not None
    if not initializers_as_inputs:
        changed = _drop_initializer_inputs(proto) or changed
    # one copy without the large values serves the checker and the inference (each made
    # its own: ~1 ms of YOLOv8n's import)
    light = _weightless(proto, _LEFT_OUT) if check or infer_shapes else None
    if check:
        _check(proto, name, light)
    if infer_shapes:
        proto = _infer_shapes(proto, name, light)
    del light  # not held while the IR is built (the import's peak)
    try:
        model = ir.from_proto(proto)
    except Exception as exc:
        raise ModelError(f"{name}: cannot convert to the IR: {exc}") from exc
    if aside is not None:
        # the copies may still run: what reads the file waits for them (``_AsideTensor``), an
        # engine reading the user's own file never does (YOLOv8n on onnxruntime: 4-5 ms)
        aside.source = name
        _map_aside(model, aside)
    return model, changed, name, digest


def _wait_for_copies(aside: WeightsAside) -> None:
    """Wait until every value the parse set aside is in ``aside``'s file (at once when
    they are): the model file ended early if one could not be copied."""
    try:
        aside.finish()
    except OSError as exc:
        raise ModelError(f"{aside.source}: cannot read the weights: {exc}") from exc


def ready_weights_dir(model: ir.Model) -> str | None:
    """The folder of the weights file kiln keeps for ``model`` (``WEIGHTS_DIR``), once it is
    whole: for an engine that reads that folder's files itself. None without one."""
    aside = model.meta.get(WEIGHTS_ASIDE)
    if aside is not None:
        _wait_for_copies(aside)
    return model.meta.get(WEIGHTS_DIR)


def _lift_large_constants(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """``proto`` with its main graph's large Constant nodes as initializers (a new proto), or
    None when it has none. Paddle2ONNX writes every weight as a Constant node; held in nodes,
    the weights rode along in every copy the checks make (the text check's, the checker's,
    shape inference's: PP-OCRv4's detector peaked at ~4x its weights), where the copies leave
    large initializers out. A Constant of one tensor ``value`` with one named output is that
    initializer; the pipeline lifts every Constant the same way (``constant-initializers``)."""
    graph = proto.graph
    if proto.ir_version < 4:  # initializers must then be graph inputs too
        return None
    taken = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    lift: set[int] = set()
    for index, node in enumerate(graph.node):
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or node.input \
                or len(node.output) != 1 or len(node.attribute) != 1:
            continue
        attr = node.attribute[0]
        name = node.output[0]
        if attr.name != "value" or not attr.HasField("t") or not name or name in taken or \
                not _large_raw(attr.t):
            continue
        taken.add(name)
        lift.add(index)
    if not lift:
        return None
    lifted = onnx.ModelProto()
    _copy_fields(proto, lifted, skip="graph")
    _copy_fields(graph, lifted.graph, skip="node")
    for index, node in enumerate(graph.node):
        if index not in lift:
            lifted.graph.node.add().CopyFrom(node)
            continue
        tensor = lifted.graph.initializer.add()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
    return lifted


class _AsideTensor(ir.ExternalTensor):
    """A tensor whose values the parse set aside: it keeps their folder alive, and the way to
    its file (``path``, ``base_dir``: what onnx_ir's load, an artifact's copy and an engine
    told where the weights are all ask) is given once the copies into the file are done."""

    __slots__ = ("_aside",)

    @property
    def path(self) -> str:
        _wait_for_copies(self._aside)
        return super().path

    @property
    def base_dir(self) -> str | os.PathLike:
        _wait_for_copies(self._aside)
        return super().base_dir

    @base_dir.setter
    def base_dir(self, value: str | os.PathLike) -> None:
        ir.ExternalTensor.base_dir.fset(self, value)

    def _check_path_containment(self) -> None:
        """Nothing to check: kiln wrote this file into a temporary folder of its own. (onnx_ir's
        checks, for external data a model names, resolve both paths on every load: 1.4 ms
        of the 61 tensors YOLOv8n's native compile reads.)"""


#: ``ir.Model.meta`` key (in memory, never saved) of the ``WeightsAside`` a model's tensors map.
WEIGHTS_ASIDE = "kiln.weights_aside"


def _map_aside(model: ir.Model, aside: WeightsAside) -> None:
    """Point the tensors set aside at ``aside``'s file. The model and each of those tensors
    hold the folder, which goes with the last of them: clones share tensors but not the
    model, and the folder also takes the files of what passes compute later."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and tensor.name in aside.names:
            held = _AsideTensor(tensor.location, tensor.offset, tensor.length, tensor.dtype,
                                shape=tensor.shape, name=tensor.name,
                                doc_string=tensor.doc_string,
                                metadata_props=dict(tensor.metadata_props),
                                base_dir=aside.folder)
            held._aside = aside
            value.const_value = held
    model.meta[WEIGHTS_DIR] = aside.folder
    model.meta[WEIGHTS_ASIDE] = aside


def aside_tensors(model: ir.Model) -> dict[str, ir.ExternalTensor]:
    """The main graph's initializers whose values kiln's own parse set aside (``_map_aside``),
    by name: external data of kiln's, not the user's, so a copy of ``model`` may keep them."""
    return {name: value.const_value for name, value in model.graph.initializers.items()
            if isinstance(value.const_value, _AsideTensor)}


def keep_aside(copy: ir.Model, tensors: dict[str, ir.ExternalTensor]) -> None:
    """Point ``copy``'s initializers named in ``tensors`` (``aside_tensors`` of the model it
    was serialized from) back at those tensors, which know their folder and keep it alive.
    The copy does not take the folder as its own (no ``WEIGHTS_DIR``): other copies of the
    same model share it, so what passes compute goes to a folder of the copy's own."""
    for name, tensor in tensors.items():
        copy.graph.initializers[name].const_value = tensor


#: dim_param values exporters write for "unknown", not as a name shared by equal dims
#: (Paddle2ONNX writes "?" on several axes of one input that take different sizes).
UNKNOWN_DIM_NAMES = frozenset({"?"})


def normalize(proto: onnx.ModelProto) -> bool:
    """What a validated model declares in forms backends differ on, in the one form they share:
    calls of the model's own functions are inlined (OpenVINO and kiln's native engine do not
    read local functions), ``-1`` dims and ``?`` dim names of graph inputs, outputs and
    value_info become unnamed (dynamic) dims, and imports of domains no node uses, and
    repeats of an import, are dropped. In place; returns whether it changed anything."""
    changed = False
    if proto.functions:
        from onnx.inliner import inline_local_functions

        try:
            proto.CopyFrom(inline_local_functions(proto))
            changed = True
        except Exception:  # onnx cannot inline them: onnxruntime still runs the calls
            pass
    used: set[str] = set()  # the domains nodes use, as ``used_domains(calls=True)`` finds
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for info in (*graph.input, *graph.output, *graph.value_info):
            # an unset dim_value reads 0 and an unset dim_param "" (a oneof): no HasField
            for dim in info.type.tensor_type.shape.dim:
                if dim.dim_value == DYNAMIC_DIM or dim.dim_param in UNKNOWN_DIM_NAMES:
                    dim.Clear()
                    changed = True
        for node in graph.node:
            used.add(node.domain)
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    if proto.functions:  # their nodes too (inlining failed, or functions no node calls)
        used = used_domains(proto, calls=True)
    elif "ai.onnx" in used:
        used = (used - {"ai.onnx"}) | {""}
    keep, imported = [], set()
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain in imported:
            continue  # an identical repeat (validation refused conflicting ones)
        if domain == "" or domain in used:
            keep.append(o)
            imported.add(domain)
    if len(keep) != len(proto.opset_import):
        del proto.opset_import[:]
        proto.opset_import.extend(keep)
        changed = True
    return changed


#: Files from this size are parsed a field at a time (``kiln.compiler.onnx_stream``).
STREAM_PARSE_BYTES = 8 << 20


def _streams(source: ModelSource) -> bool:
    """Whether ``source`` is a file large enough to be parsed a field at a time."""
    return isinstance(source, (str, os.PathLike)) and Path(source).is_file() and \
        Path(source).stat().st_size >= STREAM_PARSE_BYTES


def load_proto(source: ModelSource, aside: WeightsAside | None = None
               ) -> tuple[onnx.ModelProto, str, SourceDigest]:
    """Parse ``source`` into a ModelProto with external data resolved safely.

    Returns (proto, display name, the serialized model's sha256: a file's is taken when first
    asked for). With ``aside``, a file parsed a field at a time leaves its large initializers'
    values in ``aside``'s file, and so do large initializers in external-data files
    (``aside.names``; those tensors stay external data, in kiln's file).
    """
    if isinstance(source, onnx.ModelProto):
        data = source.SerializeToString()
        return _parse(data, "<ModelProto>"), "<ModelProto>", SourceDigest.of_bytes(data)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return parse_bytes(data, "<bytes>"), "<bytes>", SourceDigest.of_bytes(data)
    if not isinstance(source, (str, os.PathLike)):
        raise ModelError(f"cannot load a model from a {type(source).__name__}: pass a path, "
                         "bytes or an onnx.ModelProto")
    path = Path(source)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a regular file")
    digest = SourceDigest.of_file(path, path.stat())  # noted before the file is read
    proto = parse_file(path, aside) if _streams(path) else None
    if proto is None:  # never the file's bytes and the parsed model both whole
        data = path.read_bytes()
        proto = _parse(data, str(path))
        del data
    if _has_external_data(proto):
        load_external_data(proto, path.parent.resolve(), str(path), aside, digest)
    return proto, str(path), digest


def parse_bytes(data: bytes, name: str, external_ok: bool = False) -> onnx.ModelProto:
    """Parse a serialized model that must be self-contained (no external data files), unless
    ``external_ok`` (the caller resolves them: a .kiln artifact's weights member)."""
    proto = _parse(data, name)
    if not external_ok and _has_external_data(proto):
        raise ModelError(f"{name}: the model refers to external data files, which need a "
                         "folder: load it from its path instead")
    return proto


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{name}: the file is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        if "depth" in str(exc).lower():  # upb: "Exceeded upb_DecodeOptions_MaxDepth"
            raise ModelError(f"{name}: the model nests messages deeper than protobuf's limit "
                             f"of {PROTOBUF_RECURSION_LIMIT} levels (If/Loop/Scan bodies "
                             "within bodies, about 33 deep or more), so it cannot be "
                             "parsed") from exc
        raise ModelError(f"{name}: not a valid ONNX protobuf (truncated or corrupt): "
                         f"{exc}") from exc
    if not proto.HasField("graph"):
        raise ModelError(f"{name}: the protobuf has no graph (truncated, or not an ONNX model)")
    return proto


def _all_tensors(proto: onnx.ModelProto):
    """Every TensorProto in the model, subgraphs included."""
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def _has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto))


def load_external_data(proto: onnx.ModelProto, folder: Path, name: str,
                       aside: WeightsAside | None = None,
                       digest: SourceDigest | None = None) -> None:
    """Resolve every external tensor of ``proto``, confined to ``folder``: with ``aside``,
    a main-graph initializer of more than ``ASIDE_TENSOR_BYTES`` is copied to its file (by
    its thread, as the parse's large values are; the file stays external data there), and
    those the parse set aside (``aside.names``) are left as they are; every other tensor's
    bytes are read into the proto. ``digest`` notes each file read (an engine may open the
    model's files itself while they stay as read).

    Refused: absolute locations, locations that resolve outside the folder (``..``, symlinks),
    files that are not regular, files with other hard links (they may alias a file outside),
    and offset/length past the end of the file.
    """
    names = aside.names if aside is not None else set()
    # by identity, the messages held so no id is reused while the loop runs
    initializers = {id(t): t for t in proto.graph.initializer}
    for tensor, info in external_tensors(proto):
        if id(tensor) in initializers and tensor.name in names:
            continue  # set aside by the parse
        location = info.get("location", "")
        where = f"{name}: tensor '{tensor.name}' external data '{location}'"
        if not location:
            raise ModelError(f"{where}: no location given")
        if "\x00" in location:
            raise ModelError(f"{where}: the location contains a NUL byte")
        try:
            with _open_confined(folder, location, info, where) as (handle, file, offset,
                                                                   nbytes):
                if digest is not None:
                    digest.note_companion(file, os.fstat(handle.fileno()))
                if aside is not None and id(tensor) in initializers and \
                        nbytes > ASIDE_TENSOR_BYTES and tensor.name not in names:
                    # copied when kiln's file is first needed: an engine that opens
                    # the user's files itself never needs it
                    placed = aside.copy_from(handle.fileno(), offset, nbytes, later=True)
                    point_into(tensor, WeightsAside.FILE, placed, nbytes)
                    names.add(tensor.name)
                    continue
                handle.seek(offset)
                tensor.raw_data = handle.read(nbytes)
        except OSError as exc:  # e.g. a name too long for the file system
            raise ModelError(f"{where}: cannot read: {exc.strerror or exc}") from exc
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


@contextlib.contextmanager
def _open_confined(folder: Path, location: str, info: dict[str, str], where: str
                   ) -> Iterator[tuple[BinaryIO, Path, int, int]]:
    """``folder/location`` open, its resolved path, and the offset and byte count ``info``
    declares there, refusing every escape."""
    if os.path.isabs(location) or location.startswith(("/", "\\")):
        raise ModelError(f"{where}: absolute paths are refused; external data must live "
                         "inside the model's folder")
    candidate = folder / location
    if candidate.is_symlink() or any(p.is_symlink() for p in candidate.parents
                                      if str(p).startswith(str(folder))):
        raise ModelError(f"{where}: symbolic links are refused")
    resolved = candidate.resolve()
    if resolved != folder and folder not in resolved.parents:
        raise ModelError(f"{where}: resolves outside the model's folder {folder}")
    try:
        stat = resolved.lstat()
    except OSError as exc:
        raise ModelError(f"{where}: cannot read: {exc.strerror}") from exc
    if not stat_module.S_ISREG(stat.st_mode):
        raise ModelError(f"{where}: not a regular file")
    if stat.st_nlink > 1:
        raise ModelError(f"{where}: the file has {stat.st_nlink} hard links; kiln refuses "
                         "hard-linked external data since a link may point outside the "
                         "model's folder (copy the file instead)")
    offset = _non_negative_int(info.get("offset", "0"), where, "offset")
    length = info.get("length")
    size = stat.st_size
    if offset > size:
        raise ModelError(f"{where}: offset {offset} is past the end of the file "
                         f"({size} bytes)")
    nbytes = size - offset if length is None else _non_negative_int(length, where, "length")
    if offset + nbytes > size:
        raise ModelError(f"{where}: offset {offset} + length {nbytes} is past the end of "
                         f"the file ({size} bytes)")
    # Open without following links and without blocking (a FIFO swapped in after the
    # checks), then make sure it is still the very file that was checked.
    fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if (opened.st_ino, opened.st_dev) != (stat.st_ino, stat.st_dev) or \
                opened.st_nlink != 1 or not stat_module.S_ISREG(opened.st_mode):
            raise ModelError(f"{where}: the file changed while kiln was checking it")
        yield handle, resolved, offset, nbytes


def _non_negative_int(text: str, where: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise ModelError(f"{where}: {what} '{text}' is not an integer") from exc
    if value < 0:
        raise ModelError(f"{where}: {what} {value} is negative")
    return value


def _drop_initializer_inputs(proto: onnx.ModelProto) -> bool:
    """Old IR lists initializers as graph inputs too; make them plain constants. Returns
    whether there were any."""
    initializer_names = {t.name for t in proto.graph.initializer}
    if not initializer_names:
        return False
    keep = [v for v in proto.graph.input if v.name not in initializer_names]
    if len(keep) == len(proto.graph.input):
        return False
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    # IR < 4 requires every initializer to be an input; moving on needs IR 4.
    if proto.ir_version < 4:
        proto.ir_version = 4
    return True


def _check(proto: onnx.ModelProto, name: str, light: onnx.ModelProto | None = None) -> None:
    """onnx's checker on a copy without the large weights' values (it would otherwise hold
    two more copies of them): they point to an empty file it only checks exists; their byte
    counts were checked against their dims by ``validate_proto``, which every import runs
    first. ``light``: that copy, made already."""
    if light is None:
        light = _weightless(proto, _LEFT_OUT)
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-check-") as folder:
            (Path(folder) / _LEFT_OUT).touch()
            path = Path(folder) / "model.onnx"
            path.write_bytes(_checkable(light).SerializeToString())
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise ModelError(f"{name}: the ONNX checker rejected the model: {first}") from exc
    except ValueError as exc:  # e.g. > 2 GiB protos
        raise ModelError(f"{name}: cannot check the model: {exc}") from exc
    except Exception as exc:  # the C++ checker's other failures (e.g. non-UTF-8 messages)
        raise ModelError(f"{name}: the ONNX checker failed on the model: "
                         f"{type(exc).__name__}: {exc}") from exc


def _checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto``, or a copy the checker reads as onnxruntime does: the checker wants a shape on
    every graph output, but an output of unknown rank (no shape at all) is a valid model that
    onnxruntime runs. The copy gives such outputs an empty shape only for the checker, which
    does not compare declared shapes with inferred ones; the model itself keeps none."""
    shapeless = [i for i, v in enumerate(proto.graph.output)
                 if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]
    if not shapeless:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for index in shapeless:
        copy.graph.output[index].type.tensor_type.shape.SetInParent()
    return copy


def _infer_shapes(proto: onnx.ModelProto, name: str,
                  light: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """onnx's shape inference, then types through contrib ops it does not know
    (``kiln.compiler.contrib``). ``light``: ``proto`` without its large values, as
    ``_weightless`` makes it (with or without their external file: inference reads no
    weight's values; the 45 models of the cache inferred the same either way)."""
    if light is None:
        light = _weightless(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True,
                                                     strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{name}: shape inference failed: {first}") from exc
    except Exception as exc:  # found by fuzz/fuzz_frontend.py: UnicodeDecodeError and others
        raise ModelError(f"{name}: shape inference failed: {type(exc).__name__}: "
                         f"{exc}") from exc
    # What inference added, back into the model that holds the weights (no copy of them).
    for field in ("node", "value_info", "output"):
        proto.graph.ClearField(field)
        getattr(proto.graph, field).extend(getattr(inferred.graph, field))
    complete_types(proto)
    return proto


#: Initializers larger than this reach shape inference as dims and type alone: no shape
#: depends on a weight's values, and onnx's inference copies the model it is given twice.
_INFERENCE_VALUE_BYTES = 4096


#: The empty file the checker's copy points large initializers to.
_LEFT_OUT = "values-left-out.bin"


def _weightless(proto: onnx.ModelProto, location: str | None = None) -> onnx.ModelProto:
    """``proto`` without the values of its large raw-data initializers and of those set aside
    while parsing (dims and type kept);
    with ``location`` they are external data in that file, as the checker wants a value."""
    light = onnx.ModelProto()
    _copy_fields(proto, light, skip="graph")
    _copy_fields(proto.graph, light.graph, skip="initializer")
    for tensor in proto.graph.initializer:
        if not _large_raw(tensor) and tensor.data_location != onnx.TensorProto.EXTERNAL:
            light.graph.initializer.add().CopyFrom(tensor)
            continue
        kept = light.graph.initializer.add(name=tensor.name, dims=tensor.dims,
                                           data_type=tensor.data_type)
        if location is not None:
            kept.data_location = onnx.TensorProto.EXTERNAL
            kept.external_data.add(key="location", value=location)
    return light


def _large_raw(tensor: onnx.TensorProto) -> bool:
    """Raw data above _INFERENCE_VALUE_BYTES by its dims (``ByteSize`` would serialize the
    tensor with upb protobuf: seconds for a model's weights; a raw_data that disagrees with
    its dims is refused by the checker or ``validate_proto``)."""
    if not tensor.HasField("raw_data") or tensor.data_type == onnx.TensorProto.STRING:
        return False
    return raw_bytes(tensor.data_type, math.prod(tensor.dims)) > _INFERENCE_VALUE_BYTES


def _copy_fields(source: Message, dest: Message, skip: str) -> None:
    """Every set field of protobuf message ``source`` but ``skip``, into ``dest``."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dest, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dest, field.name).CopyFrom(value)
        else:
            setattr(dest, field.name, value)

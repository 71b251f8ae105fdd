"""Model validation: what kiln checks in a parsed ONNX model before any backend sees it.

The backends kiln wraps trust their input more than kiln can: OpenVINO accepts opset 9999,
duplicate output names and negative dims, reads uninitialized memory for a missing input, and
its compile time grows geometrically with nested If. So the frontend runs ``validate_proto``
on every model first, and refuses with a message naming the problem and where it is:

- versions: the IR version, and the opset of every domain a node uses, must lie within what
  kiln supports and what the chosen backend supports (``Limits``); the error says which and
  the supported range (``UnsupportedError``; a malformed version such as 0 or a missing
  default opset is a ``ModelError``). A domain the model imports but no node uses (exporters
  declare ``Paddle``, ``com.microsoft.nchwc``, ``ai.onnx.training`` ... out of habit) asks
  nothing of anyone and is not checked against the limits;
- structure (``ModelError``): empty graphs, undefined inputs (a missing initializer looks like
  this), values defined twice, duplicate graph input/output/initializer names, cycles, nodes
  out of topological order, nodes of domains the model does not import, and the same checks
  inside If/Loop/Scan bodies (whose input/output counts must match the node);
- declared dims (``ModelError``): negative, or larger than ``Limits.max_dim``, or whose product
  overflows int64; initializers whose data does not hold as many elements as their dims say.
  The one exception is ``-1`` on a graph input, output or value_info: Paddle2ONNX and older
  exporters write it for a dynamic dim, onnxruntime reads it so, and the frontend turns it
  into an unnamed dim (``kiln.compiler.frontend.normalize``). Other negative dims are refused;
- depth (``ModelError``): subgraphs nested deeper than ``Limits.max_subgraph_depth``. kiln's
  own limit is the deepest nesting protobuf can parse at all (see ``MAX_SUBGRAPH_DEPTH``), so
  only backends with a real cost of depth (OpenVINO) set a lower one. The walk recurses only
  into subgraphs, after checking the depth, so no model can exhaust Python's stack.

The checks look at names and declared types only; nothing here reads tensor contents beyond
their length, so validation costs little even for large models.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from kiln.compiler.capabilities import KILN_DOMAIN
from kiln.compiler.onnx_input_types import input_constraints
from kiln.errors import ModelError, UnsupportedError

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
#: protobuf's default recursion limit: messages nested deeper do not parse.
PROTOBUF_RECURSION_LIMIT = 100
#: The deepest If/Loop/Scan nesting a parsable model can hold: ModelProto and the top
#: GraphProto take two levels, and each body three more (NodeProto, AttributeProto,
#: GraphProto), so 30 nested Ifs take ~92 levels and 33 cannot parse.
MAX_SUBGRAPH_DEPTH = (PROTOBUF_RECURSION_LIMIT - 2) // 3
#: The dim value exporters write for "dynamic" (Paddle2ONNX, older PyTorch/TF converters).
DYNAMIC_DIM = -1


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one consumer of models (kiln itself, or one backend) supports.

    who:                 named in error messages ("kiln", "onnxruntime").
    ir_versions:         inclusive (min, max) of ModelProto.ir_version; None: no limit of its own
                         (backends fed ONNX get the IR version lowered by onnx_export).
    opsets:              domain -> inclusive (min, max) opset version; an imported domain missing
                         here is unsupported by this consumer. "" is the default ONNX domain.
    max_dim:             largest single declared dim.
    max_subgraph_depth:  deepest nesting of If/Loop/Scan bodies.
    max_control_flow:    most If/Loop/Scan nodes in the whole model (None = no limit).
    """

    who: str
    ir_versions: tuple[int, int] | None
    opsets: Mapping[str, tuple[int, int]]
    max_dim: int = 2**40
    max_subgraph_depth: int = MAX_SUBGRAPH_DEPTH
    max_control_flow: int | None = None


@functools.cache
def kiln_limits() -> Limits:
    """What kiln itself reads: everything the installed onnx package defines."""
    top = onnx.defs.onnx_opset_version()
    opsets: dict[str, tuple[int, int]] = {"": (1, top), "ai.onnx": (1, top)}
    opsets.update({domain: (1, version) for domain, version in _known_domains()})
    # onnxruntime's contrib ops and its NCHWc layout ops (in graphs onnxruntime optimized and
    # saved), which its backend runs
    opsets["com.microsoft"] = (1, 1)
    opsets["com.microsoft.nchwc"] = (1, 1)
    opsets[KILN_DOMAIN] = (1, 1)  # kiln's own fused ops (optimized graphs, artifacts)
    return Limits("kiln", (3, onnx.IR_VERSION), opsets)


def _known_domains() -> list[tuple[str, int]]:
    """(domain, highest opset) for every non-default domain the onnx package registers: its
    own table of opset ranges, the one ``onnx.defs.onnx_opset_version`` reads (walking every
    schema's history for the same answer cost a load 7 ms)."""
    ranges = onnx.defs.C.schema_version_map()
    return sorted((domain, high) for domain, (_, high) in ranges.items()
                  if domain not in ("", "ai.onnx"))


def validate_proto(proto: onnx.ModelProto, name: str,
                   limits: Sequence[Limits] | None = None,
                   external_ok: bool | frozenset[str] = False) -> None:
    """Raise ModelError/UnsupportedError if ``proto`` is not a model kiln may hand over.

    ``limits`` defaults to kiln's own; the frontend passes kiln's plus the chosen backend's.
    ``external_ok``: tensors may stay external data (a .kiln artifact's weights member, whose
    bounds and sizes the artifact reader checked); a set of names allows only those tensors
    (the ones kiln's own parse set aside); otherwise they must have been read in.
    """
    limits = list(limits) if limits else [kiln_limits()]
    _check_text(proto, name)
    _check_versions(proto, name, limits)
    imported = {("" if o.domain == "ai.onnx" else o.domain) for o in proto.opset_import}
    walker = _Walker(name, imported, limits)
    walker.external_ok = external_ok
    walker.opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                       default=0)
    walker.graph(proto.graph, outer=frozenset(), depth=0, where="graph")
    for function in proto.functions:
        walker.function(function)


#: Models whose inline tensor values take fewer bytes than this have their text checked by one
#: parse of their serialization (``_text_is_valid``); larger ones by the walk alone.
STRICT_TEXT_CHECK_BYTES = 16 << 20


def _check_text(proto: onnx.ModelProto, name: str) -> None:
    """Every string field must be UTF-8: Python's protobuf hands invalid ones back as bytes,
    which no later code expects (found by fuzz/fuzz_frontend.py). One parse in C shows it for
    most models (``_text_is_valid``); otherwise (or to name the field at fault) an iterative
    walk of every message."""
    if _text_is_valid(proto):
        return
    _find_bad_text(proto, name)


@functools.cache
def _strict_model_class() -> type:
    """onnx's ModelProto declared as proto3, whose strings protobuf (upb) refuses to parse
    unless they are UTF-8 (proto2's, as onnx declares them, are handed back as bytes)."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    declared = onnx.ModelProto.DESCRIPTOR.file.serialized_pb
    try:
        # a singular field given twice takes the last value: onnx's own declaration with its
        # syntax set to proto3, no descriptor_pb2 (importing it cost a first load ~1.5 ms)
        pool.AddSerializedFile(declared + _PROTO3_SYNTAX)
    except Exception:  # defaults or required fields, which proto3 refuses: rewrite them
        pool = descriptor_pool.DescriptorPool()
        pool.Add(_proto3_declaration())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(onnx.ModelProto.DESCRIPTOR.full_name))


#: FileDescriptorProto field 12 (syntax), length-delimited: "proto3".
_PROTO3_SYNTAX = bytes([12 << 3 | 2, 6]) + b"proto3"


def _proto3_declaration() -> Any:
    """onnx's file declaration as proto3: no default values, no required fields."""
    from google.protobuf import descriptor_pb2

    declared = descriptor_pb2.FileDescriptorProto()
    onnx.ModelProto.DESCRIPTOR.file.CopyToProto(declared)
    declared.syntax = "proto3"
    messages = list(declared.message_type)
    while messages:  # proto3 has no default values and no required fields
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            field.ClearField("default_value")
            if field.label == field.LABEL_REQUIRED:
                field.label = field.LABEL_OPTIONAL
    return declared


def _text_is_valid(proto: onnx.ModelProto) -> bool:
    """True when every string field of ``proto`` (subgraphs, functions, ... included) is
    UTF-8, shown by parsing its serialization as the proto3 ``_strict_model_class``: ~1 ms
    where the walk took 5-8 ms (YOLOv8n, MiniLM-L6). False when that parse refused it (for
    that or any other reason) or the model holds too many bytes of inline values to serialize
    for it: the walk then decides."""
    inline = 0
    for tensor in proto.graph.initializer:  # by their dims: reading raw_data copies it
        if tensor.HasField("raw_data"):
            inline += raw_bytes(tensor.data_type, math.prod(tensor.dims))
    if inline > STRICT_TEXT_CHECK_BYTES:
        return False
    try:
        _strict_model_class().FromString(proto.SerializeToString())
    except Exception:  # protobuf's DecodeError ("String field had bad UTF-8"), > 2 GiB, ...
        return False
    return True


def _find_bad_text(proto: onnx.ModelProto, name: str) -> None:
    """``_check_text``'s walk: every string field of every message, naming the first that is
    not UTF-8."""
    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.message import Message

    text, nested = FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE
    stack: list = [proto]
    while stack:
        message = stack.pop()
        for field, value in message.ListFields():
            kind = field.type
            if kind == nested:  # (a failed hasattr on a repeated field costs an exception)
                if isinstance(value, Message):
                    stack.append(value)
                else:
                    stack.extend(value)
            elif kind == text and type(value) is not str:  # most are one valid string
                values = [value] if isinstance(value, bytes) else value
                if any(isinstance(v, bytes) for v in values):
                    raise ModelError(f"{name}: a {message.DESCRIPTOR.name}.{field.name} is not "
                                     "valid UTF-8 text; the model is corrupt")


def _restampable(proto: onnx.ModelProto, version: int) -> bool:
    from kiln.compiler.opset_stamp import restamp_opset

    probe = onnx.ModelProto()
    probe.opset_import.extend(proto.opset_import)
    probe.graph.node.extend(proto.graph.node)
    return restamp_opset(probe, version)


def _check_versions(proto: onnx.ModelProto, name: str, limits: Sequence[Limits]) -> None:
    if proto.ir_version <= 0:
        raise ModelError(f"{name}: the model has no IR version (ir_version={proto.ir_version}); "
                         "it is not a valid ONNX model")
    for limit in limits:
        if limit.ir_versions is None:
            continue
        low, high = limit.ir_versions
        if not low <= proto.ir_version <= high:
            raise UnsupportedError(f"{name}: IR version {proto.ir_version} is not supported by "
                                   f"{limit.who}, which reads IR versions {low} to {high}")
    seen: dict[str, int] = {}
    used: set[str] | None = None  # walked for only when a non-default domain is imported
    for opset in proto.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        shown = opset.domain or "ai.onnx"
        if domain in seen:
            if seen[domain] == opset.version:
                continue  # a repeated, identical import (skl2onnx writes one): dropped later
            raise ModelError(f"{name}: opset of domain '{shown}' is imported twice, as "
                             f"{seen[domain]} and {opset.version}; keep one import per domain")
        seen[domain] = opset.version
        if opset.version <= 0:
            raise ModelError(f"{name}: domain '{shown}' is imported with opset {opset.version}; "
                             "opset versions start at 1")
        if domain != "":
            if used is None:
                used = used_domains(proto)
            if domain not in used:
                continue  # declared, never used: no consumer is asked to read it
        for limit in limits:
            if domain not in limit.opsets:
                known = ", ".join(f"{d or 'ai.onnx'}" for d in limit.opsets if d != "ai.onnx")
                raise UnsupportedError(f"{name}: domain '{shown}' is not supported by "
                                       f"{limit.who} (it reads: {known})")
            low, high = limit.opsets[domain]
            if (limit.who != "kiln" and domain == "" and opset.version > high
                    and _restampable(proto, high)):
                continue  # the backend lowers the stamp; no node changes meaning
            if not low <= opset.version <= high:
                raise UnsupportedError(f"{name}: opset {opset.version} of domain '{shown}' is "
                                       f"not supported by {limit.who}, which reads opsets "
                                       f"{low} to {high}")
    if not seen and proto.ir_version >= 3:
        raise ModelError(f"{name}: the model imports no opset at all (opset_import is empty)")


def used_domains(proto: onnx.ModelProto, calls: bool = False) -> set[str]:
    """Domains some node uses ("" for ai.onnx), in the graph, its subgraphs and the model's
    functions. A call of a function the model defines asks no consumer for its domain, so
    it counts only with ``calls`` (the import must stay declared). Iterative."""
    local = set() if calls else {(f.domain, f.name) for f in proto.functions}
    used: set[str] = set()
    stack: list[onnx.GraphProto | onnx.FunctionProto] = [proto.graph, *proto.functions]
    while stack:
        for node in stack.pop().node:
            if (node.domain, node.op_type) not in local:
                used.add("" if node.domain == "ai.onnx" else node.domain)
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    stack.append(attribute.g)
                stack.extend(attribute.graphs)
    return used


#: Every ONNX tensor data type but UNDEFINED.
ONNX_DTYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
# Element counts of packed sub-byte types: two (or four) elements a byte.
_PACKED = {getattr(onnx.TensorProto, n): d for n, d in
           (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4), ("UINT2", 4))
           if hasattr(onnx.TensorProto, n)}
# Which repeated field holds a tensor's data when it has no raw_data, and values per element.
_FIELDS = {
    onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.DOUBLE: ("double_data", 1), onnx.TensorProto.COMPLEX128: ("double_data", 2),
    onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1), onnx.TensorProto.STRING: ("string_data", 1),
}
_CONTROL_FLOW = ("If", "Loop", "Scan")
#: Each ONNX data type's name as type constraints spell it ("float" in "tensor(float)").
_TYPE_NAMES = {t: onnx.TensorProto.DataType.Name(t).lower() for t in ONNX_DTYPES}


def _at(where: str, value: str | None) -> str:
    return where if value is None else f"{where} value '{value}'"


def _label(index: int, node: onnx.NodeProto) -> str:
    """How errors name node ``index`` of a graph (made only for an error: a walk of every
    node formatting each one's label cost YOLOv8n's import ~1 ms)."""
    return f"node {index} ({node.op_type}{' ' + repr(node.name) if node.name else ''})"


class _Walker:
    """One pass over a model's graphs; recursion only into subgraphs, depth-checked first."""

    def __init__(self, name: str, imported: set[str], limits: Sequence[Limits]):
        self.name = name
        self.imported = imported
        self.limits = limits
        self.max_depth = min(limit.max_subgraph_depth for limit in limits)
        self.max_dim = min(limit.max_dim for limit in limits)
        self.control_flow = 0
        self.opset = 0  # the model's default-domain opset
        #: external tensors accepted: all (True) or those named (validate_proto's argument)
        self.external_ok: bool | frozenset[str] = False

    def fail(self, where: str, message: str) -> ModelError:
        return ModelError(f"{self.name}: {where}: {message}")

    # -- types and dims -------------------------------------------------------------------
    def dims(self, dims: Iterable[int], where: str, dynamic_ok: bool = False,
             value: str | None = None) -> int:
        """Check declared fixed dims; returns their product (of the fixed ones).

        ``dynamic_ok``: a value's type (not a tensor's data), where -1 means a dynamic dim.
        ``value``: the name of the value they describe, for errors.
        """
        product = nonzero = 1
        for axis, dim in enumerate(dims):
            if dim == DYNAMIC_DIM and dynamic_ok:
                continue
            if dim < 0:
                raise self.fail(_at(where, value), f"dim {dim} at axis {axis} is negative" + (
                    f" (only {DYNAMIC_DIM} means a dynamic dim)" if dynamic_ok else ""))
            if dim > self.max_dim:
                limit = next(limit for limit in self.limits if dim > limit.max_dim)
                raise self.fail(_at(where, value), f"dim {dim} at axis {axis} is absurd: "
                                f"{limit.who} allows at most {limit.max_dim}")
            product *= dim
            nonzero *= max(dim, 1)  # numpy refuses these even when a 0 dim makes them empty
            if nonzero * 16 > INT64_MAX:  # 16: the widest element (complex128), in bytes
                raise self.fail(_at(where, value), f"the element count of dims {list(dims)} "
                                "overflows int64" + (" (ignoring its 0 dims)" if product == 0
                                                     else ""))
        return product

    def value_info(self, info: onnx.ValueInfoProto, where: str, typed: bool = True) -> None:
        kind = info.type.WhichOneof("value")
        if kind is None and not typed:  # value_info may name a value without typing it
            return
        if kind == "tensor_type":
            tensor = info.type.tensor_type
            if tensor.elem_type not in ONNX_DTYPES:
                raise self.fail(where, f"value '{info.name}' has element type "
                                f"{tensor.elem_type}, which is no ONNX data type")
            if tensor.HasField("shape"):
                fixed = [d.dim_value for d in tensor.shape.dim if d.HasField("dim_value")]
                self.dims(fixed, where, dynamic_ok=True, value=info.name)
        elif kind in ("opaque_type", None):
            raise self.fail(where, f"value '{info.name}' has "
                            f"{'an opaque' if kind else 'no'} type; kiln runs tensors, "
                            "sequences, maps and optionals only")
        elif kind == "sequence_type" and info.type.sequence_type.elem_type.HasField(
                "tensor_type"):
            elem = info.type.sequence_type.elem_type.tensor_type
            if elem.elem_type not in ONNX_DTYPES:
                raise self.fail(where, f"sequence '{info.name}' has element type "
                                f"{elem.elem_type}, which is no ONNX data type")

    def external_length(self, tensor: onnx.TensorProto, count: int, where: str) -> None:
        """An external tensor's declared length, when it gives one, is what its dims need."""
        length = next((e.value for e in tensor.external_data if e.key == "length"), None)
        if length is None or tensor.data_type == onnx.TensorProto.STRING:
            return
        want = raw_bytes(tensor.data_type, count)
        if length != str(want):
            raise self.fail(where, f"declares {length} bytes of external data but dims "
                            f"{list(tensor.dims)} need {want}")

    def tensor(self, tensor: onnx.TensorProto, where: str) -> None:
        where = f"{where} tensor '{tensor.name}'"
        if tensor.data_type not in ONNX_DTYPES:
            raise self.fail(where, f"element type {tensor.data_type} is no ONNX data type")
        count = self.dims(tensor.dims, where)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            if self.external_ok is True or (self.external_ok and
                                            tensor.name in self.external_ok):
                self.external_length(tensor, count, where)
                return
            raise self.fail(where, "external data was not resolved (load the model from its "
                            "path)")
        if tensor.HasField("raw_data"):
            if tensor.data_type == onnx.TensorProto.STRING:
                raise self.fail(where, "string tensors cannot use raw_data")
            want = raw_bytes(tensor.data_type, count)
            if len(tensor.raw_data) != want:
                raise self.fail(where, f"holds {len(tensor.raw_data)} bytes of data but dims "
                                f"{list(tensor.dims)} need {want} (truncated or corrupt)")
            return
        field, per = _FIELDS.get(tensor.data_type, ("int32_data", 1))  # type: ignore[call-overload]
        if tensor.data_type in _PACKED:
            have, want = len(tensor.int32_data), -(-count // _PACKED[tensor.data_type])
        else:
            have, want = len(getattr(tensor, field)), count * per
        if have != want:
            raise self.fail(where, f"holds {have} values in {field} but dims "
                            f"{list(tensor.dims)} need {want} (truncated or corrupt)")

    # -- graphs ---------------------------------------------------------------------------
    def function(self, function: onnx.FunctionProto) -> None:
        where = f"function '{function.domain}::{function.name}'"
        defined = set(function.input)
        if len(defined) != len(function.input):
            raise self.fail(where, "an input name is listed twice")
        for index, node in enumerate(function.node):
            self.node_domain(node, f"{where} node {index}", function_scope=True)
            for input_name in node.input:
                if input_name and input_name not in defined:
                    raise self.fail(where, f"node {index} ({node.op_type}) reads '{input_name}', "
                                    "which nothing defines before it")
            defined.update(o for o in node.output if o)
        missing = [o for o in function.output if o not in defined]
        if missing:
            raise self.fail(where, f"outputs {missing} are never produced")

    def node_domain(self, node: onnx.NodeProto, where: str, function_scope: bool = False) -> None:
        if not node.op_type:
            raise self.fail(where, "a node has no op_type")
        domain = "" if node.domain == "ai.onnx" else node.domain
        if not function_scope and domain not in self.imported:
            raise self.fail(where, f"{node.op_type} is in domain '{node.domain}', which the "
                            "model does not import (add it to opset_import)")

    def graph(self, graph: onnx.GraphProto, outer: frozenset[str], depth: int,
              where: str) -> None:
        if depth > self.max_depth:
            strictest = min(self.limits, key=lambda limit: limit.max_subgraph_depth)
            raise self.fail(where, f"subgraphs are nested {depth} deep; kiln allows at most "
                            f"{self.max_depth} (If/Loop/Scan bodies within bodies) for "
                            f"{strictest.who}" + ("" if strictest.max_subgraph_depth
                                                  == MAX_SUBGRAPH_DEPTH else
                                                  f" (kiln's own limit: {MAX_SUBGRAPH_DEPTH})"))
        defined: dict[str, str] = {}

        def define(value: str, what: str) -> None:
            if value in defined:
                raise self.fail(where, f"'{value}' is defined twice (as {defined[value]} and as "
                                f"{what}); every value must have one producer")
            defined[value] = what

        types: dict[str, int] = {}  # element types known before inference: inputs, weights
        for info in graph.input:
            if info.type.HasField("tensor_type"):
                types[info.name] = info.type.tensor_type.elem_type
            if not info.name:
                raise self.fail(where, "a graph input has no name")
            self.value_info(info, f"{where} input", typed=depth == 0)
            if info.name in defined:
                raise self.fail(where, f"graph input '{info.name}' is listed twice")
            defined[info.name] = "a graph input"
        initializer_names: set[str] = set()
        for tensor in list(graph.initializer) + [s.values for s in graph.sparse_initializer]:
            if not tensor.name:
                raise self.fail(where, "an initializer has no name")
            if tensor.name in initializer_names:
                raise self.fail(where, f"initializer '{tensor.name}' is listed twice")
            initializer_names.add(tensor.name)
            self.tensor(tensor, f"{where} initializer")
            defined.setdefault(tensor.name, "an initializer")
            types[tensor.name] = tensor.data_type
        for info in graph.value_info:
            self.value_info(info, f"{where} value_info", typed=False)
        default_domain = self.opset > 0
        for index, node in enumerate(graph.node):
            domain = node.domain
            if not node.op_type or ("" if domain == "ai.onnx" else domain) not in self.imported:
                self.node_domain(node, f"{where} {_label(index, node)}")
            for input_name in node.input:
                if not input_name or input_name in defined or input_name in outer:
                    continue
                producers = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
                if input_name in producers:
                    self.order_problem(graph, index, input_name, producers, where)
                raise self.fail(where, f"{_label(index, node)} reads '{input_name}', which is "
                                "not a graph input, an initializer, nor the output of any node "
                                "(a missing initializer or input?)")
            if default_domain and domain in ("", "ai.onnx"):
                self.input_types(node, types, where, index)
            if node.attribute:
                self.subgraphs(node, outer, defined, depth, f"{where} {_label(index, node)}")
            for output_name in node.output:
                if output_name:
                    if output_name in defined:
                        define(output_name, f"output of {_label(index, node)}")  # raises
                    defined[output_name] = "output"
        if not graph.output:
            raise self.fail(where, "the graph has no outputs (an empty graph computes nothing)")
        seen: set[str] = set()
        for info in graph.output:
            if info.name in seen:
                raise self.fail(where, f"output name '{info.name}' is listed twice")
            seen.add(info.name)
            self.value_info(info, f"{where} output", typed=depth == 0)
            if info.name not in defined and info.name not in outer:
                raise self.fail(where, f"graph output '{info.name}' is never produced")

    def input_types(self, node: onnx.NodeProto, types: Mapping[str, int], where: str,
                    node_index: int) -> None:
        """Inputs whose element type is known up front must fit the op's type constraints
        (``node``, of the default domain, is node ``node_index`` of the graph at ``where``)."""
        known = [(i, types[name]) for i, name in enumerate(node.input) if name in types]
        if not known:
            return
        formals = input_constraints(node.op_type, self.opset)
        if not formals:
            return  # an unknown op (the checker names it) or one without inputs
        for index, elem_type in known:
            formal_name, permitted, variadic = formals[min(index, len(formals) - 1)]
            if index >= len(formals) and not variadic:
                continue
            name = _TYPE_NAMES.get(elem_type) or str(elem_type)
            if permitted and f"tensor({name})" not in permitted:
                shown = ", ".join(sorted(t[7:-1] for t in permitted if t.startswith("tensor(")))
                raise self.fail(f"{where} {_label(node_index, node)}",
                                f"input {index} ('{node.input[index]}', {formal_name}) is "
                                f"{name}, but {node.op_type}-{self.opset} takes "
                                f"{shown or sorted(permitted)}")

    def order_problem(self, graph: onnx.GraphProto, index: int, name: str,
                      producers: Mapping[str, int], where: str) -> None:
        """A node reads a value a later node produces: a cycle, or just out of order."""
        cycle = _find_cycle(graph, producers)
        if cycle:
            path = " -> ".join(f"{graph.node[i].op_type}#{i}" for i in cycle)
            raise self.fail(where, f"the graph has a cycle: {path}")
        node = graph.node[index]
        raise self.fail(where, f"node {index} ({node.op_type}) reads '{name}' before node "
                        f"{producers[name]} produces it: nodes must be in topological order")

    def subgraphs(self, node: onnx.NodeProto, outer: frozenset[str], defined: Iterable[str],
                  depth: int, where: str) -> None:
        """Check ``node``'s attribute tensors and bodies; a body sees ``outer`` and the names
        ``defined`` before the node (a set made only for nodes that have bodies)."""
        bodies = []
        for attribute in node.attribute:
            if attribute.HasField("t"):
                self.tensor(attribute.t, f"{where} attribute '{attribute.name}'")
            if attribute.type == onnx.AttributeProto.GRAPH or attribute.HasField("g"):
                bodies.append((attribute.name, attribute.g))
            bodies.extend((attribute.name, g) for g in attribute.graphs)
        if not bodies:
            return
        self.control_flow += 1
        for limit in self.limits:
            if limit.max_control_flow is not None and self.control_flow > limit.max_control_flow:
                raise self.fail(where, f"the model has more than {limit.max_control_flow} "
                                f"If/Loop/Scan nodes, the most {limit.who} compiles in bounded "
                                "time")
        self.arity(node, dict(bodies), where)
        visible = outer | frozenset(defined)
        for attr_name, body in bodies:
            self.graph(body, visible, depth + 1, f"{where} {attr_name}")

    def arity(self, node: onnx.NodeProto, bodies: Mapping[str, onnx.GraphProto],
              where: str) -> None:
        """Body input/output counts must fit the node that runs them."""
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain != "" or node.op_type not in _CONTROL_FLOW:
            return
        outputs = len(node.output)
        if node.op_type == "If":
            for branch in ("then_branch", "else_branch"):
                if branch not in bodies:
                    raise self.fail(where, f"If has no {branch}")
                got = len(bodies[branch].output)
                if got != outputs:
                    raise self.fail(where, f"{branch} has {got} outputs but the If node has "
                                    f"{outputs}")
        elif node.op_type == "Loop":
            body = bodies.get("body")
            if body is None:
                raise self.fail(where, "Loop has no body")
            carried = len(node.input) - 2
            if carried < 0:
                raise self.fail(where, "Loop needs inputs M and cond (either may be '')")
            if len(body.input) != carried + 2:
                raise self.fail(where, f"Loop body has {len(body.input)} inputs, expected "
                                f"{carried + 2} (iteration, cond and {carried} carried values)")
            if len(body.output) < carried + 1 or outputs < carried:
                raise self.fail(where, f"Loop body has {len(body.output)} outputs and the node "
                                f"{outputs}; expected cond + {carried} carried values first")
            if len(body.output) - 1 != outputs:
                raise self.fail(where, f"Loop body has {len(body.output)} outputs, expected "
                                f"{outputs + 1} (cond and one per Loop output)")
        elif node.op_type == "Scan":
            body = bodies.get("body")
            if body is None:
                raise self.fail(where, "Scan has no body")
            # Scan-8 has a leading sequence_lens input the body does not see.
            extra = 1 if self.opset == 8 else 0
            if len(body.input) != len(node.input) - extra:
                raise self.fail(where, f"Scan body has {len(body.input)} inputs but the node "
                                f"has {len(node.input) - extra}")
            if len(body.output) != outputs:
                raise self.fail(where, f"Scan body has {len(body.output)} outputs but the node "
                                f"has {outputs}")


def raw_bytes(data_type: int, count: int) -> int:
    """Bytes of raw_data that ``count`` elements of ONNX ``data_type`` take: packed sub-byte
    types two (or four) elements a byte, a type numpy has no dtype for one byte an element."""
    per = _PACKED.get(data_type)
    return -(-count // per) if per else count * _itemsize(data_type)


def _itemsize(data_type: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:  # types numpy has no dtype for: fall back to onnx's storage size
        return 1


def _find_cycle(graph: onnx.GraphProto, producers: Mapping[str, int]) -> list[int]:
    """Node indices along one cycle (first repeated), or [] if the graph is acyclic.

    Iterative DFS (no recursion), following each node's inputs to their producers.
    """
    state = [0] * len(graph.node)  # 0 new, 1 on stack, 2 done
    for start in range(len(graph.node)):
        if state[start]:
            continue
        stack: list[tuple[int, Iterable[str]]] = [(start, iter(graph.node[start].input))]
        path = [start]
        state[start] = 1
        while stack:
            index, inputs = stack[-1]
            advanced = False
            for value in inputs:
                nxt = producers.get(value)
                if nxt is None:
                    continue
                if state[nxt] == 1:
                    return path[path.index(nxt):] + [nxt]
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(graph.node[nxt].input)))
                    path.append(nxt)
                    advanced = True
                    break
            if not advanced:
                state[index] = 2
                stack.pop()
                path.pop()
    return []

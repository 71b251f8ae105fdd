"""An ONNX ModelProto seen the way the resource guards see kiln's IR, without building the IR.

A warm load of a .kiln artifact on an engine fed ONNX (onnxruntime, OpenVINO) hands the stored
proto to the engine as it is; building kiln's IR of it only for ``guards.check_model`` cost
YOLOv8n 15-20 ms of a ~130 ms load. ``proto_model`` gives the estimator in
``kiln.runtime.guards`` the few members it reads (``Value.shape/dtype/const_value/producer``,
``Node.op_type/inputs/outputs/attributes/graph``, ``Graph.inputs/outputs/initializers``),
read from the proto on demand, with the IR's meaning:

- a value's type and shape come from the last declaration ``onnx_ir.from_proto`` applies:
  graph input, else initializer (then its value_info), else value_info; a graph output's
  declaration overrides them all; sequence and optional types read through to their element;
- a dim is an int when it has ``dim_value``, otherwise unknown (``None``);
- names resolve in the innermost graph that defines them, then outwards, and one name is one
  object within its graph (the estimator keys constants by value and compares them by
  identity), as the IR's scoped values do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import onnx
import onnx_ir as ir

_UNWRAPPED = ("sequence_type", "optional_type")
_UNREAD = object()  # a value's shape or dtype before it was first read
#: ONNX element type code -> DataType, looked up instead of calling the enum per value
_DTYPES = {int(t): t for t in ir.DataType}


def proto_model(proto: onnx.ModelProto, weights_dir: str = "") -> ProtoModel:
    """``proto`` for ``guards.check_model``; external tensors are read from ``weights_dir``
    (where their ``location`` lies) when the estimator needs their values."""
    return ProtoModel(ProtoGraph(proto.graph, None, weights_dir))


class ProtoModel:
    __slots__ = ("graph",)

    def __init__(self, graph: ProtoGraph):
        self.graph = graph


class ProtoConstant:
    """A TensorProto as a constant value: its size up front, its values when asked."""

    __slots__ = ("_proto", "_weights_dir", "size")

    def __init__(self, proto: onnx.TensorProto, weights_dir: str):
        self._proto = proto
        self._weights_dir = weights_dir
        self.size = math.prod(proto.dims)

    @property
    def dtype(self) -> ir.DataType:
        return ir.DataType(self._proto.data_type)

    @property
    def nbytes(self) -> int:
        if self._proto.data_type == onnx.TensorProto.STRING:
            return sum(len(s) for s in self._proto.string_data)
        return math.ceil(self.dtype.itemsize * self.size)

    def numpy(self) -> Any:
        return ir.serde.deserialize_tensor(self._proto, self._weights_dir).numpy()


class ProtoValue:
    __slots__ = ("name", "_graph", "_declared", "_const", "_shape", "_dtype")

    def __init__(self, name: str, graph: ProtoGraph, declared: Any, const: Any):
        self.name = name
        self._graph = graph
        self._declared = declared  # a TypeProto, a TensorProto (initializer), or None
        self._const = const  # an initializer's TensorProto (then ProtoConstant), or None
        self._shape: Any = _UNREAD
        self._dtype: Any = _UNREAD

    def _tensor_type(self) -> Any:
        declared = self._declared
        if declared is None or isinstance(declared, onnx.TensorProto):
            return declared
        for _ in range(8):  # sequence(optional(tensor)) ...; depth bounded by the validator
            kind = declared.WhichOneof("value")
            if kind in ("tensor_type", "sparse_tensor_type"):
                return getattr(declared, kind)
            if kind not in _UNWRAPPED or not getattr(declared, kind).HasField("elem_type"):
                return None
            declared = getattr(declared, kind).elem_type
        return None

    @property
    def shape(self) -> tuple[int | None, ...] | None:
        if self._shape is _UNREAD:
            self._shape = self._read_shape()
        return self._shape

    @property
    def dtype(self) -> ir.DataType | None:
        if self._dtype is _UNREAD:
            self._dtype = self._read_dtype()
        return self._dtype

    def _read_shape(self) -> tuple[int | None, ...] | None:
        tensor = self._tensor_type()
        if isinstance(tensor, onnx.TensorProto):
            return tuple(tensor.dims)
        if tensor is None or not tensor.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)

    def _read_dtype(self) -> ir.DataType | None:
        tensor = self._tensor_type()
        if isinstance(tensor, onnx.TensorProto):
            code = tensor.data_type
        elif tensor is None or not tensor.HasField("elem_type"):
            return None
        else:
            code = tensor.elem_type
        return _DTYPES.get(code)

    @property
    def const_value(self) -> ProtoConstant | None:
        if self._const is not None and not isinstance(self._const, ProtoConstant):
            self._const = ProtoConstant(self._const, self._graph.weights_dir)
        return self._const

    def producer(self) -> ProtoNode | None:
        return self._graph.producer_of(self.name)


class ProtoAttribute:
    __slots__ = ("_proto", "_graph", "type")

    def __init__(self, proto: onnx.AttributeProto, graph: ProtoGraph):
        self._proto = proto
        self._graph = graph
        self.type = proto.type  # an int; ir.AttributeType is an IntEnum and compares equal

    @property
    def value(self) -> Any:
        proto, graph = self._proto, self._graph
        if self.type == ir.AttributeType.GRAPH:
            return graph.body(proto.g)
        if self.type == ir.AttributeType.GRAPHS:
            return [graph.body(g) for g in proto.graphs]
        if self.type == ir.AttributeType.TENSOR:
            return ProtoConstant(proto.t, graph.weights_dir)
        return onnx.helper.get_attribute_value(proto)


class ProtoNode:
    __slots__ = ("_proto", "graph", "op_type", "domain", "name", "inputs", "outputs",
                 "_attributes")

    def __init__(self, proto: onnx.NodeProto, graph: ProtoGraph):
        self._proto = proto
        self.graph = graph
        self.op_type = proto.op_type
        self.domain = proto.domain
        self.name = proto.name or None
        self.inputs = tuple(graph.value(n) if n else None for n in proto.input)
        self.outputs = tuple(graph.value(n) for n in proto.output if n)
        self._attributes: dict[str, ProtoAttribute] | None = None

    @property
    def attributes(self) -> dict[str, ProtoAttribute]:
        if self._attributes is None:
            self._attributes = {a.name: ProtoAttribute(a, self.graph)
                                for a in self._proto.attribute}
        return self._attributes


class ProtoGraph:
    """One GraphProto; ``outer`` is the graph whose node holds it as a body."""

    def __init__(self, proto: onnx.GraphProto, outer: ProtoGraph | None, weights_dir: str):
        self._proto = proto
        self._outer = outer
        self.weights_dir = weights_dir
        declared: dict[str, Any] = {i.name: i.type for i in proto.value_info}
        consts: dict[str, onnx.TensorProto] = {}
        for tensor in proto.initializer:
            consts[tensor.name] = tensor
            declared.setdefault(tensor.name, tensor)
        for info in proto.input:
            declared[info.name] = info.type
        produced: dict[str, int] = {}
        for index, node in enumerate(proto.node):
            for name in node.output:
                if name:
                    produced[name] = index
        for info in proto.output:
            declared[info.name] = info.type
        # a name this graph defines: an input, an initializer or a node's output
        self._defined = {i.name for i in proto.input} | consts.keys() | produced.keys()
        self._declared = declared
        self._consts = consts
        self._produced = produced
        self._values: dict[str, ProtoValue] = {}
        self._nodes: dict[int, ProtoNode] = {}
        self._passed: dict[str, ProtoValue] = {}
        self._inputs: list[ProtoValue] | None = None

    def __iter__(self) -> Iterator[ProtoNode]:
        return (self._node(index) for index in range(len(self._proto.node)))

    def _node(self, index: int) -> ProtoNode:
        node = self._nodes.get(index)
        if node is None:
            node = self._nodes[index] = ProtoNode(self._proto.node[index], self)
        return node

    def body(self, proto: onnx.GraphProto) -> ProtoGraph:
        return ProtoGraph(proto, self, self.weights_dir)

    def value(self, name: str) -> ProtoValue:
        """The value ``name`` reads here: this graph's, an enclosing graph's, or (undefined
        anywhere, which the validator refuses) one of its own without a declaration."""
        graph: ProtoGraph | None = self
        while graph is not None:
            if name in graph._defined:
                return graph._own(name)
            graph = graph._outer
        return self._own(name)

    def _own(self, name: str) -> ProtoValue:
        value = self._values.get(name)
        if value is None:
            value = self._values[name] = ProtoValue(name, self, self._declared.get(name),
                                                    self._consts.get(name))
        return value

    def producer_of(self, name: str) -> ProtoNode | None:
        index = self._produced.get(name)
        return None if index is None else self._node(index)

    @property
    def inputs(self) -> list[ProtoValue]:
        if self._inputs is None:
            self._inputs = [self._own(i.name) for i in self._proto.input]
        return self._inputs

    @property
    def outputs(self) -> list[ProtoValue]:
        """A name this graph does not define (a body passing an outer value through) is an
        output value of its own, declared by the output alone, as in the IR."""
        outputs = []
        for info in self._proto.output:
            if info.name in self._defined:
                outputs.append(self._own(info.name))
                continue
            value = self._passed.get(info.name)
            if value is None:
                value = self._passed[info.name] = ProtoValue(info.name, self, info.type, None)
            outputs.append(value)
        return outputs

    @property
    def initializers(self) -> dict[str, ProtoValue]:
        return {name: self._own(name) for name in self._consts}

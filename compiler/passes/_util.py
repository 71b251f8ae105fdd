"""Small helpers shared by kiln's rules and the partitioner: constants, single consumers, new
initializers, shapes."""

from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir

_counter = itertools.count()


def is_onnx(node: ir.Node, *op_types: str) -> bool:
    """``node`` is a default-domain op among ``op_types``."""
    return node.domain in ("", "ai.onnx") and node.op_type in op_types


def const(value: ir.Value | None) -> np.ndarray | None:
    """The constant a value holds (initializer or folded), else None."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def sole_consumer(value: ir.Value) -> ir.Node | None:
    """The one node reading ``value``, if exactly one does and it is not a graph output."""
    if value.is_graph_output():
        return None
    users = value.consumers()
    if len(users) != 1:
        return None
    # the same node may read the value twice (x * x): that is still one consumer
    return users[0]


def new_initializer(graph: ir.Graph, array: np.ndarray, hint: str) -> ir.Value:
    """Register ``array`` as a fresh, uniquely named initializer of ``graph``."""
    name = f"{hint}__kiln{next(_counter)}"
    while name in graph.initializers:
        name = f"{hint}__kiln{next(_counter)}"
    tensor = ir.tensor(np.asarray(array, order="C"), name=name)  # 0-d stays 0-d
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
    graph.register_initializer(value)
    return value


def attr(node: ir.Node, name: str, default: object = None) -> object:
    """An attribute's Python value, or ``default``."""
    found = node.attributes.get(name)
    return default if found is None else found.value


def depthwise_weights(group: int, shape: ir.Shape | tuple[int, ...]) -> bool:
    """Whether conv weights of ``shape`` ([C_out, C_in / group, kh, kw]) with ``group``
    groups make a depthwise conv: one input and one output channel per group."""
    return shape[1] == 1 and shape[0] == group


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The value's shape when every dim is a known int."""
    if value is None or value.shape is None:
        return None
    dims = tuple(value.shape)
    if not all(isinstance(d, int) for d in dims):
        return None
    return dims  # type: ignore[return-value]


def value_dims(value: ir.Value) -> tuple[int | str | None, ...] | None:
    """The value's dims as ints, symbolic names, or None for an unnamed unknown dim."""
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else d.value if isinstance(d.value, str) and d.value
                 else None for d in value.shape)


def opset(graph: ir.Graph) -> int:
    """The default-domain opset the graph imports."""
    return graph.opset_imports.get("", graph.opset_imports.get("ai.onnx", 1))

"""ONNX ops defined by a function body, replaced by that body when native has no kernel.

Many newer ONNX ops (Attention, SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss,
RotaryEmbedding, GroupNormalization, Swish, ...) carry a function in their schema: the
op *is* that subgraph of simpler ops by definition. A node the native kernels refuse is
swapped for its body (the context-dependent body, built for the node's attributes and input
types, when the schema has one) and inlined, repeatedly, since a body may call another
function op (SoftmaxCrossEntropyLoss -> NegativeLogLikelihoodLoss). The native kernels then
run the simpler ops; a body op they lack is refused like any other node.

Only top-level nodes are expanded, and only when the body's opset matches the model's (no
version conversion): a node whose body cannot be built stays as it was.
"""

from __future__ import annotations

import onnx
import onnx.inliner
import onnx_ir as ir

from kiln.backends.native import support

#: the domain of the local functions the expansion calls before inlining them
LOCAL_DOMAIN = "kiln.expand"
#: a body may call function ops in turn; each round inlines one level
MAX_ROUNDS = 4


def _type_proto(value: ir.Value | None) -> onnx.TypeProto | None:
    if value is None or value.dtype is None:
        return None
    dims = None if value.shape is None else [
        d if isinstance(d, int) else None for d in value.shape]
    return onnx.helper.make_tensor_type_proto(int(value.dtype), dims)


def _body(node: ir.Node, opset: int) -> onnx.FunctionProto | None:
    """The function body of ``node``'s schema for this opset, or None."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None
    proto = ir.serde.serialize_node(node)
    try:
        if schema.has_context_dependent_function:
            types = [_type_proto(v) for v in node.inputs]
            if any(t is None for t, v in zip(types, node.inputs) if v is not None):
                return None  # the body depends on input types that are not known
            raw = [b"" if t is None else t.SerializeToString() for t in types]
            body = onnx.FunctionProto()
            body.ParseFromString(schema.get_context_dependent_function(
                proto.SerializeToString(), raw))
            return body
        if schema.has_function:
            raw_body = schema.get_function_with_opset_version(opset)
            if isinstance(raw_body, bytes):
                body = onnx.FunctionProto()
                body.ParseFromString(raw_body)
                return body
            return raw_body or schema.function_body
    except Exception:  # noqa: BLE001 - onnx refuses to build this body: leave the node
        return None
    return None


def expand_functions(model: ir.Model) -> ir.Model:
    """``model`` with every refused function op replaced by its body (the same model when
    there is none)."""
    current = model
    for _ in range(MAX_ROUNDS):
        expanded = _expand_once(current)
        if expanded is None:
            return current
        current = expanded
    return current


def _expand_once(model: ir.Model) -> ir.Model | None:
    opsets = {("" if k == "ai.onnx" else k): v for k, v in model.opset_imports.items()}
    bodies: dict[int, onnx.FunctionProto] = {}
    for index, node in enumerate(model.graph):
        if support.refusal(node) is None:
            continue
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        body = _body(node, opsets.get(domain, 1))
        if body is None or not body.node:
            continue
        wanted = {("" if o.domain == "ai.onnx" else o.domain): o.version
                  for o in body.opset_import}
        if any(opsets.get(d) != v for d, v in wanted.items()):
            continue  # the body speaks another opset; inlining would need conversion
        bodies[index] = body
    if not bodies:
        return None
    proto = ir.serde.serialize_model(model)
    for index, body in bodies.items():
        call = proto.graph.node[index]
        name = f"{call.op_type}_{index}"
        body.name, body.domain = name, LOCAL_DOMAIN
        caller = call.name or f"<{call.op_type}>"
        for k, inner in enumerate(body.node):  # errors inside the body name the caller
            inner.name = f"{caller}/{inner.name or inner.op_type}_{k}"
        if not body.opset_import:
            body.opset_import.extend(proto.opset_import)
        # a context-dependent body has its attributes baked in; a static one reads them
        if body.attribute or body.attribute_proto:
            kept = [a for a in call.attribute]
        else:
            kept = []
        del call.attribute[:]
        call.attribute.extend(kept)
        # trailing optional inputs/outputs the call omits stay unnamed in the body
        call.op_type, call.domain = name, LOCAL_DOMAIN
        proto.functions.append(body)
    proto.opset_import.append(onnx.helper.make_opsetid(LOCAL_DOMAIN, 1))
    inlined = onnx.inliner.inline_local_functions(proto)
    del inlined.opset_import[:]
    inlined.opset_import.extend(o for o in proto.opset_import if o.domain != LOCAL_DOMAIN)
    try:  # the body's values get their types, so the native checks see them
        inlined = onnx.shape_inference.infer_shapes(inlined)
    except Exception:  # noqa: BLE001 - partial knowledge is fine; kernels check at run time
        pass
    result = ir.serde.deserialize_model(inlined)
    _copy_types(model, result)
    return result


def _copy_types(source: ir.Model, target: ir.Model) -> None:
    """Keeps the element types and shapes the source graph knew (the serialized model may
    drop those of values without value_info)."""
    known = {}
    for node in source.graph:
        for v in node.outputs:
            if v is not None and v.name:
                known[v.name] = v
    for node in target.graph:
        for v in node.outputs:
            old = known.get(v.name) if v is not None else None
            if old is not None:
                if v.dtype is None and old.dtype is not None:
                    v.dtype = old.dtype
                if v.shape is None and old.shape is not None:
                    v.shape = old.shape


def body_refusal(node: ir.Node) -> str | None:
    """None when ``node`` is a function op whose expanded body native runs whole; else why
    not. The node is expanded alone, in a model of its own, with its input types."""
    graph = node.graph
    opsets = dict(graph.opset_imports) if graph is not None else {}
    inputs = [ir.Value(name=f"in{i}", type=v.type, shape=v.shape)
              for i, v in enumerate(node.inputs) if v is not None]
    if len(inputs) != sum(v is not None for v in node.inputs):
        return "a function op with an omitted optional input"
    outputs = [ir.Value(name=f"out{i}") for i in range(len(node.outputs))]
    for new, old in zip(outputs, node.outputs):
        new.type, new.shape = old.type, old.shape
    copy = ir.Node(node.domain, node.op_type, inputs, attributes=list(node.attributes.values()),
                   outputs=outputs, version=node.version, name=node.name)
    single = ir.Model(ir.Graph(inputs, outputs, nodes=[copy], opset_imports=opsets),
                      ir_version=10)
    try:
        expanded = expand_functions(single)
    except Exception as exc:  # noqa: BLE001 - a body onnx cannot build is a refusal
        return f"its function body does not build: {exc}"
    if expanded is single:
        return "no function body native can use"
    for inner in expanded.graph:
        reason = support.refusal(inner)
        if reason is not None:
            return f"its function body needs {inner.op_type}: {reason}"
    return None

"""Opset stamps newer than an engine reads, lowered where that changes no node's meaning."""

from __future__ import annotations

import onnx


def restamp_opset(proto: onnx.ModelProto, max_opset: int) -> bool:
    """Lower the default-domain opset stamp to ``max_opset`` when that changes no node.

    Exporters stamp the newest opset their onnx package knows; engines lag behind and refuse
    it. A node means the same at ``max_opset`` when its op's schema there is the very schema
    the stamped opset selects. If every node (subgraphs included) passes, the stamp is lowered
    and True returned; otherwise the model is left as it is and the engine decides.
    """
    stamped = next((o for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if stamped is None or stamped.version <= max_opset:
        return False
    for node in _all_nodes(proto.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            now = onnx.defs.get_schema(node.op_type, stamped.version, "")
            lowered = onnx.defs.get_schema(node.op_type, max_opset, "")
        except onnx.defs.SchemaError:
            return False
        if now.since_version != lowered.since_version:
            return False
    stamped.version = max_opset
    for function in proto.functions:
        for opset in function.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version > max_opset:
                return True
    return True


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)

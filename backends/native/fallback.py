"""Running the nodes the native backend cannot run on onnxruntime.

A segment is a run of consecutive nodes (in topological order) placed on one engine. An
onnxruntime segment becomes a small ONNX model of its own: its nodes, the constants they
read as initializers, its boundary values as inputs and outputs. The model is built on the
first run, when the element types of every boundary input are known from the feeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from kiln.errors import InputError, UnsupportedError


class OrtSegment:
    """A run of nodes executed by one onnxruntime InferenceSession."""

    def __init__(self, nodes: Sequence[ir.Node], inputs: Sequence[ir.Value],
                 outputs: Sequence[ir.Value], constants: Mapping[str, np.ndarray],
                 opsets: Mapping[str, int], ir_version: int, threads: int | None,
                 native_reasons: Mapping[str, str] | None = None) -> None:
        self.nodes = list(nodes)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.constants = dict(constants)
        self.opsets = dict(opsets)
        self.ir_version = ir_version
        self.threads = threads
        self.native_reasons = dict(native_reasons or {})
        self._sessions: dict[tuple[str, ...], object] = {}
        self._lock = threading.Lock()
        self.last_us = 0.0

    def _build(self, dtypes: tuple[str, ...]) -> object:
        import onnxruntime as ort

        node_protos = [ir.serde.serialize_node(n) for n in self.nodes]
        inits = [onnx.numpy_helper.from_array(arr, name) for name, arr in self.constants.items()]
        graph_inputs = []
        for value, dt in zip(self.inputs, dtypes):
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt))
            rank = None if value.shape is None else len(value.shape)
            shape = None if rank is None else [None] * rank
            graph_inputs.append(onnx.helper.make_tensor_value_info(value.name, elem, shape))
        graph_outputs = []
        for value in self.outputs:
            if value.dtype is not None:
                graph_outputs.append(onnx.helper.make_tensor_value_info(
                    value.name, int(value.dtype), None))
            else:
                graph_outputs.append(onnx.helper.make_empty_tensor_value_info(value.name))
        graph = onnx.helper.make_graph(node_protos, "kiln_fallback", graph_inputs,
                                       graph_outputs, initializer=inits)
        opset_imports = [onnx.helper.make_opsetid(d, v) for d, v in self.opsets.items()]
        model = onnx.helper.make_model(graph, opset_imports=opset_imports)
        model.ir_version = max(3, min(self.ir_version, onnx.IR_VERSION))
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            return ort.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:
            # Neither engine can run these nodes: the native refusal and onnxruntime's reason.
            names = "; ".join(f"'{name}': {reason}" for name, reason in
                              self.native_reasons.items()) or ", ".join(
                                  f"'{n.name}' ({n.op_type})" for n in self.nodes)
            raise UnsupportedError(f"neither the native backend nor its onnxruntime fallback "
                                   f"can run these nodes: native refuses {names}; "
                                   f"onnxruntime: {exc}") from exc

    def run(self, env: dict[str, np.ndarray]) -> None:
        feeds = {v.name: env[v.name] for v in self.inputs}
        key = tuple(np.asarray(feeds[v.name]).dtype.str for v in self.inputs)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._build(key)
                self._sessions[key] = session
        start = time.perf_counter()
        try:
            results = session.run([v.name for v in self.outputs], feeds)
        except Exception as exc:
            names = ", ".join(f"'{n.name}' ({n.op_type})" for n in self.nodes)
            raise InputError(f"onnxruntime fallback for nodes {names} failed: {exc}") from exc
        self.last_us = (time.perf_counter() - start) * 1e6  # the segment's time, for profiles
        for value, arr in zip(self.outputs, results):
            env[value.name] = arr

"""Small ONNX models for the native backend tests, and a runner that checks them against
onnxruntime (the reference) on the same inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import helper

from kiln.backends.base import CompileOptions
from kiln.backends.native.backend import NativeBackend


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    opset: int = 17,
    initializers: Mapping[str, np.ndarray] | None = None,
    extra_opsets: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    """A model whose graph inputs take their types from ``inputs``; output types inferred."""
    graph_inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)
        )
        for name, arr in inputs.items()
    ]
    inits = [onnx.numpy_helper.from_array(arr, name) for name, arr in (initializers or {}).items()]
    graph_outputs = [helper.make_empty_tensor_value_info(name) for name in outputs]
    graph = helper.make_graph(list(nodes), "case", graph_inputs, graph_outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    for domain, version in (extra_opsets or {}).items():
        opsets.append(helper.make_opsetid(domain, version))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if not extra_opsets:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {
            vi.name: vi.type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
        }
        for out in model.graph.output:
            if out.name in types and types[out.name].tensor_type.elem_type:
                out.type.CopyFrom(types[out.name])
    return model


def compile_native(model: onnx.ModelProto, threads: int = 1, **extra: object):
    options = CompileOptions(threads=threads, extra={"fallback": None, **extra})
    return NativeBackend().compile(ir.from_proto(model), None, options)


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def check_against_ort(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    rtol: float = 1e-4,
    atol: float = 1e-4,
    **extra: object,
) -> None:
    compiled = compile_native(model, **extra)
    got = compiled.run(feeds)
    want = run_ort(model, feeds)
    for spec, ref in zip(compiled.outputs, want):
        out = got[spec.name]
        assert out.dtype == ref.dtype, f"{spec.name}: dtype {out.dtype} vs {ref.dtype}"
        assert out.shape == ref.shape, f"{spec.name}: shape {out.shape} vs {ref.shape}"
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, err_msg=spec.name)

"""The native backend tests' compile helper and the check of a model against the reference
(onnxruntime) on the same inputs; the models come from tests/model_builders.py."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir
from model_builders import run_reference
from onnx_ir.passes.common import ShapeInferencePass

from kiln.backends.base import CompileOptions
from kiln.backends.native.backend import NativeBackend
from kiln.compiler.pipeline import kernel_steps
from kiln.compiler.target import Target


def compile_native(model: onnx.ModelProto, threads: int = 1, target: str | None = None,
                   **extra: object):
    """``model`` compiled by the native backend after the compiler's rules that write it in
    the backend's kernel ops (int8 regions, BatchNormalization -> Relu), as every pipeline
    level from O1 does, and nothing else of the pipeline. Shapes are inferred first, as O1
    does: ONNX shape inference does not see through kiln ops later. ``target`` (a Target
    string) caps the plan's ISA; this CPU's by default."""
    options = CompileOptions(threads=threads, extra={"fallback": None, **extra})
    backend = NativeBackend()
    graph = ir.from_proto(model)
    for _, step in [("infer-shapes", ShapeInferencePass(strict_mode=False)),
                    *kernel_steps(backend.caps())]:
        graph = step(graph).model
    return backend.compile(graph, None if target is None else Target.parse(target), options)


def check_against_ort(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    rtol: float = 1e-4,
    atol: float = 1e-4,
    **extra: object,
) -> None:
    compiled = compile_native(model, **extra)
    got = compiled.run(feeds)
    want = run_reference(model, feeds)
    for spec, ref in zip(compiled.outputs, want):
        out = got[spec.name]
        assert out.dtype == ref.dtype, f"{spec.name}: dtype {out.dtype} vs {ref.dtype}"
        assert out.shape == ref.shape, f"{spec.name}: shape {out.shape} vs {ref.shape}"
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, err_msg=spec.name)

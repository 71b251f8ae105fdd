"""onnxruntime as the compiler's reference engine: calibration observers, accuracy reports,
precision checks and the speed gate all open their sessions here.

Exporters stamp the newest IR version their onnx package knows and engines lag behind, so a
model is handed over with its declared IR version and default-domain opset lowered to what
this onnxruntime loads (probed once; the graph itself is unchanged, see ``restamp_opset``).
"""

from __future__ import annotations

import functools
from typing import Any

import onnx
import onnx_ir as ir

from kiln.compiler.opset_stamp import restamp_opset
from kiln.errors import InputError


def _loads(ir_version: int, opset: int) -> bool:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=ir_version)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    # only the load's version checks matter: no thread pool to start and stop, no optimizers
    # (a probe then takes ~0.2 ms instead of 3-8 ms; a warm .kiln load makes two)
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # onnxruntime refuses this IR version or opset
        return False


@functools.cache
def max_ir_version() -> int:
    """Newest ONNX IR version this onnxruntime loads (it has no API to ask; probe once)."""
    return next((v for v in range(onnx.IR_VERSION, 3, -1) if _loads(v, 13)), 3)


@functools.cache
def max_opset() -> int:
    """Newest released default-domain opset this onnxruntime loads (probed once)."""
    newest = onnx.defs.onnx_opset_version()
    return next((o for o in range(newest, 6, -1) if _loads(max_ir_version(), o)), 7)


def for_onnxruntime(model: ir.Model | onnx.ModelProto) -> onnx.ModelProto:
    """A ModelProto onnxruntime accepts: IR version and opset lowered where needed (a copy
    when ``model`` is a ModelProto that needs changing)."""
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    if proto.ir_version > max_ir_version() or any(
            o.domain in ("", "ai.onnx") and o.version > max_opset() for o in proto.opset_import):
        if not isinstance(model, ir.Model):
            proto = onnx.ModelProto.FromString(proto.SerializeToString())
        restamp_opset(proto, max_opset())
        proto.ir_version = min(proto.ir_version, max_ir_version())
    return proto


#: onnxruntime graph optimization levels by kiln's names.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def onnxruntime_session(model: bytes | str, *, threads: int | None = None,
                        optimization: str = "all", spinning: bool = False,
                        profile: bool = False, optimized_path: str | None = None,
                        weights_folder: str | None = None) -> Any:
    """The one way kiln opens an onnxruntime CPU session (the onnxruntime backend and the
    compiler's reference checks both come here). ``model`` is serialized ONNX (or a path)
    onnxruntime accepts; its own errors propagate (each caller says what it was doing).

    threads:        intra-op threads (None: every core); inter-op is always 1.
    optimization:   one of OPTIMIZATION_LEVELS.
    spinning:       let pool threads spin after a run. Off by default: spinning threads steal
                    the core from whatever runs next, and kiln interleaves engines.
    profile:        onnxruntime's profiler on (``end_profiling`` returns its trace).
    optimized_path: where onnxruntime writes the graph its optimizers made.
    weights_folder: where the external-data files of serialized ``model`` lie (a graph whose
                    tensors point into a .kiln artifact: onnxruntime reads them from there).
    """
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise InputError(f"unknown onnxruntime optimization level {optimization!r}; choose "
                         f"one of {', '.join(OPTIMIZATION_LEVELS)}")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only; warnings go to kiln's own reports
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.enable_profiling = bool(profile)
    if weights_folder is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                    weights_folder)
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def reference_session(model: ir.Model | onnx.ModelProto, optimize: bool = True,
                      threads: int | None = None) -> Any:
    """An onnxruntime CPU session over ``model`` for the compiler's reference checks;
    ``optimize=False`` runs the graph as written, before onnxruntime's rewrites."""
    return onnxruntime_session(for_onnxruntime(model).SerializeToString(), threads=threads,
                               optimization="all" if optimize else "disable")

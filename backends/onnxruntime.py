"""onnxruntime (CPU execution provider): the reference every other backend is checked against.

Precision lives in the graph (Q/DQ and Cast nodes the compiler placed), so this backend runs
what it is given; it only refuses precisions that would need a flag it does not have.
"""

from __future__ import annotations

import functools
import json
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.backends.base import (
    ArtifactWeights,
    Availability,
    Backend,
    CompiledModel,
    CompileOptions,
    NodeTime,
    NoTimersError,
)
from kiln.backends.onnx_export import (
    StoredGraph,
    ir_model,
    mapped_weights_folder,
    signature,
    source_file,
    to_onnx_bytes,
    to_onnx_file,
    to_onnx_graph_bytes,
)
from kiln.compiler.reference import (
    for_onnxruntime,
    max_ir_version,
    max_opset,
    onnxruntime_session,
)
from kiln.errors import ArtifactError, BackendUnavailableError, KilnError, UnsupportedError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.capabilities import BackendCaps
    from kiln.compiler.target import Target
    from kiln.compiler.validate import Limits

_ONNX_DOMAINS = ("", "ai.onnx")


@functools.cache
def cpu_kernels() -> frozenset[tuple[str, str]]:
    """(domain, op) of every kernel onnxruntime's CPU execution provider registers outside
    the ONNX domain (ai.onnx.ml, com.microsoft contrib ops, com.microsoft.nchwc ...)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        return frozenset((d.domain, d.op_name) for d in ort_state.get_all_opkernel_def()
                         if d.provider == "CPUExecutionProvider"
                         and d.domain not in _ONNX_DOMAINS)
    except Exception:  # onnxruntime absent or without the listing: no such kernels known
        return frozenset()


#: onnxruntime's own optimized graph (what its graph optimizers made of kiln's), in the
#: artifact; its NCHWc layout nodes tie it to the CPU and onnxruntime version that wrote it.
BLOB_FILE = "onnxruntime.onnx"
#: protobuf's size limit: beyond it onnxruntime would need external data, so no blob is kept.
_MAX_BLOB_BYTES = 2**31 - 1
#: Weights above this size are not stored a second time as onnxruntime's optimized graph: a
#: load re-optimizes model.onnx as onnxruntime's own load of a model does, and the artifact
#: holds the weights once (ResNet-50: 97 MB instead of 195 MB).
MAX_DUPLICATED_WEIGHT_BYTES = 1 << 20
#: For larger weights: onnxruntime's graph after its basic and extended optimizers (fusions
#: into its own ops, no layout change), whose weights refer to the artifact's weights member
#: as model.onnx's do. A load runs only what is left (the layout optimizers) on it: YOLOv8n's
#: session took ~9 ms (of ~48 ms) less CPU.
EXTENDED_BLOB_FILE = "onnxruntime-extended.onnx"
#: Tensors the extended optimizers made (folded constants) the blob may hold inline; beyond
#: this there is no blob (the weights would be stored twice).
_MAX_NEW_TENSOR_BYTES = 1 << 16
#: Optimization levels a load asks for that the extended blob does not go beyond.
_EXTENDED_LEVELS = ("extended", "all")


def _session(model: bytes | str, options: CompileOptions, level: str,
             optimized_path: str | None = None, weights_folder: str | None = None):
    """An onnxruntime session for ``options`` (kiln's one builder, compiler/reference.py)."""
    try:
        # Spinning as onnxruntime's own default (on) unless asked: kiln's session must run
        # back-to-back requests as fast as onnxruntime used directly (with it off, MiniLM-L6
        # took 4.83 ms to onnxruntime's 4.17, PP-LCNet 3.74 to 2.67 at 2 threads). A mixed
        # plan turns it off for its onnxruntime pieces (runtime/executor.py).
        return onnxruntime_session(model, threads=options.threads, optimization=level,
                                   spinning=bool(options.extra.get("allow_spinning", True)),
                                   profile=bool(options.extra.get("profile")),
                                   optimized_path=optimized_path,
                                   weights_folder=weights_folder)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UnsupportedError(f"onnxruntime cannot load the model: {exc}") from exc


class OnnxRuntimeCompiled(CompiledModel):
    backend = "onnxruntime"

    def __init__(self, session, model: ir.Model | StoredGraph, options: CompileOptions):
        self.session = session
        self._model = model
        self._options = options
        self.inputs, self.outputs = signature(model)
        self._output_names = [o.name for o in self.outputs]
        self._active: dict[int, Any] = {}  # thread id -> its RunOptions in flight (for cancel)

    @functools.cached_property
    def _weight_bytes(self) -> int:
        """Bytes of the graph's weights (asked by save_beside, then save: one walk)."""
        model = ir_model(self._model)
        return sum(v.const_value.nbytes for v in model.graph.initializers.values()
                   if v.const_value is not None)

    def save(self, folder: Path) -> list[str]:
        """onnxruntime's optimized graph, written by a second session that optimizes the same
        model; a load then skips onnxruntime's graph optimizers. None for a model with large
        weights (``MAX_DUPLICATED_WEIGHT_BYTES``)."""
        if self._weight_bytes > MAX_DUPLICATED_WEIGHT_BYTES:
            return []
        model = ir_model(self._model)
        data = to_onnx_bytes(model, max_ir_version(), max_opset())
        if len(data) > _MAX_BLOB_BYTES:
            return []
        path = Path(folder) / BLOB_FILE
        level = self._options.extra.get("ort_graph_optimization_level", "all")
        _session(data, self._options, level, str(path))
        return [BLOB_FILE] if path.is_file() else []

    def save_beside(self, folder: Path, weights: ArtifactWeights | None) -> list[str]:
        """``save``; for large weights in the artifact's weights member, the extended blob
        (``EXTENDED_BLOB_FILE``) when its optimizers made only small new tensors."""
        level = self._options.extra.get("ort_graph_optimization_level", "all")
        if (weights is None or level not in _EXTENDED_LEVELS
                or self._weight_bytes <= MAX_DUPLICATED_WEIGHT_BYTES):
            return self.save(folder)
        blob = _extended_graph(weights, self._options)
        if blob is None:
            return []
        (Path(folder) / EXTENDED_BLOB_FILE).write_bytes(blob)
        return [EXTENDED_BLOB_FILE]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        # --- cancellable runs (kiln.runtime.guards timeout): one RunOptions per calling thread
        run_options = ort.RunOptions()
        active = self._active
        active[threading.get_ident()] = run_options
        try:
            results = self.session.run(self._output_names, dict(feeds), run_options)
        except Exception as exc:
            raise KilnError(f"onnxruntime failed to run the model: {exc}") from exc
        finally:
            active.pop(threading.get_ident(), None)
        return dict(zip(self._output_names, results))

    def node_times(self, run: Callable[[], object], runs: int) -> list[list[NodeTime]]:
        """onnxruntime's profiler: ``<node>_kernel_time`` events, split by ``model_run``
        window; the runs before these (warm-up) are left out. Ends this session's profile."""
        if not self.session.get_session_options().enable_profiling:
            raise NoTimersError("onnxruntime profiles only sessions compiled with "
                                "profile=True")
        for _ in range(runs):
            run()
        path = Path(self.session.end_profiling())
        try:
            events = json.loads(path.read_text())
        finally:
            path.unlink(missing_ok=True)
        windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                         if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
        per_run: list[list[NodeTime]] = [[] for _ in windows]
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            k = next((i for i, (lo, hi) in enumerate(windows) if lo <= e["ts"] <= hi), None)
            if k is None:
                continue
            per_run[k].append(NodeTime(e["name"].removesuffix("_kernel_time"),
                                       e.get("args", {}).get("op_name", "?"), float(e["dur"]),
                                       float(e["ts"] - windows[k][0])))
        return per_run

    def cancel(self, thread_id: int) -> bool:
        """Stop the run in progress on thread ``thread_id`` (it then raises KilnError)."""
        run_options = self._active.get(thread_id)
        if run_options is None:
            return False
        run_options.terminate = True
        return True


def _extended_graph(weights: ArtifactWeights, options: CompileOptions) -> bytes | None:
    """The graph in ``weights.graph`` after onnxruntime's extended optimizers. onnxruntime
    keeps the external references of the weights it did not change (into the artifact, by
    offset in the whole file); they are made to refer to the weights member as model.onnx's
    do. None when the tensors the optimizers made are too large to hold inline."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    from kiln.compiler.onnx_stream import external_tensors, point_into

    with tempfile.TemporaryDirectory(prefix="kiln-ort-") as tmp:
        path = Path(tmp) / "extended.onnx"
        _session(str(weights.graph), options, "extended", str(path))
        graph = onnx.load(str(path), load_external_data=False)
    new_bytes = sum(tensor.ByteSize() for tensor in _get_all_tensors(graph)
                    if tensor.data_location != onnx.TensorProto.EXTERNAL)
    if new_bytes > _MAX_NEW_TENSOR_BYTES:
        return None
    for tensor, info in external_tensors(graph):
        if info.get("location") != weights.file.name:
            return None  # a file of onnxruntime's own: not what this blob is made of
        point_into(tensor, weights.member, int(info.get("offset", "0")) - weights.start,
                   int(info["length"]))
    return graph.SerializeToString()


def _attached(blob: bytes | memoryview, model: StoredGraph) -> bytes:
    """The extended blob with its weight references checked and pointed into the .kiln file,
    as model.onnx's are (``Artifact.attach_weights``)."""
    import onnx

    try:
        graph = onnx.ModelProto.FromString(bytes(blob))
    except Exception as exc:  # protobuf's own error types
        raise ArtifactError(f"{EXTENDED_BLOB_FILE} does not parse as ONNX ({exc})") from exc
    assert model.attach is not None
    model.attach(graph, f"blobs/{EXTENDED_BLOB_FILE}")
    return graph.SerializeToString()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    reads_artifact_weights = True  # external data read from the .kiln file itself
    loads_stored_graph = True  # an artifact's proto goes to onnxruntime as it is

    def is_available(self) -> Availability:
        try:
            import onnxruntime as ort
        except Exception as exc:
            return Availability(False, f"onnxruntime is not installed ({exc}); "
                                "pip install onnxruntime")
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(False, "onnxruntime has no CPUExecutionProvider",
                                ort.__version__)
        return Availability(True, "CPUExecutionProvider", ort.__version__)

    def supports(self, node: ir.Node) -> bool:
        return self.refusal(node) is None

    def refusal(self, node: ir.Node) -> str | None:
        import onnx

        if node.domain in _ONNX_DOMAINS:
            if not onnx.defs.has(node.op_type, ""):
                return f"no ONNX schema for {node.op_type}"
            return None
        if (node.domain, node.op_type) not in cpu_kernels():
            if not any(domain == node.domain for domain, _ in cpu_kernels()):
                return f"domain '{node.domain}' is not an onnxruntime domain"
            return (f"onnxruntime's CPU execution provider has no kernel for "
                    f"{node.domain}::{node.op_type}")
        return None

    def supported_precisions(self) -> tuple[str, ...]:
        return ("fp32", "fp16", "int8")

    def limits(self) -> Limits:
        # The newest default-domain opset comes from the same probe the exporter restamps
        # to; com.microsoft is onnxruntime's contrib domain. IR versions need no limit here:
        # the exporter lowers the declared one.
        from kiln.compiler.validate import Limits

        top = max_opset()
        return Limits("onnxruntime", None, {"": (1, top), "ai.onnx": (1, top),
                                            "ai.onnx.ml": (1, 5), "com.microsoft": (1, 1),
                                            "com.microsoft.nchwc": (1, 1)})

    def caps(self) -> BackendCaps:
        from kiln.compiler.capabilities import BackendCaps

        # ONNX Attention-23 ran 1.09-1.10x faster than the MatMul/Softmax/MatMul it replaces
        # (1 thread, 12 heads x 32, sequence 128 and 384, onnxruntime 1.32), so the compiler
        # fuses attention for this backend when this onnxruntime imports opset 23.
        # Its basic optimizers fold Conv -> BatchNormalization (ConvBNFusion) at every load:
        # light ResNet-50's onnxruntime graph is the same 59 nodes either way, and kiln's
        # compile no longer computes and writes 100 MB of folded weights (~0.2 s of ~0.6 s).
        # (With ort_graph_optimization_level="disable" those pairs stay unfolded, as asked.)
        # Its basic optimizers also remove identities, no-ops and dead nodes, merge common
        # subexpressions and make MatMul + Add a Gemm (caps.cleans_up_at_load); its extended
        # ones fuse LayerNorm and GELU (MiniLM-L6: the same 202-node graph, with kiln's
        # Attention, whether kiln fused them or not; caps.fuses_norm_gelu).
        top = max_opset()
        return BackendCaps(name=self.name, max_opset=top, standard_attention=top >= 23,
                           folds_conv_batchnorm=True, cleans_up_at_load=True,
                           fuses_norm_gelu=True)

    def _check(self, options: CompileOptions) -> None:
        status = self.is_available()
        if not status.ok:
            raise BackendUnavailableError(f"onnxruntime is unavailable: {status.reason}")
        if options.precision not in self.supported_precisions():
            raise UnsupportedError(f"onnxruntime has no {options.precision} CPU kernels; use one "
                                   f"of {', '.join(self.supported_precisions())}")

    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        self._check(options)
        level = options.extra.get("ort_graph_optimization_level", "all")
        # weights mapped from a .kiln artifact: onnxruntime reads them from the artifact file
        folder = mapped_weights_folder(model)
        if folder is not None:
            graph = to_onnx_graph_bytes(model, max_ir_version(), max_opset())
            return OnnxRuntimeCompiled(_session(graph, options, level, weights_folder=folder),
                                       model, options)
        # the graph as kiln read it: onnxruntime reads the user's file, as used directly
        read = source_file(model, max_ir_version(), max_opset())
        if read is not None:
            session = _session(read, options, level)
            if source_file(model) == read:  # not rewritten while onnxruntime read it
                return OnnxRuntimeCompiled(session, model, options)
        # weights kiln moved to a file: onnxruntime reads them there, no copy in between
        source = (to_onnx_file(model, max_ir_version(), max_opset())
                  or to_onnx_bytes(model, max_ir_version(), max_opset()))
        return OnnxRuntimeCompiled(_session(source, options, level),
                                   model, options)

    def load(self, blobs: Mapping[str, bytes], model: ir.Model | StoredGraph, target: Target,
             options: CompileOptions) -> CompiledModel:
        """Open the optimized graph onnxruntime saved, with its optimizers off (they already
        ran); when there is none, compile ``model``, or open a stored graph as it is, its
        weights read from the .kiln file."""
        blob = blobs.get(BLOB_FILE)
        if blob is None and not isinstance(model, StoredGraph):
            return self.compile(model, target, options)
        self._check(options)
        level = options.extra.get("ort_graph_optimization_level", "all")
        if blob is not None:
            session = _session(bytes(blob), options, "disable")
        else:
            extended = blobs.get(EXTENDED_BLOB_FILE)
            if extended is None or level not in _EXTENDED_LEVELS or model.attach is None:
                graph = for_onnxruntime(model.proto).SerializeToString()
            else:
                graph = _attached(extended, model)
            session = _session(graph, options, level, weights_folder=model.weights_dir)
        return OnnxRuntimeCompiled(session, model, options)

"""OpenVINO (CPU plugin, or any OpenVINO device string), fed the ONNX the compiler emits.

Precision is always explicit: OpenVINO's CPU plugin silently runs bf16 on CPUs with AVX-512
BF16 or AMX unless told otherwise, so kiln always sets INFERENCE_PRECISION_HINT.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

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
    signature,
    source_file,
    to_onnx_bytes,
    to_onnx_file,
)
from kiln.errors import BackendUnavailableError, KilnError, UnsupportedError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.capabilities import BackendCaps
    from kiln.compiler.target import Target
    from kiln.compiler.validate import Limits

#: The compiled model as OpenVINO exports it (``CompiledModel.export_model``), in the artifact.
BLOB_FILE = "openvino.blob"
#: The same without the constants the artifact's weights member holds: a load points OpenVINO
#: at the .kiln file for them (``WEIGHTS_PATH``), so the artifact holds the weights once.
WEIGHTLESS_BLOB_FILE = "openvino-weightless.blob"
#: Beside it: where it expects the weights in the .kiln (``_layout_of_file``), checked before
#: OpenVINO reads them at those offsets.
LAYOUT_FILE = "openvino-weights.json"
# OpenVINO's CPU plugin leaves out of an export the constants it read from an external-data
# file (offset and size are recorded instead) when the model is compiled with this, and wants
# it again, with the file, to import such a blob.
_WEIGHTLESS = {"CACHE_MODE": "OPTIMIZE_SIZE"}

# kiln precision -> OpenVINO INFERENCE_PRECISION_HINT. int8 comes from Q/DQ in the graph; the
# ops between them run at f32.
_PRECISION_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}


class OpenVinoCompiled(CompiledModel):
    backend = "openvino"

    def __init__(self, compiled, model: ir.Model | StoredGraph, config: dict[str, str],
                 device: str,
                 source: bytes | memoryview | None = None):
        self.compiled = compiled
        self.config = config
        self.device = device
        self._source = source  # a mapped blob it was imported from: the model may keep reading it
        self.inputs, self.outputs = signature(model)
        self._output_names = [o.name for o in self.outputs]
        self._local = threading.local()

    def _request(self):
        # One infer request per Python thread: requests are not thread-safe, models are.
        request = getattr(self._local, "request", None)
        if request is None:
            request = self.compiled.create_infer_request()
            self._local.request = request
        return request

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request()
        try:
            request.infer(dict(feeds), share_inputs=False, share_outputs=False)
        except Exception as exc:
            raise KilnError(f"OpenVINO failed to run the model: {exc}") from exc
        return {name: np.array(request.get_output_tensor(i).data, copy=True)
                for i, name in enumerate(self._output_names)}

    def node_times(self, run: Callable[[], object], runs: int) -> list[list[NodeTime]]:
        """The CPU plugin's performance counters (``PERF_COUNT=YES``, set for profile=True),
        read after each run; layers OpenVINO fused away have no entry of their own."""
        if self.config.get("PERF_COUNT") != "YES":
            raise NoTimersError("OpenVINO counts per-layer time only for models compiled "
                                "with profile=True")
        per_run = []
        for _ in range(runs):
            run()
            per_run.append([NodeTime(info.node_name, info.node_type,
                                     info.real_time.total_seconds() * 1e6)
                            for info in self._request().get_profiling_info()
                            if "EXECUTED" in str(info.status)])
        return per_run

    def save(self, folder: Path) -> list[str]:
        """OpenVINO's own export of the compiled model: a load imports it instead of reading
        and compiling the ONNX again."""
        (Path(folder) / BLOB_FILE).write_bytes(_exported(self.compiled))
        return [BLOB_FILE]

    def save_beside(self, folder: Path, weights: ArtifactWeights | None) -> list[str]:
        """A blob without the constants the artifact's weights member holds, when it has one:
        the graph is compiled again, read from the artifact being written so that OpenVINO
        records where in that file each constant lies, and exported without them (the
        model compiled for running holds offsets into a file of its own). Constants OpenVINO
        derived while compiling (folded, converted) stay in the blob. When that compile
        fails, the whole blob (``save``)."""
        if weights is None:
            return self.save(folder)
        layout = _layout_of_file(weights.graph)
        if layout is None:  # nothing external to leave out
            return self.save(folder)
        try:
            core = shared_core()
            compiled = core.compile_model(core.read_model(str(weights.graph)), self.device,
                                          self.config | _WEIGHTLESS)
            data = _exported(compiled)
            del compiled  # compiled only to be exported: its memory goes back now
        except Exception:  # the model compiled for running still exports whole
            return self.save(folder)
        (Path(folder) / WEIGHTLESS_BLOB_FILE).write_bytes(data)
        (Path(folder) / LAYOUT_FILE).write_text(json.dumps(layout))
        return [WEIGHTLESS_BLOB_FILE, LAYOUT_FILE]


@functools.cache
def shared_core():
    """The process's one OpenVINO Core. A fresh Core and its device list cost 15-20 ms, and a
    warm load asked for them four times (availability, then the import); OpenVINO's own
    guidance is one Core per application. No property is ever set on it: every compile and
    import passes its config."""
    import openvino as ov

    return ov.Core()


@functools.cache
def _devices() -> tuple[str, ...]:
    """The devices OpenVINO lists, asked once per process (they do not come and go while it
    runs)."""
    return tuple(shared_core().available_devices)


def _exported(compiled) -> bytes:
    """OpenVINO's export of a compiled model, as bytes."""
    stream = compiled.export_model()
    return stream.getvalue() if hasattr(stream, "getvalue") else bytes(stream)


def _layout_digest(spans: list[tuple[int, int]]) -> str:
    """sha256 over the sorted (offset, length) spans of the external tensors in their file."""
    text = ";".join(f"{offset}+{length}" for offset, length in sorted(spans))
    return hashlib.sha256(text.encode()).hexdigest()


def _external_spans(proto, folder: str) -> tuple[set[str], list[tuple[int, int]]]:
    """(the files, the (offset, length) spans) of ``proto``'s external tensors, whose
    locations are relative to ``folder``."""
    from kiln.compiler.onnx_stream import external_tensors

    files, spans = set(), []
    for _, info in external_tensors(proto):
        files.add(os.path.join(folder, info.get("location", "")))
        spans.append((int(info.get("offset", "0")), int(info["length"])))
    return files, spans


def _layout_of_file(graph: Path) -> dict[str, object] | None:
    """Where the ONNX file ``graph`` has its external tensors (count and ``_layout_digest``),
    None when it has none."""
    import onnx

    _, spans = _external_spans(onnx.load(str(graph), load_external_data=False),
                               str(graph.parent))
    if not spans:
        return None
    return {"tensors": len(spans), "sha256": _layout_digest(spans)}


def _weights_file(model: ir.Model | StoredGraph,
                  expected: bytes | memoryview | None) -> tuple[str, str | None]:
    """(the file ``model``'s external tensors map, why a weightless blob cannot take its
    constants from it: None when every external tensor lies in that one file where the
    blob's layout record ``expected`` says)."""
    import onnx_ir as ir

    if isinstance(model, StoredGraph):
        files, spans = _external_spans(model.proto, model.weights_dir)
    else:
        files, spans = set(), []
        for graph in model.graphs():
            for value in graph.initializers.values():
                tensor = value.const_value
                if isinstance(tensor, ir.ExternalTensor):
                    files.add(str(tensor.path))
                    spans.append((tensor.offset or 0, tensor.length
                                  if tensor.length is not None else tensor.nbytes))
    if len(files) != 1:
        return "", (f"its weights are not mapped from one file (from {len(files)}), and "
                    f"{WEIGHTLESS_BLOB_FILE} reads them from the artifact")
    try:
        record = json.loads(bytes(expected or b""))
        want = (int(record["tensors"]), str(record["sha256"]))
    except (ValueError, KeyError, TypeError):
        return "", f"{LAYOUT_FILE} is missing or unreadable"
    if want != (len(spans), _layout_digest(spans)):
        return "", (f"the weights do not lie in the artifact where {WEIGHTLESS_BLOB_FILE} "
                    "expects them")
    return files.pop(), None


#: OpenVINO virtual devices that take a list of real ones ("AUTO:GPU,CPU", "HETERO:GPU,CPU").
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def device_problem(device: str, available: list[str]) -> str | None:
    """Why OpenVINO ``device`` cannot be used with ``available`` devices (None if it can).

    Real devices ("CPU", "GPU", "GPU.1", "NPU") must be present; virtual ones ("AUTO",
    "HETERO:GPU,CPU") are passed through, and the devices they list must be present.
    """
    head, _, rest = device.partition(":")
    known = set(available) | {d.split(".")[0] for d in available}
    if head in _VIRTUAL_DEVICES:
        wanted = [d.strip() for d in rest.split(",") if d.strip()]
    else:
        wanted = [device]
    missing = [d for d in wanted if d not in known]
    if missing:
        return (f"OpenVINO device {', '.join(missing)} is not present here; available: "
                f"{', '.join(available) or 'none'} (virtual devices: "
                f"{', '.join(_VIRTUAL_DEVICES)})")
    return None


_STANDARD_DOMAINS = ("", "ai.onnx")
#: What to do when OpenVINO alone cannot take a model.
_FALLBACK_HINT = ("\nbackend=['openvino'] runs the nodes OpenVINO takes on it and the rest on "
                  "the fallback (onnxruntime).")
#: Seconds the child process that asks OpenVINO about contrib nodes may take.
_QUERY_TIMEOUT = 300.0


def _static_refusal(node: ir.Node) -> str | None:
    import onnx

    if node.domain not in _STANDARD_DOMAINS:
        return (f"domain '{node.domain}' is not supported by openvino for {node.op_type} "
                "(no verdict from OpenVINO's own query)")
    if not onnx.defs.has(node.op_type):
        return f"no ONNX schema for {node.op_type}"
    return None


def _foreign(node: ir.Node) -> bool:
    """Whether ``node``, or a node in its bodies, is outside the ONNX domain."""
    from kiln.compiler.graph_index import node_bodies

    stack = [node]
    while stack:
        current = stack.pop()
        if current.domain not in _STANDARD_DOMAINS:
            return True
        for graph in node_bodies(current):
            stack.extend(graph)
    return False


def _query_in_child(data: bytes, device: str, op_types: dict[str, str]
                    ) -> tuple[dict[str, str | None], str | None]:
    """``query_by_output`` in a child process. OpenVINO's ONNX frontend crashes the process
    on some contrib nodes onnxruntime runs (com.microsoft Attention without its bias input
    is a SIGSEGV in 2026.4), so a model with nodes outside the ONNX domain is first read
    where a crash costs only the answer. The child runs the query module as a script and
    imports nothing of kiln."""
    import json
    import subprocess
    import sys

    from kiln.backends import openvino_query

    header = json.dumps({"device": device, "op_types": op_types}).encode()
    try:
        # run_path, not the file as a script: a script's folder (kiln/backends, which has
        # an openvino.py) would come first on sys.path and shadow the openvino package.
        script = ("import runpy, sys; del sys.path[0]; "
                  f"runpy.run_path({openvino_query.__file__!r}, run_name='__main__')")
        child = subprocess.run([sys.executable, "-c", script],
                               input=header + b"\n" + data, capture_output=True,
                               timeout=_QUERY_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {}, f"OpenVINO did not read the model within {_QUERY_TIMEOUT:.0f} s"
    if child.returncode < 0:
        return {}, f"OpenVINO's ONNX frontend crashed reading the model (signal " \
                   f"{-child.returncode})"
    try:
        answer = json.loads(child.stdout.decode().strip().splitlines()[-1])
        return answer["verdicts"], answer["failed"]
    except (ValueError, IndexError, KeyError):
        last = (child.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return {}, f"OpenVINO's query of the model failed (exit {child.returncode}): {last}"


def _query_verdicts(model: ir.Model, device: str) -> dict[ir.Node, str | None]:
    """ONNX node -> None (OpenVINO runs it on ``device``) or why not, from OpenVINO itself.
    When OpenVINO cannot answer (or crashed answering), the nodes outside the ONNX domain get
    that reason, or every node when there are none."""
    import onnx

    producers = {value.name: node for node in model.graph for value in node.outputs
                 if value.name}
    op_types = {name: (f"{node.domain}::{node.op_type}" if node.domain not in
                       _STANDARD_DOMAINS else node.op_type)
                for name, node in producers.items()}
    data = to_onnx_bytes(model)
    foreign = {node for node in model.graph if _foreign(node)}
    by_output, failed = _ask(data, device, op_types, bool(foreign))
    if failed is not None:  # blame the foreign nodes when there are any; ONNX ones keep
        return {node: failed for node in (foreign or model.graph)}  # the static rule
    verdicts: dict[ir.Node, str | None] = {}
    for name, reason in by_output.items():
        node = producers[name]
        if reason is not None or node not in verdicts:
            verdicts[node] = reason
    refused = {node for node, reason in verdicts.items() if reason is not None}
    if refused and all(reason is not None for reason in by_output.values()):
        # Only a partial conversion answered, and it also marks nodes that fail just because
        # an unconverted node feeds them. Ask again about the model without the nodes that
        # have no converter (their outputs become inputs, as a partition cut makes them).
        cut = _without(onnx.load_from_string(data), {
            node.name for node in refused if node.domain not in _STANDARD_DOMAINS}, model)
        if cut is not None:
            again, failed = _ask(cut.SerializeToString(), device, op_types,
                                 bool(foreign - refused))
            if failed is None:
                for name, reason in again.items():
                    node = producers[name]
                    if node not in refused or node.domain in _STANDARD_DOMAINS:
                        verdicts[node] = reason
                for node in model.graph:  # converted and kept: OpenVINO runs what it read
                    if node not in refused and node not in verdicts:
                        verdicts[node] = None
    if device.partition(".")[0] == "CPU":
        _refuse_unranked_entries(model, verdicts)
    return verdicts


def _refuse_unranked_entries(model: ir.Model, verdicts: dict[ir.Node, str | None]) -> None:
    """Refuse nodes that would read a tensor of unknown rank from outside their OpenVINO
    piece (a graph input, or the output of a node OpenVINO does not run): the piece would get
    a Parameter of dynamic rank, which the CPU plugin does not compile ("CPU plug-in doesn't
    support Parameter operation with dynamic rank"). In order, so refusals propagate."""
    for node in model.graph:
        if verdicts.get(node) is not None:
            continue
        for value in node.inputs:
            if value is None or value.shape is not None or value.const_value is not None:
                continue
            producer = value.producer()
            if producer is None or verdicts.get(producer) is not None:
                verdicts[node] = (f"reads '{value.name}', whose rank is unknown, from outside "
                                  "OpenVINO; its CPU plugin compiles only tensors of known rank")
                break


def _ask(data: bytes, device: str, op_types: dict[str, str], foreign: bool
         ) -> tuple[dict[str, str | None], str | None]:
    """OpenVINO's answer about ``data``, asked in a child process when it holds nodes outside
    the ONNX domain (``foreign``)."""
    from kiln.backends import openvino_query

    if foreign:
        return _query_in_child(data, device, op_types)
    return openvino_query.query_by_output(data, device, op_types)


def _without(proto, names: set[str], model: ir.Model):
    """``proto`` without the nodes named ``names``: what they produced becomes graph inputs
    (typed from ``model``). None when a name is empty or a type is unknown."""
    import onnx

    if not names or "" in names:
        return None
    values = {v.name: v for node in model.graph for v in node.outputs if v.name}
    keep = [n for n in proto.graph.node if n.name not in names]
    cut_outputs = [o for n in proto.graph.node if n.name in names for o in n.output if o]
    read = {i for n in keep for i in n.input} | {o.name for o in proto.graph.output}
    inputs = []
    for name in cut_outputs:
        if name not in read:
            continue
        value = values.get(name)
        if value is None or value.dtype is None:
            return None
        dims = None if value.shape is None else [
            d if isinstance(d, int) else None for d in value.shape]
        inputs.append(onnx.helper.make_tensor_value_info(name, int(value.dtype), dims))
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    proto.graph.input.extend(inputs)
    return proto


class OpenVinoBackend(Backend):
    name = "openvino"
    loads_stored_graph = True  # an artifact's blob imports without kiln's IR of its graph

    def __init__(self) -> None:
        # id(graph) -> (graph, verdicts, device): query_model results, newest last.
        self._verdicts: dict[int, tuple[ir.Graph, dict[ir.Node, str | None], str]] = {}

    def is_available(self) -> Availability:
        try:
            import openvino as ov
        except Exception as exc:
            return Availability(False, f"openvino is not installed ({exc}); "
                                "pip install openvino")
        try:
            devices = _devices()
        except Exception as exc:
            return Availability(False, f"OpenVINO cannot list devices: {exc}", ov.__version__)
        if not devices:
            return Availability(False, "OpenVINO found no device", ov.__version__)
        return Availability(True, "devices: " + ", ".join(devices), ov.__version__)

    def supports(self, node: ir.Node) -> bool:
        return self.refusal(node) is None

    def refusal(self, node: ir.Node) -> str | None:
        """The verdict of OpenVINO's own ``query_model`` when ``capability`` ran for this
        node's graph, otherwise the static rule (standard ONNX domain with a schema)."""
        cached = self._verdicts.get(id(node.graph)) if node.graph is not None else None
        if cached is not None and cached[0] is node.graph and node in cached[1]:
            return cached[1][node]
        return _static_refusal(node)

    def capability(self, model: ir.Model, device: str = "CPU") -> dict[ir.Node, str | None]:
        """Per-node verdicts from OpenVINO itself, computed once per model and cached.

        The model is read by OpenVINO's ONNX frontend and ``Core.query_model(model, device)``
        says which operations the device runs; an ONNX node is supported when every
        OpenVINO operation producing one of its outputs is. When the frontend cannot read the
        whole model, ``convert_partially`` marks the ONNX nodes it cannot convert; the rest
        keep the static rule. Nodes OpenVINO folds away get no verdict here (static rule).
        """
        key = id(model.graph)
        cached = self._verdicts.get(key)
        if cached is not None and cached[0] is model.graph and cached[2] == device:
            return cached[1]
        verdicts = _query_verdicts(model, device)
        if len(self._verdicts) >= 8:
            self._verdicts.pop(next(iter(self._verdicts)))
        self._verdicts[key] = (model.graph, verdicts, device)
        return verdicts

    def limits(self) -> Limits:
        # As tried with OpenVINO 2026.4: it accepts opset 9999 silently and its ONNX frontend
        # compiles opset-24 ops but not opset-26 ones, so kiln stops it at 25; it truncates
        # dims and trip counts to 32 bits; compile time grows ~1.5x per level of nested If
        # past 12 and ~2x per doubling of If nodes (1.5 s for 255, 8.7 s for 1023).
        from kiln.compiler.validate import INT32_MAX, Limits

        # Nodes of other domains are not refused here: OpenVINO reads some com.microsoft
        # ops, and which nodes it runs its own query says (``capability``); the others go
        # to the fallback, or are refused by name (``compile``).
        return Limits("openvino", None, {"": (1, 25), "ai.onnx": (1, 25),
                                         "com.microsoft": (1, 1), "com.microsoft.nchwc": (1, 1),
                                         "ai.onnx.ml": (1, 5)},
                      max_dim=INT32_MAX, max_subgraph_depth=12, max_control_flow=255)

    def supported_precisions(self) -> tuple[str, ...]:
        return tuple(_PRECISION_HINT)

    def caps(self) -> BackendCaps:
        """Plain ONNX; fp16/bf16 applied by the inference precision hint; dynamic int8 as
        int8 weights, whose activations the CPU plugin quantizes at run time itself (it runs
        MatMulInteger without its int8 kernels); static int8 with Q/DQ only on the inputs of
        int8 ops, so the CPU plugin folds each Conv's float tail into the Conv. LayerNorm and
        GELU in plain ops it fuses itself (MVN, Gelu): MiniLM-L6 compiles to the same
        runtime graph (361 layers, in order) with or without kiln's fusions. Its load cleans
        up as well (identities, no-ops, dead nodes, common subexpressions, MatMul + Add): the
        runtime graphs of MiniLM-L6, YOLOv8n, PP-OCRv4's detector and ddddocr's recognizer
        are the same, layer for layer, without kiln's cleanup steps. Conv ->
        BatchNormalization stays kiln's to fold (no ``folds_conv_batchnorm``): OpenVINO folds
        it to the same runtime graph, but then holds the file's unfolded weights beside its
        folded ones (light ResNet-50: peak 338 MB instead of 248 MB), for no shorter open
        (0.44 s vs 0.46 s, medians of 5)."""
        from kiln.compiler.capabilities import BackendCaps

        return BackendCaps(name=self.name, precision_hints=frozenset({"fp16", "bf16"}),
                           dynamic_int8="weights", static_int8="inputs", fuses_norm_gelu=True,
                           cleans_up_at_load=True)

    def _prepare(self, options: CompileOptions):
        """(Core, device, config) for ``options``, or the kiln error that stops them."""
        status = self.is_available()
        if not status.ok:
            raise BackendUnavailableError(f"openvino is unavailable: {status.reason}")
        if options.precision not in _PRECISION_HINT:
            raise UnsupportedError(f"OpenVINO backend has no precision '{options.precision}'")
        core = shared_core()
        device = options.device or "CPU"
        missing = device_problem(device, list(_devices()))
        if missing:
            raise BackendUnavailableError(missing)
        config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINT[options.precision],
                  "PERFORMANCE_HINT": str(options.extra.get("performance_hint", "LATENCY"))}
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = str(int(options.threads))
        if options.extra.get("profile"):
            config["PERF_COUNT"] = "YES"
        return core, device, config

    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        core, device, config = self._prepare(options)
        self._refuse_foreign(model, device)
        try:
            ov_model = None
            read = source_file(model)  # the graph as kiln read it: OpenVINO reads the file
            if read is not None:
                ov_model = core.read_model(read)
                if source_file(model) != read:  # rewritten while OpenVINO read it
                    ov_model = None
            if ov_model is None:
                path = to_onnx_file(model)  # OpenVINO maps weights kiln moved to a file
                ov_model = core.read_model(path if path else io.BytesIO(to_onnx_bytes(model)))
        except Exception as exc:
            raise UnsupportedError(f"OpenVINO cannot read the model: {exc}{_FALLBACK_HINT}") \
                from exc
        try:
            compiled = core.compile_model(ov_model, device, config)
        except Exception as exc:
            raise UnsupportedError(f"OpenVINO cannot compile the model for {device}: "
                                   f"{exc}{_FALLBACK_HINT}") from exc
        return OpenVinoCompiled(compiled, model, config, device)

    def _refuse_foreign(self, model: ir.Model, device: str) -> None:
        """Raise UnsupportedError naming every node outside the ONNX domain that OpenVINO does
        not run, before OpenVINO reads the model in this process (see ``_query_in_child``)."""
        foreign = [node for node in model.graph if _foreign(node)]
        if not foreign:
            return
        verdicts = self.capability(model, device)
        refused = [(node, verdicts[node] if node in verdicts else _static_refusal(node))
                   for node in foreign]
        refused = [(node, reason) for node, reason in refused if reason is not None]
        if refused:
            listing = "\n".join(f"  node '{node.name or '<unnamed>'}' "
                                 f"({node.domain or 'ai.onnx'}::{node.op_type}): {reason}"
                                 for node, reason in refused)
            raise UnsupportedError(
                f"openvino cannot run {len(refused)} node(s) of this model:\n{listing}"
                f"{_FALLBACK_HINT}")

    def load(self, blobs: Mapping[str, bytes], model: ir.Model | StoredGraph, target: Target,
             options: CompileOptions) -> CompiledModel:
        """Import the exported compiled model; compile ``model`` when there is none, or when
        OpenVINO does not import it here (``rebuilt_because`` says why).

        The artifact's checks (sha256 of the blob, backend version, target, precision and
        device in its manifest) ran before this, so the blob is the one kiln wrote. A
        weightless blob takes its constants from the file ``model``'s weights are mapped from
        (the .kiln), once its layout record matches where they lie there.
        """
        weightless = blobs.get(WEIGHTLESS_BLOB_FILE)
        blob = blobs.get(BLOB_FILE) if weightless is None else weightless
        if blob is None:
            return self.compile(ir_model(model), target, options)
        core, device, config = self._prepare(options)
        name, extra = BLOB_FILE, {}
        if weightless is not None:
            name = WEIGHTLESS_BLOB_FILE
            where, why = _weights_file(model, blobs.get(LAYOUT_FILE))
            if why is not None:
                return self._rebuilt(model, target, options, why)
            extra = _WEIGHTLESS | {"WEIGHTS_PATH": where}
        stream = blob
        if isinstance(blob, memoryview):
            import openvino as ov

            # mapped from the .kiln: OpenVINO imports from the mapping in place instead of from
            # a second copy of the blob in memory
            stream = ov.Tensor(np.frombuffer(blob, dtype=np.uint8), shared_memory=True)
        try:
            compiled = core.import_model(stream, device, config | extra)
        except Exception as exc:
            return self._rebuilt(model, target, options,
                                 f"OpenVINO {self.is_available().version} did not import "
                                 f"{name}: {exc}".rstrip())
        return OpenVinoCompiled(compiled, model, config, device, blob)

    def _rebuilt(self, model: ir.Model | StoredGraph, target: Target, options: CompileOptions,
                 why: str) -> CompiledModel:
        """``model`` compiled in place of a blob that did not serve, saying ``why``."""
        compiled = self.compile(ir_model(model), target, options)
        compiled.rebuilt_because = why
        return compiled

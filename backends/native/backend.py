"""kiln's own C++ engine behind the Backend contract.

``compile`` lowers the IR once (``plan.py``): value ids, resolved attributes, constants
(constant subgraphs evaluated here, once), a liveness-based arena plan. The plan goes to
the ``_native`` extension in one piece; ``run`` then executes every node in C++ with the
GIL released, on a thread pool of ``options.threads`` threads. One compiled model may be
run from several Python threads at once (each run takes its own arena).

Function ops without a kernel (Attention, SoftmaxCrossEntropyLoss, ...) run as their
ONNX-defined bodies (``expand.py``). A node the native kernels do not cover (``supports`` is
exact: op, element types, attributes) makes compile raise ``UnsupportedError`` listing every
such node: running it elsewhere is the partitioner's job (``kiln.Session(model,
backend="native")`` splits the graph with onnxruntime as the fallback through
``kiln.runtime.executor``; ``fallback=None`` there is strict mode).

Options read from ``options.extra``: ``max_tensor_bytes`` (largest tensor a kernel may
allocate, default 16 GiB), ``fold_constants`` (evaluate constant subgraphs at compile time,
default True).

The ``Target`` picks the plan's ISA (``plan_isa.py``): an AVX2 target gets the AVX2 kernels,
weight packing and blocking even on an AVX-512 machine. A target of the other architecture
(``cpu:aarch64,neon,dotprod`` on x86) is a cross-compile: the plan is built here with the
generic kernels to prove the graph lowers, and records the target's level and kernels; loading
it on this machine rebuilds (``rebuild_reason``). The report and the plan blob record
the ISA and the kernels chosen (``kiln inspect m.kiln`` shows them).

Contracts of kiln's fused ops (domain "kiln", emitted by the compiler's fusion passes):

``kiln::FusedConv(X, W, [B], [residual], [scale, shift]) -> Y``
    Conv's inputs and attributes (auto_pad, dilations, group, kernel_shape, pads, strides),
    float32. ``residual`` (optional 4th input) has Y's shape and is added after the bias.
    Then ``activation`` (string attribute) is applied: one of "" (none), "Relu",
    "LeakyRelu" (alpha = slope, default 0.01), "Clip" (alpha = min, beta = max, defaults
    -inf/+inf), "Sigmoid", "SiLU" (x * sigmoid(x)), "HardSigmoid" (alpha 0.2, beta 0.5:
    max(0, min(1, alpha x + beta))), "HardSwish" (x * max(0, min(1, x/6 + 1/2))), "Gelu"
    (erf form), "GeluTanh" (tanh approximation), "Tanh". Activation parameters are the float
    attributes ``alpha`` / ``beta`` (``activation_alpha`` / ``activation_beta`` are
    accepted too).
    Y = act(conv(X, W) + B + residual).
    With ``prologue`` ("affine" or "affine_relu") and inputs 5 and 6 (``scale``, ``shift``:
    float32 of shape [C, 1, 1]), the conv reads X' = scale * X + shift per input
    channel (then Relu for "affine_relu") in X's place; padding stays zero.

``kiln::FusedGemm(A, B, [C], [residual]) -> Y``
    Gemm's inputs and attributes (transA, transB, alpha, beta), float32:
    Y = act(alpha * op(A) op(B) + beta * C + residual). C broadcasts to [M, N] like Gemm's;
    ``residual`` has Y's shape. A may have rank > 2 when transA = 0 (MatMul semantics: the
    leading dims of A are kept, B is 2-D), so a MatMul + Add (+ activation) chain fuses too.
    ``activation`` takes the values listed for FusedConv; its parameters are the float
    attributes ``activation_alpha`` / ``activation_beta`` (``alpha``/``beta`` are Gemm's).

``kiln::FusedBatchNorm(X, scale, B, mean, var) -> Y``
    Inference BatchNormalization then ``activation`` ("" or "Relu") in the same pass; the
    executor runs it as its BatchNormalization kernel (``plan.EXECUTOR_OPS``).

``kiln::QGemm``, ``kiln::QConv``, ``kiln::QMaxPool``: the int8 kernels, contracts in
``kiln.compiler.passes.fuse_int8``; the epilogues, groups and byte table they take are
``support.INT8_ACTIVATIONS`` / ``support.QCONV_GROUPS`` / ``support.INT8_BYTE_TABLE`` (today
Relu; one group or depthwise; a table on QConv and QGemm).
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from kiln.backends.base import (
    Availability,
    Backend,
    CompiledModel,
    CompileOptions,
    NodeTime,
    NoTimersError,
    TensorSpec,
)
from kiln.backends.native import support
from kiln.backends.native.dtypes import from_carrier, to_carrier
from kiln.backends.native.expand import body_refusal, expand_functions
from kiln.backends.native.plan import (
    ALIGN,
    LoweredPlan,
    Lowering,
    check_declared_dims,
    contiguous,
    inferred_shapes,
    static_bytes,
)
from kiln.backends.native.plan_isa import LEVELS, cross_kernels, plan_isa, runs_here
from kiln.backends.onnx_export import value_spec
from kiln.errors import (
    ArtifactError,
    InputError,
    KilnError,
    ModelError,
    ResourceError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from kiln.compiler.capabilities import BackendCaps
    from kiln.compiler.target import Target

DEFAULT_LIMIT = 16 << 30
#: The native plan blob in an artifact (JSON, never pickle).
PLAN_FILE = "native_plan.json"


def _native() -> Any:
    from kiln.backends.native import _native as ext

    return ext


def _translate(exc: Exception, where: str) -> KilnError:
    ext = _native()
    if isinstance(exc, ext.LimitError):
        return ResourceError(f"native backend{where}: {exc}")
    if isinstance(exc, ext.NodeError):
        return InputError(f"native backend{where}: {exc}")
    return KilnError(f"native backend{where}: {type(exc).__name__}: {exc}")


def _maps_a_file(arr: np.ndarray) -> bool:
    """Whether ``arr`` views a read-only memory map of a file (an external tensor's map):
    its pages can leave the resident set and come back from the file."""
    base: Any = arr
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap) and not arr.flags.writeable


def _unmap(value: ir.Value) -> None:
    """Close the file map of an external tensor the plan no longer reads (its pages count in
    the process's RSS while mapped); it maps again if something reads it later."""
    tensor = value.const_value
    if isinstance(tensor, ir.ExternalTensor):
        try:
            tensor.release()
        except BufferError:  # another reader still holds a view: the map stays
            pass


class NativeSegment:
    """A run of nodes lowered to one C++ plan."""

    def __init__(self, lowered: LoweredPlan, threads: int, limit: int,
                 profile: bool = False, isa: str = LEVELS[-1]) -> None:
        ext = _native()
        self.lowered = lowered
        self.input_names = [lowered.value_names[i] for i in lowered.inputs]
        self.output_names = [lowered.value_names[i] for i in lowered.outputs]
        plan = ext.Plan(len(lowered.value_names))
        plan.set_isa(isa)  # before the nodes: their weights are packed for it
        plan.set_threads(threads)
        plan.set_limit_bytes(limit)
        plan.set_profiling(profile)
        self.plan = plan
        self._add_nodes(lowered)
        mem = lowered.memory
        plan.set_memory(mem.offsets, mem.planned_bytes, mem.arena_bytes, mem.frees)
        plan.set_io(lowered.inputs, lowered.outputs)

    def _add_nodes(self, lowered: LoweredPlan) -> None:
        """Hands the plan its constants and nodes, one weight at a time: a constant goes in
        just before its first reader, and once its last reader has packed it (MatMul / Gemm
        weights), the plan drops its bytes and an external tensor's map is closed. So the
        process never holds every source weight beside every packed one."""
        ext = _native()
        plan = self.plan
        last_reader: dict[int, int] = {}
        for k, node in enumerate(lowered.nodes):
            for i in node.inputs:
                if i in lowered.constants:
                    last_reader[i] = k
        for vid in [v for v in lowered.constants if v not in last_reader]:
            self._add_constant(vid)  # read by no node here: an output of the plan
        kept = set(lowered.outputs)
        added: set[int] = set()
        for k, node in enumerate(lowered.nodes):
            for i in node.inputs:
                if i in lowered.constants and i not in added:
                    self._add_constant(i)
                    added.add(i)
            try:
                plan.add_node(node.name, node.domain, node.op, node.opset, node.inputs,
                              node.outputs, node.attrs)
            except ext.NodeError as exc:
                raise ModelError(f"native backend: {exc}") from exc
            for i in set(node.inputs):
                if last_reader.get(i) == k and i not in kept and plan.release_constant(i):
                    del lowered.constants[i]
                    source = lowered.sources.pop(i, None)
                    if source is not None:
                        _unmap(source)

    def _add_constant(self, vid: int) -> None:
        arr = contiguous(self.lowered.constants[vid])
        # Aligned arrays are read in place (the plan keeps them alive): weights mapped from
        # a file stay file pages, and in-memory ones are not held twice.
        borrowed = arr.ctypes.data % ALIGN == 0
        self.plan.add_constant(vid, *to_carrier(arr), borrowed=borrowed)
        if borrowed and _maps_a_file(arr):
            self.plan.set_file_backed(vid)

    def run(self, env: dict[str, np.ndarray]) -> None:
        carried = [to_carrier(env[name]) for name in self.input_names]
        try:
            results = self.plan.run([a for a, _ in carried], [c for _, c in carried])
        except Exception as exc:  # C++ exceptions arrive as NodeError / LimitError
            raise _translate(exc, "") from exc
        for name, (arr, code) in zip(self.output_names, results):
            env[name] = from_carrier(arr, code)

    def node_times(self) -> list[NodeTime]:
        """The executor's per-node clock for its last run (profile=True at compile)."""
        return [NodeTime(node.name or f"<{node.op}>", node.op, us)
                for node, us in zip(self.lowered.nodes, self.plan.node_times())]


class NativeCompiledModel(CompiledModel):
    """Segments run in order over a dict of named arrays."""

    backend = "native"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 segments: list[NativeSegment], constants: dict[str, np.ndarray],
                 report: dict[str, Any]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.segments = segments
        self._constants = constants
        self.report = report
        #: static dims and item size per value name (ONNX shape inference), for the plan blob
        self.value_shapes: dict[str, tuple[tuple[int, ...], int]] = {}

    def node_times(self, run: Callable[[], object], runs: int) -> list[list[NodeTime]]:
        """The executor's own per-node clock (compile with profile=True)."""
        if not self.report.get("profile"):
            raise NoTimersError("the native executor times its nodes only for models compiled "
                                "with profile=True")
        per_run = []
        for _ in range(runs):
            run()
            times: list[NodeTime] = []
            for segment in self.segments:
                times += segment.node_times()
            per_run.append(times)
        return per_run

    def save(self, folder: Path) -> list[str]:
        """The plan blob: the value shapes the arena was planned from, the plan ISA and the
        kernels it chose. Weights are packed again at load (for that ISA), from the
        artifact's model.onnx."""
        blob = {"value_shapes": {name: [list(dims), itemsize] for name, (dims, itemsize)
                                 in self.value_shapes.items()},
                "isa": self.report.get("plan_isa"),
                "kernels": self.report.get("kernels"),
                "arena_bytes": self.report.get("arena_bytes"),
                "intermediate_bytes": self.report.get("intermediate_bytes")}
        (Path(folder) / PLAN_FILE).write_text(json.dumps(blob))
        return [PLAN_FILE]

    def signature_arena_bytes(self) -> list[int]:
        """Arena bytes planned at run time per input signature (models with symbolic dims)."""
        return [b for s in self.segments if isinstance(s, NativeSegment)
                for b in s.plan.signature_arena_bytes()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InputError(f"missing input '{spec.name}' (expected {spec.describe()})")
            arr = np.asarray(feeds[spec.name])
            if arr.dtype != spec.dtype:
                raise InputError(f"input '{spec.name}' has element type {arr.dtype}, "
                                 f"expected {spec.describe()}")
            env[spec.name] = contiguous(arr)
        for name, arr in self._constants.items():
            env.setdefault(name, arr)
        for segment in self.segments:
            segment.run(env)
        return {spec.name: env[spec.name] for spec in self.outputs}


class NativeBackend(Backend):
    """kiln's C++ executor; plain C++ kernels for every op, SIMD where the CPU has it."""

    name = "native"
    reads_artifact_weights = True  # weights packed from, or read in place from, the IR's maps

    def is_available(self) -> Availability:
        try:
            ext = _native()
            from kiln import __version__
        except Exception as exc:  # never raises
            return Availability(False, f"the _native extension does not import: {exc}. "
                                "Rebuild with `pip install --no-build-isolation -e .`")
        return Availability(True, f"isa={ext.isa()}", f"{__version__} ({ext.isa()})")

    def supports(self, node: ir.Node) -> bool:
        return self.refusal(node) is None

    def refusal(self, node: ir.Node) -> str | None:
        """Why native cannot run ``node``: no kernel, and no body of kernels it has."""
        reason = support.refusal(node)
        if reason is not None and body_refusal(node) is None:
            return None  # a function op whose ONNX-defined body runs natively
        return reason

    def supported_precisions(self) -> Sequence[str]:
        # int8 lives in the graph (Q/DQ, MatMulInteger); everything else runs at fp32
        return ("fp32", "int8")

    def caps(self) -> BackendCaps:
        """The fused kiln ops run natively (their contracts are in this module's docstring)."""
        from kiln.compiler.capabilities import BackendCaps

        return BackendCaps(name=self.name, kiln_ops=frozenset({
            "FusedConv", "FusedGemm", "FusedBatchNorm", "QGemm", "QConv", "QConvTranspose",
            "QMaxPool"}),
            max_opset=23, conv_prologue=True, qconv_groups=support.QCONV_GROUPS,
            int8_activations=support.INT8_ACTIVATIONS,
            int8_byte_table=support.INT8_BYTE_TABLE,
            # KILN_NATIVE_F32_NHWC=0: the convs hand over NCHW (an A/B switch for benchmarks)
            f32_nhwc=os.environ.get("KILN_NATIVE_F32_NHWC", "1") != "0")

    def compile(self, model: ir.Model, target: Target | None,
                options: CompileOptions) -> CompiledModel:
        # ONNX's inference on a serialized copy only hints the size of values the IR leaves
        # without a shape (the plan reads the IR's first): none left, none run
        shapes, every_value_shaped = _ir_sizes(model)
        if not every_value_shaped:
            shapes = inferred_shapes(model)
        return self._build(model, options, shapes, plan_isa(target))

    def describe_blobs(self, blobs: Mapping[str, bytes]) -> dict[str, Any]:
        """The plan ISA and kernels an artifact's plan blob records (empty without one)."""
        try:
            saved = json.loads(blobs[PLAN_FILE])
        except (KeyError, ValueError):
            return {}
        if not isinstance(saved, dict) or not isinstance(saved.get("kernels"), dict):
            return {}
        kernels = saved["kernels"]
        return {"plan isa": saved.get("isa"), "kernels isa": kernels.get("isa"),
                "f32 gemm": kernels.get("f32_gemm"),
                "f32 gemm kc,mc,nc": kernels.get("f32_gemm_blocking"),
                "u8s8 gemm": kernels.get("u8s8_gemm"),
                # the planner's one arena for intermediates vs their sum without reuse
                "arena bytes": saved.get("arena_bytes"),
                "intermediate bytes": saved.get("intermediate_bytes")}

    def load(self, blobs: Mapping[str, bytes], model: ir.Model, target: Target | None,
             options: CompileOptions) -> CompiledModel:
        """Lower ``model`` with the value shapes saved in the plan blob, skipping ONNX shape
        inference (the slowest step of a native compile); compile when there is no blob."""
        blob = blobs.get(PLAN_FILE)
        if blob is None:
            return self.compile(model, target, options)
        limit = int(options.extra.get("max_tensor_bytes", DEFAULT_LIMIT))
        try:
            saved = json.loads(bytes(blob))
            shapes = _saved_shapes(saved["value_shapes"], limit)
            ok = shapes is not None
        except (ValueError, KeyError, TypeError):
            ok = False
        isa = plan_isa(target)
        if ok and saved.get("isa", isa) != isa:  # the target maps to another ISA now
            ok = False
        if not ok:
            raise ArtifactError(f"{PLAN_FILE} does not hold a native plan for this target; "
                                "recompile the model with `kiln compile`")
        return self._build(model, options, shapes, isa)

    def _build(self, model: ir.Model, options: CompileOptions,
               shapes: dict[str, tuple[tuple[int, ...], int]], isa: str
               ) -> NativeCompiledModel:
        if options.precision not in self.supported_precisions():
            raise UnsupportedError(f"native backend runs fp32 and int8 graphs, not "
                                   f"{options.precision}")
        extra = dict(options.extra)
        limit = int(extra.get("max_tensor_bytes", DEFAULT_LIMIT))
        threads = options.threads or os.cpu_count() or 1
        refused = [n for n in model.graph if support.refusal(n) is not None]
        if refused:
            model = expand_functions(model)
        # A target of the other architecture: build with the generic kernels here.
        build_isa = isa if runs_here(isa, _native().best_isa()) else "generic"
        graph = model.graph
        opsets = {("" if k == "ai.onnx" else k): v for k, v in graph.opset_imports.items()}

        initializers = {name: v for name, v in graph.initializers.items()}
        real_inputs = [v for v in graph.inputs
                       if v.name not in initializers and v.const_value is None]
        check_declared_dims(real_inputs, limit)
        nodes = list(graph)

        # Every node the native kernels cannot run, with the reason. What native refuses is
        # placed elsewhere by kiln's partitioner (kiln.runtime.executor), never here.
        unsupported = [] if not refused else [  # asked once per node when none is refused
            (n, r) for n in nodes if (r := support.refusal(n)) is not None]
        if unsupported:
            listing = "; ".join(f"'{n.name or '<unnamed>'}' ({n.domain or 'ai.onnx'}::"
                                f"{n.op_type}): {r}" for n, r in unsupported)
            raise UnsupportedError(f"native backend cannot run {len(unsupported)} node(s): "
                                   f"{listing}")

        graph_outputs = {v.name for v in graph.outputs}
        produced = {o.name for n in nodes for o in n.outputs if o is not None and o.name}
        # The graph runs as native plans split at each If / Loop / Scan: each subgraph is
        # compiled here to native plans of its own (recursively), which the control-flow
        # segment runs (once, per iteration, per scan step) with outer values bound by name.
        runs = _split_at_control_flow(nodes)
        needed_after = _needed_after(runs, graph_outputs)
        segments: list[Any] = []
        report_segments: list[dict[str, Any]] = []
        known_consts: dict[str, np.ndarray] = {}
        flow_consts: dict[str, np.ndarray] = {}
        mem = None
        kernels_segment = None
        for index, run_nodes in enumerate(runs):
            if _is_control_flow(run_nodes[0]):
                flow = run_nodes[0]
                for v in flow.inputs:  # constant operands are read from the run's values
                    if v is not None and v.name and v.const_value is not None:
                        flow_consts[v.name] = contiguous(v.const_value.numpy())
                segments.append(self._build_control_flow(flow, options, shapes, isa, opsets,
                                                         limit))
                report_segments.append({"engine": "native", flow.op_type: flow.name})
                continue
            seg_inputs, seg_outputs = _run_boundary(run_nodes, initializers,
                                                    needed_after[index])
            lowering = Lowering(opsets, limit, shapes)
            evaluator = (_Evaluator(limit, build_isa) if extra.get("fold_constants", True)
                         else None)
            run_consts: dict[str, np.ndarray] = {}
            lowered = lowering.lower(run_nodes, seg_inputs, seg_outputs, run_consts, evaluator)
            segment = NativeSegment(lowered, threads, limit, bool(extra.get("profile")),
                                    build_isa)
            later = set().union(graph_outputs, *needed_after)
            for vid, arr in lowered.constants.items():  # outputs that became constants
                if lowered.value_names[vid] in later:  # (weights read here only stay out)
                    run_consts.setdefault(lowered.value_names[vid], arr)
            known_consts.update(run_consts)
            segments.append(segment)
            report_segments.append({"engine": "native", "nodes": len(lowered.nodes)})
            if mem is None:
                mem, kernels_segment = lowered.memory, segment
        if mem is None:  # nothing but If nodes (or nothing at all)
            lowered = Lowering(opsets, limit, shapes).lower([], [], [], {}, None)
            kernels_segment = NativeSegment(lowered, threads, limit, False, build_isa)
            mem = lowered.memory
        segment = kernels_segment

        # Graph outputs that are plain constants (never computed by a node).
        out_consts: dict[str, np.ndarray] = {}
        out_consts.update(flow_consts)
        for name, arr in known_consts.items():  # folded values later plans read
            if any(name in needed for needed in needed_after):
                out_consts[name] = arr
        for v in graph.outputs:
            if v.name in produced and v.name not in known_consts:
                continue
            if v.name in known_consts:
                out_consts[v.name] = known_consts[v.name]
            elif v.const_value is not None:
                out_consts[v.name] = contiguous(v.const_value.numpy())
        report = {
            "segments": report_segments,
            "native_nodes": len(nodes),
            "folded_nodes": lowered.folded,
            "arena_bytes": mem.arena_bytes,
            # weights the plans read as they are (packed copies of MatMul / Gemm weights
            # replace theirs, which are dropped)
            "constant_bytes": sum(s.plan.constant_bytes for s in segments
                                  if isinstance(s, NativeSegment)),
            "intermediate_bytes": mem.intermediate_bytes,
            "dynamic_values": mem.dynamic_values,
            "threads": threads,
            "profile": bool(extra.get("profile")),
            # what the target asked for, and what the plans run on this CPU
            "plan_isa": isa,
            "kernels": (dict(segment.plan.kernels()) if build_isa == isa
                        else cross_kernels(isa)),
        }
        compiled = NativeCompiledModel([value_spec(v) for v in real_inputs],
                                       [value_spec(v) for v in graph.outputs], segments,
                                       out_consts, report)
        compiled.value_shapes = shapes
        return compiled

    def _build_control_flow(self, node: ir.Node, options: CompileOptions,
                            shapes: dict[str, tuple[tuple[int, ...], int]], isa: str,
                            opsets: Mapping[str, int],
                            limit: int) -> Any:
        bodies = []
        for key in support.SUBGRAPHS[node.op_type]:
            graph = node.attributes[key].value
            for domain, version in node.graph.opset_imports.items():  # a subgraph reads
                graph.opset_imports.setdefault(domain, version)          # the outer opsets
            bodies.append(self._build(ir.Model(graph, ir_version=10), options, shapes, isa))
        if node.op_type == "If":
            return IfSegment(node, bodies[0], bodies[1])
        if node.op_type == "Loop":
            return LoopSegment(node, bodies[0], limit)
        if opsets.get("", 0) < 9:
            raise UnsupportedError(f"native backend: Scan '{node.name}' of opset 8 (batched, "
                                   "with sequence_lens) is not implemented")
        return ScanSegment(node, bodies[0])


def _run_body(model: NativeCompiledModel, env: Mapping[str, np.ndarray],
              bound: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Runs a subgraph's plans over the outer values plus ``bound`` (its own inputs)."""
    inner = dict(env)
    for name, arr in model._constants.items():
        inner.setdefault(name, arr)
    inner.update(bound)
    for segment in model.segments:
        segment.run(inner)
    return [inner[spec.name] for spec in model.outputs]


class IfSegment:
    """An If: runs the plans of the branch its condition picks, over the outer values."""

    def __init__(self, node: ir.Node, then_model: NativeCompiledModel,
                 else_model: NativeCompiledModel) -> None:
        self.name = node.name or "<If>"
        self.cond = node.inputs[0].name
        self.output_names = [o.name for o in node.outputs]
        self.branches = (then_model, else_model)

    def run(self, env: dict[str, np.ndarray]) -> None:
        cond = env[self.cond]
        if cond.size != 1:
            raise InputError(f"native backend: If '{self.name}': the condition has "
                             f"{cond.size} elements, expected one")
        model = self.branches[0 if bool(cond.reshape(-1)[0]) else 1]
        for outer, arr in zip(self.output_names, _run_body(model, env, {})):
            if outer:
                env[outer] = arr

    def node_times(self) -> list[NodeTime]:
        return []


#: Iterations a Loop without a trip count may run before kiln calls it runaway.
MAX_LOOP_ITERATIONS = 1 << 24


class LoopSegment:
    """Loop(M, cond, v...): the body's plans once per iteration; scan outputs stacked."""

    def __init__(self, node: ir.Node, body: NativeCompiledModel, limit: int) -> None:
        self.name = node.name or "<Loop>"
        self.inputs = [v.name if v is not None else "" for v in node.inputs]
        self.output_names = [o.name for o in node.outputs]
        self.body = body
        self.body_inputs = [spec.name for spec in body.inputs]
        self.limit = limit

    def run(self, env: dict[str, np.ndarray]) -> None:
        trip = _scalar(env, self.inputs[0], self.name, "M")
        cond = _scalar(env, self.inputs[1], self.name, "cond") if len(self.inputs) > 1 else None
        carried = [env[n] for n in self.inputs[2:]]
        if trip is not None and trip < 0:
            trip = 0
        n_carried = len(carried)
        scans: list[list[np.ndarray]] = []
        i = 0
        while (trip is None or i < trip) and (cond is None or bool(cond)):
            if trip is None and i >= MAX_LOOP_ITERATIONS:
                raise InputError(f"native backend: Loop '{self.name}' ran {i} iterations "
                                 "without its condition turning false")
            feeds = [np.array(i, np.int64), np.array(True if cond is None else bool(cond))]
            bound = dict(zip(self.body_inputs, feeds + carried))
            out = _run_body(self.body, env, bound)
            cond = bool(np.asarray(out[0]).reshape(-1)[0]) if cond is not None else None
            carried = out[1:1 + n_carried]
            scans.append(out[1 + n_carried:])
            i += 1
        results = list(carried)
        n_scan = len(self.output_names) - n_carried
        for k in range(n_scan):
            if scans:
                results.append(np.stack([s[k] for s in scans]))
            else:
                results.append(_empty_stack(self.body.outputs[1 + n_carried + k]))
        for name, arr in zip(self.output_names, results):
            if name:
                env[name] = contiguous(arr)

    def node_times(self) -> list[NodeTime]:
        return []


class ScanSegment:
    """Scan(states..., scan inputs...): the body's plans once per step along each scan
    input's axis (reversed when its direction is 1); scan outputs stacked the same way."""

    def __init__(self, node: ir.Node, body: NativeCompiledModel) -> None:
        self.name = node.name or "<Scan>"
        self.inputs = [v.name for v in node.inputs]
        self.output_names = [o.name for o in node.outputs]
        self.body = body
        self.body_inputs = [spec.name for spec in body.inputs]
        m = int(node.attributes["num_scan_inputs"].as_int())
        self.n_states = len(self.inputs) - m
        k = len(self.output_names) - self.n_states

        def ints(key: str, n: int) -> list[int]:
            attr = node.attributes.get(key)
            return list(attr.as_ints()) if attr is not None else [0] * n

        self.in_axes, self.in_dirs = ints("scan_input_axes", m), ints("scan_input_directions", m)
        self.out_axes = ints("scan_output_axes", k)
        self.out_dirs = ints("scan_output_directions", k)

    def run(self, env: dict[str, np.ndarray]) -> None:
        states = [env[n] for n in self.inputs[:self.n_states]]
        xs = [env[n] for n in self.inputs[self.n_states:]]
        lengths = set()
        for j, x in enumerate(xs):
            axis = self.in_axes[j] % max(x.ndim, 1)
            xs[j] = np.moveaxis(x, axis, 0)
            lengths.add(xs[j].shape[0])
        if len(lengths) > 1:
            raise InputError(f"native backend: Scan '{self.name}': scan inputs differ in "
                             f"length along their scan axes ({sorted(lengths)})")
        steps = lengths.pop() if lengths else 0
        outs: list[list[np.ndarray]] = []
        for t in range(steps):
            slices = [contiguous(x[steps - 1 - t if d else t])
                      for x, d in zip(xs, self.in_dirs)]
            out = _run_body(self.body, env, dict(zip(self.body_inputs, states + slices)))
            states = out[:self.n_states]
            outs.append(out[self.n_states:])
        results = list(states)
        for k, (axis, direction) in enumerate(zip(self.out_axes, self.out_dirs)):
            seq = [o[k] for o in outs]
            if direction:
                seq = seq[::-1]
            if seq:
                stacked = np.stack(seq)
                results.append(np.moveaxis(stacked, 0, axis % stacked.ndim))
            else:
                results.append(_empty_stack(self.body.outputs[self.n_states + k]))
        for name, arr in zip(self.output_names, results):
            if name:
                env[name] = contiguous(np.ascontiguousarray(arr))

    def node_times(self) -> list[NodeTime]:
        return []


def _empty_stack(spec: TensorSpec) -> np.ndarray:
    """Zero steps of a scan output: [0, *its per-step shape] where that shape is known."""
    dims = spec.shape or ()
    per_step = tuple(d if isinstance(d, int) else 0 for d in dims)
    return np.zeros((0, *per_step), spec.dtype)


def _scalar(env: Mapping[str, np.ndarray], name: str, node: str, what: str) -> Any:
    if not name:
        return None
    arr = env[name]
    if arr.size != 1:
        raise InputError(f"native backend: Loop '{node}': {what} has {arr.size} elements, "
                         "expected one")
    return arr.reshape(-1)[0].item()


def _is_control_flow(node: ir.Node) -> bool:
    return node.op_type in support.SUBGRAPHS and node.domain in ("", "ai.onnx")


def _split_at_control_flow(nodes: list[ir.Node]) -> list[list[ir.Node]]:
    """Runs of plain nodes, each If / Loop / Scan node a run of its own."""
    runs: list[list[ir.Node]] = []
    for node in nodes:
        if _is_control_flow(node):
            runs.append([node])
        elif runs and not _is_control_flow(runs[-1][0]):
            runs[-1].append(node)
        else:
            runs.append([node])
    return runs


def _reads(node: ir.Node) -> set[str]:
    """Names ``node`` reads, those its subgraphs capture from outside included."""
    names = {v.name for v in node.inputs if v is not None and v.name}
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            for inner in ir.traversal.RecursiveGraphIterator(attr.value):
                names |= {v.name for v in inner.inputs if v is not None and v.name}
    return names


def _needed_after(runs: list[list[ir.Node]], graph_outputs: set[str]) -> list[set[str]]:
    """Per run, the names read by a later run or returned by the graph."""
    needed = [set() for _ in runs]
    later = set(graph_outputs)
    for i in range(len(runs) - 1, -1, -1):
        needed[i] = set(later)
        for node in runs[i]:
            later |= _reads(node)
    return needed


def _run_boundary(nodes: list[ir.Node], initializers: Mapping[str, ir.Value],
                  needed: set[str]) -> tuple[list[ir.Value], list[ir.Value]]:
    """A run's inputs (read, not made here, not constant) and outputs (made here, needed)."""
    produced = {o.name for n in nodes for o in n.outputs if o is not None and o.name}
    inputs: list[ir.Value] = []
    seen: set[str] = set()
    for n in nodes:
        for v in n.inputs:
            if v is None or not v.name or v.name in seen or v.name in produced:
                continue
            if v.name in initializers or v.const_value is not None:
                continue
            seen.add(v.name)
            inputs.append(v)
    outputs = [o for n in nodes for o in n.outputs if o is not None and o.name in needed]
    return inputs, outputs


def _ir_sizes(model: ir.Model) -> tuple[dict[str, tuple[tuple[int, ...], int]], bool]:
    """The static dims and item size of the graph inputs and node outputs of ``model`` (every
    graph) whose IR shape is static, as ``inferred_shapes`` gives them, and whether every one
    has a shape and dtype in the IR. A symbolic dim there is one the import's inference
    (with data propagation) and the passes since could not resolve, and ONNX's inference on
    a serialized copy does not either: on 18 real models (MiniLM-L6, YOLOv8n, PP-OCRv4,
    silero, openwakeword, ...) it gave no size for such a model's values that the IR did
    not, at 2-18 ms a compile; only values without any shape got sizes from it."""
    sizes: dict[str, tuple[tuple[int, ...], int]] = {}
    every_value_shaped = True
    for graph in model.graphs():
        for value in (*graph.inputs, *(v for node in graph for v in node.outputs)):
            if value.shape is None or value.dtype is None:
                every_value_shaped = every_value_shaped and not value.name  # unused outputs
                continue
            if value.name and static_bytes(value) is not None:
                sizes[value.name] = (tuple(value.shape),  # all ints: static_bytes checked
                                     np.dtype(value.dtype.numpy()).itemsize)
    return sizes, every_value_shaped


def _saved_shapes(saved: Any, limit: int) -> dict[str, tuple[tuple[int, ...], int]] | None:
    """The plan blob's value shapes, or None when they are not what kiln writes. A shape only
    lets a value use an arena slot (the executor checks the real size first, and a Concat
    whose inputs are not in their planned slots copies through a staging buffer), so a wrong
    one costs memory, never correctness; absurd ones are refused."""
    if not isinstance(saved, dict):
        return None
    shapes: dict[str, tuple[tuple[int, ...], int]] = {}
    for name, entry in saved.items():
        if not (isinstance(name, str) and isinstance(entry, list) and len(entry) == 2):
            return None
        dims, itemsize = entry
        if not (isinstance(dims, list) and all(type(d) is int and 0 <= d <= limit for d in dims)
                and itemsize in (1, 2, 4, 8, 16)):
            return None
        count = itemsize
        for d in dims:
            count *= d
            if count > limit:
                return None
        shapes[name] = (tuple(dims), itemsize)
    return shapes


class _Evaluator:
    """Runs one node on constant inputs with the native kernels (compile-time folding)."""

    def __init__(self, limit: int, isa: str = LEVELS[-1]) -> None:
        self.limit = limit
        self.isa = isa
        self._lock = threading.Lock()

    def __call__(self, node: ir.Node, attrs: dict[str, Any],
                 inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray] | None:
        if support.refusal(node) is not None:
            return None
        ext = _native()
        n_in = len(inputs)
        n_out = len(node.outputs)
        plan = ext.Plan(n_in + n_out)
        plan.set_isa(self.isa)
        plan.set_limit_bytes(self.limit)
        for i, arr in enumerate(inputs):
            if arr is not None:
                plan.add_constant(i, *to_carrier(contiguous(arr)))
        in_ids = [-1 if arr is None else i for i, arr in enumerate(inputs)]
        out_ids = [n_in + k for k in range(n_out)]
        where = f" (compile-time evaluation of node '{node.name}')"
        domain = "" if node.domain == "ai.onnx" else node.domain
        try:
            plan.add_node(node.name or "", domain, node.op_type, opset, in_ids, out_ids, attrs)
            plan.set_memory([-1] * (n_in + n_out), [0] * (n_in + n_out), 0, [[]])
            plan.set_io([], out_ids)
            return [from_carrier(arr, code) for arr, code in plan.run([])]
        except (ext.NodeError, ext.LimitError) as exc:
            err = _translate(exc, where)
            if isinstance(err, ResourceError):
                raise err from exc
            raise ModelError(str(err)) from exc

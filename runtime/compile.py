"""kiln.compile: a model, a backend (or a priority list) and a target in; a compiled model out.

    compiled = kiln.compile("m.onnx", backend="native", target="cpu:avx2,fma")
    compiled.save("m.kiln")              # the manifest records what compile decided
    kiln.Session(compiled).run(None, feeds)

The steps, in order, one function each:

1. ``choose_backends``   "auto", a name or a priority list -> ``BackendChoice``
2. ``Guards.from_options`` then ``guards.check_model`` (after import): resource limits
3. ``import_validated``  ONNX -> IR, checked against kiln's and the backends' limits;
                         ``fix_input_dims`` binds the symbolic input dims given as ``dims``
4. ``optimize``          the pass pipeline for the level, the target and the backends' caps
5. ``reduce``            prune / int8 / fp16 / bf16 when asked (``kiln.compiler.reduce``),
                         then ``optimize_reduced``: the backend's kernel ops (int8 kernels)
6. ``build``             ``backend.compile``, or partition and compile each piece; the
                         weights wait in a temporary file meanwhile (``runtime/weights.py``)

A ``.kiln`` artifact goes through ``load`` instead: ``choose_backends`` from its manifest,
``artifact_graph`` (parse + validate the stored graph), the guards, then ``restore`` (the
backend blobs when they fit, else a rebuild) or ``load_partitioned`` for a split model. An
engine fed ONNX (``Backend.loads_stored_graph``) takes the stored proto as it is: the guards
read the proto, and kiln's IR of the graph is built only if ``Compiled.model`` is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.backends import registry
from kiln.backends.base import PRECISIONS, Backend, CompiledModel, CompileOptions, TensorSpec
from kiln.backends.onnx_export import StoredGraph
from kiln.compiler.capabilities import KILN_DOMAIN, STANDARD_ONNX, BackendCaps
from kiln.compiler.frontend import import_model
from kiln.compiler.reduce import ReduceOptions, needs_reduction
from kiln.compiler.source_digest import (
    GRAPH_AS_READ,
    SOURCE_DIGEST,
    SOURCE_FILE,
    SourceDigest,
)
from kiln.compiler.target import Target
from kiln.errors import KilnError
from kiln.runtime import guards as guards_module

# imported with kiln, not on the first load: without a .pyc (PYTHONDONTWRITEBYTECODE) compiling
# it from source took 15-35 ms of the first load
from kiln.runtime.artifact import Artifact, load_artifact, restore_as_decided, restore_miss
from kiln.runtime.collector import older_objects_frozen
from kiln.runtime.placement import MIN_PARTITION_NODES, joint_caps
from kiln.runtime.release import release_parsed
from kiln.runtime.weights import offload_weights, release_maps

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.reduce import ReduceResult
    from kiln.compiler.report import CompileReport


#: Backends that, asked for by name, split off what they refuse to the fallback.
SPLIT_BY_DEFAULT = ("native",)
#: The step ``Compiled.save`` adds to an artifact's recorded pipeline when it folds the Conv ->
#: BatchNormalization pairs the compile left to the engine.
ARTIFACT_FOLD_STEP = "fuse-batchnorm-for-artifact"



@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """Which backend(s) compile the model, and why.

    name:       "native", or "native+onnxruntime" for a partitioned model.
    reason:     why (recorded in reports): "requested", or what "auto" found.
    backends:   the priority list; one name when the model is not partitioned.
    partitioned: whether the graph is split across ``backends`` (+ ``fallback``).
    fallback:   the backend taking what the list refuses (None: strict mode).
    by_name:    one backend asked for by name (not as a list): compiled whole when it
                refuses nothing, split only when it must.
    """

    name: str
    reason: str
    backends: tuple[str, ...]
    partitioned: bool = False
    fallback: str | None = None
    min_partition_nodes: int = MIN_PARTITION_NODES
    by_name: bool = False

    @property
    def engines(self) -> list[str]:
        """Every backend that may run a node: the list plus the fallback."""
        extra = [self.fallback] if self.partitioned and self.fallback else []
        return list(dict.fromkeys([*self.backends, *extra]))

    def caps(self) -> BackendCaps:
        """What the compiler may emit for these backends."""
        if self.partitioned:
            return joint_caps(self.backends)
        return registry.get_backend(self.name).caps()


@dataclasses.dataclass
class Compiled:
    """What ``kiln.compile`` decided and built: the optimized graph (``model``), the backend's
    compiled model (``engine``) and everything an artifact's manifest records."""

    #: the optimized graph, or a loaded artifact's stored graph whose IR ``model`` builds
    #: on first use
    graph_source: ir.Model | StoredGraph
    engine: CompiledModel
    choice: BackendChoice
    target: Target
    options: CompileOptions
    opt_level: int | None
    guards: guards_module.Guards
    checks: guards_module.RuntimeChecks
    placement: dict[str, Any] | None = None
    report: CompileReport | None = None
    reduction: ReduceResult | None = None
    reduce_options: ReduceOptions | None = None
    rebuild_reason: str | None = None
    source_sha256: str = ""  # a loaded artifact's, as its manifest records it
    source_digest: SourceDigest | None = None  # a compile's: the file hashed when first asked
    artifact: Artifact | None = None
    import_seconds: float = 0.0
    compile_seconds: float = 0.0
    folded_for_artifact: bool = False  # ``_fold_for_artifact`` folded ``model`` (once)

    @property
    def model(self) -> ir.Model:
        """The optimized graph (onnx_ir.Model). A load that handed its engine the stored proto
        builds it here, once, on the first request."""
        if isinstance(self.graph_source, StoredGraph):
            self.graph_source = self.graph_source.model()
        return self.graph_source

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self.engine.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self.engine.outputs)

    def sha256_of_source(self) -> str:
        """sha256 of the source model as it was read ("" when unknown)."""
        if self.source_digest is not None:
            return self.source_digest.hexdigest()
        return self.source_sha256

    def manifest_placement(self) -> dict[str, Any]:
        """The placement recorded in the manifest: the partitioned plan compile made, or the
        whole graph on the one backend that compiled it."""
        if self.placement is not None:
            return self.placement
        return whole_graph_placement(self.model, self.choice.name)

    def backend_version(self) -> str | None:
        if self.placement is not None:  # every piece's backend version
            return ", ".join(f"{b} {registry.availability(b).version}"
                             for b in self.placement["backends"])
        return registry.get_backend(self.choice.name).is_available().version

    def _fold_for_artifact(self) -> bool:
        """Fold the Conv -> BatchNormalization pairs a compile left to its engine
        (``BackendCaps.folds_conv_batchnorm``) before the graph is stored, in place; whether
        any was. Left unfolded, every load of the artifact would fold them again, and the
        engine's own optimized graph (onnxruntime's extended blob) would hold the folded
        weights a second time, so none would be stored. The running engine folded them itself:
        the graph means the same."""
        if self.folded_for_artifact:
            return True
        if (self.placement is not None or not _is_ir_model(self.graph_source)
                or (self.opt_level or 0) < 2
                or not registry.get_backend(self.choice.name).caps().folds_conv_batchnorm):
            return False
        from kiln.compiler.passes.fuse_batchnorm import FuseBatchNormPass

        if not FuseBatchNormPass()(self.graph_source).modified:
            return False
        if offload_weights(self.graph_source):  # the folded weights to a file, as compile does
            release_parsed(self.graph_source)
        self.folded_for_artifact = True
        return True

    def save(self, path: str | os.PathLike) -> Path:
        """Write a .kiln artifact: the optimized graph, the backend blobs, the manifest."""
        from kiln.runtime.artifact import save_artifact

        extra = {}
        if self.reduce_options is not None:
            extra["reduce"] = self.reduce_options.to_json()
        pipeline = list(self.report.pipeline) if self.report else []
        if self._fold_for_artifact():
            pipeline.append(ARTIFACT_FOLD_STEP)
        # the blobs are written once the weights are in the artifact: a backend can then
        # point its blob at them instead of storing a second copy
        return save_artifact(
            path, self.model, backend=self.choice.name,
            backend_version=self.backend_version(),
            placement=self.manifest_placement(), target=str(self.target),
            source_sha256=self.sha256_of_source(),
            pipeline=pipeline, level=self.opt_level,
            options=self.options.to_json(),
            inputs=[i.to_json() for i in self.inputs],
            outputs=[o.to_json() for o in self.outputs],
            write_blobs=self.engine.save_beside, extra=extra)


def compile(model: Any, backend: str | Sequence[str] = "auto",  # noqa: A001 - kiln.compile
            target: str | Target = "auto", precision: str | None = None,
            threads: int | None = None, opt_level: int | None = None,
            reduce: ReduceOptions | None = None, **options: Any) -> Compiled:
    """Compile ``model`` for ``backend`` on ``target``; see ``kiln.Session`` for the
    arguments. ``reduce`` (or its fields as keyword arguments) prunes / lowers precision.
    A ``.kiln`` path is loaded (``load``) instead."""
    check_arguments(precision, threads)
    if is_artifact_path(model):
        if reduce is not None or ReduceOptions.pop_from(options) is not None:
            raise KilnError("an artifact is already compiled; reduce the source model "
                            "instead")
        return load(model, backend, target, precision, threads, **options)
    # the pass pipeline (and onnxscript's rewriter under it) is imported by a compile, never
    # by a load: a warm load's first full garbage collection walks every object imports made.
    # Imported before the freeze below, so its module objects are left out of the scans too.
    importlib.import_module("kiln.compiler.pipeline")

    with older_objects_frozen():  # the collector scans only what the compile makes
        return _compile_source(model, backend, target, precision, threads, opt_level, reduce,
                               options)


def _compile_source(model: Any, backend: str | Sequence[str], target: str | Target,
                    precision: str | None, threads: int | None, opt_level: int | None,
                    reduce: ReduceOptions | None, options: dict[str, Any]) -> Compiled:
    """``compile``'s work on a model that is not an artifact."""
    from kiln.compiler.pipeline import DEFAULT_LEVEL, optimize, optimize_reduced

    target = Target.parse(target)
    started = time.perf_counter()
    choice = choose_backends(backend, target, options)
    guards = guards_module.Guards.from_options(options)
    reduce = reduce or ReduceOptions.pop_from(options)
    # dims: a size binds the dim for good; a (min, opt, max) range keeps it symbolic and goes
    # on to the backends that plan for ranges (TensorRT's optimization profile)
    dims = dict(options.pop("dims", None) or {})
    ranges = {k: v for k, v in dims.items() if isinstance(v, (tuple, list))}
    if ranges:
        options["dims"] = ranges
    device = str(options.pop("device", "CPU"))
    registry.check_options(list(options))
    compile_options = CompileOptions(precision=precision or "fp32", threads=threads,
                                     device=device, extra=options)
    level = DEFAULT_LEVEL if opt_level is None else opt_level
    # the backends asked for, not the fallback: its limits count where a piece goes to it
    graph = import_validated(model, choice.backends)
    # the frontend's import infers every shape; an IR model handed in, or new input dims, not
    shapes_inferred = not _is_ir_model(model) and len(ranges) == len(dims)
    if len(ranges) < len(dims):
        from kiln.runtime.input_dims import fix_input_dims

        fix_input_dims(graph, {k: v for k, v in dims.items() if k not in ranges})
    # Before the optimizer, whose constant folding would build what the guards refuse.
    checks = guards_module.check_model(graph, guards, choice.engines)
    source_digest = graph.meta.get(SOURCE_DIGEST)
    imported = time.perf_counter()
    caps = choice.caps()

    def engine_for(graph: ir.Model, as_read: bool = False) -> tuple[Any, Any]:
        """The engine for ``graph`` (weights to a file first when one engine takes it whole);
        ``as_read``: a graph no step changed, which an engine fed ONNX reads from the user's
        file."""
        whole = not choice.partitioned or runs_whole(graph, choice, compile_options.device)
        if whole and offload_weights(graph):  # the engine reads them from a file, not memory
            release_parsed(graph)
        if whole and as_read:
            graph.meta[SOURCE_FILE] = graph.meta[SOURCE_DIGEST]
        try:
            return guards_module.call_with_timeout(
                lambda: build(graph, choice, target, compile_options, whole), guards.timeout,
                f"compiling for {choice.name}")
        finally:
            graph.meta.pop(SOURCE_FILE, None)  # only for this build: passes change graphs

    reduction = None
    if not needs_reduction(graph, compile_options.precision, caps.precision_hints, reduce):
        graph, report = optimize(graph, level, target, caps, shapes_inferred)
        as_read = (len(ranges) == len(dims) and graph.meta.get(GRAPH_AS_READ, False)
                   and not any(record.modified for record in report.passes))
        engine, placement = engine_for(graph, as_read)
    else:
        # Quantizers and converters read standard ONNX: no kiln-domain fusions first.
        fp32_graph, report = optimize(graph, level, target, STANDARD_ONNX, shapes_inferred)
        reduce = (reduce or ReduceOptions()).materialized()
        passes_before = len(report.passes)

        def reduced(caps: BackendCaps, check_for: Any) -> tuple[ir.Model, Any, Any]:
            """fp32_graph reduced for ``caps`` and written in its kernel ops, the reduction,
            and ``check_for(standard graph, reduction)``: the engine check, made from the
            standard-ONNX graph before the kernel ops replace it in place."""
            graph, reduction = reduce_graph(fp32_graph, choice, target, compile_options, caps,
                                            reduce)
            check = check_for(graph, reduction)
            del report.passes[passes_before:]  # a second placement runs them again
            return optimize_reduced(graph, report, caps), reduction, check

        graph, reduction, check = reduced(caps, lambda standard, reduction: Int8Check.prepare(
            standard, reduction, choice.name, caps, reduce))
        engine, placement = engine_for(graph)
        if check is not None and not check.agrees(engine):
            # The engine miscomputes this Q/DQ placement: the chained one, else a clear error.
            del engine, graph  # two engines at once would double the peak
            caps = dataclasses.replace(caps, static_int8="chained")
            graph, reduction, check = reduced(
                caps, lambda standard, _, first=check: first.for_graph(standard, "chained"))
            engine, placement = engine_for(graph)
            if not check.agrees(engine):
                check.refuse()
            reduction.notes.append(check.replaced)
    release_maps(graph)
    if placement is not None and choice.backends == (choice.name,):  # "native" was split
        choice = dataclasses.replace(choice, name="+".join(placement["backends"]))
    return Compiled(graph, engine, choice, target, compile_options, level, guards, checks,
                    placement=placement, report=report, reduction=reduction,
                    reduce_options=reduce,
                    source_digest=source_digest, import_seconds=imported - started,
                    compile_seconds=time.perf_counter() - imported)


def _is_ir_model(model: Any) -> bool:
    import onnx_ir as ir

    return isinstance(model, ir.Model)


def check_arguments(precision: str | None, threads: int | None) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise KilnError(f"unknown precision '{precision}'; choose one of "
                        f"{', '.join(PRECISIONS)}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise KilnError(f"threads must be a positive integer or None, not {threads!r}")


def is_artifact_path(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".kiln"


def choose_backends(backend: str | Sequence[str], target: Target,
                    options: dict[str, Any]) -> BackendChoice:
    """Step 1: "auto", one registry name, or a priority list ("native,onnxruntime" or a
    list); a list takes ``fallback`` and ``min_partition_nodes`` out of ``options``."""
    if isinstance(backend, str) and "," in backend:  # "native,onnxruntime" from the CLI
        backend = [b.strip() for b in backend.split(",") if b.strip()]
    if isinstance(backend, (list, tuple)):
        names = tuple(str(b) for b in backend)
        fallback = options.pop("fallback", "onnxruntime")
        min_nodes = int(options.pop("min_partition_nodes", MIN_PARTITION_NODES))
        reason = "requested: partitioned in this priority order" + (
            " (strict: fallback=None)" if fallback is None else f", fallback {fallback}")
        return BackendChoice("+".join(names), reason, names, True, fallback, min_nodes)
    if backend == "auto":
        name, reason = registry.choose_auto(target)
    else:
        name, reason = str(backend), "requested"
    registry.require(name)
    if name in SPLIT_BY_DEFAULT:
        # What this backend refuses goes to the fallback through the one partitioner
        # (kiln.runtime.executor); fallback=None keeps it whole and strict.
        fallback = options.pop("fallback", "onnxruntime")
        if fallback is not None:
            min_nodes = int(options.pop("min_partition_nodes", 1))
            return BackendChoice(name, f"{reason}, fallback {fallback} for what it refuses",
                                 (name,), True, fallback, min_nodes, by_name=True)
    return BackendChoice(name, reason, (name,))


def import_validated(model: Any, backends: Sequence[str]) -> ir.Model:
    """Step 3: import (or, for an IR model, validate a copy) against kiln's and
    ``backends``' limits."""
    import onnx_ir as ir

    from kiln.compiler.frontend import aside_tensors, keep_aside, normalize
    from kiln.compiler.validate import kiln_limits, validate_proto

    limits = limits_of(backends)
    if isinstance(model, ir.Model):
        proto = ir.serde.serialize_model(model)
        # a model import_model read from a large file maps its weights in kiln's own folder
        # (external data in the proto); they stay there, every other tensor must be in memory
        aside = aside_tensors(model)
        validate_proto(proto, "<onnx_ir.Model>", [kiln_limits(), *limits],
                       external_ok=frozenset(aside))
        normalize(proto)  # -1 dims dynamic, unused imports dropped, as import_model does
        # passes rewrite in place: work on a copy so the caller's model stays as given
        copy = ir.from_proto(proto)
        keep_aside(copy, aside)
        return copy
    return import_model(model, limits=limits)


def limits_of(backends: Sequence[str]) -> list:
    """The limits every backend in ``backends`` states (kiln checks them before handing over)."""
    return [lim for lim in map(registry.backend_limits, backends) if lim is not None]


def reduce_graph(graph: ir.Model, choice: BackendChoice, target: Target,
                 options: CompileOptions, caps: BackendCaps,
                 reduce: ReduceOptions) -> tuple[ir.Model, ReduceResult]:
    """Step 5: prune and/or lower the precision of ``graph`` (kiln.compiler.reduce); the
    speed gate times candidates on the chosen backend."""
    from kiln.compiler.reduce import reduce_model

    measure = None
    if reduce.speed_gate:
        if choice.partitioned:
            raise KilnError("speed_gate times one backend; pick one, not a list")
        measure = gate_timer(graph, choice.name, target, options.threads, reduce)
    result = reduce_model(graph, target, precision=options.precision, measure=measure,
                          dynamic_form=caps.dynamic_int8, static_form=caps.static_int8,
                          **reduce.model_kwargs())
    return result.model, result


def gate_timer(graph: ir.Model, backend: str, target: Target, threads: int | None,
               reduce: ReduceOptions) -> Any:
    """The speed gate's timer: ``backend`` itself, on one real sample when there is one."""
    from kiln.runtime.quantize_gate import measure_with_backend

    return measure_with_backend(backend, one_sample(graph, reduce), target, threads)


def one_sample(graph: ir.Model, reduce: ReduceOptions) -> dict[str, Any]:
    """An evaluation sample, else a calibration sample, else a random one."""
    from kiln.compiler import calibrate

    if reduce.eval_samples:
        return dict(reduce.eval_samples[0])
    if reduce.calibration is not None and not isinstance(reduce.calibration, str):
        return dict(next(iter(reduce.calibration)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", calibrate.RandomCalibrationWarning)
        return calibrate.random_samples(graph, 1)[0]


@dataclasses.dataclass
class Int8Check:
    """An int8 compile's check that its engine computes the quantized graph as onnxruntime
    does (runtime/engine_check.py): the sample, onnxruntime's outputs on the standard-ONNX
    graph, the Q/DQ placement checked and what the last check found."""

    backend: str
    feeds: dict[str, Any]
    expected: dict[str, Any]
    form: str
    worst: float = 1.0
    where: str = ""
    replaced: str = ""  # what the first placement's failure made the compile do

    @classmethod
    def prepare(cls, standard: ir.Model, reduction: Any, backend: str, caps: BackendCaps,
                reduce: ReduceOptions) -> Int8Check | None:
        """The check of an int8 graph on an engine other than onnxruntime (the reference
        itself); None for anything else."""
        quant = reduction.quantization
        if quant is None or not quant.quantized or backend == "onnxruntime":
            return None
        from kiln.runtime.engine_check import reference_outputs

        feeds = one_sample(standard, reduce)
        return cls(backend, feeds, reference_outputs(standard, feeds),
                   caps.static_int8 if quant.mode == "static" else "dynamic")

    def agrees(self, engine: Any) -> bool:
        """Whether ``engine`` agrees with the reference; a KilnError when it does not and no
        other placement is left to try (only the "inputs" one has a fallback)."""
        from kiln.runtime.engine_check import MIN_COSINE, agreement

        self.worst, self.where = agreement(self.expected, engine, self.feeds)
        if self.worst >= MIN_COSINE:
            return True
        if self.form != "inputs":
            self.refuse()
        self.replaced = (f"{self.backend} computed the '{self.form}' Q/DQ placement "
                         f"differently from onnxruntime (output {self.where}: cosine "
                         f"{self.worst:.3f}); compiled with the chained placement instead")
        return False

    def for_graph(self, standard: ir.Model, form: str) -> Int8Check:
        """The same check for another placement's graph."""
        from kiln.runtime.engine_check import reference_outputs

        return dataclasses.replace(self, expected=reference_outputs(standard, self.feeds),
                                   form=form)

    def refuse(self) -> None:
        from kiln.runtime.engine_check import MIN_COSINE

        tried = "both Q/DQ placements" if self.replaced else f"the '{self.form}' placement"
        raise KilnError(f"{self.backend} computes this int8 graph differently from "
                        f"onnxruntime in {tried} (output {self.where}: cosine "
                        f"{self.worst:.3f}, below {MIN_COSINE}); compile with precision fp32 "
                        "or for another backend")


def build(graph: ir.Model, choice: BackendChoice, target: Target, options: CompileOptions,
          whole: bool | None = None) -> tuple[CompiledModel, dict[str, Any] | None]:
    """Step 6: the backend's compiled model, and the placement when the graph was split
    (``whole``: whether one backend takes the graph whole, when the caller knows)."""
    if whole is None:
        whole = not choice.partitioned or runs_whole(graph, choice, options.device)
    if whole:
        return registry.get_backend(choice.name).compile(graph, target, options), None
    from kiln.runtime.executor import compile_partitioned

    pieces = compile_partitioned(graph, choice.backends, target, options, choice.fallback,
                                 choice.min_partition_nodes)
    return pieces, pieces.placement


def runs_whole(graph: ir.Model, choice: BackendChoice, device: str) -> bool:
    """A single backend with a fallback that refuses no node compiles the graph whole.

    Its whole-model verdicts count too (OpenVINO's query refuses what its plugin cannot
    compile, e.g. an If of unknown rank, though each node alone looks supported)."""
    if not choice.by_name:
        return False
    backend = registry.get_backend(choice.name)
    verdicts = backend.capability(graph, device)
    return all((verdicts[node] if node in verdicts else backend.refusal(node)) is None
               for node in graph.graph)


def whole_graph_placement(model: ir.Model, backend: str) -> dict[str, Any]:
    """The placement of a model one backend compiled whole (no backend is asked again)."""
    from kiln.compiler.partition import Capability, plan_partitions
    from kiln.runtime.placement import placement_to_json

    return placement_to_json(plan_partitions(model, [Capability(backend, _runs_everything)]))


def _runs_everything(node: ir.Node) -> str | None:
    return None


# ------------------------------------------------------------------------------------------
# Loading an artifact


def load(path: str | os.PathLike, backend: str | Sequence[str] = "auto",
         target: str | Target = "auto", precision: str | None = None,
         threads: int | None = None, **options: Any) -> Compiled:
    """A verified .kiln artifact as a ``Compiled``: its stored graph on its backend(s), from
    its blobs when they fit this machine and these options, else rebuilt."""
    check_arguments(precision, threads)
    started = time.perf_counter()
    # a full collection falling inside the load walked every object the process held (with
    # the compile pipeline imported: ~110 ms of YOLOv8n's guards); as in a compile, the
    # collector scans only what the load makes
    with older_objects_frozen():
        # the weights member is hashed beside the parse and the engine's build, and checked
        # before anything built from it is handed out
        artifact = load_artifact(path, check_weights_later=True)
        try:
            compiled = _load_checked(artifact, started, backend, target, precision, threads,
                                     options)
        except BaseException:
            artifact.check_weights()  # damaged weights explain a failure better
            raise
        artifact.check_weights()
    return compiled


def _load_checked(artifact: Artifact, started: float, backend: str | Sequence[str],
                  target: str | Target, precision: str | None, threads: int | None,
                  options: dict[str, Any]) -> Compiled:
    """``load``'s work on an artifact whose graph and blobs were checked."""
    manifest = artifact.manifest
    target = artifact_target(target, artifact.target)
    built = manifest["pipeline"].get("options") or {}
    precision = precision or built.get("precision")
    options.setdefault("device", built.get("device") or "CPU")
    if backend == "auto":  # what the artifact was compiled for
        backend = artifact.backend
        placed = manifest.get("placement") or {}
        if "+" in backend and placed.get("backends"):  # a partitioned artifact
            backend = list(placed["backends"])
            options.setdefault("fallback", None)
            options.setdefault("min_partition_nodes", placed.get("min_partition_nodes", 3))
    choice = choose_backends(backend, target, options)
    if choice.partitioned and choice.backends == (choice.name,) and "+" not in \
            artifact.backend:  # stored whole: nothing left this backend when it was compiled
        choice = dataclasses.replace(choice, partitioned=False, fallback=None)
    guards = guards_module.Guards.from_options(options)
    device = str(options.pop("device", "CPU"))
    registry.check_options(list(options))
    compile_options = CompileOptions(precision=precision or "fp32", threads=threads,
                                     device=device, extra=options)
    stored = artifact_graph(artifact, choice.engines, choice.caps().kiln_ops)
    chosen = None if choice.partitioned else registry.get_backend(choice.name)
    miss = None if chosen is None else restore_miss(artifact, chosen, target, compile_options)
    placement = None
    graph: ir.Model | StoredGraph
    offload = chosen is not None and needs_weights_file(artifact, chosen, miss)
    if chosen is not None and chosen.loads_stored_graph and not offload:
        # the engine reads the stored proto (and its weights in the .kiln): no IR is built
        from kiln.runtime.guards_view import proto_model

        graph = stored
        checks = guards_module.check_model(proto_model(stored.proto, stored.weights_dir),
                                           guards, choice.engines)
        imported = time.perf_counter()
        engine, why = restore_as_decided(artifact, chosen, target, compile_options, miss, stored)
    else:
        graph = stored.model()
        checks = guards_module.check_model(graph, guards, choice.engines)
        imported = time.perf_counter()
        if chosen is None:
            from kiln.runtime.executor import load_partitioned

            engine, why = load_partitioned(artifact, graph, choice, target, compile_options)
            placement = engine.placement
        else:
            if offload:
                offload_weights(graph)  # as compile does: engines read the weights from a file
            release_parsed(graph)  # when the weights went to a file: the protobuf is not needed
            engine, why = restore_as_decided(artifact, chosen, target, compile_options, miss,
                                             graph)
            release_maps(graph)
    artifact.release_payload()  # the engine holds what it needs; the manifest stays
    return Compiled(graph, engine, choice, target, compile_options,
                    manifest["pipeline"].get("level"), guards, checks, placement=placement,
                    rebuild_reason=why, source_sha256=manifest.get("source", {}).get(
                        "sha256", ""), artifact=artifact, import_seconds=imported - started,
                    compile_seconds=time.perf_counter() - imported)


def needs_weights_file(artifact: Artifact, backend: Backend, miss: str | None) -> bool:
    """Whether ``backend`` needs the artifact's weights in a file of kiln's own
    (``offload_weights``). Not when the weights live in their own member of the .kiln (format
    2) and the engine reads them there (mapped, or as external data of the artifact file), or
    imports its own blob (``miss``, from ``restore_miss``, is None) and never reads the
    graph's weights."""
    if artifact.weights is None:  # 1.x: inline in the parsed graph, whose protobuf goes
        return True
    if backend.reads_artifact_weights:
        return False
    return not (artifact.blobs and miss is None)


def artifact_target(requested: str | Target, built: str) -> Target:
    """The target a loaded artifact runs for: the one asked for; for "auto", the one it was
    compiled for when this machine has every feature that target names (an AVX2 artifact
    runs as compiled on an AVX-512 machine), else this machine."""
    if not (isinstance(requested, str) and requested.strip().lower() in ("", "auto")):
        return Target.parse(requested)
    here = Target.detect()
    try:
        compiled_for = Target.parse(built)
    except KilnError:  # a target this kiln does not know: run for this machine
        return here
    if str(compiled_for) == str(here):
        return here  # compiled for this machine: keep what detection knows (cores, caches)
    if compiled_for.kind == here.kind == "cpu" and compiled_for.features <= here.features:
        return compiled_for
    return here


def artifact_graph(artifact: Artifact, backends: Sequence[str],
                   kiln_ops: frozenset[str] | None = None) -> StoredGraph:
    """The artifact's graph, parsed and validated: hashes prove integrity, not intent.
    kiln-domain ops outside ``kiln_ops`` (None: keep them all) are written back as standard
    ONNX first, so a native artifact also loads on onnxruntime or OpenVINO. The artifact's
    model bytes are released once parsed; kiln's IR is built by ``StoredGraph.model``, when
    asked."""
    import onnx_ir as ir

    from kiln.compiler.frontend import parse_bytes
    from kiln.compiler.validate import kiln_limits, validate_proto

    name = f"{artifact.path.name}:model.onnx"
    mapped = artifact.weights is not None  # format 2: weights in their own member
    proto = parse_bytes(artifact.model_bytes, name, mapped)  # ModelError if it does not parse
    artifact.model_bytes = b""  # parsed: the bytes and the proto are not held together
    artifact.attach_weights(proto)  # external tensors -> the .kiln file, bounds checked
    if kiln_ops is not None and _expands(proto, kiln_ops):
        validate_proto(proto, name, [kiln_limits()], mapped)
        model = ir.from_proto(proto)
        from kiln.compiler.passes.expand_kiln_ops import ExpandKilnOpsPass

        ExpandKilnOpsPass(keep=kiln_ops)(model)
        proto = ir.to_proto(model)
    validate_proto(proto, name, [kiln_limits(), *limits_of(backends)], mapped)
    return StoredGraph(proto, str(artifact.path.resolve().parent), artifact.attach_weights)


def _expands(proto: Any, kiln_ops: frozenset[str]) -> bool:
    """Whether ``ExpandKilnOpsPass(keep=kiln_ops)`` would change ``proto``'s graph: a top-level
    kiln-domain node outside ``kiln_ops``, or a kiln import no node uses (the pass drops it).
    A native artifact loaded on native changes nothing, and skips the IR round trip."""
    from kiln.compiler.validate import used_domains

    if not any(o.domain == KILN_DOMAIN for o in proto.opset_import):
        return False
    if any(n.domain == KILN_DOMAIN and n.op_type not in kiln_ops for n in proto.graph.node):
        return True
    return KILN_DOMAIN not in used_domains(proto)

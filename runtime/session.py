"""kiln.Session: compile (or load) a model for one backend and run it, onnxruntime-style.

    sess = kiln.Session("model.onnx", backend="openvino", precision="fp32", threads=2)
    [probs] = sess.run(None, {"data": x})
    out = sess(data=x)            # dict of every output
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.backends import registry
from kiln.backends.base import PRECISIONS, CompiledModel, CompileOptions, TensorSpec
from kiln.compiler.frontend import ModelSource, import_model
from kiln.compiler.pipeline import DEFAULT_LEVEL, optimize
from kiln.compiler.report import CompileReport
from kiln.compiler.target import Target
from kiln.errors import InputError, KilnError
from kiln.runtime import guards as guards_module
from kiln.runtime.feeds import check_feeds
from kiln.runtime.placement import joint_caps


class Session:
    """One model compiled for one backend, ready to run.

    model:     path to an .onnx file or a .kiln artifact, ONNX bytes, an onnx.ModelProto, or an
               onnx_ir.Model. An artifact is verified and runs its stored optimized graph
               (and backend blobs when they fit this backend version and target).
    backend:   "auto" (chosen by target and availability; ``backend_reason`` says why) or a
               registry name: "onnxruntime", "openvino", "native", "tensorrt"; or a list of
               names in priority order, e.g. ["native", "onnxruntime"]: the graph is split
               into per-backend partitions (``placement`` describes them). With a list,
               ``fallback`` (default "onnxruntime") takes what the list refuses;
               ``fallback=None`` is strict mode and raises kiln.UnsupportedError naming
               every node no listed backend runs.
    target:    "auto" (this machine), a Target, or its string form ("cpu:avx2,fma").
    precision: "fp32" (default), "fp16", "bf16" or "int8"; never chosen silently (an
               artifact runs at the precision it was compiled for unless told otherwise).
    threads:   intra-op threads (None = every core).
    opt_level: 0 (import only), 1 (cleanup), 2 (default: + fusions), 3 (+ target choices).
    options:   backend-specific settings passed through (e.g. ``device="GPU"`` for OpenVINO,
               ``fallback=None`` for strict native runs), and the reduction options of
               ``kiln compile`` (``REDUCE_OPTIONS``: ``calibration``, ``quantization_mode``,
               ``exclude``, ``max_accuracy_drop``, ``prune``, ``speed_gate``, ...).

    A precision the graph does not carry yet is made in it, never assumed: ``precision=
    "int8"`` on a float model quantizes it (dynamic for models without Conv and without
    ``calibration``, static otherwise), fp16/bf16 convert it, unless the backend applies
    that precision itself (OpenVINO's hint). ``reduction`` then holds the report (accuracy,
    what was quantized, speed-gate decisions); it is None when nothing was reduced.
    """

    def __init__(self, model: ModelSource | Any, backend: str | Sequence[str] = "auto",
                 target: str | Target = "auto", precision: str | None = None,
                 threads: int | None = None, opt_level: int | None = None, **options: Any):
        if precision is not None and precision not in PRECISIONS:
            raise KilnError(f"unknown precision '{precision}'; choose one of "
                            f"{', '.join(PRECISIONS)}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise KilnError(f"threads must be a positive integer or None, not {threads!r}")
        self.target = Target.parse(target) if not isinstance(target, Target) else target
        self.artifact = None
        if isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".kiln":
            from kiln.runtime.artifact import load_artifact

            self.artifact = load_artifact(model)
            # What the artifact was compiled with, unless asked otherwise (its blobs fit it).
            built = self.artifact.manifest["pipeline"].get("options") or {}
            precision = precision or built.get("precision")
            options.setdefault("device", built.get("device") or "CPU")
            if backend == "auto":
                backend = self.artifact.backend
                built = self.artifact.manifest.get("placement") or {}
                if "+" in backend and built.get("backends"):  # a partitioned artifact
                    backend = list(built["backends"])
                    options.setdefault("fallback", None)
                    options.setdefault("min_partition_nodes",
                                       built.get("min_partition_nodes", 3))
        # --- heterogeneous partitioning (kiln.runtime.executor): backend=[...] ---------------
        if isinstance(backend, str) and "," in backend:  # "native,onnxruntime" from the CLI
            backend = [b.strip() for b in backend.split(",") if b.strip()]
        partitioned = isinstance(backend, (list, tuple))
        self.placement: dict[str, Any] | None = None
        if partitioned:
            backends = [str(b) for b in backend]
            fallback = options.pop("fallback", "onnxruntime")
            min_nodes = int(options.pop("min_partition_nodes", 3))
            self.backend_name = "+".join(backends)
            self.backend_reason = "requested: partitioned in this priority order" + (
                " (strict: fallback=None)" if fallback is None else f", fallback {fallback}")
        # ------------------------------------------------------------------------------------
        elif backend == "auto":
            self.backend_name, self.backend_reason = registry.choose_auto(self.target)
        else:
            self.backend_name, self.backend_reason = backend, "requested"
        if not partitioned:
            self._backend = registry.require(self.backend_name)
        # --- resource guards (runtime/guards.py): max_memory, timeout, max_loop_iterations -
        self.guards = guards_module.Guards.from_options(options)
        guarded = list(backends) + ([fallback] if fallback else []) if partitioned \
            else [self.backend_name]
        # ------------------------------------------------------------------------------------
        device = str(options.pop("device", "CPU"))
        reduce_options = {k: options.pop(k) for k in REDUCE_OPTIONS if k in options}
        if self.artifact is not None and reduce_options:
            raise KilnError(f"{sorted(reduce_options)}: an artifact is already compiled; "
                            "reduce the source model instead")
        self.options = CompileOptions(precision=precision or "fp32", threads=threads,
                                      device=device,
                                      extra=options)
        self.report: CompileReport | None = None
        self.reduction: Any = None
        self.rebuild_reason: str | None = None
        started = time.perf_counter()
        if self.artifact is not None:
            from kiln.runtime.artifact import restore

            self.model = self._artifact_model(self.artifact, guarded)
            self._checks = guards_module.check_model(self.model, self.guards, guarded)
            self.opt_level = self.artifact.manifest["pipeline"].get("level")
            self.import_seconds = time.perf_counter() - started
            started = time.perf_counter()
            if partitioned:  # pieces are recompiled from the stored optimized graph
                from kiln.runtime.executor import compile_partitioned

                pieces = compile_partitioned(self.model, backends, self.target, self.options,
                                             fallback, min_nodes)
                self.placement, self._compiled = pieces.placement, pieces
                self.rebuild_reason = (f"{self.artifact.path.name}: partitioned artifacts are "
                                       "recompiled piece by piece from model.onnx")
            else:
                self._compiled, self.rebuild_reason = restore(
                    self.artifact, self._backend, self.target, self.options, self.model)
        else:
            self.opt_level = DEFAULT_LEVEL if opt_level is None else opt_level
            self.model = self._import(model, guarded)
            # Before the optimizer, whose constant folding would build what the guards refuse.
            self._checks = guards_module.check_model(self.model, self.guards, guarded)
            self.source_sha256 = self.model.meta.get("kiln.source_sha256", "")
            self.import_seconds = time.perf_counter() - started
            started = time.perf_counter()
            caps = joint_caps(backends) if partitioned else self._backend.caps()
            if _needs_reduction(self.model, self.options.precision, caps, reduce_options):
                from kiln.compiler.capabilities import STANDARD_ONNX

                # Quantizers and converters read standard ONNX: no kiln-domain fusions first.
                self.model, self.report = optimize(self.model, self.opt_level, self.target,
                                                   STANDARD_ONNX)
                self.model, self.reduction = self._reduce(caps, reduce_options, backends if
                                                          partitioned else None)
            else:
                self.model, self.report = optimize(self.model, self.opt_level, self.target,
                                                   caps)
            if partitioned:
                from kiln.runtime.executor import compile_partitioned

                pieces = guards_module.call_with_timeout(
                    lambda: compile_partitioned(self.model, backends, self.target, self.options,
                                                fallback, min_nodes),
                    self.guards.timeout, f"compiling for {self.backend_name}")
                self.placement = pieces.placement
                self._compiled: CompiledModel = pieces
            else:
                self._compiled = guards_module.call_with_timeout(
                    lambda: self._backend.compile(self.model, self.target, self.options),
                    self.guards.timeout, f"compiling for {self.backend_name}")
        self.compile_seconds = time.perf_counter() - started

    def _reduce(self, caps: Any, reduce_options: dict[str, Any],
                partitioned: Sequence[str] | None) -> tuple[Any, Any]:
        """Prune and/or lower the precision of ``self.model`` (kiln.compiler.reduce)."""
        from kiln.compiler.reduce import reduce_model

        wanted = dict(reduce_options)
        wanted.pop("convert_precision", None)
        measure = None
        if wanted.pop("speed_gate", False):
            if partitioned is not None:
                raise KilnError("speed_gate times one backend; pick one, not a list")
            measure = self._gate_measure(wanted)
        result = reduce_model(self.model, self.target, precision=self.options.precision,
                              measure=measure, dynamic_form=caps.dynamic_int8, **wanted)
        return result.model, result

    def _gate_measure(self, wanted: Mapping[str, Any]) -> Any:
        """The speed gate's timer: this backend, one real sample when there is one."""
        import warnings

        from kiln.compiler import calibrate
        from kiln.runtime.quantize_gate import measure_with_backend

        samples = wanted.get("eval_samples")
        calibration = wanted.get("calibration")
        if samples:
            feeds = dict(samples[0])
        elif calibration is not None and not isinstance(calibration, str):
            feeds = dict(next(iter(calibration)))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", calibrate.RandomCalibrationWarning)
                feeds = calibrate.random_samples(self.model, 1)[0]
        return measure_with_backend(self.backend_name, feeds, self.target, self.options.threads)

    @staticmethod
    def _import(model: Any, backends: Sequence[str]):
        """Import (or, for an IR model, validate) against kiln's and ``backends``' limits."""
        import onnx_ir as ir

        from kiln.compiler.validate import kiln_limits, validate_proto

        limits = _limits_of(backends)
        if isinstance(model, ir.Model):
            proto = ir.serde.serialize_model(model)
            validate_proto(proto, "<onnx_ir.Model>", [kiln_limits(), *limits])
            # passes rewrite in place: work on a copy so the caller's model stays as given
            return ir.from_proto(proto)
        return import_model(model, limits=limits)

    @staticmethod
    def _artifact_model(artifact: Any, backends: Sequence[str]):
        """The artifact's graph, parsed and validated: hashes prove integrity, not intent."""
        import onnx_ir as ir

        from kiln.compiler.frontend import parse_bytes
        from kiln.compiler.validate import kiln_limits, validate_proto

        name = f"{artifact.path.name}:model.onnx"
        proto = parse_bytes(artifact.model_bytes, name)  # ModelError if it does not parse
        validate_proto(proto, name, [kiln_limits(), *_limits_of(backends)])
        return ir.from_proto(proto)

    def save(self, path: str | os.PathLike) -> Path:
        """Write this compiled model as a .kiln artifact (optimized graph + backend blobs)."""
        import tempfile

        from kiln.runtime.artifact import save_artifact
        from kiln.runtime.placement import placement_to_json, plan_for

        if self.placement is not None:  # partitioned: every piece's backend version
            version = ", ".join(f"{b} {registry.availability(b).version}"
                                for b in self.placement["backends"])
            placement = self.placement
        else:
            version = self._backend.is_available().version
            placement = placement_to_json(plan_for(self.model, [self.backend_name]))
        with tempfile.TemporaryDirectory(prefix="kiln-blobs-") as blobs:
            written = self._compiled.save(Path(blobs))
            return save_artifact(
                path, self.model, backend=self.backend_name, backend_version=version,
                placement=placement,
                target=str(self.target),
                source_sha256=getattr(self, "source_sha256", "") or "",
                pipeline=self.report.pipeline if self.report else [], level=self.opt_level,
                options=self.options.to_json(),
                inputs=[i.to_json() for i in self.inputs],
                outputs=[o.to_json() for o in self.outputs],
                blob_dir=blobs if written else None)

    @property
    def backend(self) -> str:
        return self.backend_name

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._compiled.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._compiled.outputs)

    def get_inputs(self) -> list[TensorSpec]:
        """onnxruntime spelling of ``inputs``."""
        return self.inputs

    def get_outputs(self) -> list[TensorSpec]:
        """onnxruntime spelling of ``outputs``."""
        return self.outputs

    def run(self, output_names: Sequence[str] | None,
            feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; returns the outputs named (all when None), in that order.

        Feeds are checked against ``inputs`` first; a mismatch raises kiln.InputError naming
        the input and what was expected.
        """
        self._checks.admit(feeds)  # sizes before check_feeds copies (runtime/guards.py)
        checked = check_feeds(self._compiled.inputs, feeds)
        names = [o.name for o in self._compiled.outputs] if output_names is None \
            else list(output_names)
        known = {o.name for o in self._compiled.outputs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model's outputs are "
                             f"{sorted(known)}")
        self._checks.run(checked)  # feeds reaching Gather/Range/Loop/... (runtime/guards.py)
        results = guards_module.call_with_timeout(lambda: self._compiled.run(checked),
                                                  self.guards.timeout, "run",
                                                  getattr(self._compiled, "cancel", None))
        return [results[n] for n in names]

    def node_times(self, feeds: Mapping[str, np.ndarray], runs: int = 10) -> list[list[Any]]:
        """Run ``runs`` times; each run's per-node times (``kiln.backends.base.NodeTime``) as
        the backend measures them. Needs ``profile=True`` at construction; raises
        ``NoTimersError`` on a backend without per-node timers."""
        return self._compiled.node_times(lambda: self.run(None, feeds), runs)

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        """Run with keyword feeds; returns every output by name."""
        names = [o.name for o in self._compiled.outputs]
        return dict(zip(names, self.run(names, feeds)))

    def __repr__(self) -> str:
        inputs = [i.describe() for i in self.inputs]
        return (f"Session(backend={self.backend_name!r}, target='{self.target}', "
                f"precision={self.options.precision!r}, inputs={inputs})")


#: Session options that reduce the model (``kiln compile``'s options, see reduce_model).
REDUCE_OPTIONS = ("calibration", "calibration_method", "percentile", "quantization_mode",
                  "exclude", "max_accuracy_drop", "prune", "eval_samples", "labels",
                  "classifier", "speed_gate", "convert_precision")


def _needs_reduction(model: Any, precision: str, caps: Any,
                     reduce_options: Mapping[str, Any]) -> bool:
    """Whether the graph must change for ``precision`` (or a prune was asked for).

    A precision the graph already carries (Q/DQ, fp16/bf16 Casts) is left alone; one the
    backend applies by itself (``BackendCaps.precision_hints``) is too, unless
    ``convert_precision=True`` asks for the graph conversion anyway.
    """
    from kiln.compiler.reduce import precision_in_graph

    if reduce_options.get("prune"):
        return True
    if precision == "fp32" or precision in precision_in_graph(model):
        return False
    return precision not in caps.precision_hints or bool(
        reduce_options.get("convert_precision"))


def _limits_of(backends: Sequence[str]) -> list:
    """The limits every backend in ``backends`` states (kiln checks them before handing over)."""
    return [lim for lim in map(registry.backend_limits, backends) if lim is not None]


def random_feeds(specs: Sequence[TensorSpec], seed: int = 0,
                 dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs matching ``specs``; symbolic dims take ``dims`` or 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = [d if isinstance(d, int) else (dims or {}).get(str(d), 1)
                 for d in (spec.shape or ())]
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 100, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputError(f"cannot make random data for input '{spec.name}' of dtype "
                             f"{dtype.name}; pass it explicitly")
    return feeds

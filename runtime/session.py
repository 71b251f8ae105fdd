"""kiln.Session: compile (or load) a model for one backend and run it, onnxruntime-style.

    sess = kiln.Session("model.onnx", backend="openvino", precision="fp32", threads=2)
    [probs] = sess.run(None, {"data": x})
    out = sess(data=x)            # dict of every output
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.backends.base import TensorSpec
from kiln.compiler.frontend import ModelSource
from kiln.compiler.target import Target
from kiln.errors import InputError
from kiln.runtime import guards as guards_module
from kiln.runtime.compile import Compiled, compile
from kiln.runtime.feeds import check_feeds


class Session:
    """A handle over one compiled model: run it, save it, look inside it.

    model:     a ``kiln.compile`` result; a path to an .onnx file or a .kiln artifact, ONNX
               bytes, an onnx.ModelProto, or an onnx_ir.Model (compiled here by
               ``kiln.compile`` with the arguments below). An artifact is verified and runs
               its stored optimized graph (and backend blobs when they fit this backend
               version and target).
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
               ``fallback=None`` for strict native runs), the guards (``max_memory``,
               ``timeout``, ``max_loop_iterations``), ``dims={"batch": 1, "height": 640}``
               to compile for those sizes of symbolic input dims only (as onnxruntime's
               free-dimension overrides or OpenVINO's ``reshape``: static shapes, and the
               native plan laid out once; a ``(min, opt, max)`` triple instead keeps the dim
               symbolic and sets TensorRT's optimization profile) and the reduction options
               of ``kiln
               compile`` (the fields of ``kiln.compiler.reduce.ReduceOptions``:
               ``calibration``, ``quantization_mode``, ``exclude``, ``max_accuracy_drop``,
               ``prune``, ``speed_gate``, ...), or ``reduce=ReduceOptions(...)``.

    A precision the graph does not carry yet is made in it, never assumed: ``precision=
    "int8"`` on a float model quantizes it (dynamic for models without Conv and without
    ``calibration``, static otherwise), fp16/bf16 convert it, unless the backend applies
    that precision itself (OpenVINO's hint). ``reduction`` then holds the report (accuracy,
    what was quantized, speed-gate decisions); it is None when nothing was reduced.
    """

    def __init__(self, model: Compiled | ModelSource | Any,
                 backend: str | Sequence[str] = "auto", target: str | Target = "auto",
                 precision: str | None = None, threads: int | None = None,
                 opt_level: int | None = None, **options: Any):
        if isinstance(model, Compiled):
            self.compiled = model
        else:
            self.compiled = compile(model, backend, target, precision, threads, opt_level,
                                    **options)

    # --- what compile decided (see kiln.runtime.compile.Compiled) --------------------------
    @property
    def model(self) -> Any:
        """The optimized graph (onnx_ir.Model) the backend compiled."""
        return self.compiled.model

    @property
    def _compiled(self) -> Any:
        """The backend's CompiledModel."""
        return self.compiled.engine

    @property
    def backend_name(self) -> str:
        """The backend that compiled the model ("native+onnxruntime" when split)."""
        return self.compiled.choice.name

    @property
    def backend_reason(self) -> str:
        """Why that backend: "requested", or what "auto" found."""
        return self.compiled.choice.reason

    @property
    def target(self) -> Target:
        """The hardware the model was compiled for."""
        return self.compiled.target

    @property
    def options(self) -> Any:
        """The CompileOptions the model was compiled with."""
        return self.compiled.options

    @property
    def opt_level(self) -> int | None:
        """The optimization level the graph went through (None if an artifact lacks it)."""
        return self.compiled.opt_level

    @property
    def guards(self) -> guards_module.Guards:
        """The limits every run is held to (max_memory, timeout, max_loop_iterations)."""
        return self.compiled.guards

    @property
    def placement(self) -> dict[str, Any] | None:
        """The partition plan (JSON) of a model split across backends, else None."""
        return self.compiled.placement

    @property
    def report(self) -> Any:
        """The optimizer's CompileReport (None for a loaded artifact)."""
        return self.compiled.report

    @property
    def reduction(self) -> Any:
        """The ReduceResult when the graph was pruned or its precision lowered, else None."""
        return self.compiled.reduction

    @property
    def artifact(self) -> Any:
        """The verified .kiln artifact this Session was loaded from (None if compiled)."""
        return self.compiled.artifact

    @property
    def rebuild_reason(self) -> str | None:
        """Why a loaded artifact was rebuilt instead of loaded from its blobs (None if not)."""
        return self.compiled.rebuild_reason

    @property
    def source_sha256(self) -> str:
        """sha256 of the source model as it was read ("" when unknown)."""
        return self.compiled.sha256_of_source()

    @property
    def import_seconds(self) -> float:
        """Seconds spent importing and validating (or reading the artifact)."""
        return self.compiled.import_seconds

    @property
    def compile_seconds(self) -> float:
        """Seconds spent optimizing, reducing and compiling (or restoring blobs)."""
        return self.compiled.compile_seconds

    def save(self, path: str | os.PathLike) -> Path:
        """Write this compiled model as a .kiln artifact (optimized graph + backend blobs)."""
        return self.compiled.save(path)

    @property
    def backend(self) -> str:
        """Same as ``backend_name``."""
        return self.backend_name

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs (initializers excluded): name, dtype, shape."""
        return list(self._compiled.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs, in graph order."""
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
        checks = self.compiled.checks
        checks.admit(feeds)  # sizes before check_feeds copies (runtime/guards.py)
        checked = check_feeds(self._compiled.inputs, feeds)
        names = [o.name for o in self._compiled.outputs] if output_names is None \
            else list(output_names)
        known = {o.name for o in self._compiled.outputs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model's outputs are "
                             f"{sorted(known)}")
        checks.run(checked)  # feeds reaching Gather/Range/Loop/... (runtime/guards.py)
        results = guards_module.call_with_timeout(lambda: self._compiled.run(checked),
                                                  self.guards.timeout, "run",
                                                  self._compiled.cancel)
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

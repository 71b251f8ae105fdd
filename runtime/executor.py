"""Run a model split across several backends: the pieces in order, tensors passed across.

``compile_partitioned`` asks each backend what it runs (``kiln.runtime.placement``), lets
``kiln.compiler.partition`` decide, then:

1. runs the constant partitions once, here, so weights built in the graph (ConstantOfShape
   and the like) become plain initializers of the partitions that read them;
2. extracts every other partition as a standalone IR model and compiles it with its backend;
3. returns a ``PartitionedModel`` whose ``run`` feeds each piece from the graph inputs and
   the earlier pieces' outputs, and drops each intermediate once no later piece reads it.

All pieces here run on the host, so a boundary is a hand-off of numpy arrays; the placement
still counts boundary bytes, which a device backend pays as copies.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from kiln.backends import registry
from kiln.backends.base import CompiledModel, CompileOptions
from kiln.backends.onnx_export import signature
from kiln.compiler.partition import Capability, Extractor, Partition, PartitionPlan
from kiln.errors import KilnError
from kiln.runtime.placement import (
    MIN_PARTITION_NODES,
    placement_to_json,
    plan_for,
    resolve_backends,
)

if TYPE_CHECKING:
    from kiln.compiler.target import Target
    from kiln.runtime.artifact import Artifact
    from kiln.runtime.compile import BackendChoice


class PartitionedModel(CompiledModel):
    """Several compiled pieces run in order as one model.

    ``placement`` is the JSON plan it was built with (``placement_to_json``); ``pieces`` are
    (partition, compiled model) pairs in execution order.
    """

    backend = "partitioned"

    def __init__(self, model: ir.Model, plan: PartitionPlan,
                 pieces: list[tuple[Partition, CompiledModel]],
                 constants: Mapping[str, np.ndarray], placement: dict[str, Any]):
        self.inputs, self.outputs = signature(model)
        self.plan = plan
        self.pieces = pieces
        self.placement = placement
        self._constants = {k: v for k, v in constants.items()
                           if k in {o.name for o in self.outputs}}
        self._initializers = {
            v.name: np.asarray(v.const_value.numpy()) for v in model.graph.outputs
            if v.is_initializer() and v.const_value is not None}
        # The last piece that reads each value, so intermediates are freed early.
        self._last_use: dict[str, int] = {}
        for step, (part, _) in enumerate(pieces):
            for name in part.inputs:
                self._last_use[name] = step
        self._graph_outputs = {o.name for o in self.outputs}

    @property
    def backends(self) -> list[str]:
        return [part.backend for part, _ in self.pieces]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(feeds)
        for step, (part, compiled) in enumerate(self.pieces):
            try:
                piece_feeds = {name: env[name] for name in part.inputs}
            except KeyError as exc:
                raise KilnError(f"partition {part.index} ({part.backend}) needs tensor "
                                f"{exc.args[0]!r}, which nothing produced") from exc
            env.update(compiled.run(piece_feeds))
            for name in part.inputs:
                if self._last_use.get(name) == step and name not in self._graph_outputs:
                    env.pop(name, None)
        results = {}
        for spec in self.outputs:
            if spec.name in feeds:  # an input passed straight through: never alias it
                results[spec.name] = np.array(feeds[spec.name], copy=True)
            elif spec.name in env:
                results[spec.name] = env[spec.name]
            elif spec.name in self._constants:
                results[spec.name] = self._constants[spec.name].copy()
            elif spec.name in self._initializers:
                results[spec.name] = self._initializers[spec.name].copy()
            else:
                raise KilnError(f"graph output '{spec.name}' was produced by no partition")
        return results

    def cancel(self, thread_id: int) -> bool:
        """Ask every piece to stop the run on ``thread_id`` (the pieces run on the caller's
        thread, one after another); True when one of them could."""
        return any([compiled.cancel(thread_id) for _, compiled in self.pieces])

    def save(self, folder: Path) -> list[str]:
        """Each piece's blobs under ``partition<i>_<backend>/`` plus ``placement.json``
        (``load_partitioned`` reads them back)."""
        folder = Path(folder)
        written = []
        for part, compiled in self.pieces:
            sub = piece_folder(part)
            (folder / sub).mkdir(parents=True, exist_ok=True)
            written += [f"{sub}/{name}" for name in compiled.save(folder / sub)]
        (folder / "placement.json").write_text(json.dumps(self.placement, indent=1))
        written.append("placement.json")
        return written


def piece_folder(part: Partition) -> str:
    """Where a piece's blobs live in the artifact's ``blobs/``."""
    return f"partition{part.index}_{part.backend}"


def compile_partitioned(model: ir.Model, backends: Sequence[str], target: Target,
                        options: CompileOptions, fallback: str | None = "onnxruntime",
                        min_partition_nodes: int = MIN_PARTITION_NODES) -> PartitionedModel:
    """Compile ``model`` across ``backends`` (priority order) plus ``fallback``.

    Strict mode is ``fallback=None``: an unavailable backend, or any node none of
    ``backends`` runs, raises (BackendUnavailableError / UnsupportedError naming every such
    node with each backend's reason).
    """
    names, skipped = resolve_backends(backends, fallback)
    plan = plan_for(model, names, min_partition_nodes=min_partition_nodes,
                    device=options.device)
    plan.require_complete(strict=fallback is None)
    return _assemble(model, plan, target, options, placement_to_json(plan, skipped=skipped))


def _assemble(model: ir.Model, plan: PartitionPlan, target: Target, options: CompileOptions,
              placement: dict[str, Any],
              blobs: Mapping[str, Mapping[str, bytes]] | None = None) -> PartitionedModel:
    """Compile (or, with ``blobs`` per piece folder, load) every partition of ``plan``; the
    constant partitions run once, here."""
    # Pieces are cut through protos, which carry no folder: weights mapped from a file (set
    # aside at import, or a .kiln's member) come into memory first.
    if any(isinstance(v.const_value, ir.ExternalTensor)
           for g in model.graphs() for v in g.initializers.values()):
        ir.external_data.load_to_model(model)
    extractor = Extractor(model, plan)
    if sum(not p.constant for p in plan.partitions) > 1 and "allow_spinning" not in options.extra:
        # The pieces take turns: onnxruntime's threads spinning after its piece would hold the
        # cores the next piece's engine (native's pool) needs.
        options = dataclasses.replace(options, extra={**options.extra, "allow_spinning": False})
    constants: dict[str, np.ndarray] = {}
    pieces: list[tuple[Partition, CompiledModel]] = []
    for part in plan.partitions:
        sub = extractor.extract(part, {} if part.constant else constants)
        backend = registry.get_backend(part.backend)
        if blobs is not None and not part.constant:
            compiled = backend.load(blobs.get(piece_folder(part), {}), sub, target, options)
        else:
            compiled = backend.compile(sub, target, options)
        if part.constant:
            outputs = compiled.run({name: constants[name] for name in part.inputs})
            constants.update({k: np.asarray(v) for k, v in outputs.items()})
        else:
            pieces.append((part, compiled))
    return PartitionedModel(model, plan, pieces, constants, placement)


def load_partitioned(artifact: Artifact, model: ir.Model, choice: BackendChoice,
                     target: Target, options: CompileOptions
                     ) -> tuple[PartitionedModel, str | None]:
    """A partitioned artifact, each piece from its blobs when they fit (backend versions,
    target, precision and device as built), else every piece recompiled from model.onnx.
    Returns (model, why the blobs were not used or None).

    The stored assignment is replayed (no backend is asked again), so the pieces are the
    ones whose blobs were saved.
    """
    from kiln.runtime.artifact import options_miss

    stored = artifact.manifest.get("placement") or {}
    assignment = stored.get("assignment") or {}
    names = list(stored.get("backends") or [])
    miss = _partition_miss(artifact, choice, target, names) or options_miss(
        artifact.manifest, options)
    if miss is None:
        plan = _replay(model, assignment, names)
        if [[plan.label(n) for n in p.nodes] for p in plan.partitions] != \
                [p["nodes"] for p in stored.get("partitions", [])]:
            miss = "the stored placement does not match the stored graph"
    if miss is not None:
        pieces = compile_partitioned(model, choice.backends, target, options, choice.fallback,
                                     choice.min_partition_nodes)
        return pieces, (f"{artifact.path.name}: partitioned artifact recompiled piece by "
                        f"piece from model.onnx because {miss}")
    blobs: dict[str, dict[str, bytes]] = {}
    for name, data in artifact.blobs.items():
        folder, _, rest = name.partition("/")
        if rest:
            blobs.setdefault(folder, {})[rest] = data
    return _assemble(model, plan, target, options, dict(stored), blobs), None


def _partition_miss(artifact: Artifact, choice: BackendChoice, target: Target,
                    names: Sequence[str]) -> str | None:
    """Why the artifact's pieces cannot be loaded as they were saved (None when they can)."""
    if not artifact.blobs:
        return "it holds no blobs"
    if not names or list(choice.engines) != names:
        return f"it was split over {names}, not {choice.engines}"
    version = ", ".join(f"{b} {registry.availability(b).version}" for b in names)
    if artifact.backend_version != version:
        return f"its blobs were built by {artifact.backend_version}, this machine has {version}"
    if artifact.target != str(target):
        return f"its blobs were built for target '{artifact.target}', not '{target}'"
    return None


def _replay(model: ir.Model, assignment: Mapping[str, str], names: Sequence[str]
            ) -> PartitionPlan:
    """The plan that puts each node where ``assignment`` (label -> backend) says."""
    from kiln.compiler.partition import node_labels, plan_partitions

    labels = node_labels(model.graph)

    def exclusive(name: str) -> Capability:
        def refusal(node: ir.Node) -> str | None:
            return None if assignment.get(labels[node]) == name else "assigned elsewhere"
        return Capability(name, refusal)

    return plan_partitions(model, [exclusive(n) for n in names], min_partition_nodes=1)

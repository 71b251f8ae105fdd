"""The Backend and CompiledModel contracts every backend implements.

Data flows one way: the compiler hands a backend an optimized ``onnx_ir.Model`` and a
``Target``; the backend returns a ``CompiledModel`` that runs feeds. Backends never run
passes and never import each other.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import UnsupportedError

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.capabilities import BackendCaps
    from kiln.compiler.target import Target
    from kiln.compiler.validate import Limits

#: Precisions a user may ask for. A backend refuses what it cannot honour.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and why not when it cannot."""

    ok: bool
    reason: str = ""
    version: str | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a model input or output.

    ``shape`` holds an int for a fixed dim, a string for a symbolic dim (shared symbols must
    agree across inputs) and None for a dim nothing is known about.
    """

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join(
            "?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": np.dtype(self.dtype).name,
                "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorSpec:
        shape = data.get("shape")
        return cls(data["name"], np.dtype(data["dtype"]),
                   None if shape is None else tuple(shape))


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """What the user asked for, independent of any one backend.

    precision: one of PRECISIONS; always explicit, so no backend picks one silently.
    threads:   intra-op threads; None lets the backend use every core.
    device:    backend device string (OpenVINO "CPU"/"GPU"/"AUTO", TensorRT "cuda:0").
    extra:     backend-specific settings, passed through unchanged.
    """

    precision: str = "fp32"
    threads: int | None = None
    device: str = "CPU"
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision, "threads": self.threads, "device": self.device,
                "extra": dict(self.extra)}


class NoTimersError(UnsupportedError):
    """The backend runs the model but cannot time its nodes."""


@dataclasses.dataclass(frozen=True)
class NodeTime:
    """One node's time in one run, from the backend's own instrument.

    ``start_us`` is the offset from the run's start when the instrument records it (None
    when it reports durations only).
    """

    name: str
    op: str
    us: float
    start_us: float | None = None


@dataclasses.dataclass(frozen=True)
class ArtifactWeights:
    """Where a .kiln artifact being written keeps the graph's weights, for a blob that reads
    them there instead of carrying a copy of its own.

    ``file`` is the artifact file, its weights member already written; ``graph`` is an ONNX
    file of the optimized graph (``model.onnx``) whose external tensors point into ``file`` at
    their offsets in the whole file: the same places a load of the artifact maps them from.
    ``start`` is where the weights member's data begins in ``file`` (a blob that refers to the
    weights as model.onnx does, by offset within the member, subtracts it); ``member`` is that
    member's name, the location such a reference names.
    """

    file: Path
    graph: Path
    start: int = 0
    member: str = "weights.bin"


class CompiledModel(abc.ABC):
    """A model compiled by one backend, ready to run.

    ``run`` receives feeds that kiln already checked against ``inputs`` (names, dtypes, ranks
    and fixed dims), so a backend only validates what depends on the data itself.
    """

    #: Name of the backend that produced this model.
    backend: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: Why ``Backend.load`` compiled the graph instead of using the saved blobs (None: it
    #: used them, or the model was compiled, not loaded).
    rebuilt_because: str | None = None

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns every graph output by name. Thread-safe."""

    def node_times(self, run: Callable[[], object], runs: int) -> list[list[NodeTime]]:
        """Call ``run`` (one inference through the Session) ``runs`` times and return each
        run's per-node times, measured by the backend itself; the model must have been
        compiled with ``options.extra["profile"] = True``. Raises NoTimersError when the
        backend has no such instrument."""
        raise NoTimersError(f"the {self.backend} backend exposes no per-node timers")

    def cancel(self, thread_id: int) -> bool:
        """Ask the run in progress on thread ``thread_id`` to stop (a Session timeout);
        returns whether a stop was signalled. The default cannot stop a run: False."""
        return False

    def save(self, folder: Path) -> list[str]:
        """Write backend blobs into ``folder``; returns the file names written.

        The default writes nothing: the artifact's ``model.onnx`` is enough to rebuild.
        """
        return []

    def save_beside(self, folder: Path, weights: ArtifactWeights | None) -> list[str]:
        """``save`` for an artifact being written whose weights member is ``weights`` (None:
        it has none): a backend whose blob can take its constants from there writes a blob
        without them, so the artifact holds the weights once. The default is ``save``."""
        return self.save(folder)


class Backend(abc.ABC):
    """A way of running an IR model on some device."""

    #: Registry name: "onnxruntime", "openvino", "native", "tensorrt".
    name: str
    #: Whether ``compile``/``load`` read a loaded .kiln artifact's weights where they lie: the
    #: IR's tensors in place (memory-mapped external tensors included), or a graph whose
    #: external tensors point into the .kiln file, read by the engine itself. The weights then
    #: stay in the .kiln file instead of being copied out to a file of kiln's own.
    reads_artifact_weights: bool = False
    #: Whether ``load`` takes a loaded artifact's ``StoredGraph`` (kiln.backends.onnx_export)
    #: in place of the IR: an engine fed ONNX reads the stored proto as it is, and kiln's IR
    #: of it is built only if something asks for it.
    loads_stored_graph: bool = False

    @abc.abstractmethod
    def is_available(self) -> Availability:
        """Whether this backend can run here, with version and reason. Never raises."""

    @abc.abstractmethod
    def supports(self, node: ir.Node) -> bool:
        """Whether this backend can run ``node`` (op, dtype, attributes). A pure query."""

    def refusal(self, node: ir.Node) -> str | None:
        """Why ``supports(node)`` is False (None when it is True)."""
        return None if self.supports(node) else f"{node.domain or 'ai.onnx'}::{node.op_type}"

    def capability(self, model: ir.Model, device: str = "CPU") -> Mapping[ir.Node, str | None]:
        """Per-node verdicts computed once for the whole ``model`` on ``device`` (None: runs
        it, else why not), for engines that can only answer per model (OpenVINO's
        ``query_model``). Nodes without a verdict are asked ``refusal``; the default has
        none. A pure query."""
        return {}

    def supported_precisions(self) -> Sequence[str]:
        """Precisions this backend honours exactly."""
        return ("fp32",)

    def limits(self) -> Limits | None:
        """IR/opset/dim limits the wrapped engine enforces, checked by kiln before the engine
        sees a model (None: only kiln's own limits apply)."""
        return None

    def caps(self) -> BackendCaps:
        """What the compiler may emit for this backend (kiln ops it runs, opset, layouts).

        The default: plain ONNX only, so every kiln-domain fusion is expanded back.
        """
        from kiln.compiler.capabilities import BackendCaps

        return BackendCaps(name=self.name)

    @abc.abstractmethod
    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        """Compile ``model`` for ``target``. Raises a KilnError subclass on failure."""

    def load(self, blobs: Mapping[str, bytes], model: ir.Model, target: Target,
             options: CompileOptions) -> CompiledModel:
        """Load a model from the files ``CompiledModel.save`` wrote (name -> bytes, already
        verified by the artifact); the default recompiles ``model``. A backend that compiles
        ``model`` after all (its blob did not import here) says why in the result's
        ``rebuilt_because``. With ``loads_stored_graph``, ``model`` may be a ``StoredGraph``
        (and ``blobs`` empty: build from the stored graph)."""
        return self.compile(model, target, options)

    def describe_blobs(self, blobs: Mapping[str, bytes]) -> dict[str, Any]:
        """What the saved blobs record about the compiled model, for ``kiln inspect`` (for
        the native backend: the plan ISA and its kernels). The default has nothing to say."""
        return {}

"""Resource guards: refuse, before a backend allocates or loops, what would exhaust the machine.

The backends kiln wraps allocate whatever a model asks for (onnxruntime has no memory cap by
default; OpenVINO dies with SIGFPE on a Range whose delta is 0, returns 0 for out-of-range
Gather indices and cuts 64-bit trip counts to 32 bits). kiln estimates sizes statically, from
inferred shapes and from the constant inputs of the ops whose output size is data-dependent,
and checks the feeds that reach such ops at run time:

- ``max_memory`` (bytes; default ``default_max_memory()``, 3/4 of the machine's memory or its
  cgroup limit): no single tensor, nor the initializers together, may need more.
  Sizes come from inferred static shapes and from constant inputs of
  ConstantOfShape (shape), Expand (shape), Tile (repeats), Range (start, limit, delta: a 0
  delta is refused), Resize (scales/sizes) and Loop (trip count x scan outputs). Integer shape
  arithmetic (Shape/Gather/Concat/Add/Mul/...) is evaluated with Python integers, so a product
  that would overflow int64 is caught instead of wrapping. ``kiln.ResourceError``.
- ``max_loop_iterations`` (default 2**24): a Loop whose trip count is larger, or which can
  never end (no trip count and a condition that stays true), is refused.
- feeds that flow straight into Gather/Scatter indices, Range, ConstantOfShape, Expand, Tile or
  a Loop trip count are checked on every run (``RuntimeChecks``): out-of-range indices raise
  ``InputError``; sizes beyond ``max_memory`` raise ``ResourceError``.
- ``timeout`` (seconds, default None): ``call_with_timeout`` bounds compile and run; past it,
  the caller gets a ResourceError (the backend's thread is abandoned, not killed: Python cannot
  kill a thread, so the static checks above are the first line of defence).

Arithmetic is done on Python ints; the walk recurses only into subgraphs, whose depth the
validator already bounded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import onnx_ir as ir

from kiln.compiler.graph_index import node_bodies
from kiln.errors import InputError, ModelError, ResourceError
from kiln.runtime.weights import tensor_nbytes

if TYPE_CHECKING:
    from kiln.runtime.guards_view import ProtoModel

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT32_MAX = 2**31 - 1
DEFAULT_MAX_LOOP_ITERATIONS = 2**24
# Constant-evaluate integer tensors up to this many elements (shape arithmetic is tiny).
_EVAL_LIMIT = 1024
T = TypeVar("T")


def machine_memory() -> int:
    """Physical memory in bytes, or the cgroup (container) memory limit when it is smaller."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_max_memory() -> int:
    """Three quarters of ``machine_memory()``: room for kiln, Python and the OS."""
    return machine_memory() * 3 // 4


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


@dataclasses.dataclass(frozen=True)
class Guards:
    """The limits one Session runs under."""

    max_memory: int
    timeout: float | None = None
    max_loop_iterations: int = DEFAULT_MAX_LOOP_ITERATIONS

    @classmethod
    def from_options(cls, options: MutableMapping[str, Any]) -> Guards:
        """Pop ``max_memory``, ``timeout`` and ``max_loop_iterations`` from ``options``."""
        max_memory = options.pop("max_memory", None)
        timeout = options.pop("timeout", None)
        iterations = options.pop("max_loop_iterations", DEFAULT_MAX_LOOP_ITERATIONS)
        if max_memory is None:
            max_memory = default_max_memory()
        if not isinstance(max_memory, int) or isinstance(max_memory, bool) or max_memory <= 0:
            raise ResourceError(f"max_memory must be a positive number of bytes, not "
                                f"{max_memory!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ResourceError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(iterations, int) or iterations <= 0:
            raise ResourceError(f"max_loop_iterations must be a positive integer, not "
                                f"{iterations!r}")
        return cls(max_memory, None if timeout is None else float(timeout), iterations)

    def bytes_ok(self, nbytes: int, what: str) -> None:
        """ResourceError if ``what`` needs more than ``max_memory`` bytes."""
        if nbytes > self.max_memory:
            raise ResourceError(f"{what} needs {_gib(nbytes)} ({nbytes} bytes), more than "
                                f"max_memory = {_gib(self.max_memory)}; raise max_memory if "
                                "this is intended")


def call_with_timeout(fn: Callable[[], T], timeout: float | None, what: str,
                      cancel: Callable[[int], bool] | None = None) -> T:
    """``fn()``, or ResourceError if it has not returned after ``timeout`` seconds.

    ``cancel(thread_id)``, when given (a CompiledModel's ``cancel``), stops the work on the
    worker thread; when it says it did, the worker is given a few seconds to unwind, so no
    abandoned native run outlives the caller (one still running at interpreter exit can touch
    freed globals).
    """
    if timeout is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"kiln-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        stopped = False
        if cancel is not None and worker.ident is not None:
            try:
                signalled = cancel(worker.ident)
            except Exception:  # cancelling is best effort; the timeout error stands
                signalled = False
            if signalled:
                worker.join(10.0)
                stopped = not worker.is_alive()
        raise ResourceError(f"{what} did not finish within the timeout of {timeout:g} s "
                            f"({'cancelled' if stopped else 'left running in the background'})"
                            "; the model may loop without end (raise timeout if it is just "
                            "slow)")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ----------------------------------------------------------------------------------------
# Static estimate


def _itemsize(value: ir.Value | None, default: int = 4) -> int:
    if value is None or value.dtype is None:
        return default
    try:
        return max(1, math.ceil(value.dtype.itemsize))
    except Exception:
        return default


def _static_shape(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None:
        return None
    dims = []
    for dim in value.shape:
        if not isinstance(dim, int):
            return None
        dims.append(dim)
    return dims


def _label(node: ir.Node) -> str:
    return f"node '{node.name}' ({node.op_type})" if node.name else f"a {node.op_type} node"


#: The ops whose output size ``_Estimator.sized`` works out from their constant inputs.
_SIZED_OPS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Loop"})
#: The ops ``_Estimator.evaluate`` folds.
_EVALUATED = frozenset({"Constant", "Shape", "Identity", "Cast", "Add", "Sub", "Mul", "Div",
                        "Max", "Min", "Neg", "Concat", "Gather", "Unsqueeze", "Squeeze",
                        "Reshape", "Flatten", "ReduceProd"})


def _check_int64(values: np.ndarray, node: ir.Node) -> np.ndarray:
    for item in values.flat:
        if not INT64_MIN <= int(item) <= INT64_MAX:
            raise ResourceError(f"shape arithmetic at {_label(node)} overflows int64 "
                                f"(value {int(item)})")
    return values


class _Estimator:
    """Walks a graph once, keeping small integer constants as exact Python-int arrays."""

    def __init__(self, guards: Guards, backend: str):
        self.guards = guards
        self.backend = backend
        self.consts: dict[ir.Value, np.ndarray] = {}
        self.checks = RuntimeChecks(guards, backend)

    # -- constants ------------------------------------------------------------------------
    def const(self, value: ir.Value | None) -> np.ndarray | None:
        if value is None:
            return None
        if value in self.consts:
            return self.consts[value]
        tensor = value.const_value
        if tensor is None or tensor.size > _EVAL_LIMIT:
            return None
        try:
            array = tensor.numpy()
        except Exception:
            return None
        if array.dtype.kind in "iub":
            array = array.astype(object)
        elif array.dtype.kind != "f":  # complex, strings: never a size
            return None
        self.consts[value] = array
        return array

    def ints(self, value: ir.Value | None) -> np.ndarray | None:
        """The constant integer tensor ``value`` holds (exact Python ints), or None."""
        array = self.const(value)
        return array if array is not None and array.dtype == object else None

    def exact_inputs(self, node: ir.Node) -> list[np.ndarray] | None:
        """Every input of ``node`` as exact Python ints (small integer constants), or None.
        An input declared of another type is not read (a float bias mapped from a file)."""
        if not node.inputs:
            return None
        args = []
        for value in node.inputs:
            dtype = value.dtype if value is not None else None
            if dtype is not None and not (dtype.is_integer() or dtype == ir.DataType.BOOL):
                return None
            array = self.ints(value)
            if array is None:
                return None
            args.append(array)
        return args

    def evaluate(self, node: ir.Node) -> None:
        """Fold integer shape arithmetic we can, exactly (no int64 wrap-around)."""
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or not node.outputs or op not in _EVALUATED:
            return
        out = node.outputs[0]
        args: list[np.ndarray] = []
        if op not in ("Constant", "Shape"):
            exact = self.exact_inputs(node)
            if exact is None:
                return
            args = exact
        result: np.ndarray | None = None
        if op == "Constant":
            attr = node.attributes.get("value")
            if attr is not None and attr.value.size <= _EVAL_LIMIT:
                array = attr.value.numpy()
                result = array.astype(object) if array.dtype.kind in "iub" else array
            for name in ("value_int", "value_ints"):
                if name in node.attributes:
                    result = np.array(node.attributes[name].value, dtype=object)
        elif op == "Shape":
            shape = _static_shape(node.inputs[0])
            if shape is not None:
                start = node.attributes.get("start")
                end = node.attributes.get("end")
                sl = slice(start.value if start else None, end.value if end else None)
                result = np.array(shape[sl], dtype=object)
        elif op in ("Identity", "Cast"):
            result = args[0]
        elif op in ("Add", "Sub", "Mul", "Div", "Max", "Min") and len(args) == 2:
            a, b = args
            if op == "Add":
                result = a + b
            elif op == "Sub":
                result = a - b
            elif op == "Mul":
                result = a * b
            elif op == "Div":
                if any(int(x) == 0 for x in np.asarray(b).flat):
                    raise ModelError(f"{_label(node)} divides a shape value by zero")
                result = np.vectorize(lambda x, y: int(x / y), otypes=[object])(a, b)
            elif op == "Max":
                result = np.maximum(a, b)
            else:
                result = np.minimum(a, b)
            result = _check_int64(np.asarray(result, dtype=object), node)
        elif op == "Neg":
            result = _check_int64(-args[0], node)
        elif op == "Concat":
            result = np.concatenate([np.atleast_1d(a) for a in args])
        elif op == "Gather":
            axis = node.attributes.get("axis")
            if (axis is None or axis.value == 0) and args[0].ndim == 1:
                try:
                    result = args[0][np.asarray(args[1], dtype=np.int64)]
                except IndexError:
                    return
        elif op in ("Unsqueeze", "Squeeze", "Reshape", "Flatten"):
            result = np.atleast_1d(args[0]).reshape(-1) if args[0].size == 1 or \
                args[0].ndim <= 1 else None
        elif op == "ReduceProd":
            result = _check_int64(np.array(math.prod(int(x) for x in args[0].flat),
                                           dtype=object), node)
        if result is not None and np.asarray(result).size <= _EVAL_LIMIT:
            self.consts[out] = np.asarray(result)

    # -- sizes ----------------------------------------------------------------------------
    def count(self, dims: Any, node: ir.Node, what: str) -> int:
        total = 1
        for dim in np.asarray(dims, dtype=object).reshape(-1):
            dim = int(dim)
            if dim < 0:
                raise ModelError(f"{_label(node)} asks for {what} with a negative dim {dim}")
            total *= dim
        return total

    def node(self, node: ir.Node, depth: int) -> None:
        self.evaluate(node)
        op = node.op_type if node.domain in ("", "ai.onnx") else ""
        if op in _SIZED_OPS:
            self.sized(node, op)
        if depth == 0:  # feeds reach only the main graph's nodes directly
            self.checks.collect(node, self)
        limit = self.guards.max_memory
        for value in node.outputs:
            out_dims = _static_shape(value)
            if out_dims is not None:
                n = math.prod(out_dims) * _itemsize(value)
                if n > limit:  # the message is made only for a refusal
                    self.guards.bytes_ok(n, f"output '{value.name}' of {_label(node)} "
                                         f"(shape {out_dims})")
        for graph in node_bodies(node):
            self.graph(graph, depth + 1)

    def sized(self, node: ir.Node, op: str) -> None:
        """The size of what one of ``_SIZED_OPS`` makes, from its constant inputs."""
        out = node.outputs[0] if node.outputs else None
        size = _itemsize(out)
        label = _label(node)
        inputs = list(node.inputs) + [None] * 4
        if op == "ConstantOfShape":
            shape = self.ints(inputs[0])
            if shape is not None:
                n = self.count(shape, node, "a tensor")
                self.guards.bytes_ok(n * size, f"{label} (shape {list(map(int, shape))})")
        elif op == "Expand":
            shape, data = self.ints(inputs[1]), _static_shape(inputs[0])
            if shape is not None:
                dims = [int(d) for d in shape]
                if data is not None:
                    rank = max(len(dims), len(data))
                    a = [1] * (rank - len(data)) + data
                    b = [1] * (rank - len(dims)) + dims
                    dims = [max(x, y) if min(x, y) != 0 else 0 for x, y in zip(a, b)]
                n = self.count(dims, node, "an expanded tensor")
                self.guards.bytes_ok(n * size, f"{label} (expanded to {dims})")
        elif op == "Tile":
            repeats, data = self.ints(inputs[1]), _static_shape(inputs[0])
            if repeats is not None:
                reps = [int(r) for r in repeats]
                if any(r < 0 for r in reps):
                    raise ModelError(f"{label} has negative repeats {reps}")
                if data is not None and len(data) == len(reps):
                    n = self.count([d * r for d, r in zip(data, reps)], node, "a tiled tensor")
                    self.guards.bytes_ok(n * size, f"{label} (repeats {reps})")
        elif op == "Range":
            start, limit, delta = (self.const(v) for v in inputs[:3])
            if delta is not None and np.asarray(delta).size == 1 and float(
                    np.asarray(delta).reshape(-1)[0]) == 0:
                raise ModelError(f"{label} has delta 0: its length ceil((limit - start) / "
                                 "delta) is undefined")
            if start is not None and limit is not None and delta is not None:
                n = range_length(start, limit, delta, label, ModelError)
                self.guards.bytes_ok(n * size, f"{label} ({n} elements)")
        elif op == "Resize":
            data = _static_shape(inputs[0])
            scales, sizes = self.const(inputs[2]), self.ints(inputs[3])
            if sizes is not None and np.asarray(sizes).size:
                n = self.count(sizes, node, "a resized tensor")
                self.guards.bytes_ok(n * size, f"{label} (sizes {list(map(int, sizes))})")
            elif scales is not None and np.asarray(scales).size and data is not None:
                factors = [float(s) for s in np.asarray(scales).reshape(-1)]
                if any(not math.isfinite(f) or f <= 0 for f in factors):
                    raise ModelError(f"{label} has scales {factors}; they must be finite and "
                                     "positive")
                if len(factors) == len(data):
                    dims = [math.floor(d * f) for d, f in zip(data, factors)]
                    n = self.count(dims, node, "a resized tensor")
                    self.guards.bytes_ok(n * size, f"{label} (resized to {dims})")
        elif op == "Loop":
            self.loop(node, label)

    def loop(self, node: ir.Node, label: str) -> None:
        inputs = list(node.inputs) + [None, None]
        trip, cond = inputs[0], inputs[1]
        trips = self.ints(trip)
        body = node.attributes["body"].value if "body" in node.attributes else None
        if trips is not None:
            count = int(np.asarray(trips).reshape(-1)[0])
            self.trip_count_ok(count, label)
            if body is not None:
                carried = len(node.inputs) - 2
                per_iteration = 0
                for value in list(body.outputs)[1 + carried:]:
                    shape = _static_shape(value)
                    if shape is not None:
                        per_iteration += math.prod(shape) * _itemsize(value)
                self.guards.bytes_ok(per_iteration * count, f"the scan outputs of {label} "
                                     f"({count} iterations)")
        elif body is not None and trip is None:
            cond_const = self.const(cond)
            stays_true = cond is None or (cond_const is not None and bool(
                np.asarray(cond_const).reshape(-1)[0]))
            body_cond = _through_identity(body.outputs[0] if body.outputs else None)
            forever = body_cond is not None and (
                body_cond is (body.inputs[1] if len(body.inputs) > 1 else None)
                or (body_cond.const_value is not None
                    and bool(body_cond.const_value.numpy().reshape(-1)[0]))
                or _constant_true(body_cond))
            if stays_true and forever:
                raise ResourceError(f"{label} never ends: it has no trip count and its "
                                    "condition stays true")

    def trip_count_ok(self, count: int, label: str) -> None:
        if count < 0:
            return  # a negative trip count runs zero iterations
        limit = self.guards.max_loop_iterations
        if self.backend == "openvino":
            limit = min(limit, INT32_MAX)
        if count > limit:
            why = ", and OpenVINO counts in 32 bits" if limit == INT32_MAX else ""
            raise ResourceError(f"{label} would run {count} iterations, more than the "
                                f"{limit} kiln allows (max_loop_iterations{why})")

    def graph(self, graph: ir.Graph, depth: int) -> None:
        for node in graph:
            self.node(node, depth)


def _through_identity(value: ir.Value | None) -> ir.Value | None:
    for _ in range(16):
        producer = value.producer() if value is not None else None
        if producer is None or producer.op_type != "Identity" or not producer.inputs:
            return value
        value = producer.inputs[0]
    return value


def _constant_true(value: ir.Value) -> bool:
    producer = value.producer()
    if producer is None or producer.op_type != "Constant":
        return False
    attr = producer.attributes.get("value")
    try:
        return attr is not None and bool(attr.value.numpy().reshape(-1)[0])
    except Exception:
        return False


def range_length(start: Any, limit: Any, delta: Any, label: str,
                 error: type[Exception]) -> int:
    """Elements Range(start, limit, delta) yields: max(ceil((limit - start) / delta), 0)."""
    arrays = [np.asarray(v).reshape(-1) for v in (start, limit, delta)]
    if any(a.size != 1 for a in arrays):
        raise error(f"{label}: start, limit and delta must each hold one value, not "
                    f"{[int(a.size) for a in arrays]}")
    items = [a[0] for a in arrays]
    if all(isinstance(x, (int, np.integer)) for x in items):
        first, last, step = (int(x) for x in items)  # exact: no float rounding of large counts
        if step != 0:
            return max(-((first - last) // step), 0)
    s, lim, d = (float(x) for x in items)
    if d == 0:
        raise error(f"{label} has delta 0: its length ceil((limit - start) / delta) is "
                    "undefined")
    if not all(math.isfinite(x) for x in (s, lim, d)):
        raise error(f"{label} has a non-finite start, limit or delta ({s}, {lim}, {d})")
    return max(math.ceil((lim - s) / d), 0)


def check_model(model: ir.Model | ProtoModel, guards: Guards,
                backend: str | Sequence[str]) -> RuntimeChecks:
    """Refuse statically what would exceed ``guards``; returns the checks feeds need.

    ``model`` is kiln's IR, or a ModelProto seen through ``guards_view.proto_model`` (a load
    that hands the proto to its engine builds no IR for the guards).
    ``backend`` names the backend(s) the model will run on: OpenVINO's 32-bit counts apply
    when it is among them.
    """
    names = [backend] if isinstance(backend, str) else list(backend)
    backend = "openvino" if "openvino" in names else (names[0] if names else "")
    total = 0
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None:
            total += tensor_nbytes(tensor)
    guards.bytes_ok(total, "the model's initializers (together)")
    estimator = _Estimator(guards, backend)
    for value in model.graph.inputs:
        shape = _static_shape(value)
        if shape is not None:
            guards.bytes_ok(math.prod(shape) * _itemsize(value), f"graph input '{value.name}' "
                            f"(shape {shape})")
    estimator.graph(model.graph, 0)
    return estimator.checks


# ----------------------------------------------------------------------------------------
# Run-time checks on feeds


def _feed_source(value: ir.Value | None, inputs: set[str]) -> str | None:
    """The graph input ``value`` is (through Identity/Cast), or None."""
    for _ in range(8):
        if value is None:
            return None
        producer = value.producer()
        if producer is None:
            return value.name if value.name in inputs and value.const_value is None else None
        if producer.op_type not in ("Identity", "Cast") or not producer.inputs:
            return None
        value = producer.inputs[0]
    return None


@dataclasses.dataclass
class _Check:
    kind: str
    label: str
    feed: str
    data_feed: str | None = None      # for index checks: the data input's feed, if any
    data_shape: list[int] | None = None
    axis: int = 0
    batch_dims: int = 0
    others: tuple[str | None, ...] = ()  # Range: (start, limit, delta) feeds or None
    consts: tuple[Any, ...] = ()
    size: int = 4


#: The ops whose inputs ``RuntimeChecks.collect`` follows back to the feeds, by the check
#: each gets (one list: the early-out and the branches read the same names).
_INDEX_OPS = ("Gather", "GatherElements", "ScatterElements", "Scatter", "GatherND", "ScatterND")
_SIZE_OPS = ("ConstantOfShape", "Expand", "Tile")
_FED_OPS = frozenset({*_INDEX_OPS, *_SIZE_OPS, "Range", "Loop"})


class RuntimeChecks:
    """Checks of feed values that reach size- or index-sensitive ops directly."""

    def __init__(self, guards: Guards, backend: str):
        self.guards = guards
        self.backend = backend
        self.items: list[_Check] = []

    def __len__(self) -> int:
        return len(self.items)

    def collect(self, node: ir.Node, estimator: _Estimator) -> None:
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or op not in _FED_OPS:
            return
        graph = node.graph
        if graph is None:
            return
        inputs = {v.name for v in graph.inputs if v.name}
        ins = list(node.inputs) + [None] * 4
        label = _label(node)
        size = _itemsize(node.outputs[0] if node.outputs else None)
        if op in _INDEX_OPS:
            feed = _feed_source(ins[1], inputs)
            if feed is None:
                return
            axis = node.attributes.get("axis")
            batch = node.attributes.get("batch_dims")
            self.items.append(_Check(
                "nd" if op.endswith("ND") else "index", label, feed,
                data_feed=_feed_source(ins[0], inputs), data_shape=_static_shape(ins[0]),
                axis=axis.value if axis is not None else 0,
                batch_dims=batch.value if batch is not None else 0))
        elif op == "Range":
            feeds = tuple(_feed_source(v, inputs) for v in ins[:3])
            if any(feeds):
                self.items.append(_Check("range", label, "", others=feeds,
                                         consts=tuple(estimator.const(v) for v in ins[:3]),
                                         size=size))
        elif op in _SIZE_OPS:
            feed = _feed_source(ins[0] if op == "ConstantOfShape" else ins[1], inputs)
            if feed is not None:
                self.items.append(_Check("size", label, feed, data_shape=None if op ==
                                         "ConstantOfShape" else _static_shape(ins[0]),
                                         consts=(op,), size=size))
        elif op == "Loop":
            feed = _feed_source(ins[0], inputs)
            if feed is not None:
                self.items.append(_Check("trips", label, feed))

    def admit(self, feeds: Mapping[str, object]) -> None:
        """Before any copy is made: feeds whose logical size exceeds max_memory (a broadcast
        or zero-stride view costs nothing until made contiguous) and, for OpenVINO, dims it
        would cut to 32 bits."""
        if not isinstance(feeds, Mapping):
            return  # check_feeds names the problem
        for name, value in feeds.items():
            if not isinstance(value, np.ndarray):
                continue
            self.guards.bytes_ok(value.size * value.itemsize,
                                 f"input '{name}' (shape {list(value.shape)}, made contiguous)")
            if self.backend == "openvino" and any(d > INT32_MAX for d in value.shape):
                raise InputError(f"input '{name}' has shape {list(value.shape)}: OpenVINO "
                                 f"keeps dims in 32 bits (at most {INT32_MAX})")

    def run(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise InputError/ResourceError for feeds that would break the ops they reach."""
        for check in self.items:
            getattr(self, f"_{check.kind}")(check, feeds)

    def _data_shape(self, check: _Check, feeds: Mapping[str, np.ndarray]) -> list[int] | None:
        if check.data_feed is not None and check.data_feed in feeds:
            return list(feeds[check.data_feed].shape)
        return check.data_shape

    def _index(self, check: _Check, feeds: Mapping[str, np.ndarray]) -> None:
        shape = self._data_shape(check, feeds)
        indices = feeds.get(check.feed)
        if shape is None or indices is None or indices.size == 0:
            return
        axis = check.axis + len(shape) if check.axis < 0 else check.axis
        if not 0 <= axis < len(shape):
            return
        _in_range(indices, shape[axis], check, f"axis {axis}")

    def _nd(self, check: _Check, feeds: Mapping[str, np.ndarray]) -> None:
        shape = self._data_shape(check, feeds)
        indices = feeds.get(check.feed)
        if shape is None or indices is None or indices.size == 0 or indices.ndim == 0:
            return
        depth = indices.shape[-1]
        if check.batch_dims + depth > len(shape):
            raise InputError(f"input '{check.feed}' indexes {depth} axes of a rank-"
                             f"{len(shape)} tensor at {check.label}")
        flat = indices.reshape(-1, depth)
        for j in range(depth):
            _in_range(flat[:, j], shape[check.batch_dims + j], check,
                      f"axis {check.batch_dims + j}")

    def _range(self, check: _Check, feeds: Mapping[str, np.ndarray]) -> None:
        values = []
        for feed, const in zip(check.others, check.consts):
            if feed is not None:
                values.append(feeds[feed])
            elif const is not None:
                values.append(const)
            else:
                return
        for value, feed in zip(values, check.others):
            if np.asarray(value).size != 1:
                raise InputError(f"input '{feed}' of {check.label} must be a scalar")
        n = range_length(values[0], values[1], values[2], check.label, InputError)
        self.guards.bytes_ok(n * check.size, f"{check.label} ({n} elements)")

    def _size(self, check: _Check, feeds: Mapping[str, np.ndarray]) -> None:
        dims = [int(d) for d in np.asarray(feeds[check.feed]).reshape(-1)]
        if any(d < 0 for d in dims):
            raise InputError(f"input '{check.feed}' gives {check.label} a negative dim {dims}")
        if check.data_shape is not None and check.consts[0] == "Tile":
            if len(dims) == len(check.data_shape):
                dims = [d * r for d, r in zip(check.data_shape, dims)]
        elif check.data_shape is not None and check.consts[0] == "Expand":
            rank = max(len(dims), len(check.data_shape))
            a = [1] * (rank - len(check.data_shape)) + check.data_shape
            b = [1] * (rank - len(dims)) + dims
            dims = [max(x, y) if min(x, y) != 0 else 0 for x, y in zip(a, b)]
        self.guards.bytes_ok(math.prod(dims) * check.size,
                             f"{check.label} (shape {dims} from input '{check.feed}')")

    def _trips(self, check: _Check, feeds: Mapping[str, np.ndarray]) -> None:
        value = np.asarray(feeds[check.feed]).reshape(-1)
        if value.size != 1:
            raise InputError(f"input '{check.feed}' is the trip count of {check.label} and must "
                             f"hold one value, not {value.size}")
        count = int(value[0])
        limit = self.guards.max_loop_iterations
        if self.backend == "openvino":
            limit = min(limit, INT32_MAX)
        if count > limit:
            raise ResourceError(f"input '{check.feed}' asks {check.label} for {count} "
                                f"iterations, more than the {limit} kiln allows "
                                "(max_loop_iterations)")


def _in_range(indices: np.ndarray, size: int, check: _Check, where: str) -> None:
    low, high = int(indices.min()), int(indices.max())
    if low < -size or high >= size:
        bad = high if high >= size else low
        raise InputError(f"input '{check.feed}' holds index {bad}, out of range for {where} of "
                         f"size {size} at {check.label} (valid: {-size} to {size - 1})")

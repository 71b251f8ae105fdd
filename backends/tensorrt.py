"""TensorRT (NVIDIA GPUs) through its real Python API, 10.x and 11.x.

Build: the compiled ONNX goes through ``trt.OnnxParser`` into a *strongly typed* network, so
precision is exactly what the graph's Q/DQ and Cast nodes say (TensorRT 11 only has strong
typing; on 10.x kiln sets the flag). No builder precision flag is ever set. Inputs with
symbolic dims get one optimization profile whose min/opt/max come from the user
(``dims={"batch": (1, 8, 32)}`` or ``profiles={"x": ((1, 3, 224, 224), ...)}``) and otherwise
from the declared fixed dims; a symbolic dim nobody bounded is an error, never a guess.

Cache: ``save(folder)`` writes the serialized engine, the timing cache and ``tensorrt.json``
with the key the engine was built under (model digest, TensorRT version, GPU compute
capability, profiles, precision). ``load`` rebuilds when any part of that key differs and
says which one (``rebuild_reason``); the timing cache is reused whenever the TensorRT
version matches, since it is valid across models but not across versions.

Run: device memory, copies and the stream come from cuda-python (``cuda.bindings.runtime``,
``pip install cuda-python``): it is NVIDIA's own thin binding of the CUDA runtime, needs no
torch and no compiler, and hands TensorRT plain integer pointers and stream handles. Outputs
whose shape depends on the data (NonZero, NonMaxSuppression) are sized by an
``IOutputAllocator`` during ``execute_async_v3``.

This machine has no GPU; ``is_available()`` says precisely what is missing, and everything
that needs no GPU (capability rules, profile derivation, cache keys and staleness) is tested
without one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.backends.base import Availability, Backend, CompiledModel, CompileOptions, TensorSpec
from kiln.backends.onnx_export import signature, to_onnx_bytes
from kiln.compiler.target import detect_cuda_sm
from kiln.errors import (
    ArtifactError,
    BackendUnavailableError,
    InputError,
    KilnError,
    UnsupportedError,
)

if TYPE_CHECKING:
    import onnx_ir as ir

    from kiln.compiler.target import Target

ENGINE_FILE = "engine.plan"
TIMING_CACHE_FILE = "timing.cache"
MANIFEST_FILE = "tensorrt.json"

# ---------------------------------------------------------------------------------------------
# Capability: what the TensorRT ONNX parser accepts (its operator matrix for 10.x / 11.x).

#: Standard ONNX ops the parser does not implement.
UNSUPPORTED_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
    "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer",
    "Unique",
})

#: Tensor element types a TensorRT network carries (float64 is only cast down: refused, so
#: nothing loses precision silently; int8/int4/fp8/fp4 only as quantized types via Q/DQ).
SUPPORTED_DTYPES = frozenset({"float32", "float16", "bfloat16", "int32", "int64", "int8",
                              "uint8", "bool", "float8e4m3fn", "int4", "float4e2m1"})

#: Opset range of the ONNX parser: 10.x reads opsets 9-24, 11.x reads 9-25.
OPSET_MIN = 9


def opset_max(trt_version: str | None) -> int:
    """Newest ai.onnx opset the parser of ``trt_version`` reads (latest known if None)."""
    if trt_version is None:
        return 25
    major = int(trt_version.split(".")[0])
    return 25 if major >= 11 else 24


_REDUCE_OPS = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
               "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"}
_RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                       "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


def _attr(node: ir.Node, name: str, default: Any = None) -> Any:
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _is_constant(value: ir.Value | None) -> bool:
    if value is None:
        return True
    if value.const_value is not None and not value.is_graph_input():
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant"


def _used(value: ir.Value | None) -> bool:
    return value is not None and (bool(value.uses()) or value.is_graph_output())


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


_DTYPE_ALIASES = {"float": "float32", "double": "float64"}


def _dtype_name(value: ir.Value) -> str | None:
    if value.dtype is None:
        return None
    name = value.dtype.name.lower()
    return _DTYPE_ALIASES.get(name, name)


def _rule_pool(node: ir.Node) -> str | None:
    rank = _rank(node.inputs[0])
    if rank is None:
        return (f"{node.op_type} needs a known input rank (2D or 3D pooling only); the rank "
                "is unknown (dynamic shape)")
    if rank not in (4, 5):
        return f"{node.op_type} on a rank-{rank} input: TensorRT pools in 2D or 3D only"
    dilations = _attr(node, "dilations")
    if dilations and any(d != 1 for d in dilations):
        return f"{node.op_type} attribute dilations={list(dilations)}: must be all ones"
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and _used(node.outputs[1]):
        return "MaxPool output Indices is not produced by TensorRT"
    return None


def _rule_topk(node: ir.Node) -> str | None:
    if _attr(node, "sorted", 1) != 1:
        return "TopK attribute sorted=0 is unsupported (must be 1)"
    k = node.inputs[1] if len(node.inputs) > 1 else None
    if not _is_constant(k):
        return "TopK input K must be a build-time constant"
    if k is not None and k.const_value is not None:
        if int(np.asarray(k.const_value.numpy()).reshape(-1)[0]) >= 3840:
            return "TopK K must be less than 3840"
    return None


def _rule_resize(node: ir.Node) -> str | None:
    mode = _attr(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize attribute mode='{mode}' is unsupported (nearest or linear only)"
    coordinates = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if coordinates not in _RESIZE_COORDINATES:
        return f"Resize attribute coordinate_transformation_mode='{coordinates}' is unsupported"
    nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    if mode == "nearest" and nearest not in _RESIZE_NEAREST:
        return f"Resize attribute nearest_mode='{nearest}' is unsupported"
    if _attr(node, "antialias", 0):
        return "Resize attribute antialias=1 is unsupported"
    if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return "Resize attribute keep_aspect_ratio_policy must be 'stretch'"
    return None


def _rule_constant_input(index: int, what: str):
    def rule(node: ir.Node) -> str | None:
        value = node.inputs[index] if len(node.inputs) > index else None
        if not _is_constant(value):
            return f"{node.op_type} input {what} must be a build-time constant"
        return None
    return rule


def _rule_attr_equals(name: str, allowed: Any):
    def rule(node: ir.Node) -> str | None:
        value = _attr(node, name)
        if value is not None and value != allowed:
            return f"{node.op_type} attribute {name}={value!r} is unsupported"
        return None
    return rule


def _rule_first_output_only(node: ir.Node) -> str | None:
    if any(_used(v) for v in node.outputs[1:]):
        return f"{node.op_type}: only the first output is supported by TensorRT"
    return None


def _rule_dropout(node: ir.Node) -> str | None:
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return None
    if training.const_value is None or bool(np.asarray(training.const_value.numpy())):
        return "Dropout input training_mode must be a constant False"
    return None


def _rule_constant(node: ir.Node) -> str | None:
    for name in ("sparse_value", "value_string", "value_strings"):
        if name in node.attributes:
            return f"Constant attribute {name} is unsupported"
    return None


def _rule_static_input(node: ir.Node) -> str | None:
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    if shape is None or not all(isinstance(d, int) for d in shape):
        return f"{node.op_type} needs an input with static dims (dynamic shape)"
    return None


#: Per-op conditions beyond "the parser has it" (attributes, constant inputs, ranks).
OP_RULES = {
    "MaxPool": _rule_pool, "AveragePool": _rule_pool, "LpPool": _rule_pool,
    "TopK": _rule_topk,
    "Resize": _rule_resize,
    "ScatterND": _rule_attr_equals("reduction", "none"),
    "LSTM": lambda n: _rule_attr_equals("input_forget", 0)(n) or _rule_attr_equals(
        "layout", 0)(n),
    "LayerNormalization": _rule_first_output_only,
    "Dropout": _rule_dropout,
    "Constant": _rule_constant,
    "Squeeze": _rule_constant_input(1, "axes"),
    "Unsqueeze": _rule_constant_input(1, "axes"),
    "CumSum": _rule_constant_input(1, "axis"),
    "OneHot": _rule_constant_input(1, "depth"),
    "EyeLike": _rule_static_input,
    **{op: _rule_constant_input(1, "axes") for op in _REDUCE_OPS},
}


def trt_refusal(node: ir.Node, trt_version: str | None = None) -> str | None:
    """Why TensorRT's ONNX parser would not take ``node`` (None when it would)."""
    if node.domain not in ("", "ai.onnx"):
        return f"domain '{node.domain}' needs a TensorRT plugin; kiln registers none"
    if node.op_type in UNSUPPORTED_OPS:
        return f"{node.op_type} is not implemented by the TensorRT ONNX parser"
    graph = node.graph
    opset = None if graph is None else graph.opset_imports.get("")
    if opset is not None and not OPSET_MIN <= opset <= opset_max(trt_version):
        return (f"opset {opset} is outside the TensorRT parser's range {OPSET_MIN}-"
                f"{opset_max(trt_version)}")
    for value in list(node.inputs) + list(node.outputs):
        if value is None:
            continue
        dtype = _dtype_name(value)
        if dtype is not None and dtype not in SUPPORTED_DTYPES:
            return f"{node.op_type} on {dtype} tensor '{value.name}': dtype not in TensorRT"
    rule = OP_RULES.get(node.op_type)
    return rule(node) if rule is not None else None


# ---------------------------------------------------------------------------------------------
# Optimization profiles.

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Profile:
    """min/opt/max shapes per input name (fixed inputs have all three equal)."""

    shapes: tuple[tuple[str, Shape, Shape, Shape], ...]

    @property
    def dynamic(self) -> bool:
        return any(lo != hi for _, lo, _, hi in self.shapes)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"input": n, "min": list(lo), "opt": list(opt), "max": list(hi)}
                for n, lo, opt, hi in self.shapes]

    def check(self, name: str, shape: Sequence[int]) -> str | None:
        """Why ``shape`` lies outside the profile for input ``name`` (None if inside)."""
        for input_name, lo, _, hi in self.shapes:
            if input_name == name:
                if len(shape) != len(lo) or any(not a <= s <= b
                                                 for s, a, b in zip(shape, lo, hi)):
                    return (f"input '{name}' has shape {list(shape)}, outside the engine's "
                            f"profile min {list(lo)} .. max {list(hi)}; rebuild with wider "
                            "dims=... to accept it")
        return None


def _range(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        triple = (value, value, value)
    elif isinstance(value, Sequence) and len(value) == 3 and all(
            isinstance(v, int) for v in value):
        triple = (int(value[0]), int(value[1]), int(value[2]))
    else:
        raise InputError(f"{where}: expected an int or (min, opt, max) ints, got {value!r}")
    lo, opt, hi = triple
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"{where}: need 1 <= min <= opt <= max, got {triple}")
    return triple


def derive_profile(inputs: Sequence[TensorSpec], dims: Mapping[str, Any] | None = None,
                   shapes: Mapping[str, Sequence[Sequence[int]]] | None = None) -> Profile:
    """One optimization profile for ``inputs``.

    ``shapes`` gives an input's whole (min, opt, max) shapes; otherwise each dim is its
    declared size when fixed, or ``dims[symbol]`` (an int, or a (min, opt, max) triple) when
    symbolic. A symbolic or unknown dim with no bound raises InputError naming it.
    """
    dims = dict(dims or {})
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {s.name for s in inputs})
    if unknown:
        raise InputError(f"profile shapes given for unknown input(s) {unknown}; inputs are "
                         f"{[s.name for s in inputs]}")
    result = []
    for spec in inputs:
        if spec.name in shapes:
            given = shapes[spec.name]
            if len(given) != 3:
                raise InputError(f"profile for input '{spec.name}' needs (min, opt, max) "
                                 f"shapes, got {given!r}")
            lo, opt, hi = (tuple(int(d) for d in s) for s in given)
            if spec.shape is not None and any(len(s) != len(spec.shape) for s in (lo, opt, hi)):
                raise InputError(f"profile for input '{spec.name}' has the wrong rank; "
                                 f"expected {spec.describe()}")
            for axis, (a, b, c) in enumerate(zip(lo, opt, hi)):
                _range((a, b, c), f"profile for input '{spec.name}' axis {axis}")
                declared = None if spec.shape is None else spec.shape[axis]
                if isinstance(declared, int) and not a == b == c == declared:
                    raise InputError(f"profile for input '{spec.name}' axis {axis} must be "
                                     f"{declared} (a fixed dim), got {(a, b, c)}")
            result.append((spec.name, lo, opt, hi))
            continue
        if spec.shape is None:
            raise InputError(f"input '{spec.name}' has an unknown rank: give its profile as "
                             f"profiles={{'{spec.name}': (min_shape, opt_shape, max_shape)}}")
        triples = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                triples.append((dim, dim, dim))
            elif isinstance(dim, str) and dim in dims:
                triples.append(_range(dims[dim], f"dims['{dim}']"))
            else:
                label = f"'{dim}'" if isinstance(dim, str) else "an unnamed dynamic dim"
                raise InputError(
                    f"input '{spec.name}' axis {axis} is {label} with no range: TensorRT "
                    "needs min/opt/max, e.g. dims={'" + (dim if isinstance(dim, str) else "N")
                    + "': (1, 8, 32)} or profiles={'" + spec.name + "': (min, opt, max)}")
        result.append((spec.name, tuple(t[0] for t in triples), tuple(t[1] for t in triples),
                       tuple(t[2] for t in triples)))
    return Profile(tuple(result))


# ---------------------------------------------------------------------------------------------
# Engine cache key and staleness.

def model_digest(onnx_bytes: bytes) -> str:
    return hashlib.sha256(onnx_bytes).hexdigest()


def engine_key(model_sha256: str, trt_version: str, gpu_sm: int, profile: Profile,
               precision: str) -> dict[str, Any]:
    """What an engine depends on; stored next to it and compared on load."""
    return {"model_sha256": model_sha256, "tensorrt_version": trt_version, "gpu_sm": gpu_sm,
            "profile": profile.to_json(), "precision": precision}


def stale_reason(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """Why a saved engine cannot be used here (None when it can). The order matters: the
    TensorRT version and the GPU make an engine unloadable, the rest makes it wrong."""
    if saved is None:
        return "no saved engine"
    checks = (
        ("tensorrt_version", "TensorRT version changed: engine built with {old}, this is {new}"),
        ("gpu_sm", "GPU compute capability changed: engine built for sm_{old}, this GPU is "
                   "sm_{new}"),
        ("model_sha256", "the model changed (sha256 {old:.12} -> {new:.12})"),
        ("profile", "the optimization profile changed ({old} -> {new})"),
        ("precision", "the precision changed ({old} -> {new})"),
    )
    for field, message in checks:
        if saved.get(field) != current.get(field):
            return message.format(old=saved.get(field), new=current.get(field))
    return None


def timing_cache_usable(saved: Mapping[str, Any] | None, trt_version: str) -> bool:
    """A timing cache is shared across models but only within one TensorRT version."""
    return saved is not None and saved.get("tensorrt_version") == trt_version


# ---------------------------------------------------------------------------------------------
# GPU side: build and run.

def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def _cuda_call(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise KilnError(f"CUDA {what} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class _DeviceBuffer:
    """One cudaMalloc'd block, grown on demand, freed with its owner."""

    def __init__(self):
        self.ptr = 0
        self.size = 0

    def ensure(self, size: int) -> int:
        if size > self.size:
            self.free()
            self.ptr = int(_cuda_call(_cudart().cudaMalloc(max(size, 1)), "cudaMalloc"))
            self.size = size
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            _cudart().cudaFree(self.ptr)
            self.ptr, self.size = 0, 0

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass


def _output_allocator(trt):
    """An IOutputAllocator that sizes data-dependent outputs (TensorRT calls it in enqueue)."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, _DeviceBuffer] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return self.buffers.setdefault(tensor_name, _DeviceBuffer()).ensure(int(size))

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()


def build_engine(onnx_bytes: bytes, profile: Profile, timing_cache: bytes | None,
                 options: CompileOptions) -> tuple[bytes, bytes]:
    """Parse and build; returns (serialized engine, serialized timing cache)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required on 10.x, accepted and implied on 11.x
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedError("the TensorRT ONNX parser refused the model: "
                               + "; ".join(errors[:10]))
    config = builder.create_builder_config()
    workspace = options.extra.get("trt_workspace_bytes")
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    level = options.extra.get("trt_optimization_level")
    if level is not None:
        config.builder_optimization_level = int(level)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)
    if profile.dynamic:
        trt_profile = builder.create_optimization_profile()
        for name, lo, opt, hi in profile.shapes:
            trt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise KilnError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())


class TensorRtCompiled(CompiledModel):
    """A deserialized engine with one execution context and one CUDA stream."""

    backend = "tensorrt"

    def __init__(self, engine_bytes: bytes, timing_cache: bytes, key: dict[str, Any],
                 model: ir.Model, profile: Profile, rebuild_reason: str | None = None):
        import tensorrt as trt

        self.inputs, self.outputs = signature(model)
        self.engine_bytes, self.timing_cache, self.key = engine_bytes, timing_cache, key
        self.profile = profile
        self.rebuild_reason = rebuild_reason
        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise ArtifactError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda_call(_cudart().cudaStreamCreate(), "cudaStreamCreate")
        self._lock = threading.Lock()  # one context: one inference at a time
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._allocator = _output_allocator(trt)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._input_names = [n for n in names if self._engine.get_tensor_mode(n) == mode]
        self._output_names = [n for n in names if self._engine.get_tensor_mode(n) != mode]
        self._dtypes = {}
        for n in names:
            dtype = self._engine.get_tensor_dtype(n)
            try:
                self._dtypes[n] = np.dtype(trt.nptype(dtype))
            except TypeError as exc:  # bf16 / fp8 have no numpy type
                raise UnsupportedError(f"engine tensor '{n}' is {dtype}, which numpy cannot "
                                       "hold; keep graph inputs and outputs at fp32/fp16 "
                                       "(Cast inside the graph)") from exc

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = _cudart()
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            hosts = {}
            for name in self._input_names:
                array = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
                hosts[name] = array
                outside = self.profile.check(name, array.shape)
                if outside:
                    raise InputError(outside)
                if not self._context.set_input_shape(name, array.shape):
                    raise InputError(f"TensorRT refused input '{name}' shape "
                                     f"{list(array.shape)}")
                ptr = self._buffers.setdefault(name, _DeviceBuffer()).ensure(array.nbytes)
                _cuda_call(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d,
                                                  self._stream), "cudaMemcpyAsync")
                self._context.set_tensor_address(name, ptr)
            static = {}
            for name in self._output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):  # data-dependent: the allocator sizes it
                    self._context.set_output_allocator(name, self._allocator)
                    continue
                nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
                ptr = self._buffers.setdefault(name, _DeviceBuffer()).ensure(nbytes)
                self._context.set_tensor_address(name, ptr)
                static[name] = (shape, ptr)
            if not self._context.execute_async_v3(int(self._stream)):
                raise KilnError("TensorRT failed to enqueue the inference")
            results = {}
            for name in self._output_names:
                if name in static:
                    shape, ptr = static[name]
                else:
                    shape = self._allocator.shapes[name]
                    ptr = self._allocator.buffers[name].ptr
                out = np.empty(shape, dtype=self._dtypes[name])
                if out.nbytes:
                    _cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h,
                                                      self._stream), "cudaMemcpyAsync")
                results[name] = out
            _cuda_call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            del hosts  # host inputs stay alive until the stream finished reading them
        return results

    def save(self, folder: Path) -> list[str]:
        folder = Path(folder)
        (folder / ENGINE_FILE).write_bytes(self.engine_bytes)
        (folder / TIMING_CACHE_FILE).write_bytes(self.timing_cache)
        (folder / MANIFEST_FILE).write_text(json.dumps(self.key, indent=1))
        return [ENGINE_FILE, TIMING_CACHE_FILE, MANIFEST_FILE]


# ---------------------------------------------------------------------------------------------

class TensorRtBackend(Backend):
    name = "tensorrt"

    def is_available(self) -> Availability:
        try:
            import tensorrt as trt
        except Exception as exc:
            return Availability(False, "the tensorrt package is not installed "
                                f"({type(exc).__name__}); pip install 'kiln[tensorrt]'")
        version = getattr(trt, "__version__", None)
        sm = detect_cuda_sm()
        if sm is None:
            return Availability(False, "no CUDA device: nvidia-smi is missing or reports no GPU",
                                version)
        try:
            _cudart()
        except Exception as exc:
            return Availability(False, f"cuda-python is not installed ({type(exc).__name__}); "
                                "pip install cuda-python", version)
        return Availability(True, f"CUDA device sm_{sm}", version)

    def _version(self) -> str | None:
        try:
            import tensorrt as trt
        except Exception:
            return None
        return getattr(trt, "__version__", None)

    def supports(self, node: ir.Node) -> bool:
        return self.refusal(node) is None

    def refusal(self, node: ir.Node) -> str | None:
        return trt_refusal(node, self._version())

    def supported_precisions(self) -> tuple[str, ...]:
        return ("fp32", "fp16", "bf16", "int8")

    def _prepare(self, model: ir.Model, options: CompileOptions):
        status = self.is_available()
        if not status.ok:
            raise BackendUnavailableError(f"tensorrt is unavailable: {status.reason}")
        wanted = options.precision
        from kiln.compiler.reduce import precision_in_graph

        if wanted != "fp32" and wanted not in precision_in_graph(model):
            raise UnsupportedError(
                f"precision {wanted} must be in the graph (Cast or Q/DQ nodes placed by kiln's "
                "precision passes); TensorRT builds strongly typed networks and kiln sets no "
                "builder precision flags")
        inputs, _ = signature(model)
        profile = derive_profile(inputs, options.extra.get("dims"),
                                 options.extra.get("profiles"))
        onnx_bytes = to_onnx_bytes(model)
        key = engine_key(model_digest(onnx_bytes), str(status.version), int(detect_cuda_sm()),
                         profile, wanted)
        return onnx_bytes, profile, key

    def compile(self, model: ir.Model, target: Target, options: CompileOptions) -> CompiledModel:
        onnx_bytes, profile, key = self._prepare(model, options)
        if target.gpu_sm is not None and target.gpu_sm != key["gpu_sm"]:
            raise UnsupportedError(f"target sm_{target.gpu_sm} differs from this GPU "
                                   f"(sm_{key['gpu_sm']}); TensorRT builds for the GPU present")
        engine, cache = build_engine(onnx_bytes, profile, None, options)
        return TensorRtCompiled(engine, cache, key, model, profile)

    def load(self, blobs: Mapping[str, bytes], model: ir.Model, target: Target,
             options: CompileOptions) -> CompiledModel:
        """The saved engine when its key matches; otherwise a rebuild that says why."""
        onnx_bytes, profile, key = self._prepare(model, options)
        saved = None
        if MANIFEST_FILE in blobs:
            try:
                saved = json.loads(blobs[MANIFEST_FILE])
            except ValueError as exc:
                raise ArtifactError(f"{MANIFEST_FILE}: unreadable: {exc}") from exc
        reason = stale_reason(saved, key)
        cache = blobs.get(TIMING_CACHE_FILE)
        if reason is None and ENGINE_FILE in blobs:
            return TensorRtCompiled(blobs[ENGINE_FILE], cache or b"", key, model, profile)
        reason = reason or "the engine file is missing"
        reuse = cache if timing_cache_usable(saved, key["tensorrt_version"]) else None
        engine, cache_out = build_engine(onnx_bytes, profile, reuse, options)
        return TensorRtCompiled(engine, cache_out, key, model, profile,
                                rebuild_reason=f"rebuilt: {reason}")

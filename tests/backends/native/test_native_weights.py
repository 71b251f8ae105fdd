"""Who holds the native engine's weights: a constant is read in place when it is aligned,
its bytes are dropped once every node reading it packed it (MatMul / Gemm weights), and an
external tensor's file map is closed then; a constant something still reads keeps its bytes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.backends.base import CompileOptions
from kiln.backends.native import _native
from kiln.backends.native.backend import NativeBackend
from kiln.runtime.weights import offload_weights


def _aligned(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A float32 array whose data starts on a 64-byte boundary."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    raw = np.empty(values.nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start:start + values.nbytes].view(np.float32).reshape(shape)
    out[...] = values
    return out


def _matmul_plan(weight: np.ndarray, borrowed: bool) -> _native.Plan:
    # values: 0 = x, 1 = W, 2 = y
    plan = _native.Plan(3)
    plan.add_constant(1, weight, 0, borrowed)
    plan.add_node("mm", "", "MatMul", 13, [0, 1], [2], {})
    return plan


@pytest.mark.parametrize("borrowed", [True, False])
def test_a_packed_matmul_weight_is_dropped_and_the_plan_still_multiplies(borrowed: bool):
    w = _aligned((64, 48))
    plan = _matmul_plan(w, borrowed)
    assert plan.constant_bytes == w.nbytes
    assert plan.release_constant(1)
    assert plan.constant_bytes == 0
    plan.set_memory([-1] * 3, [0] * 3, 0, [[]])
    plan.set_io([0], [2])
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    [(y, _)] = plan.run([x])
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)


def test_a_constant_a_kernel_still_reads_keeps_its_bytes():
    w = _aligned((4, 4))
    plan = _native.Plan(3)
    plan.add_constant(1, w, 0, True)
    plan.add_node("add", "", "Add", 14, [0, 1], [2], {})
    assert not plan.release_constant(1)
    assert plan.constant_bytes == w.nbytes


def test_a_node_reading_a_released_constant_is_refused():
    plan = _matmul_plan(_aligned((16, 8)), True)
    assert plan.release_constant(1)
    with pytest.raises(_native.NodeError, match="released"):
        plan.add_node("add", "", "Add", 14, [1, 1], [2], {})


def test_a_released_constant_cannot_be_a_graph_output():
    plan = _matmul_plan(_aligned((16, 8)), True)
    assert plan.release_constant(1)
    plan.set_memory([-1] * 3, [0] * 3, 0, [[]])
    with pytest.raises(ValueError, match="released"):
        plan.set_io([0], [2, 1])


def _mlp(w1: np.ndarray, w2: np.ndarray, bias: np.ndarray):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, w1.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, w2.shape[1]])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [x], [y], [
        numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compiled_weights_from_a_file_are_packed_then_unmapped():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((256, 512)).astype(np.float32)  # 512 KiB each: offloaded
    w2 = rng.standard_normal((512, 256)).astype(np.float32)
    bias = rng.standard_normal(512).astype(np.float32)
    model = ir.from_proto(_mlp(w1, w2, bias))
    assert offload_weights(model)  # just over 1 MiB: moved to a file, read through maps
    compiled = NativeBackend().compile(model, None, CompileOptions(threads=1))
    x = rng.standard_normal((3, 256)).astype(np.float32)
    expected = np.maximum(x @ w1 + bias, 0) @ w2
    np.testing.assert_allclose(compiled.run({"x": x})["y"], expected, rtol=1e-3, atol=1e-3)
    # the packed MatMul weights are no longer held as they were; the bias is
    assert compiled.report["constant_bytes"] == bias.nbytes
    for name in ("w1", "w2"):
        tensor = model.graph.initializers[name].const_value
        assert isinstance(tensor, ir.ExternalTensor)
        assert tensor.raw is None  # the map was closed once the plan had packed it


def _mapped(tmp_path, values: np.ndarray) -> np.ndarray:
    import mmap

    path = tmp_path / "w.bin"
    path.write_bytes(values.tobytes())
    with open(path, "rb") as f:
        raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(raw, values.dtype).reshape(values.shape)


def test_only_read_only_file_maps_count_as_file_backed(tmp_path):
    from kiln.backends.native.backend import _maps_a_file

    values = _aligned((8, 8))
    assert _maps_a_file(_mapped(tmp_path, values))
    assert not _maps_a_file(values)
    assert not _maps_a_file(np.frombuffer(bytearray(values.tobytes()), np.float32))


def test_file_backed_weights_still_read_right_after_their_pages_are_dropped(tmp_path):
    # values: 0 = x, 1 = b (file-backed), 2 = y; the first run drops b's pages after the Add
    # reads it, later runs read them again from the file
    b = np.random.default_rng(2).standard_normal((4096,)).astype(np.float32)  # 4 pages
    mapped = _mapped(tmp_path, b)
    plan = _native.Plan(3)
    plan.add_constant(1, mapped, 0, True)
    plan.set_file_backed(1)
    plan.add_node("add", "", "Add", 14, [0, 1], [2], {})
    plan.set_memory([-1] * 3, [0] * 3, 0, [[]])
    plan.set_io([0], [2])
    x = np.ones(4096, np.float32)
    for _ in range(3):
        [(y, _)] = plan.run([x])
        np.testing.assert_array_equal(y, x + b)


def test_set_file_backed_needs_a_constant():
    plan = _native.Plan(3)
    with pytest.raises(ValueError, match="not a constant"):
        plan.set_file_backed(0)


def test_nodes_multiplying_one_constant_share_its_packed_copy():
    # An unrolled recurrent net: each step's Gemm reads the same weight (one packed copy per
    # plan), and a MatMul reading it the other way round packs its own; every product right.
    import kiln

    rng = np.random.default_rng(3)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    nodes = [helper.make_node("Gemm", [f"x{t}", "W"], [f"y{t}"], transB=1) for t in range(4)]
    nodes.append(helper.make_node("MatMul", ["z", "W"], ["u"]))
    inputs = [helper.make_tensor_value_info(f"x{t}", TensorProto.FLOAT, [2, 40])
              for t in range(4)]
    inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 24]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
               for n in ("y0", "y1", "y2", "y3", "u")]
    model = helper.make_model(
        helper.make_graph(nodes, "shared", inputs, outputs, [numpy_helper.from_array(w, "W")]),
        opset_imports=[helper.make_opsetid("", 17)])
    feeds = {f"x{t}": rng.standard_normal((2, 40)).astype(np.float32) for t in range(4)}
    feeds["z"] = rng.standard_normal((3, 24)).astype(np.float32)
    got = kiln.Session(model, backend="native", fallback=None, opt_level=0).run(None, feeds)
    for t in range(4):
        np.testing.assert_allclose(got[t], feeds[f"x{t}"] @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[4], feeds["z"] @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ConvTranspose", "DynamicQuantizeLSTM"])
def test_weights_a_kernel_packed_at_build_are_dropped(op: str):
    # A 4x4 stride-2 ConvTranspose's W and a DynamicQuantizeLSTM's W, R, scales and zero
    # points are packed at build: the plan keeps none of their bytes (the LSTM its float
    # bias only), and still computes what onnxruntime does.
    import onnxruntime as ort

    if op == "ConvTranspose":
        rng = np.random.default_rng(5)
        w = rng.standard_normal((8, 6, 4, 4)).astype(np.float32)
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                                pads=[1, 1, 1, 1])
        graph = helper.make_graph(
            [node], "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 7])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        feeds = {"x": rng.standard_normal((1, 8, 5, 7)).astype(np.float32)}
        kept = 0
    else:
        from tests.backends.native.test_recurrent import _dq_lstm_model

        model, feeds = _dq_lstm_model("bidirectional", np.uint8, True, zero=131)
        kept = next(t for t in model.graph.initializer if t.name == "B").dims
        kept = int(np.prod(kept)) * 4
    compiled = NativeBackend().compile(ir.from_proto(model), None, CompileOptions(threads=1))
    assert compiled.report["constant_bytes"] == kept
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, ref in zip(compiled.run(feeds).values(), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5)

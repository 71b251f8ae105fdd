"""The executor's per-run state: constants read in place, one value table and arena reused by
run after run, and the measuring run of a new input signature (symbolic dims) reusing the
buffers of dead values. Each check compares with onnxruntime on the same inputs."""

from __future__ import annotations

import threading

import numpy as np
from model_builders import run_reference
from native_cases import compile_native
from onnx import TensorProto, helper, numpy_helper


def _chain_model(symbolic: bool):
    """x -> (+w0, Relu) -> MaxPool 2x2 -> (+w1 per channel, Sigmoid) -> Conv 3x3 -> y, with
    a constant graph output `k` beside it: values of several sizes die and are made along the
    way."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((1, 4, 1, 1)).astype(np.float32)
    w1 = rng.standard_normal((1, 4, 1, 1)).astype(np.float32)
    wc = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    k = rng.standard_normal((3, 5)).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "w0"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Add", ["p", "w1"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["s"]),
             helper.make_node("Conv", ["s", "wc"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Identity", ["k"], ["k_out"])]
    dims = ["n", 4, "h", "w"] if symbolic else [1, 4, 16, 12]
    out_dims = ["n", 6, "oh", "ow"] if symbolic else [1, 6, 8, 6]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims),
         helper.make_tensor_value_info("k_out", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(v, n) for n, v in
         [("w0", w0), ("w1", w1), ("wc", wc), ("k", k)]])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run_in_threads(worker, count: int) -> None:
    """worker(0) .. worker(count - 1) at once, each on its own thread, all finished."""
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a run did not finish"


def test_outputs_of_an_earlier_run_survive_later_runs():
    model = _chain_model(symbolic=False)
    compiled = compile_native(model)
    x1, x2 = _x((1, 4, 16, 12), 1), _x((1, 4, 16, 12), 2)
    first = compiled.run({"x": x1})
    kept = {name: arr.copy() for name, arr in first.items()}
    first["k_out"][...] = 0  # the caller's array: writing it changes no later result
    second = compiled.run({"x": x2})
    np.testing.assert_array_equal(first["y"], kept["y"])  # not overwritten by the second run
    ref1, ref2 = run_reference(model, {"x": x1}), run_reference(model, {"x": x2})
    np.testing.assert_allclose(kept["y"], ref1[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(second["y"], ref2[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(second["k_out"], ref2[1])


def test_symbolic_dims_new_shapes_and_repeats_match_the_reference():
    # Every new shape is a measuring run (intermediates on reused heap buffers); the repeat of
    # a shape runs on the layout planned from it; a larger shape after a smaller one needs a
    # larger arena than the reused one.
    model = _chain_model(symbolic=True)
    compiled = compile_native(model, threads=2)
    for seed, shape in enumerate([(1, 4, 8, 8), (1, 4, 8, 8), (2, 4, 20, 14), (1, 4, 8, 8),
                                  (2, 4, 20, 14), (1, 4, 6, 10)]):
        x = _x(shape, seed)
        got = compiled.run({"x": x})
        ref = run_reference(model, {"x": x})
        np.testing.assert_allclose(got["y"], ref[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got["k_out"], ref[1])
    # three input signatures, each measured once and planned: the runs above were not static
    assert len(compiled.signature_arena_bytes()) == 3


def test_runs_from_several_threads_at_once_each_get_their_own_values():
    model = _chain_model(symbolic=True)
    compiled = compile_native(model)
    shapes = [(1, 4, 8, 8), (2, 4, 12, 10), (1, 4, 16, 6)]
    inputs = [_x(shapes[i % 3], i) for i in range(12)]
    refs = [run_reference(model, {"x": x})[0] for x in inputs]
    errors: list[str] = []

    def worker(offset: int) -> None:
        for _ in range(5):
            for i in range(offset, len(inputs), 3):
                got = compiled.run({"x": inputs[i]})["y"]
                if got.shape != refs[i].shape or not np.allclose(got, refs[i], rtol=1e-4,
                                                                  atol=1e-5):
                    errors.append(f"input {i}: wrong result")

    _run_in_threads(worker, 3)
    assert errors == []


def _large_output_model():
    """y = Relu(x + 1) over 1 MB: a graph output large enough for the pool of output
    buffers that numpy has let go of."""
    nodes = [helper.make_node("Add", ["x", "one"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    shape = [1, 64, 64, 64]
    graph = helper.make_graph(
        nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_large_output_buffer_is_reused_only_after_numpy_lets_go_of_it():
    compiled = compile_native(_large_output_model())
    xs = [_x((1, 64, 64, 64), seed) for seed in range(4)]
    want = [np.maximum(x + 1, 0) for x in xs]
    held = [compiled.run({"x": xs[0]})["y"], compiled.run({"x": xs[1]})["y"]]
    assert not np.shares_memory(held[0], held[1])
    del held[0]  # its buffer goes back to the pool, for the next run's output
    third = compiled.run({"x": xs[2]})["y"]
    fourth = compiled.run({"x": xs[3]})["y"]
    for got, i in ((held[0], 1), (third, 2), (fourth, 3)):
        np.testing.assert_array_equal(got, want[i])  # no run wrote into a held output
    assert not np.shares_memory(third, held[0]) and not np.shares_memory(fourth, third)


def test_large_outputs_from_several_threads_stay_their_own():
    compiled = compile_native(_large_output_model())
    xs = [_x((1, 64, 64, 64), seed) for seed in range(6)]
    want = [np.maximum(x + 1, 0) for x in xs]
    errors: list[str] = []

    def worker(offset: int) -> None:
        kept = []
        for _ in range(6):
            for i in range(offset, len(xs), 2):
                kept.append((i, compiled.run({"x": xs[i]})["y"]))
                if len(kept) > 3:
                    kept.pop(0)
                if any(not np.array_equal(y, want[j]) for j, y in kept):
                    errors.append(f"input {i}: an output changed or is wrong")

    _run_in_threads(worker, 2)
    assert errors == []

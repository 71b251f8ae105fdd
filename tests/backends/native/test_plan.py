"""The native plan's memory: liveness placement in one arena, and the views that make Concat
and reshapes free (a reshape's output on its input's bytes, a Concat's inputs in their slots
of its output). Checked on the plan itself (no two live values overlap unless one is a view
of the other) and on numbers against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import model_from_arrays, run_reference
from native_cases import compile_native
from onnx import helper

from kiln.backends.native.plan import plan_memory
from kiln.zoo import light_model


def _overlaps(memory, defs, last, views_of) -> list[tuple[int, int]]:
    """Pairs of values whose bytes and lifetimes overlap, other than a view and its host."""
    live = [(v, memory.offsets[v], memory.planned_bytes[v], defs[v], last.get(v, defs[v]))
            for v in defs if memory.offsets[v] >= 0]
    bad = []
    for i, (a, oa, sa, ba, ea) in enumerate(live):
        for b, ob, sb, bb, eb in live[i + 1:]:
            if views_of(a) == views_of(b):
                continue
            if oa < ob + sb and ob < oa + sa and not (ea < bb or eb < ba):
                bad.append((a, b))
    return bad


def test_views_share_their_hosts_bytes_for_the_whole_group_lifetime():
    # 0: a (node 0), 1: b (node 1), 2: concat(a, b) (node 2), 3: reshape(2) (node 3),
    # 4: another value live across all of it (node 0 .. 4)
    defs = {0: 0, 1: 1, 2: 2, 3: 3, 4: 0}
    last = {0: 2, 1: 2, 2: 3, 3: 4, 4: 4}
    sizes = {0: 128, 1: 64, 2: 192, 3: 192, 4: 256}
    memory = plan_memory(5, 5, defs, last, sizes, pinned=set(),
                         views=[(0, 2, 0), (1, 2, 128), (3, 2, 0)])
    o = memory.offsets
    assert o[0] == o[2] and o[1] == o[2] + 128 and o[3] == o[2]
    # value 4 lives from node 0 to 4, as does the group (a is made at node 0): no overlap
    assert o[4] >= o[2] + 192 or o[2] >= o[4] + 256
    assert memory.arena_bytes == 192 + 256


def test_a_pinned_host_or_value_gets_no_view():
    defs, last, sizes = {0: 0, 1: 1}, {0: 1, 1: 1}, {0: 64, 1: 64}
    memory = plan_memory(2, 2, defs, last, sizes, pinned={1}, views=[(0, 1, 0)])
    assert memory.offsets[1] == -1 and memory.offsets[0] >= 0


def _branches_model(batch: int, extra_reader: bool, channels: tuple[int, int] = (16, 24)):
    rng = np.random.default_rng(0)
    c1, c2 = channels
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_a"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
             helper.make_node("Flatten", ["cat"], ["flat"], axis=1),
             helper.make_node("Sigmoid", ["flat"], ["y"])]
    outputs = ["y"]
    if extra_reader:  # another reader of b, before the Concat or after it
        at = len(nodes) if extra_reader == "after" else 3
        nodes.insert(at, helper.make_node("Neg", ["b"], ["side"]))
        outputs.append("side")
    inits = {"w1": rng.standard_normal((c1, 8, 1, 1)).astype(np.float32),
             "w2": rng.standard_normal((c2, 8, 3, 3)).astype(np.float32)}
    x = rng.standard_normal((batch, 8, 6, 7)).astype(np.float32)
    return model_from_arrays(nodes, {"x": x}, outputs, initializers=inits), {"x": x}


@pytest.mark.parametrize("batch, extra_reader, channels, in_place", [
    (1, False, (16, 24), True),    # both inputs in their slots, the Flatten on the Concat
    (2, False, (16, 24), False),   # batch 2: the chunks interleave, Concat copies
    (1, "before", (16, 24), True),  # b is also read by Neg before the Concat: in its slot
    (1, "after", (16, 24), None),   # ... and after it: a in place, b copied
    (1, False, (3, 5), None),      # a's chunk is 3 * 42 floats: b's slot is not aligned
])
def test_concat_inputs_land_in_their_slots_only_where_that_is_exact(batch, extra_reader,
                                                                    channels, in_place):
    model, feeds = _branches_model(batch, extra_reader, channels)
    compiled = compile_native(model)
    plan = compiled.segments[0].lowered
    ids = {name: i for i, name in enumerate(plan.value_names)}
    o = plan.memory.offsets
    if in_place:
        assert o[ids["a"]] == o[ids["cat"]] == o[ids["flat"]] >= 0
        assert o[ids["b"]] == o[ids["cat"]] + 16 * 6 * 7 * 4
    elif in_place is False:
        assert o[ids["a"]] != o[ids["cat"]] and o[ids["b"]] != o[ids["cat"]]
    else:
        assert o[ids["b"]] != o[ids["cat"]] + channels[0] * 6 * 7 * 4
    got = compiled.run(feeds)
    for spec, want in zip(compiled.outputs, run_reference(model, feeds)):
        np.testing.assert_allclose(got[spec.name], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "shufflenet"])
def test_no_two_live_values_share_bytes_in_light_models(name: str):
    compiled = compile_native(onnx.load(str(light_model(name))))
    for segment in compiled.segments:
        plan = segment.lowered
        defs: dict[int, int] = {}
        last: dict[int, int] = {}
        for k, node in enumerate(plan.nodes):
            for i in node.inputs:
                if i >= 0:
                    last[i] = k
            for i in node.outputs:
                if i >= 0:
                    defs[i] = k
        view_of = plan.memory.view_of
        assert view_of, "the light models' Concats and reshapes should be views"
        assert not _overlaps(plan.memory, defs, last, lambda v, views=view_of: views.get(v, v))


def test_a_concat_planned_from_lying_shapes_still_concatenates():
    """Shapes from a plan blob that claim batch 1 where the model runs batch 2 (same bytes):
    the plan puts the inputs in slots a batch-1 Concat would use; the real Concat
    interleaves, stages the inputs it finds inside its output, and gets the right answer."""
    import json

    import onnx_ir as ir

    from kiln.backends.base import CompileOptions
    from kiln.backends.native.backend import PLAN_FILE, NativeBackend

    model, feeds = _branches_model(2, False)
    lies = {"a": [[1, 32, 6, 7], 4], "r": [[1, 16, 6, 7], 4], "b": [[1, 48, 6, 7], 4],
            "cat": [[1, 80, 6, 7], 4], "flat": [[1, 6720], 4]}
    options = CompileOptions(threads=1, extra={"fallback": None})
    blob = json.dumps({"value_shapes": lies, "isa": NativeBackend().compile(
        ir.from_proto(model), None, options).report["plan_isa"]}).encode()
    compiled = NativeBackend().load({PLAN_FILE: blob}, ir.from_proto(model), None, options)
    plan = compiled.segments[0].lowered
    ids = {name: i for i, name in enumerate(plan.value_names)}
    assert plan.memory.offsets[ids["a"]] == plan.memory.offsets[ids["cat"]]  # the lie took
    got = compiled.run(feeds)
    for spec, want in zip(compiled.outputs, run_reference(model, feeds)):
        np.testing.assert_allclose(got[spec.name], want, rtol=1e-5, atol=1e-5)


def _split_model(batch: int):
    """conv -> Split(16, 16) on channels -> one half through a conv, Concat of both halves."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t"]),
             helper.make_node("Split", ["t", "parts"], ["p", "q"], axis=1),
             helper.make_node("Conv", ["q", "w1"], ["u"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["p", "u"], ["y"], axis=1)]
    inits = {"w0": rng.standard_normal((32, 8, 1, 1)).astype(np.float32),
             "parts": np.array([16, 16], np.int64),
             "w1": rng.standard_normal((16, 16, 3, 3)).astype(np.float32)}
    x = rng.standard_normal((batch, 8, 6, 7)).astype(np.float32)
    return model_from_arrays(nodes, {"x": x}, ["y"], initializers=inits), {"x": x}


@pytest.mark.parametrize("lie", [False, True])
def test_split_outputs_are_views_of_their_chunks(lie: bool):
    import json

    import onnx_ir as ir

    from kiln.backends.base import CompileOptions
    from kiln.backends.native.backend import PLAN_FILE, NativeBackend

    model, feeds = _split_model(2 if lie else 1)
    options = CompileOptions(threads=1, extra={"fallback": None})
    compiled = NativeBackend().compile(ir.from_proto(model), None, options)
    if lie:  # batch 2 planned as batch 1 with twice the channels: same bytes, other layout
        lies = {"t": [[1, 64, 6, 7], 4], "p": [[1, 32, 6, 7], 4], "q": [[1, 32, 6, 7], 4],
                "u": [[1, 32, 6, 7], 4]}
        blob = json.dumps({"value_shapes": lies, "isa": compiled.report["plan_isa"]})
        compiled = NativeBackend().load({PLAN_FILE: blob.encode()}, ir.from_proto(model),
                                        None, options)
    plan = compiled.segments[0].lowered
    ids = {name: i for i, name in enumerate(plan.value_names)}
    o = plan.memory.offsets
    half = (32 if lie else 16) * 6 * 7 * 4
    assert o[ids["p"]] == o[ids["t"]] and o[ids["q"]] == o[ids["t"]] + half
    got = compiled.run(feeds)
    np.testing.assert_allclose(got["y"], run_reference(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_onnx_inference_runs_only_for_values_the_ir_leaves_without_a_shape(monkeypatch):
    """A graph whose every value has a shape in the IR, static or with a symbolic batch dim,
    is planned from the IR alone (ONNX's inference on a serialized copy could only restate
    it); a value without a shape asks it for hints. The numbers are the same either way."""
    import numpy as np
    from model_builders import make_conv_model

    import kiln
    from kiln.backends.native import backend as native

    inferred = []
    infer = native.inferred_shapes
    monkeypatch.setattr(native, "inferred_shapes",
                        lambda model: inferred.append(model) or infer(model))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    static = kiln.Session(make_conv_model(), backend="native", fallback=None)
    assert inferred == []
    dynamic = kiln.Session(make_conv_model(batch="N"), backend="native", fallback=None)
    assert inferred == []
    sizes, every_value_shaped = native._ir_sizes(dynamic.model)
    assert every_value_shaped and "x" not in sizes  # x: [N, 3, 8, 8], no static size
    unshaped = dynamic.model.graph.node(0).outputs[0]
    unshaped.shape = None
    from kiln.backends.base import CompileOptions

    native.NativeBackend().compile(dynamic.model, None,
                                   CompileOptions(threads=1, extra={"fallback": None}))
    assert len(inferred) == 1
    want = kiln.Session(make_conv_model(), backend="onnxruntime")(x=x)["y"]
    for session in (static, dynamic):
        np.testing.assert_allclose(session(x=x)["y"], want, rtol=1e-4, atol=1e-5)

"""Heterogeneous execution: real native + onnxruntime pieces against onnxruntime alone."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

import kiln
from kiln.backends import registry
from kiln.errors import BackendUnavailableError, UnsupportedError


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return oh.make_tensor_value_info(name, dtype, shape)


def nms_model(n: int = 64) -> onnx.ModelProto:
    """Relu/Add chains (native) around NonMaxSuppression + Gather (which native lacks)."""
    nodes = [
        oh.make_node("Relu", ["boxes_in"], ["b1"], name="clamp_boxes"),
        oh.make_node("Add", ["b1", "b1"], ["b2"], name="scale_boxes"),
        oh.make_node("Relu", ["b2"], ["boxes"], name="clamp_again"),
        oh.make_node("Relu", ["scores_in"], ["s1"], name="clamp_scores"),
        oh.make_node("Add", ["s1", "s1"], ["s2"], name="scale_scores"),
        oh.make_node("Relu", ["s2"], ["scores"], name="clamp_scores2"),
        oh.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "thr"],
                     ["selected"], name="nms"),
        oh.make_node("Gather", ["selected", "col2"], ["idx2d"], axis=1, name="box_index"),
        oh.make_node("Squeeze", ["idx2d", "sq_axes"], ["idx"], name="flatten_index"),
        oh.make_node("Reshape", ["boxes", "flat_shape"], ["boxes_flat"], name="flatten_boxes"),
        oh.make_node("Gather", ["boxes_flat", "idx"], ["kept"], axis=0, name="gather_boxes"),
        oh.make_node("Relu", ["kept"], ["k1"], name="clamp_kept0"),
        oh.make_node("Relu", ["k1"], ["k2"], name="clamp_kept"),
        oh.make_node("Add", ["k2", "k2"], ["kept_out"], name="double_kept"),
    ]
    inits = [numpy_helper.from_array(np.array([n], np.int64), "max_out"),
             numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
             numpy_helper.from_array(np.array([0.2], np.float32), "thr"),
             numpy_helper.from_array(np.array([2], np.int64), "col2"),
             numpy_helper.from_array(np.array([1], np.int64), "sq_axes"),
             numpy_helper.from_array(np.array([-1, 4], np.int64), "flat_shape")]
    graph = oh.make_graph(nodes, "nms_demo",
                          [_vi("boxes_in", [1, n, 4]), _vi("scores_in", [1, 1, n])],
                          [_vi("kept_out", ["kept", 4]), _vi("scores", [1, 1, n])],
                          initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def nms_feeds(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, (1, n, 2)).astype(np.float32)
    wh = rng.uniform(0.5, 3, (1, n, 2)).astype(np.float32)
    return {"boxes_in": np.concatenate([xy, xy + wh], axis=2),
            "scores_in": rng.uniform(-0.5, 1, (1, 1, n)).astype(np.float32)}


def loop_model() -> onnx.ModelProto:
    """Relu/Add, then a Loop whose body reads an outer value, then Relu/Add again."""
    body = oh.make_graph(
        [oh.make_node("Add", ["v_in", "r2"], ["v_out"]),
         oh.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL),
                 _vi("v_in", [3, 5])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [3, 5])])
    nodes = [oh.make_node("Relu", ["x"], ["r1"], name="pre_relu"),
             oh.make_node("Add", ["r1", "x"], ["r2"], name="pre_add"),
             oh.make_node("Relu", ["r2"], ["r3"], name="pre_relu2"),
             oh.make_node("Loop", ["trips", "keep_going", "r3"], ["looped"], name="loop",
                          body=body),
             oh.make_node("Relu", ["looped"], ["p1"], name="post_relu"),
             oh.make_node("Add", ["p1", "x"], ["p2"], name="post_add"),
             oh.make_node("Relu", ["p2"], ["y"], name="post_relu2")]
    inits = [numpy_helper.from_array(np.array(4, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "keep_going")]
    graph = oh.make_graph(nodes, "loop_demo", [_vi("x", [3, 5])], [_vi("y", [3, 5])],
                          initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_nms_model_runs_on_native_plus_onnxruntime_like_onnxruntime_alone():
    model, feeds = nms_model(), nms_feeds()
    want = kiln.Session(model, backend="onnxruntime")(**feeds)
    session = kiln.Session(model, backend=["native", "onnxruntime"])
    got = session(**feeds)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    placement = session.placement
    assert [p["backend"] for p in placement["partitions"]] == ["native", "onnxruntime",
                                                                 "native"]
    assert placement["partitions"][1]["nodes"] == ["nms"]
    assert placement["nodes_per_backend"] == {"native": 13, "onnxruntime": 1}
    assert {b["name"] for b in placement["boundaries"]} == {"boxes", "scores", "selected",
                                                            "boxes_flat"}
    assert session.backend == "native+onnxruntime"
    json.dumps(placement)


def det_model() -> onnx.ModelProto:
    """Relu/Add and a Gram matrix (native), its determinant (Det, which native lacks), then
    Relu/Add again (native)."""
    nodes = [oh.make_node("Relu", ["x"], ["r1"], name="pre_relu"),
             oh.make_node("Add", ["r1", "x"], ["r2"], name="pre_add"),
             oh.make_node("Transpose", ["r2"], ["t"], name="transpose"),
             oh.make_node("MatMul", ["r2", "t"], ["g"], name="gram"),
             oh.make_node("Det", ["g"], ["d"], name="det"),
             oh.make_node("Relu", ["d"], ["p1"], name="post_relu"),
             oh.make_node("Add", ["p1", "p1"], ["p2"], name="post_add"),
             oh.make_node("Relu", ["p2"], ["y"], name="post_relu2")]
    graph = oh.make_graph(nodes, "det_demo", [_vi("x", [3, 5])], [_vi("y", [])])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_det_model_runs_on_native_plus_onnxruntime_like_onnxruntime_alone():
    model = det_model()
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    want = kiln.Session(model, backend="onnxruntime")(x=x)["y"]
    session = kiln.Session(model, backend=["native"])  # fallback defaults to onnxruntime
    np.testing.assert_allclose(session(x=x)["y"], want, rtol=1e-4)
    assert [p["backend"] for p in session.placement["partitions"]] == [
        "native", "onnxruntime", "native"]


def test_loop_model_runs_wholly_on_native_like_onnxruntime():
    model = loop_model()
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    want = kiln.Session(model, backend="onnxruntime")(x=x)["y"]
    session = kiln.Session(model, backend=["native"], fallback=None)
    np.testing.assert_array_equal(session(x=x)["y"], want)


def test_strict_mode_names_the_node_native_cannot_run():
    with pytest.raises(UnsupportedError) as err:
        kiln.Session(det_model(), backend=["native"], fallback=None)
    text = str(err.value)
    assert "strict mode" in text and "'det' (ai.onnx::Det)" in text
    assert "native: no native kernel for ai.onnx::Det" in text
    with pytest.raises(UnsupportedError) as err:
        kiln.Session(nms_model(), backend=["native"], fallback=None)
    assert "1 node(s) cannot run on native" in str(err.value)
    assert "'nms' (ai.onnx::NonMaxSuppression)" in str(err.value)


def test_strict_mode_refuses_an_unavailable_backend_and_fallback_skips_it():
    status = registry.availability("tensorrt")
    if status.ok:
        pytest.skip("tensorrt is available here; this checks the unavailable path")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        kiln.Session(loop_model(), backend=["tensorrt"], fallback=None)
    session = kiln.Session(loop_model(), backend=["tensorrt", "native"])
    skipped = session.placement["skipped_backends"]
    assert skipped == [{"backend": "tensorrt", "reason": status.reason}]


def test_light_resnet50_with_load_time_constants_matches_onnxruntime():
    from kiln.runtime.session import random_feeds
    from kiln.zoo import light_model

    path = light_model("resnet50")
    reference = kiln.Session(path, backend="onnxruntime")
    feeds = random_feeds(reference.inputs, seed=3)
    want = reference(**feeds)
    # opt_level=0 keeps the ConstantOfShape weights, which the executor runs once at load
    session = kiln.Session(path, backend=["native", "onnxruntime"], min_partition_nodes=1,
                           opt_level=0)
    got = session(**feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    placement = session.placement
    assert placement["constant_partition_count"] >= 1  # ConstantOfShape weights, run once
    assert placement["complete"] and placement["partition_count"] >= 1


def test_loading_a_partitioned_artifact_compiles_no_piece(tmp_path, monkeypatch):
    """Pieces come back through ``Backend.load`` from their own blob folders."""
    from kiln.backends import registry

    model, feeds = nms_model(), nms_feeds(seed=4)
    session = kiln.Session(model, backend=["native", "onnxruntime"])
    want = session(**feeds)
    path = session.save(tmp_path / "nms.kiln")
    loaded_with: list[tuple[str, list[str]]] = []
    for name in ("native", "onnxruntime"):
        backend = registry.get_backend(name)
        real_load = backend.load

        def load(blobs, sub, target, options, real_load=real_load, name=name):
            loaded_with.append((name, sorted(blobs)))
            return real_load(blobs, sub, target, options)

        def compile_(*args, name=name):
            raise AssertionError(f"{name} recompiled a piece")

        monkeypatch.setattr(backend, "load", load)
        monkeypatch.setattr(backend, "compile", compile_)
    got = kiln.Session(path)(**feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert [b for b, _ in loaded_with] == [p["backend"] for p in session.placement["partitions"]
                                           if not p["constant"]]
    assert ("onnxruntime", ["onnxruntime.onnx"]) in loaded_with


def test_saving_writes_each_piece_and_the_placement(tmp_path):
    session = kiln.Session(loop_model(), backend=["native", "onnxruntime"])
    written = session._compiled.save(tmp_path)
    assert "placement.json" in written
    saved = json.loads((tmp_path / "placement.json").read_text())
    assert saved == session.placement


def test_a_comma_separated_backend_string_is_a_priority_list():
    x = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    session = kiln.Session(loop_model(), backend="native,onnxruntime", fallback=None)
    assert session.backend == "native+onnxruntime"
    want = kiln.Session(loop_model(), backend="onnxruntime")(x=x)["y"]
    np.testing.assert_array_equal(session(x=x)["y"], want)


def test_outputs_that_are_inputs_weights_or_load_time_constants():
    """Graph outputs no partition computes at run time still come back, as copies."""
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "shape")
    weight = numpy_helper.from_array(np.full((2, 2), 3.0, np.float32), "weight")
    nodes = [oh.make_node("ConstantOfShape", ["shape"], ["filled"], name="fill",
                          value=numpy_helper.from_array(np.array([0.5], np.float32))),
             oh.make_node("Relu", ["x"], ["r"], name="relu"),
             oh.make_node("Det", ["r"], ["d"], name="det"),
             oh.make_node("Add", ["d", "d"], ["y"], name="add")]
    graph = oh.make_graph(nodes, "edges", [_vi("x", [2, 2])],
                          [_vi("y", []), _vi("x", [2, 2]), _vi("weight", [2, 2]),
                           _vi("filled", [2, 2])], initializer=[shape, weight])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    x = np.array([[2.0, 1.0], [1.0, 3.0]], np.float32)
    want = kiln.Session(model, backend="onnxruntime")(x=x)
    # opt_level=0: no constant folding, so the partitioner's load-time constants are used.
    session = kiln.Session(model, backend=["native"], min_partition_nodes=1, opt_level=0)
    got = session(x=x)
    for name in ("y", "x", "weight", "filled"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    assert session.placement["constant_partition_count"] == 1
    got["weight"][0, 0] = -1  # a copy: the next run is unaffected
    np.testing.assert_array_equal(session(x=x)["weight"], want["weight"])
    x_out = session(x=x)["x"]
    assert not np.shares_memory(x_out, x)


def test_native_and_openvino_pieces_in_strict_mode_match_onnxruntime():
    model, feeds = nms_model(), nms_feeds(seed=5)
    want = kiln.Session(model, backend="onnxruntime")(**feeds)
    session = kiln.Session(model, backend=["native", "openvino"], fallback=None)
    got = session(**feeds)
    assert [p["backend"] for p in session.placement["partitions"]] == ["native", "openvino",
                                                                         "native"]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_artifacts_carry_the_placement_and_partitioned_ones_reload(tmp_path):
    from kiln.runtime.artifact import load_artifact

    model, feeds = nms_model(), nms_feeds(seed=7)
    session = kiln.Session(model, backend=["native", "onnxruntime"])
    want = session(**feeds)
    path = session.save(tmp_path / "nms.kiln")
    manifest = load_artifact(path).manifest
    assert manifest["placement"] == session.placement
    assert manifest["backend"]["name"] == "native+onnxruntime"
    loaded = kiln.Session(path)
    assert loaded.placement["backends"] == ["native", "onnxruntime"]
    assert loaded.rebuild_reason is None  # every piece loaded from its blobs
    got = loaded(**feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    elsewhere = kiln.Session(path, target="cpu:avx2,fma")  # blobs built for another target
    assert "recompiled piece by piece" in elsewhere.rebuild_reason
    assert "target" in elsewhere.rebuild_reason
    got = elsewhere(**feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    single = kiln.Session(model, backend="onnxruntime").save(tmp_path / "ort.kiln")
    placement = load_artifact(single).manifest["placement"]
    assert placement["backends"] == ["onnxruntime"] and placement["partition_count"] == 1


# --- backend="native" by name: what it refuses goes to the fallback through the partitioner


def _mixed_native_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Relu -> Einsum (no native kernel) -> Mul -> Det (no native kernel) -> Add."""
    nodes = [oh.make_node("Relu", ["x"], ["r"], name="relu"),
             oh.make_node("Einsum", ["r"], ["c"], name="einsum", equation="ij->ji"),
             oh.make_node("Mul", ["c", "x"], ["m"], name="mul"),
             oh.make_node("Det", ["m"], ["d"], name="det"),
             oh.make_node("Add", ["d", "one"], ["y"], name="add")]
    graph = oh.make_graph(nodes, "mixed", [_vi("x", [3, 3])], [_vi("y", []), _vi("m", [3, 3])],
                          initializer=[numpy_helper.from_array(np.array(1.0, np.float32),
                                                               "one")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(3).standard_normal((3, 3)).astype(np.float32)
    return model, {"x": x}


def test_native_by_name_splits_what_it_refuses_through_the_partitioner():
    model, feeds = _mixed_native_model()
    want = kiln.Session(model, backend="onnxruntime")(**feeds)
    session = kiln.Session(model, backend="native")
    assert session.backend_name == "native+onnxruntime"
    placed = session.placement
    assert [p["backend"] for p in placed["partitions"]] == [
        "native", "onnxruntime", "native", "onnxruntime", "native"]
    text = json.dumps(placed)  # the placement is where what left native says why
    assert "no native kernel for ai.onnx::Einsum" in text
    assert "no native kernel for ai.onnx::Det" in text
    got = session(**feeds)
    for name in ("y", "m"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def _spinning(session) -> str:
    return session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning")


def test_onnxruntime_spins_as_its_default_alone_and_not_between_other_engines_pieces():
    """A whole-model onnxruntime session spins as onnxruntime's own default does; in a mixed
    plan its pieces do not (the next piece's engine needs the cores); the option wins."""
    model, _ = _mixed_native_model()
    alone = kiln.compile(model, backend="onnxruntime")
    assert _spinning(alone.engine.session) == "1"
    quiet = kiln.compile(model, backend="onnxruntime", allow_spinning=False)
    assert _spinning(quiet.engine.session) == "0"
    mixed = kiln.compile(model, backend="native")
    ort_pieces = [c for p, c in mixed.engine.pieces if p.backend == "onnxruntime"]
    assert ort_pieces and all(_spinning(c.session) == "0" for c in ort_pieces)


def test_native_by_name_runs_whole_when_it_refuses_nothing():
    model = nms_model()
    kept = [n for n in model.graph.node if n.op_type in ("Relu", "Add")][:3]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.output[:]
    model.graph.output.extend([_vi("boxes", [1, 64, 4])])
    session = kiln.Session(model, backend="native")
    assert session.backend_name == "native" and session.placement is None
    assert type(session._compiled).__name__ == "NativeCompiledModel"


def test_native_by_name_strict_mode_lists_every_refused_node():
    model, _ = _mixed_native_model()
    with pytest.raises(UnsupportedError) as err:
        kiln.Session(model, backend="native", fallback=None)
    text = str(err.value)
    assert "'einsum' (ai.onnx::Einsum)" in text and "'det' (ai.onnx::Det)" in text


def test_native_by_name_passes_values_that_subgraphs_capture():
    """An If (no native kernel) whose branches read an initializer and a native result."""
    then_graph = oh.make_graph([oh.make_node("Add", ["r", "bias"], ["t"])], "then", [],
                               [_vi("t", [2, 3])])
    else_graph = oh.make_graph([oh.make_node("Mul", ["r", "bias"], ["e"])], "else", [],
                               [_vi("e", [2, 3])])
    nodes = [oh.make_node("Relu", ["x"], ["r"]),
             oh.make_node("If", ["c"], ["i"], then_branch=then_graph, else_branch=else_graph),
             oh.make_node("Neg", ["i"], ["y"])]
    bias = np.arange(3, dtype=np.float32)
    graph = oh.make_graph(nodes, "if_capture", [_vi("x", [2, 3]), _vi("c", [], TensorProto.BOOL)],
                          [_vi("y", [2, 3])],
                          initializer=[numpy_helper.from_array(bias, "bias")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    session = kiln.Session(model, backend="native")
    reference = kiln.Session(model, backend="onnxruntime")
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "c": np.array(cond)}
        np.testing.assert_allclose(session(**feeds)["y"], reference(**feeds)["y"], rtol=1e-6)


def test_native_by_name_nodes_no_engine_runs_are_unsupported():
    nodes = [oh.make_node("Expand", ["x", "s"], ["y"], name="grow")]
    graph = oh.make_graph(nodes, "complex", [_vi("x", [1])], [_vi("y", None)],
                          initializer=[numpy_helper.from_array(
                              np.array([2 + 1j, 3], np.complex64), "s")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(kiln.KilnError, match="grow"):
        session = kiln.Session(model, backend="native")
        session(x=np.ones(1, np.float32))

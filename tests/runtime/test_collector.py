import gc
import weakref

import pytest

from kiln.runtime.collector import older_objects_frozen


class _Node:
    pass


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_objects_from_before_are_frozen_and_new_cycles_are_still_collected():
    assert gc.get_freeze_count() == 0
    with older_objects_frozen():
        assert gc.get_freeze_count() > 0
        made_inside = _cycle()
        gc.collect()
        assert made_inside() is None  # what the body made is collected as usual
    assert gc.get_freeze_count() == 0


def test_a_cycle_dropped_during_the_body_but_made_before_is_collected_after():
    made_before = _cycle()
    with older_objects_frozen():
        gc.collect()
        assert made_before() is not None  # frozen: out of the scans until the body ends
    gc.collect()
    assert made_before() is None


def test_the_freeze_is_undone_when_the_body_raises():
    with pytest.raises(RuntimeError), older_objects_frozen():
        raise RuntimeError("compile failed")
    assert gc.get_freeze_count() == 0


def test_a_callers_own_freeze_is_kept():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with older_objects_frozen():
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_compile_leaves_nothing_frozen(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    import kiln

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    compiled = kiln.compile(str(path), backend="onnxruntime")
    assert gc.get_freeze_count() == 0
    out = kiln.Session(compiled).run(None, {"x": np.array([-1, 2], np.float32)})
    np.testing.assert_array_equal(out[0], [0, 2])

"""kiln.compiler.contrib: types through onnxruntime's contrib ops, checked against what
onnxruntime itself computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from model_builders import make_contrib_model, make_conv_model
from onnx import TensorProto, helper

from kiln.compiler.contrib import complete_types


def _types(proto: onnx.ModelProto) -> dict[str, int]:
    graph = proto.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.output)}


def test_contrib_outputs_and_what_follows_them_get_onnxruntimes_types():
    inferred = onnx.shape_inference.infer_shapes(make_contrib_model())
    before = _types(inferred)
    assert "c0" not in before and "inv" not in before and "c1" not in before
    assert complete_types(inferred) >= 5
    after = _types(inferred)
    # what onnxruntime produces for each value, run as graph outputs
    model = make_contrib_model()
    names = ["c0", "s0", "a0", "inv", "c1", "r1"]
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    x = np.zeros((1, 3, 4, 4), np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, value in zip(names, session.run(names, {"x": x})):
        assert after[name] == onnx.helper.np_dtype_to_tensor_dtype(value.dtype), name


def test_fixed_and_single_allowed_types_come_from_the_schema():
    nodes = [helper.make_node("DynamicQuantizeMatMul", ["a", "b", "s", "z"], ["y"],
                              domain="com.microsoft")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4])],
        [helper.make_empty_tensor_value_info("y")],
        initializer=[helper.make_tensor("b", TensorProto.INT8, [4, 4], [1] * 16),
                     helper.make_tensor("s", TensorProto.FLOAT, [1], [0.1]),
                     helper.make_tensor("z", TensorProto.INT8, [1], [0])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    assert complete_types(proto) == 1
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_standard_models_are_left_alone():
    proto = onnx.shape_inference.infer_shapes(make_conv_model())
    before = proto.SerializeToString()
    assert complete_types(proto) == 0
    assert proto.SerializeToString() == before


def test_a_standard_model_does_not_import_onnxruntime():
    # onnxruntime and its schemas cost ~23 MB of RSS: only contrib nodes need them
    import subprocess
    import sys

    code = ("import sys, onnx; sys.path.insert(0, 'tests'); "
            "from model_builders import make_conv_model; "
            "from kiln.compiler.contrib import complete_types; "
            "complete_types(onnx.shape_inference.infer_shapes(make_conv_model())); "
            "print('onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "False"

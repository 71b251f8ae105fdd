"""IR-v3 initializer inputs become constants."""

from __future__ import annotations

import onnx
import onnx_ir as ir
from compiler_cases import rand
from model_builders import run_reference
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler.passes.cleanup import ConstantInitializersPass


def test_initializer_inputs_are_dropped_and_ir_version_raised():
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(rand(3), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    proto.ir_version = 3
    model = ir.from_proto(proto)
    assert ConstantInitializersPass()(model).modified
    assert [v.name for v in model.graph.inputs] == ["x"] and model.ir_version == 4
    out = ir.to_proto(model)
    onnx.checker.check_model(out)
    x = rand(3, seed=1)
    assert (run_reference(out, {"x": x})[0] == x + rand(3)).all()
    assert not ConstantInitializersPass()(model).modified

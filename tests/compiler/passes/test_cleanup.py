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


def test_identity_returning_an_outer_value_from_a_branch_is_kept():
    """silero-vad's If branches return an outer value through Identity: removing it renamed
    the outer value and made the branch return it directly, which onnxruntime refuses."""
    import numpy as np

    from kiln.compiler.passes.cleanup import EliminateIdentityPass

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Identity", ["r"], [f"{name}_out"]),
             helper.make_node("Identity", ["r"], [f"{name}_tmp"]),
             helper.make_node("Neg", [f"{name}_tmp"], [f"{name}_neg"])], name, [],
            [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info(f"{name}_neg", TensorProto.FLOAT, [2])])

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("If", ["c"], ["y", "z"], then_branch=branch("then"),
                          else_branch=branch("else")),
         helper.make_node("Identity", ["z"], ["w"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert EliminateIdentityPass()(model).modified  # the inner Identity feeding Neg goes
    out = ir.to_proto(model)
    ops = [n.op_type for n in out.graph.node[1].attribute[0].g.node]
    assert ops == ["Identity", "Neg"] and [n.op_type for n in out.graph.node] == ["Relu", "If"]
    x = np.array([1.0, -2.0], np.float32)
    for c in (True, False):
        y, w = run_reference(out, {"x": x, "c": np.array(c)})
        assert (y == np.maximum(x, 0)).all() and (w == -np.maximum(x, 0)).all()

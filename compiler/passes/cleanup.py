"""Cleanup steps kiln needs that onnx_ir's common passes do not cover on their own."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass, RemoveInitializersFromInputsPass

#: First IR version that lets initializers stay out of the graph inputs.
_IR_INITIALIZERS_NOT_INPUTS = 4


class ConstantInitializersPass(ir.passes.InPlacePass):
    """Treat initializers that are also graph inputs (IR v3 style) as constants.

    Before IR v4 every initializer had to be a graph input too, which makes weights look
    overridable and blocks folding. kiln takes the file's values as the weights: the inputs are
    dropped and the IR version is raised to 4 so the model stays valid.
    """

    keeps_shapes = True  # no value changes (see ``CountingPass``)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = RemoveInitializersFromInputsPass()(model)
        if result.modified and model.ir_version < _IR_INITIALIZERS_NOT_INPUTS:
            model.ir_version = _IR_INITIALIZERS_NOT_INPUTS
        return ir.passes.PassResult(model, modified=result.modified)


class EliminateIdentityPass(IdentityEliminationPass):
    """onnx_ir's identity elimination, except for an Identity by which a body (an If branch,
    a Loop or Scan body) returns a value of an enclosing graph.

    onnx_ir would rename that outer value to the body output's name (renaming it for the
    whole outer graph) and let the body return it directly, which onnxruntime refuses
    ("Subgraph output ... is an outer scope value being returned directly"); silero-vad's If
    branches hold such Identities.
    """

    keeps_shapes = True  # an Identity's readers read its input, of the same type and shape

    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:
        source = node.inputs[0] if len(node.inputs) == 1 else None
        if (source is not None and len(node.outputs) == 1 and node.outputs[0].is_graph_output()
                and source.graph is not node.graph):
            return False
        return super()._try_eliminate_identity_node(node)

"""Cleanup steps kiln needs that onnx_ir's common passes do not cover on their own."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveInitializersFromInputsPass

#: First IR version that lets initializers stay out of the graph inputs.
_IR_INITIALIZERS_NOT_INPUTS = 4


class ConstantInitializersPass(ir.passes.InPlacePass):
    """Treat initializers that are also graph inputs (IR v3 style) as constants.

    Before IR v4 every initializer had to be a graph input too, which makes weights look
    overridable and blocks folding. kiln takes the file's values as the weights: the inputs are
    dropped and the IR version is raised to 4 so the model stays valid.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = RemoveInitializersFromInputsPass()(model)
        if result.modified and model.ir_version < _IR_INITIALIZERS_NOT_INPUTS:
            model.ir_version = _IR_INITIALIZERS_NOT_INPUTS
        return ir.passes.PassResult(model, modified=result.modified)

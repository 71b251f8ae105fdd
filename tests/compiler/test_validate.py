"""kiln.compiler.validate: no false alarms on real models; limits say what is supported.

The hostile cases themselves (one per refusal) live in tests/hostile/."""

from __future__ import annotations

import warnings

import onnx
import pytest

from kiln.backends.registry import backend_limits
from kiln.compiler.validate import kiln_limits, validate_proto
from kiln.errors import ModelError, UnsupportedError
from kiln.zoo import light_model


@pytest.mark.slow  # ~10 s: builds all ~1900 node cases (the conformance run covers some)
def test_every_onnx_node_test_model_passes():
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    assert len(cases) > 1000
    for case in cases:
        validate_proto(case.model, case.name)


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "inception_v1", "squeezenet"])
def test_light_models_pass_every_backends_limits(name):
    try:
        path = light_model(name)
    except Exception as exc:  # the zoo helper names what is missing
        pytest.skip(str(exc))
    proto = onnx.load(path)
    validate_proto(proto, name, [kiln_limits(), backend_limits("onnxruntime"),
                                 backend_limits("openvino")])


def test_limits_name_the_supported_range():
    limits = kiln_limits()
    assert limits.ir_versions == (3, onnx.IR_VERSION)
    assert limits.opsets[""] == (1, onnx.defs.onnx_opset_version())
    assert backend_limits("openvino").max_dim == 2**31 - 1
    assert backend_limits("native") is None


def test_depth_is_checked_before_recursing():
    """A chain of 10,000 nodes is fine (no recursion over nodes)."""
    from onnx import helper as h

    nodes = [h.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]) for i in range(10_000)]
    graph = h.make_graph(nodes, "chain", [h.make_tensor_value_info("v0", 1, [2])],
                         [h.make_tensor_value_info("v10000", 1, [2])])
    validate_proto(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), "chain")


def test_error_classes():
    from onnx import helper as h

    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", 1, [2])],
                         [h.make_tensor_value_info("y", 1, [2])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 9999)])
    with pytest.raises(UnsupportedError, match="opset 9999"):
        validate_proto(model, "m")
    model.ir_version = 0
    with pytest.raises(ModelError, match="no IR version"):
        validate_proto(model, "m")

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


# -- what real models declare and must not be refused (issue: real models) ------------------
BACKENDS = ("onnxruntime", "openvino", "native")


def _reference(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("backend", BACKENDS)
def test_domains_imported_but_unused_are_accepted_on_every_backend(backend):
    """Paddle2ONNX imports 'Paddle', onnxruntime-saved models 'com.microsoft.nchwc' ...:
    a domain is checked where a node uses it."""
    import numpy as np
    from model_builders import make_unused_domains_model

    import kiln

    model = make_unused_domains_model()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    session = kiln.Session(model, backend=backend)
    np.testing.assert_allclose(session(x=x)["y"], _reference(model, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)


def test_a_domain_a_node_uses_is_still_checked():
    from model_builders import make_unused_domains_model
    from onnx import helper as h

    model = make_unused_domains_model()
    model.graph.node.append(h.make_node("Steal", ["y"], ["z"], domain="org.example.unknown"))
    model.graph.output.append(h.make_tensor_value_info("z", 1, None))
    with pytest.raises(UnsupportedError, match="domain 'org.example.unknown' is not supported "
                       "by kiln"):
        validate_proto(model, "m")


@pytest.mark.parametrize("backend", ["onnxruntime", "native"])
def test_if_nested_30_deep_runs(backend):
    """~92 protobuf levels, under protobuf's own limit of 100: nothing to refuse."""
    import numpy as np
    from model_builders import make_nested_if_model

    import kiln

    session = kiln.Session(make_nested_if_model(30), backend=backend)
    x = np.array([1.5, -2.0], np.float32)
    np.testing.assert_array_equal(session(x=x, c=np.array(True))["o30"], x)
    np.testing.assert_array_equal(session(x=x, c=np.array(False))["o30"], -x)


def test_openvino_keeps_its_own_nesting_limit_and_says_so():
    """OpenVINO's compile time doubles per If level past 12 (12.7 s at 20, 2026.4)."""
    from model_builders import make_nested_if_model

    import kiln

    with pytest.raises(ModelError, match=r"nested 13 deep; kiln allows at most 12 .* for "
                       r"openvino \(kiln's own limit: 32\)"):
        kiln.Session(make_nested_if_model(30), backend="openvino")


def test_kiln_nests_as_deep_as_protobuf_parses():
    from model_builders import make_nested_if_model

    from kiln.compiler.validate import MAX_SUBGRAPH_DEPTH

    assert MAX_SUBGRAPH_DEPTH == 32
    deepest = make_nested_if_model(31)  # 32 Ifs do not even build: protobuf refuses them
    validate_proto(onnx.ModelProto.FromString(deepest.SerializeToString()), "deepest")


def test_nesting_beyond_protobuf_is_a_model_error_not_a_crash():
    from hostile.cases import nested_if_bytes

    from kiln.compiler.frontend import import_model

    with pytest.raises(ModelError, match="nests messages deeper than protobuf's limit of 100"):
        import_model(nested_if_bytes(40))


def _patched(text: bytes, where: str) -> onnx.ModelProto:
    """A Relu model with ``text`` (bytes protobuf will not set as a string) at ``where``,
    patched into its serialization and parsed back."""
    from onnx import TensorProto, helper

    then, other = (helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"], name=node)], "branch", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
        for node in ("subnode", "othernode"))
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu", doc_string="docnode"),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["dimname"]),
                     helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"metakey": "metavalue"})
    marker = {"node name": b"subnode", "doc": b"docnode", "dim": b"dimname",
              "metadata": b"metavalue"}[where]
    data = model.SerializeToString()
    assert data.count(marker) == 1
    return onnx.ModelProto.FromString(data.replace(marker, text.ljust(len(marker), b"a")))


@pytest.mark.parametrize("where", ["node name", "doc", "dim", "metadata"])
@pytest.mark.parametrize("text", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf",
                                  b"\xf4\x90\x80\x80"],
                         ids=["ff", "truncated", "surrogate", "overlong", "above-max"])
def test_text_that_is_not_utf8_is_refused_wherever_it_is(text, where, monkeypatch):
    """The one strict parse and the walk (forced with a 0-byte limit) refuse the same
    strings, and the error names the field either way."""
    from kiln.compiler import validate

    proto = _patched(text, where)
    assert not validate._text_is_valid(proto)
    with pytest.raises(ModelError, match="is not valid UTF-8 text"):
        validate_proto(proto, "m")
    monkeypatch.setattr(validate, "STRICT_TEXT_CHECK_BYTES", -1)
    with pytest.raises(ModelError, match="is not valid UTF-8 text"):
        validate_proto(proto, "m")


def test_utf8_text_beyond_ascii_passes_by_the_strict_parse():
    from kiln.compiler import validate

    proto = _patched("é😀".encode(), "node name")
    assert validate._text_is_valid(proto)
    validate_proto(proto, "m")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_repeated_identical_opset_import_is_accepted_on_every_backend(backend):
    """skl2onnx 1.20 (``to_onnx(..., target_opset={"": 17, "ai.onnx.ml": 3})``) writes
    ``opset_import`` [ai.onnx.ml 1, "" 17, "" 17]; onnx's checker and onnxruntime accept it.
    Only imports of one domain at two different versions are refused (tests/hostile)."""
    import numpy as np
    from onnx import helper as h

    import kiln

    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "twice",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("", 17),
                                               h.make_opsetid("ai.onnx", 17)])
    model.ir_version = 8
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    session = kiln.Session(model, backend=backend)
    np.testing.assert_array_equal(session(x=x)["y"], np.maximum(x, 0))
    model.opset_import.append(h.make_opsetid("", 13))
    with pytest.raises(ModelError, match="imported twice, as 17 and 13"):
        validate_proto(model, "m")

"""kiln.runtime.guards_view: the guards reach the same verdict on a ModelProto as on the IR
parsed from it, for every hostile case, subgraph scoping and the real models on this machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hostile import cases
from onnx import TensorProto as TP
from onnx import helper as h

from kiln.compiler.validate import validate_proto
from kiln.runtime import guards
from kiln.runtime.guards_view import proto_model

REAL_MODELS = sorted(Path("/work/cache/real-set").glob("*.onnx"))


def _verdict(model, limits: guards.Guards, backend: str) -> tuple[str, object]:
    """The class and message of what ``check_model`` raised, or the feed checks it made."""
    try:
        checks = guards.check_model(model, limits, backend)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", [repr(vars(check)) for check in checks.items]


def _same_verdict(proto: onnx.ModelProto, limits: guards.Guards, weights_dir: str = ""):
    for backend in ("onnxruntime", "openvino"):
        expected = _verdict(ir.from_proto(proto), limits, backend)
        assert _verdict(proto_model(proto, weights_dir), limits, backend) == expected
    return expected


def _hostile_protos() -> list:
    params = []
    for case in cases.CASES:
        if case.category in ("resource", "feeds", "bounds"):
            params.append(pytest.param(case, id=case.name))
    return params


@pytest.mark.parametrize("case", _hostile_protos())
def test_every_hostile_case_gets_the_irs_verdict(case, tmp_path):
    source, _, options = case.build(tmp_path)
    if not isinstance(source, onnx.ModelProto):
        pytest.skip(f"{case.name} is not a ModelProto")
    try:
        validate_proto(source, case.name)
    except Exception:
        pytest.skip(f"{case.name} is refused before the guards")
    memory = options.get("max_memory")
    limits = guards.Guards(memory if isinstance(memory, int) and memory > 0 else 2**33)
    _same_verdict(source, limits)


def test_the_resource_cases_are_refused_through_the_view(tmp_path):
    refused = 0
    for case in cases.CASES:
        source, _, _ = case.build(tmp_path)
        if case.category == "resource" and isinstance(source, onnx.ModelProto):
            outcome, _ = _verdict(proto_model(source), guards.Guards(2**33), "onnxruntime")
            refused += outcome != "ok"
    assert refused >= 8  # the static estimate, not only the verdicts' agreement, is exercised


def _loop_model(body_outputs_outer: bool) -> onnx.ModelProto:
    """A Loop whose body reads an outer initializer and the outer trip count through
    Identity, and (optionally) passes an outer value straight out as a scan output."""
    nodes = [h.make_node("Identity", ["cond_in"], ["cond_out"]),
             h.make_node("Add", ["v_in", "k"], ["v_out"])]
    scan = "big" if body_outputs_outer else "v_out"
    body = h.make_graph(
        nodes, "body",
        [h.make_tensor_value_info("i", TP.INT64, []), h.make_tensor_value_info("cond_in",
                                                                             TP.BOOL, []),
         h.make_tensor_value_info("v_in", TP.FLOAT, [4])],
        [h.make_tensor_value_info("cond_out", TP.BOOL, []),
         h.make_tensor_value_info("v_out", TP.FLOAT, [4]),
         h.make_tensor_value_info(scan, TP.FLOAT, [2**20, 64])])
    graph = h.make_graph(
        [h.make_node("Identity", ["trips"], ["m"]),
         h.make_node("Loop", ["m", "", "x"], ["y", "scanned"], body=body)], "g",
        [h.make_tensor_value_info("x", TP.FLOAT, [4]),
         h.make_tensor_value_info("trips", TP.INT64, [])],
        [h.make_tensor_value_info("y", TP.FLOAT, [4]),
         h.make_tensor_value_info("scanned", TP.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.ones(4, np.float32), "k"),
         onnx.numpy_helper.from_array(np.ones((2**20, 64), np.float32), "big")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("outer", [False, True])
def test_subgraph_scopes_and_feed_checks_match_the_ir(outer):
    verdict = _same_verdict(_loop_model(outer), guards.Guards(2**33))
    assert verdict[0] == "ok" and "trips" in str(verdict[1])  # the trip count is a feed
    small = guards.Guards(2**20)  # the initializers alone exceed it
    assert _same_verdict(_loop_model(outer), small)[0] == "ResourceError"


@pytest.mark.skipif(not REAL_MODELS, reason="no real models under /work/cache/real-set")
@pytest.mark.parametrize("path", REAL_MODELS, ids=[p.stem for p in REAL_MODELS])
def test_real_models_get_the_irs_verdict(path):
    proto = onnx.load(path)
    _same_verdict(proto, guards.Guards(2**33), str(path.parent))

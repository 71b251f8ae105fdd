"""The shipped table of ONNX input types says what onnx's schema registry says, and is set
aside when another onnx version is installed."""

from __future__ import annotations

import json

import onnx
import pytest

from kiln.compiler import onnx_input_types as types


def _shipped() -> dict:
    table = json.loads(types.TABLE.read_text())
    if table["onnx"] != onnx.__version__:
        pytest.skip(f"table written for onnx {table['onnx']}, installed {onnx.__version__}: "
                    "regenerate with `python -m kiln.compiler.onnx_input_types`")
    return table


def test_shipped_table_matches_the_installed_onnx():
    assert _shipped() == json.loads(json.dumps(types.build_table()))


@pytest.mark.parametrize("op, opset", [("Conv", 21), ("Expand", 17), ("Concat", 13),
                                       ("Reshape", 5), ("Reshape", 4), ("Resize", 19),
                                       ("Sum", 13), ("If", 21), ("Relu", 6), ("Relu", 14),
                                       ("QuantizeLinear", 21), ("NoSuchOp", 21),
                                       ("Gelu", 19), ("Gelu", 20)])
def test_lookups_match_the_registry(op, opset):
    _shipped()
    assert types.input_constraints(op, opset) == types._from_registry(op, opset)


def test_every_op_at_every_version_matches_the_registry():
    table = _shipped()
    for op, versions in table["ops"].items():
        for since, _ in versions:
            assert types.input_constraints(op, since) == types._from_registry(op, since), op


def test_a_table_from_another_onnx_is_set_aside(monkeypatch, tmp_path):
    other = tmp_path / "t.json"
    other.write_text(json.dumps({"onnx": "0.0.1", "types": [], "ops": {"Relu": []}}))
    monkeypatch.setattr(types, "TABLE", other)
    types._shipped_table.cache_clear()
    types.input_constraints.cache_clear()
    try:
        assert types._shipped_table() is None
        assert types.input_constraints("Relu", 14) == types._from_registry("Relu", 14) != ()
    finally:
        types._shipped_table.cache_clear()
        types.input_constraints.cache_clear()

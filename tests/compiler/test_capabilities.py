"""BackendCaps is plain data the pipelines read."""

from kiln.compiler.capabilities import KILN_OPS, STANDARD_ONNX, BackendCaps


def test_caps_defaults_and_json():
    assert not STANDARD_ONNX.kiln_ops and not STANDARD_ONNX.standard_attention
    caps = BackendCaps("native", kiln_ops=frozenset({"FusedConv"}))
    assert caps.runs("FusedConv") and not caps.runs("FusedGemm")
    assert caps.to_json()["kiln_ops"] == ["FusedConv"]
    assert {"FusedConv", "FusedGemm", "Attention"} == KILN_OPS

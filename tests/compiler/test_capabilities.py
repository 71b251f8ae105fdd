"""BackendCaps is plain data the pipelines read."""

import pytest

from kiln.compiler.capabilities import KILN_OPS, STANDARD_ONNX, BackendCaps


def test_caps_defaults_and_json():
    assert not STANDARD_ONNX.kiln_ops and not STANDARD_ONNX.standard_attention
    caps = BackendCaps("native", kiln_ops=frozenset({"FusedConv"}))
    assert caps.runs("FusedConv") and not caps.runs("FusedGemm")
    assert caps.to_json()["kiln_ops"] == ["FusedConv"]
    assert {"FusedConv", "FusedGemm", "FusedBatchNorm", "QGemm", "QConv", "QConvTranspose",
            "QMaxPool"} == KILN_OPS
    assert STANDARD_ONNX.qconv_groups == "one" and not STANDARD_ONNX.int8_activations
    assert not STANDARD_ONNX.int8_byte_table
    with pytest.raises(ValueError, match="qconv_groups"):
        BackendCaps(qconv_groups="grouped")


def test_native_declares_its_int8_ops_and_their_limits():
    """fuse-int8 reads these: the int8 ops, one-group or depthwise QConv, a Relu epilogue,
    the byte table."""
    from kiln.backends import registry

    caps = registry.get_backend("native").caps()
    assert {"QGemm", "QConv", "QConvTranspose", "QMaxPool", "FusedBatchNorm"} <= caps.kiln_ops
    assert caps.qconv_groups == "depthwise" and caps.int8_activations == {"Relu"}
    assert caps.int8_byte_table
    assert caps.to_json()["int8_activations"] == ["Relu"]
    for other in ("onnxruntime", "openvino"):
        assert not registry.get_backend(other).caps().kiln_ops


def test_openvino_takes_dynamic_int8_as_int8_weights():
    from kiln.backends import registry

    assert registry.get_backend("openvino").caps().dynamic_int8 == "weights"
    assert registry.get_backend("onnxruntime").caps().dynamic_int8 == "integer"


def test_openvino_takes_static_int8_with_qdq_on_inputs_only():
    from kiln.backends import registry

    assert registry.get_backend("openvino").caps().static_int8 == "inputs"
    for other in ("onnxruntime", "native"):
        assert registry.get_backend(other).caps().static_int8 == "chained"
    assert STANDARD_ONNX.to_json()["static_int8"] == "chained"


def test_onnxruntime_takes_onnx_attention():
    """Its caps enable the attention fusion (Attention-23 measured faster than the MatMul /
    Softmax / MatMul it replaces on onnxruntime 1.32)."""
    from kiln.backends import registry
    from kiln.compiler.reference import max_opset

    caps = registry.get_backend("onnxruntime").caps()
    assert caps.standard_attention == (max_opset() >= 23)
    assert not registry.get_backend("openvino").caps().standard_attention

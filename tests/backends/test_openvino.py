import dataclasses

import numpy as np
import pytest

import kiln


def test_fp32_sets_the_f32_precision_hint(conv_model):
    sess = kiln.Session(conv_model, backend="openvino", precision="fp32")
    compiled = sess._compiled.compiled
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")


def test_matches_onnxruntime(conv_model):
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = kiln.Session(conv_model, backend="onnxruntime")(x=x)["y"]
    got = kiln.Session(conv_model, backend="openvino", threads=1)(x=x)["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_bf16_runs_only_when_asked(conv_model):
    sess = kiln.Session(conv_model, backend="openvino", precision="bf16")
    hint = str(sess._compiled.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert "bf16" in hint or "bfloat16" in hint


def test_unknown_precision_is_refused(conv_model):
    with pytest.raises(kiln.KilnError, match="precision"):
        kiln.Session(conv_model, backend="openvino", precision="fp8")


def _layer_norm_gelu_model():
    """An opset-14 LayerNorm then an erf GELU, in plain ops as exporters write them."""
    from model_builders import exported_layer_norm, float_model
    from onnx import helper

    nodes, inits = exported_layer_norm("x", "h", 8)
    nodes += [helper.make_node("Div", ["h", "sqrt2"], ["hs"]),
              helper.make_node("Erf", ["hs"], ["e"]),
              helper.make_node("Add", ["e", "one"], ["e1"]),
              helper.make_node("Mul", ["h", "e1"], ["he"]),
              helper.make_node("Mul", ["he", "half"], ["y"])]
    inits |= {"sqrt2": np.array(2 ** 0.5, np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32)}
    return float_model(nodes, {"x": [2, 3, 8]}, {"y": [2, 3, 8]}, inits, opset=14)


def _runtime_layers(model) -> list[str]:
    import onnx_ir as ir
    import openvino as ov

    compiled = ov.Core().compile_model(ov.Core().read_model(
        ir.to_proto(model).SerializeToString(), b""), "CPU")
    return [op.get_rt_info()["layerType"].astype(str)
            for op in compiled.get_runtime_model().get_ordered_ops()]


def test_layer_norm_and_gelu_are_left_to_openvino_which_fuses_them_the_same():
    """caps.fuses_norm_gelu: kiln neither upgrades the opset nor fuses; OpenVINO's compiled
    graph is the one it makes from kiln's fused LayerNormalization and Gelu."""
    from kiln.backends import registry
    from kiln.compiler.pipeline import optimize

    caps = registry.get_backend("openvino").caps()
    assert caps.fuses_norm_gelu
    left, report = optimize(_layer_norm_gelu_model(), 2, None, caps)
    assert "upgrade-opset" not in report.pipeline and left.opset_imports[""] == 14
    fused, _ = optimize(_layer_norm_gelu_model(), 2, None,
                        dataclasses.replace(caps, fuses_norm_gelu=False))
    assert {n.op_type for n in fused.graph} == {"LayerNormalization", "Gelu"}
    assert _runtime_layers(left) == _runtime_layers(fused)
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    got = kiln.Session(_layer_norm_gelu_model(), backend="openvino")(x=x)["y"]
    want = kiln.Session(_layer_norm_gelu_model(), backend="onnxruntime")(x=x)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _cleanup_model():
    """MatMul + Add, a duplicated Relu, an Identity: what kiln's cleanup steps rewrite."""
    from model_builders import float_model
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["r1"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("Add", ["r1", "r2"], ["t"]),
             helper.make_node("Identity", ["t"], ["y"])]
    return float_model(nodes, {"a": [2, 4]}, {"y": [2, 3]},
                       {"w": rng.standard_normal((4, 3)).astype(np.float32),
                        "b": rng.standard_normal(3).astype(np.float32)})


def test_cleanup_is_left_to_openvino_which_makes_the_same_runtime_graph():
    """caps.cleans_up_at_load: kiln's cleanup steps are not run; OpenVINO's compiled graph is
    the one it makes from kiln's cleaned-up graph, and the numbers agree."""
    from kiln.backends import registry
    from kiln.compiler.pipeline import ENGINE_CLEANUP_STEPS, optimize

    caps = registry.get_backend("openvino").caps()
    assert caps.cleans_up_at_load
    left, report = optimize(_cleanup_model(), 2, None, caps)
    assert not ENGINE_CLEANUP_STEPS & set(report.pipeline)
    assert [n.op_type for n in left.graph].count("Relu") == 2
    cleaned, _ = optimize(_cleanup_model(), 2, None,
                          dataclasses.replace(caps, cleans_up_at_load=False))
    assert [n.op_type for n in cleaned.graph].count("Relu") == 1
    assert _runtime_layers(left) == _runtime_layers(cleaned)
    a = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    got = kiln.Session(_cleanup_model(), backend="openvino")(a=a)["y"]
    want = kiln.Session(_cleanup_model(), backend="onnxruntime")(a=a)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_chains_are_left_to_openvino_which_makes_the_same_runtime_graph():
    """caps.cleans_up_at_load: Transpose and Reshape chains (ENGINE_CHAIN_RULES) reach
    OpenVINO as written; its compiled graph is the one it makes of kiln's collapsed chains."""
    from model_builders import make_chains_model

    from kiln.backends import registry
    from kiln.compiler.pipeline import optimize

    caps = registry.get_backend("openvino").caps()
    left, _ = optimize(make_chains_model(), 2, None, caps)
    assert [n.op_type for n in left.graph].count("Transpose") == 2
    collapsed, _ = optimize(make_chains_model(), 2, None,
                            dataclasses.replace(caps, cleans_up_at_load=False))
    assert "Transpose" not in [n.op_type for n in collapsed.graph]
    assert _runtime_layers(left) == _runtime_layers(collapsed)

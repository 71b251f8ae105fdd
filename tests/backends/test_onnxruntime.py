import numpy as np

import kiln
from kiln.backends.registry import get_backend
from kiln.compiler.frontend import import_model


def test_runs_and_matches_numpy(two_input_model):
    sess = kiln.Session(two_input_model, backend="onnxruntime")
    a = np.array([[1, -2, 3, -4]], np.float32)
    b = np.array([[1, 1, 1, 1]], np.float32)
    out = sess(a=a, b=b, ids=np.zeros(2, np.int64))
    np.testing.assert_array_equal(out["y"], np.maximum(a + b, 0))
    np.testing.assert_array_equal(out["ids_shape"], [2])


def test_refuses_kiln_domain_nodes(conv_model):
    model = import_model(conv_model)
    node = next(iter(model.graph))
    backend = get_backend("onnxruntime")
    assert backend.supports(node)
    node.domain = "kiln"
    assert not backend.supports(node)
    assert "domain" in backend.refusal(node)


def test_contrib_ops_run_as_onnxruntime_runs_them():
    """com.microsoft FusedConv and Inverse, built by hand, through kiln's onnxruntime backend."""
    import onnxruntime as ort
    from model_builders import make_contrib_model

    model = make_contrib_model()
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = kiln.Session(model, backend="onnxruntime")(x=x)["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_contrib_ops_of_onnxruntimes_own_quantizer_run(tmp_path):
    """onnxruntime.quantization's QOperator format writes com.microsoft QLinearAdd."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Add", ["a", "x"], ["b"]),
         helper.make_node("MatMul", ["b", "w2"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], initializer=[w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "fp32.onnx")
    samples = [{"x": rng.standard_normal((2, 16)).astype(np.float32)} for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), Reader(),
                    quant_format=QuantFormat.QOperator)
    quantized = onnx.load(tmp_path / "int8.onnx")
    assert ("com.microsoft", "QLinearAdd") in {(n.domain, n.op_type) for n in quantized.graph.node}
    x = samples[0]["x"]
    expected = ort.InferenceSession(str(tmp_path / "int8.onnx"),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = kiln.Session(str(tmp_path / "int8.onnx"), backend="onnxruntime")(x=x)["y"]
    np.testing.assert_array_equal(got, expected)


def test_contrib_refusal_follows_onnxruntimes_cpu_kernels(conv_model):
    model = import_model(conv_model)
    node = next(iter(model.graph))
    backend = get_backend("onnxruntime")
    for op_type in ("QLinearConv", "FusedConv", "DynamicQuantizeLSTM", "Attention",
                    "SkipLayerNormalization"):
        node.domain, node.op_type = "com.microsoft", op_type
        assert backend.refusal(node) is None, op_type
    node.op_type = "NoSuchOp"
    assert "has no kernel for com.microsoft::NoSuchOp" in backend.refusal(node)
    node.domain = "com.microsoft.nchwc"
    node.op_type = "ReorderInput"
    assert backend.refusal(node) is None


def _silu_conv(weight_bytes: int = 2 << 20):
    """A Conv with ``weight_bytes`` of weights and a SiLU (Sigmoid, Mul) after it: onnxruntime's
    extended optimizers fuse the SiLU into one of its own ops."""
    import onnx
    from onnx import TensorProto, helper

    channels = int((weight_bytes // 4 // 9) ** 0.5)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])],
        "silu_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                    [1, channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])],
        [onnx.numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), channels


def test_large_weights_are_stored_once_beside_an_extended_blob_that_refers_to_them(
        tmp_path, monkeypatch):
    import zipfile

    import onnx

    from kiln.backends import onnxruntime as ort_backend
    from kiln.runtime import artifact as art

    source, channels = _silu_conv()
    cold = kiln.Session(source, backend="onnxruntime")
    path = cold.save(tmp_path / "m.kiln")
    with zipfile.ZipFile(path) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()}
        blob = onnx.ModelProto.FromString(zf.read(f"blobs/{ort_backend.EXTENDED_BLOB_FILE}"))
    assert f"blobs/{ort_backend.BLOB_FILE}" not in sizes
    assert sizes[f"blobs/{ort_backend.EXTENDED_BLOB_FILE}"] < sizes[art.WEIGHTS] // 100
    external = [t for t in blob.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(
        {e.key: e.value for e in t.external_data}["location"] == art.WEIGHTS for t in external)
    assert "Sigmoid" not in {n.op_type for n in blob.graph.node}  # the SiLU was fused

    used: list = []
    real = ort_backend._attached
    monkeypatch.setattr(ort_backend, "_attached", lambda *a: used.append(1) or real(*a))
    x = np.random.default_rng(1).standard_normal((1, channels, 8, 8)).astype(np.float32)
    expected = cold(x=x)["y"]
    warm = kiln.Session(str(path), backend="onnxruntime")
    assert warm.rebuild_reason is None and len(used) == 1
    np.testing.assert_allclose(warm(x=x)["y"], expected, rtol=1e-5, atol=1e-5)
    # a load asking for fewer optimizations than the blob holds opens model.onnx instead
    basic = kiln.Session(str(path), backend="onnxruntime", ort_graph_optimization_level="basic")
    assert len(used) == 1
    np.testing.assert_allclose(basic(x=x)["y"], expected, rtol=1e-5, atol=1e-5)


def _conv_bn_relu():
    from model_builders import float_model
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
             **{k: rng.standard_normal(8).astype(np.float32) for k in ("g", "be", "m")},
             "v": rng.uniform(0.5, 2.0, 8).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    return float_model(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 8, 8, 8]}, inits)


def _onnxruntime_graph(model, tmp_path, name):
    """The op types of onnxruntime's own optimized graph of kiln's ``model``."""
    import onnx
    import onnxruntime as ort

    from kiln.backends.onnx_export import to_onnx_bytes

    path = tmp_path / name
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(to_onnx_bytes(model), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(path).graph.node]


def _left_to_onnxruntime(model, tmp_path):
    """kiln's compile of ``model()`` for onnxruntime (caps.cleans_up_at_load), with the op
    types of its graph and of the graph kiln makes for an engine that does not clean up;
    asserts that onnxruntime's optimized graphs of the two are the same."""
    import dataclasses

    from kiln.compiler.pipeline import optimize

    compiled = kiln.compile(model(), backend="onnxruntime")
    done, _ = optimize(model(), 2, None, dataclasses.replace(
        get_backend("onnxruntime").caps(), cleans_up_at_load=False))
    assert _onnxruntime_graph(compiled.model, tmp_path, "left.onnx") == \
        _onnxruntime_graph(done, tmp_path, "done.onnx")
    return (compiled, [n.op_type for n in compiled.model.graph],
            [n.op_type for n in done.graph])


def test_conv_batchnorm_is_left_to_onnxruntime_which_folds_it_the_same(tmp_path):
    """caps.folds_conv_batchnorm: kiln hands Conv -> BatchNormalization over unfolded, and
    onnxruntime's graph is the one it makes of kiln's folded Conv; the numbers agree."""
    import dataclasses

    from model_builders import run_reference

    from kiln.compiler.pipeline import optimize

    backend = get_backend("onnxruntime")
    assert backend.caps().folds_conv_batchnorm
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = run_reference(_conv_bn_relu(), {"x": x})[0]
    compiled = kiln.compile(_conv_bn_relu(), backend="onnxruntime")
    assert "BatchNormalization" in [n.op_type for n in compiled.model.graph]
    folded, _ = optimize(_conv_bn_relu(), 2, None,
                         dataclasses.replace(backend.caps(), folds_conv_batchnorm=False))
    assert "BatchNormalization" not in [n.op_type for n in folded.graph]
    left = _onnxruntime_graph(compiled.model, tmp_path, "left.onnx")
    assert "BatchNormalization" not in left
    assert left == _onnxruntime_graph(folded, tmp_path, "folded.onnx")
    np.testing.assert_allclose(kiln.Session(compiled)(x=x)["y"], want, rtol=1e-4, atol=1e-5)


def test_cleanup_left_to_onnxruntime_gives_it_the_same_graph(tmp_path):
    """caps.cleans_up_at_load: a duplicated Relu and MatMul + Add reach onnxruntime as
    written, and its optimized graph is the one it makes of kiln's cleaned-up graph."""
    from model_builders import float_model, run_reference
    from onnx import helper

    def model():
        rng = np.random.default_rng(0)
        nodes = [helper.make_node("Identity", ["a"], ["i"]),
                 helper.make_node("Dropout", ["i"], ["d"]),
                 helper.make_node("MatMul", ["d", "w"], ["m"]),
                 helper.make_node("Add", ["m", "b"], ["s"]),
                 helper.make_node("Relu", ["s"], ["r1"]),
                 helper.make_node("Relu", ["s"], ["r2"]),
                 helper.make_node("Sum", ["r1", "r2"], ["y"])]
        return float_model(nodes, {"a": [2, 4]}, {"y": [2, 3]},
                           {"w": rng.standard_normal((4, 3)).astype(np.float32),
                            "b": rng.standard_normal(3).astype(np.float32)})

    assert get_backend("onnxruntime").caps().cleans_up_at_load
    compiled, left, done = _left_to_onnxruntime(model, tmp_path)
    assert "MatMul" in left and left.count("Relu") == 2
    assert "MatMul" not in done and done.count("Relu") == 1
    a = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(kiln.Session(compiled)(a=a)["y"],
                               run_reference(model(), {"a": a})[0], rtol=1e-5, atol=1e-6)


def test_layer_norm_is_left_to_onnxruntime_which_fuses_it_the_same(tmp_path):
    """caps.fuses_norm_gelu: kiln leaves an exported LayerNorm in plain ops, and onnxruntime's
    graph is the one it makes of kiln's LayerNormalization."""
    import dataclasses

    from model_builders import exported_layer_norm, float_model, run_reference

    from kiln.compiler.pipeline import optimize

    def model():
        nodes, inits = exported_layer_norm("x", "y", 8)
        return float_model(nodes, {"x": [2, 3, 8]}, {"y": [2, 3, 8]}, inits)

    caps = get_backend("onnxruntime").caps()
    assert caps.fuses_norm_gelu
    left, _ = optimize(model(), 2, None, caps)
    assert "LayerNormalization" not in [n.op_type for n in left.graph]
    fused, _ = optimize(model(), 2, None, dataclasses.replace(caps, fuses_norm_gelu=False))
    assert "LayerNormalization" in [n.op_type for n in fused.graph]
    assert _onnxruntime_graph(left, tmp_path, "left.onnx") == \
        _onnxruntime_graph(fused, tmp_path, "fused.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(kiln.Session(model(), backend="onnxruntime")(x=x)["y"],
                               run_reference(model(), {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_chains_left_to_onnxruntime_give_it_the_same_graph(tmp_path):
    """caps.cleans_up_at_load: Transpose and Reshape chains (ENGINE_CHAIN_RULES) reach
    onnxruntime as written, and its optimized graph is the one it makes of kiln's collapsed
    chains; an Unsqueeze chain, which onnxruntime keeps, is still collapsed by kiln."""
    from model_builders import make_chains_model as model
    from model_builders import run_reference

    compiled, left, done = _left_to_onnxruntime(model, tmp_path)
    assert left.count("Transpose") == 2 and left.count("Reshape") == 2
    assert left.count("Unsqueeze") == 1
    assert "Transpose" not in done and done.count("Reshape") == 1
    a = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(kiln.Session(compiled)(a=a)["y"],
                               run_reference(model(), {"a": a})[0], rtol=1e-6)

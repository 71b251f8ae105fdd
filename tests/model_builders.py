"""The one place tests build models in code (``from model_builders import make_conv_model``;
tests/conftest.py puts this folder on sys.path): two ready models, three builders for the three
ways tests describe a graph (``float_model``: shapes; ``model_from_arrays``: example arrays;
``model_from_value_infos``: raw value infos, unchecked), and the reference runner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper


def make_conv_model(seed: int = 0, batch: int | str = 1) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, random weights (opset 17)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        initializer=[w, b, fc, fcb])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_two_input_model() -> onnx.ModelProto:
    """y = Relu(a + b) with a symbolic batch dim 'N' shared by both inputs; also an int64 input."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"]),
         helper.make_node("Shape", ["ids"], ["ids_shape"])],
        "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("ids_shape", TensorProto.INT64, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def float_model(nodes: list[onnx.NodeProto], inputs: Mapping[str, list[int]],
                outputs: Mapping[str, list[int]], initializers: Mapping[str, np.ndarray],
                opset: int = 17) -> ir.Model:
    """A float32 model (as onnx_ir) from onnx.helper nodes and ``{name: shape}`` inputs and
    outputs; checked by the ONNX checker."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return ir.from_proto(proto)


def exported_layer_norm(x: str, y: str, width: int, seed: int = 0
                        ) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """A LayerNorm over the last axis as the opset-14 exporters write it (ReduceMean, Sub,
    Pow, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta): its nodes and initializers."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("ReduceMean", [x], ["ln_mu"], axes=[-1]),
             helper.make_node("Sub", [x, "ln_mu"], ["ln_d"]),
             helper.make_node("Pow", ["ln_d", "ln_two"], ["ln_d2"]),
             helper.make_node("ReduceMean", ["ln_d2"], ["ln_var"], axes=[-1]),
             helper.make_node("Add", ["ln_var", "ln_eps"], ["ln_ve"]),
             helper.make_node("Sqrt", ["ln_ve"], ["ln_sd"]),
             helper.make_node("Div", ["ln_d", "ln_sd"], ["ln_n"]),
             helper.make_node("Mul", ["ln_n", "ln_g"], ["ln_ng"]),
             helper.make_node("Add", ["ln_ng", "ln_b"], [y])]
    inits = {"ln_two": np.array(2.0, np.float32), "ln_eps": np.array(1e-12, np.float32),
             "ln_g": rng.standard_normal(width).astype(np.float32),
             "ln_b": rng.standard_normal(width).astype(np.float32)}
    return nodes, inits


def model_from_arrays(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, np.ndarray],
                      outputs: Sequence[str], opset: int = 17,
                      initializers: Mapping[str, np.ndarray] | None = None,
                      extra_opsets: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """A model whose graph inputs take dtype and shape from the example arrays ``inputs``;
    output types are inferred (when every domain is ONNX's)."""
    graph_inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                      list(arr.shape))
        for name, arr in inputs.items()]
    inits = [numpy_helper.from_array(arr, name) for name, arr in (initializers or {}).items()]
    graph_outputs = [helper.make_empty_tensor_value_info(name) for name in outputs]
    graph = helper.make_graph(list(nodes), "case", graph_inputs, graph_outputs,
                              initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    for domain, version in (extra_opsets or {}).items():
        opsets.append(helper.make_opsetid(domain, version))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if not extra_opsets:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {vi.name: vi.type
                 for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for out in model.graph.output:
            if out.name in types and types[out.name].tensor_type.elem_type:
                out.type.CopyFrom(types[out.name])
    return model


def model_from_value_infos(nodes: list, inputs: list, outputs: list, inits: tuple = (),
                           opset: int = 17, ir_version: int = 10,
                           **graph: Any) -> onnx.ModelProto:
    """A model exactly as given: value infos, initializers and IR version unchecked (the
    hostile tests build what a checker would refuse)."""
    g = helper.make_graph(nodes, "hostile", inputs, outputs, initializer=list(inits), **graph)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def run_reference(model: ir.Model | onnx.ModelProto,
                  feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Every output of ``model`` on the reference (kiln's onnxruntime session builder)."""
    from kiln.compiler.reference import reference_session

    return reference_session(model).run(None, dict(feeds))


def save_matmul_model(path: Any, weight: np.ndarray, **save_options: Any) -> Any:
    """y = x @ ``weight`` (x of shape [1, rows]) saved at ``path`` with ``onnx.save``'s
    ``save_options`` (external data and the like); returns ``path``."""
    rows, cols = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              **save_options)
    return path


def make_unused_domains_model() -> onnx.ModelProto:
    """The conv model importing domains no node uses, as Paddle2ONNX and onnxruntime-saved
    models do (Paddle, com.microsoft.nchwc, ...) plus one nobody knows."""
    model = make_conv_model()
    for domain in ("Paddle", "com.microsoft.nchwc", "com.microsoft.mlfeaturizers",
                   "ai.onnx.training", "org.example.unknown"):
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model


def make_dynamic_dim_model() -> onnx.ModelProto:
    """The conv model with its batch dim declared as -1 and its height and width both named
    '?', as Paddle2ONNX writes dynamic dims (the '?'s may differ)."""
    model = make_conv_model()
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = -1
    for axis in (2, 3):
        model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = "?"
    return model


def make_chains_model() -> ir.Model:
    """Transpose -> Transpose, Reshape -> Reshape and Unsqueeze -> Unsqueeze chains around a
    Relu: what kiln's collapse-chains step rewrites."""
    nodes = [helper.make_node("Transpose", ["a"], ["t1"], perm=[1, 0, 2]),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0, 2]),
             helper.make_node("Reshape", ["t2", "s1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "s2"], ["r2"]),
             helper.make_node("Relu", ["r2"], ["u"]),
             helper.make_node("Unsqueeze", ["u", "axis"], ["u1"]),
             helper.make_node("Unsqueeze", ["u1", "axis"], ["y"])]
    return float_model(nodes, {"a": [2, 3, 4]}, {"y": [1, 1, 6, 4]},
                       {"s1": np.array([3, 2, 4], np.int64), "s2": np.array([6, 4], np.int64),
                        "axis": np.array([0], np.int64)})


def make_scalar_input_model() -> onnx.ModelProto:
    """y = x * float(rate), with ``rate`` a rank-0 int64 input (a sample rate)."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["rate"], ["r"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "r"], ["y"])], "scalar_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_contrib_model(seed: int = 0) -> onnx.ModelProto:
    """onnxruntime contrib ops between standard ones: com.microsoft FusedConv (Conv + Relu)
    -> Sigmoid -> + 4 I -> com.microsoft Inverse (of each 4x4 plane, diagonally dominant)
    -> Conv -> Relu -> Tanh."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("FusedConv", ["x", "w", "b"], ["c0"], name="fused_conv",
                         domain="com.microsoft", activation="Relu", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c0"], ["s0"], name="sigmoid"),
        helper.make_node("Add", ["s0", "eye"], ["a0"], name="shift"),
        helper.make_node("Inverse", ["a0"], ["inv"], name="inverse", domain="com.microsoft"),
        helper.make_node("Conv", ["inv", "w2"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Tanh", ["r1"], ["y"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes, "contrib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        initializer=[w, b, w2, numpy_helper.from_array(np.eye(4, dtype=np.float32) * 4, "eye")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])


def make_nested_if_model(depth: int) -> onnx.ModelProto:
    """``depth`` Ifs, each in the then-branch of the one above: y = x when c, else -x."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["o0"])], "leaf", [],
                              [helper.make_tensor_value_info("o0", TensorProto.FLOAT, [2])])
    for level in range(1, depth + 1):
        other = helper.make_graph(
            [helper.make_node("Neg", ["x"], [f"e{level}"])], f"else{level}", [],
            [helper.make_tensor_value_info(f"e{level}", TensorProto.FLOAT, [2])])
        graph = helper.make_graph(
            [helper.make_node("If", ["c"], [f"o{level}"], then_branch=graph,
                              else_branch=other)], f"level{level}", [],
            [helper.make_tensor_value_info(f"o{level}", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        list(graph.node), "nested_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(f"o{depth}", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_stride_detector(metadata: Mapping[str, str] | None = None) -> onnx.ModelProto:
    """x[batch, 3, height, width] -> Conv stride 2 -> Resize x2 -> Concat with x: runs only
    when height and width are even, and nothing in the graph says which sizes to use (a
    detector's FPN in miniature). ``metadata`` goes to metadata_props."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="down", strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="act"),
             helper.make_node("Resize", ["r", "", "scales"], ["u"], name="up", mode="nearest"),
             helper.make_node("Concat", ["x", "u"], ["y"], name="merge", axis=1)]
    graph = helper.make_graph(
        nodes, "stride_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       ["batch", 7, "height", "width"])],
        initializer=[w, scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def make_contrib_encoder_model(seed: int = 0) -> onnx.ModelProto:
    """One BERT layer as onnxruntime's transformer optimizer writes it, in com.microsoft ops:
    EmbedLayerNormalization -> Attention -> MatMul -> SkipLayerNormalization -> MatMul ->
    FastGelu -> MatMul -> SkipLayerNormalization. Inputs ids, segs, mask (int32 [B, 8])."""
    rng = np.random.default_rng(seed)
    vocab, seq, hidden, ff = 30, 8, 16, 32

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32),
                                       name)

    def const(name: str, value: float) -> onnx.TensorProto:
        return numpy_helper.from_array(np.full(hidden, value, np.float32), name)

    initializers = [weight("word", vocab, hidden), weight("pos", 16, hidden),
                    weight("seg", 2, hidden), const("g1", 1), const("b1", 0),
                    weight("qkv_w", hidden, 3 * hidden), weight("qkv_b", 3 * hidden),
                    weight("o_w", hidden, hidden), weight("o_b", hidden), const("g2", 1),
                    const("b2", 0), weight("f1_w", hidden, ff), weight("f1_b", ff),
                    weight("f2_w", ff, hidden), weight("f2_b", hidden), const("g3", 1),
                    const("b3", 0)]
    ms = "com.microsoft"
    nodes = [
        helper.make_node("EmbedLayerNormalization",
                         ["ids", "segs", "word", "pos", "seg", "g1", "b1", "mask"],
                         ["emb", "mask_index"], domain=ms, name="embed", epsilon=1e-12),
        helper.make_node("Attention", ["emb", "qkv_w", "qkv_b", "mask_index"], ["att"],
                         domain=ms, name="attention", num_heads=2),
        helper.make_node("MatMul", ["att", "o_w"], ["proj"], name="proj"),
        helper.make_node("SkipLayerNormalization", ["proj", "emb", "g2", "b2", "o_b"], ["ln1"],
                         domain=ms, name="skip_ln1", epsilon=1e-12),
        helper.make_node("MatMul", ["ln1", "f1_w"], ["f1"], name="ff1"),
        helper.make_node("FastGelu", ["f1", "f1_b"], ["gelu"], domain=ms, name="gelu"),
        helper.make_node("MatMul", ["gelu", "f2_w"], ["f2"], name="ff2"),
        helper.make_node("SkipLayerNormalization", ["f2", "ln1", "g3", "b3", "f2_b"], ["out"],
                         domain=ms, name="skip_ln2", epsilon=1e-12),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["B", seq])
              for n in ("ids", "segs", "mask")]
    graph = helper.make_graph(
        nodes, "encoder", inputs,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", seq, hidden])],
        initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(ms, 1)])


# -- quantized (Q/DQ) graphs, the way kiln's quantizer writes them -----------------------------

QDQ_RNG = np.random.default_rng(7)


def qdq_activation(name: str, scale: float, zero: int, inits: dict) -> list:
    """QuantizeLinear -> DequantizeLinear of activation ``name`` (u8, per tensor)."""
    inits[f"{name}_s"] = np.array(scale, np.float32)
    inits[f"{name}_z"] = np.array(zero, np.uint8)
    return [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                             [f"{name}_dq"])]


def qdq_weights(name: str, shape: tuple, axis: int, inits: dict, zero: int = 0) -> list:
    """Symmetric (``zero`` = 0) per-channel int8 weights behind a DequantizeLinear."""
    channels = shape[axis]
    inits[f"{name}_w"] = QDQ_RNG.integers(-127, 128, shape).astype(np.int8)
    inits[f"{name}_ws"] = (QDQ_RNG.random(channels) * 0.02 + 0.005).astype(np.float32)
    inits[f"{name}_wz"] = np.full(channels, zero, np.int8)
    return [helper.make_node("DequantizeLinear", [f"{name}_w", f"{name}_ws", f"{name}_wz"],
                             [f"{name}_wdq"], axis=axis)]


def qdq_int32_bias(name: str, channels: int, x_scale: float, inits: dict) -> list:
    """The QDQ convention onnxruntime's fused kernels assume: scale = x_scale * w_scale."""
    inits[f"{name}_b"] = QDQ_RNG.integers(-500, 500, channels).astype(np.int32)
    inits[f"{name}_bs"] = (inits[f"{name}_ws"] * np.float32(x_scale)).astype(np.float32)
    inits[f"{name}_bz"] = np.zeros(channels, np.int32)
    return [helper.make_node("DequantizeLinear", [f"{name}_b", f"{name}_bs", f"{name}_bz"],
                             [f"{name}_bdq"], axis=0)]


def qdq_conv_net(x: np.ndarray, c1: int = 8, c2: int = 16) -> onnx.ModelProto:
    """image -> QDQ -> conv+relu -> QDQ -> conv+relu -> QDQ -> maxpool -> QDQ -> conv -> out:
    every hand-over between integer ops is u8."""
    inits: dict = {}
    c = x.shape[1]
    nodes = qdq_activation("x", 0.03, 128, inits)
    nodes += qdq_weights("c1", (c1, c, 3, 3), 0, inits) + qdq_int32_bias("c1", c1, 0.03, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "c1_wdq", "c1_bdq"], ["c1_y"], pads=[1] * 4,
                               name="conv1"),
              helper.make_node("Relu", ["c1_y"], ["r1"])]
    nodes += qdq_activation("r1", 0.02, 0, inits)
    nodes += qdq_weights("c2", (c2, c1, 3, 3), 0, inits) + qdq_int32_bias("c2", c2, 0.02, inits)
    nodes += [helper.make_node("Conv", ["r1_dq", "c2_wdq", "c2_bdq"], ["c2_y"], pads=[1] * 4,
                               strides=[1, 1], name="conv2"),
              helper.make_node("Relu", ["c2_y"], ["r2"])]
    nodes += qdq_activation("r2", 0.02, 0, inits)
    nodes += [helper.make_node("MaxPool", ["r2_dq"], ["p"], kernel_shape=[2, 2],
                               strides=[2, 2], name="pool")]
    nodes += qdq_activation("p", 0.025, 0, inits)
    nodes += qdq_weights("c3", (4, c2, 3, 3), 0, inits)
    nodes += [helper.make_node("Conv", ["p_dq", "c3_wdq"], ["out"], strides=[2, 2],
                               pads=[0, 1, 1, 0], name="conv3")]
    return model_from_arrays(nodes, {"x": x}, ["out"], opset=21, initializers=inits)


def qdq_upsampling_head(x: np.ndarray, mid: int, out: int, kernel: int = 2) -> onnx.ModelProto:
    """QDQ -> ConvTranspose (kernel x kernel, stride 2, bias) -> Relu -> QDQ -> ConvTranspose
    (2x2 stride 2, ``out`` channels) -> y: the PP-OCR detector's head as the chained int8
    form writes it (weights per output channel: axis 1 of [C, M, KH, KW])."""
    c = x.shape[1]
    inits: dict = {}
    nodes = qdq_activation("x", 0.03, 125, inits)
    for name, cin, cout, k in (("t1", c, mid, kernel), ("t2", mid, out, 2)):
        nodes += qdq_weights(name, (cin, cout, k, k), 1, inits)
    inits["t1_b"] = (QDQ_RNG.standard_normal(mid) * 0.1).astype(np.float32)
    nodes += [helper.make_node("ConvTranspose", ["x_dq", "t1_wdq", "t1_b"], ["t1"],
                               kernel_shape=[kernel] * 2, strides=[2, 2]),
              helper.make_node("Relu", ["t1"], ["r1"])]
    nodes += qdq_activation("r1", 0.3, 0, inits)
    nodes += [helper.make_node("ConvTranspose", ["r1_dq", "t2_wdq"], ["y"], strides=[2, 2])]
    return model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)


def qdq_depthwise(x: np.ndarray, kernel: int = 3, stride: int = 1, hard_swish: bool = False,
                  pointwise: int = 0) -> onnx.ModelProto:
    """QDQ -> depthwise conv (zero point 125, padded, int32 bias) -> y. With ``hard_swish`` its
    result is quantized, then DQ -> x * HardSigmoid(x) -> a learned scale and shift -> QDQ:
    PP-OCR's activation between two integer layers (values "hsw", "act"). With ``pointwise``
    a 1x1 conv to that many channels reads the result."""
    c = x.shape[1]
    inits: dict = {}
    nodes = qdq_activation("x", 0.03, 125, inits) + qdq_weights("d", (c, 1, kernel, kernel), 0,
                                                                inits)
    nodes += qdq_int32_bias("d", c, 0.03, inits)
    nodes += [helper.make_node("Conv", ["x_dq", "d_wdq", "d_bdq"], ["d_y"], group=c,
                               kernel_shape=[kernel] * 2, pads=[kernel // 2] * 4,
                               strides=[stride] * 2, name="dw")]
    out = "d_y"
    if hard_swish:
        inits["sc"] = np.array([1.3], np.float32)
        inits["sh"] = np.array([-0.1], np.float32)
        nodes += qdq_activation("d_y", 0.05, 120, inits)
        nodes += [helper.make_node("HardSigmoid", ["d_y_dq"], ["hs"], alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", ["d_y_dq", "hs"], ["hsw"]),
                  helper.make_node("Mul", ["sc", "hsw"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "sh"], ["act"])]
        nodes += qdq_activation("act", 0.04, 20, inits)
        out = "act_dq"
    if pointwise:
        nodes += qdq_weights("p", (pointwise, c, 1, 1), 0, inits)
        nodes += [helper.make_node("Conv", [out, "p_wdq"], ["y"], name="pw")]
    else:
        nodes += [helper.make_node("Identity", [out], ["y"])]
    return model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)


def dynamic_int8_matmul(x: np.ndarray, n: int) -> onnx.ModelProto:
    """Dynamic int8 as kiln's quantizer writes it: DynamicQuantizeLinear -> MatMulInteger ->
    Cast -> Mul(x_scale * w_scale) -> Add(bias), with symmetric per-column int8 weights."""
    k = x.shape[-1]
    inits = {"w": QDQ_RNG.integers(-127, 128, (k, n)).astype(np.int8),
             "wz": np.zeros(n, np.int8),
             "ws": (QDQ_RNG.random(n) * 0.01 + 0.001).astype(np.float32),
             "bias": QDQ_RNG.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"], name="mmi"),
             helper.make_node("Cast", ["acc"], ["accf"], to=1),
             helper.make_node("Mul", ["xs", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["mm"]),
             helper.make_node("Add", ["mm", "bias"], ["y"])]
    return model_from_arrays(nodes, {"x": x}, ["y"], opset=21, initializers=inits)

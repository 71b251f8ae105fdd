"""The native LSTM (src/ops/recurrent.cpp) against onnx.reference, and hostile inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import kiln
import kiln.backend

rng = np.random.default_rng(11)
SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6


def _lstm_model(direction: str, layout: int = 0, peepholes: bool = False,
                lens: bool = False, clip: float | None = None) -> tuple[onnx.ModelProto, list]:
    dirs = 2 if direction == "bidirectional" else 1
    x_shape = [BATCH, SEQ, INPUT] if layout else [SEQ, BATCH, INPUT]
    state = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    arrays = {
        "X": rng.standard_normal(x_shape).astype(np.float32),
        "W": (rng.standard_normal([dirs, 4 * HIDDEN, INPUT]) * 0.5).astype(np.float32),
        "R": (rng.standard_normal([dirs, 4 * HIDDEN, HIDDEN]) * 0.5).astype(np.float32),
        "B": rng.standard_normal([dirs, 8 * HIDDEN]).astype(np.float32),
        "L": np.array([5, 2, 4], np.int32) if lens else None,
        "H0": rng.standard_normal(state).astype(np.float32),
        "C0": rng.standard_normal(state).astype(np.float32),
        "P": rng.standard_normal([dirs, 3 * HIDDEN]).astype(np.float32) if peepholes else None,
    }
    names = [k if v is not None else "" for k, v in arrays.items()]
    attrs = {"direction": direction, "hidden_size": HIDDEN, "layout": layout}
    if clip is not None:
        attrs["clip"] = clip
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], name="rnn", **attrs)
    inputs = [helper.make_tensor_value_info(
        k, TensorProto.INT32 if k == "L" else TensorProto.FLOAT, list(v.shape))
        for k, v in arrays.items() if v is not None]
    y_shape = [BATCH, SEQ, dirs, HIDDEN] if layout else [SEQ, dirs, BATCH, HIDDEN]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, state),
               helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, state)]
    model = helper.make_model(helper.make_graph([node], "lstm", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 14)])
    return model, [v for v in arrays.values() if v is not None]


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("peepholes", [False, True])
def test_lstm_matches_onnx_reference(direction: str, layout: int, peepholes: bool):
    model, feeds = _lstm_model(direction, layout, peepholes)
    names = [i.name for i in model.graph.input]
    want = ReferenceEvaluator(model).run(None, dict(zip(names, feeds)))
    got = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run(feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("clip", [None, 0.7])
def test_lstm_sequence_lengths_and_clip_match_onnxruntime(clip: float | None):
    import onnxruntime as ort

    model, feeds = _lstm_model("bidirectional", peepholes=True, lens=True, clip=clip)
    names = [i.name for i in model.graph.input]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(
        None, dict(zip(names, feeds)))
    got = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run(feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_sequence_length_beyond_the_sequence_names_the_node():
    model, feeds = _lstm_model("forward", lens=True)
    feeds[4] = np.array([5, 9, 1], np.int32)
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.KilnError, match="rnn.*sequence_lens value 9"):
        rep.run(feeds)


def test_weights_of_the_wrong_shape_name_the_node():
    model, feeds = _lstm_model("forward")
    model.graph.input[1].type.tensor_type.shape.dim[2].dim_value = INPUT + 1
    feeds[1] = np.zeros([1, 4 * HIDDEN, INPUT + 1], np.float32)
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.KilnError, match="rnn.*W has shape"):
        rep.run(feeds)


def test_other_activations_are_refused():
    model, _ = _lstm_model("forward")
    model.graph.node[0].attribute.append(
        helper.make_attribute("activations", ["Relu", "Tanh", "Tanh"]))
    with pytest.raises(kiln.UnsupportedError, match="activations"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)


def _gru_rnn_model(op: str, direction: str, linear_before_reset: int = 0,
                   lens: list[int] | None = None) -> tuple[onnx.ModelProto, list]:
    gates = 3 if op == "GRU" else 1
    dirs = 2 if direction == "bidirectional" else 1
    arrays = {
        "X": rng.standard_normal([SEQ, BATCH, INPUT]).astype(np.float32),
        "W": (rng.standard_normal([dirs, gates * HIDDEN, INPUT]) * 0.5).astype(np.float32),
        "R": (rng.standard_normal([dirs, gates * HIDDEN, HIDDEN]) * 0.5).astype(np.float32),
        "B": rng.standard_normal([dirs, 2 * gates * HIDDEN]).astype(np.float32),
        "L": np.array(lens, np.int32) if lens is not None else None,
        "H0": rng.standard_normal([dirs, BATCH, HIDDEN]).astype(np.float32),
    }
    names = [k if v is not None else "" for k, v in arrays.items()]
    attrs = {"direction": direction, "hidden_size": HIDDEN}
    if op == "GRU":
        attrs["linear_before_reset"] = linear_before_reset
    node = helper.make_node(op, names, ["Y", "Y_h"], name="rnn", **attrs)
    inputs = [helper.make_tensor_value_info(
        k, TensorProto.INT32 if k == "L" else TensorProto.FLOAT, list(v.shape))
        for k, v in arrays.items() if v is not None]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT,
                                             [SEQ, dirs, BATCH, HIDDEN]),
               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [dirs, BATCH, HIDDEN])]
    model = helper.make_model(helper.make_graph([node], op.lower(), inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 14)])
    return model, [v for v in arrays.values() if v is not None]


@pytest.mark.parametrize("op,linear_before_reset", [("GRU", 0), ("GRU", 1), ("RNN", 0)])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lens", [None, [5, 2, 4]])
def test_gru_and_rnn_match_onnx_reference(op: str, linear_before_reset: int, direction: str,
                                          lens: list[int] | None):
    model, feeds = _gru_rnn_model(op, direction, linear_before_reset, lens)
    names = [i.name for i in model.graph.input]
    if lens is None:
        want = ReferenceEvaluator(model).run(None, dict(zip(names, feeds)))
    else:  # onnx.reference does not implement sequence_lens; onnxruntime does
        want = kiln.backend.prepare(model, "CPU", backend="onnxruntime").run(feeds)
    got = kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run(feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["GRU", "RNN"])
def test_gru_and_rnn_sequence_length_beyond_the_sequence_is_an_input_error(op: str):
    model, feeds = _gru_rnn_model(op, "forward", lens=[5, 9, 1])
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.InputError, match="sequence_lens value 9"):
        rep.run(feeds)


def test_gru_with_other_activations_is_refused_naming_them():
    model, _ = _gru_rnn_model("GRU", "forward")
    model.graph.node[0].attribute.append(helper.make_attribute("activations",
                                                               ["Relu", "Tanh"]))
    with pytest.raises(kiln.UnsupportedError, match="activations"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bidirectional_matches_onnx_reference_on_every_thread_count(op: str, threads: int):
    # Hidden size 96: each step's product is large enough to split across threads, so the
    # runs cover one thread, one direction per thread (2) and steps split across threads (3).
    # W, R and B are initializers, as exporters write them (R is packed at build).
    hidden, gates = 96, {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    x = rng.standard_normal([SEQ, BATCH, INPUT]).astype(np.float32)
    weights = {
        "W": (rng.standard_normal([2, gates * hidden, INPUT]) * 0.3).astype(np.float32),
        "R": (rng.standard_normal([2, gates * hidden, hidden]) * 0.1).astype(np.float32),
        "B": rng.standard_normal([2, 2 * gates * hidden]).astype(np.float32),
    }
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, ["X", *weights], outputs, name="rnn",
                            direction="bidirectional", hidden_size=hidden)
    model = helper.make_model(helper.make_graph(
        [node], op.lower(), [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * (4 if o == "Y" else 3))
         for o in outputs],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()]),
        opset_imports=[helper.make_opsetid("", 14)])
    want = ReferenceEvaluator(model).run(None, {"X": x})
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None, threads=threads)
    for _ in range(2):  # the second run reuses the arena and the pool
        got = rep.run([x])
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


# com.microsoft DynamicQuantizeLSTM: onnxruntime's dynamic quantizer's LSTM (W [dirs, I, 4H]
# and R [dirs, H, 4H] int8 or uint8 with scales and zero points).
def _dq_lstm_model(direction: str, wtype: type = np.int8, per_column: bool = False,
                   batch: int = 1, zero: int = 0, lens: bool = False,
                   constant_weights: bool = True) -> tuple[onnx.ModelProto, dict]:
    from onnx import numpy_helper

    gen = np.random.default_rng(5)
    dirs, seq, inp, hid = (2 if direction == "bidirectional" else 1), 7, 24, 16
    lo, hi = (-127, 128) if wtype == np.int8 else (0, 256)
    scale_shape = [dirs, 4 * hid] if per_column else [dirs]
    weights = {
        "W": gen.integers(lo, hi, [dirs, inp, 4 * hid]).astype(wtype),
        "R": gen.integers(lo, hi, [dirs, hid, 4 * hid]).astype(wtype),
        "B": (gen.standard_normal([dirs, 8 * hid]) * 0.3).astype(np.float32),
        "W_scale": gen.uniform(0.5, 1.5, scale_shape).astype(np.float32) / 127 / 4,
        "W_zero": np.full(scale_shape, zero, wtype),
        "R_scale": gen.uniform(0.5, 1.5, scale_shape).astype(np.float32) / 127 / 3,
        "R_zero": np.full(scale_shape, zero, wtype),
    }
    feeds = {"X": gen.standard_normal([seq, batch, inp]).astype(np.float32)}
    if lens:
        feeds["L"] = np.array([7, 3, 5][:batch], np.int32)
    names = ["X", "W", "R", "B", "L" if lens else "", "", "", "", "W_scale", "W_zero",
             "R_scale", "R_zero"]
    node = helper.make_node("DynamicQuantizeLSTM", names, ["Y", "Y_h", "Y_c"], name="qlstm",
                            domain="com.microsoft", direction=direction, hidden_size=hid)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq, batch, inp])]
    if lens:
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [batch]))
    if not constant_weights:  # W and R fed at run time
        for key in ("W", "R"):
            inputs.append(helper.make_tensor_value_info(
                key, helper.np_dtype_to_tensor_dtype(weights[key].dtype),
                list(weights[key].shape)))
            feeds[key] = weights.pop(key)
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in (
        ("Y", [seq, dirs, batch, hid]), ("Y_h", [dirs, batch, hid]), ("Y_c", [dirs, batch, hid]))]
    graph = helper.make_graph([node], "qlstm", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model, feeds


def _ort_and_native(model: onnx.ModelProto, feeds: dict, threads: int = 2):
    import onnxruntime as ort

    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None, threads=threads)
    return want, rep.run([feeds[i.name] for i in model.graph.input])


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("wtype,per_column,zero", [(np.int8, False, 0), (np.int8, True, 0),
                                                   (np.uint8, True, 131), (np.int8, False, 3)])
@pytest.mark.parametrize("threads", [1, 2])
def test_dynamic_quantize_lstm_matches_onnxruntime(direction, wtype, per_column, zero,
                                                   threads):
    # one sequence: onnxruntime and native quantize the same X and the same h at every step,
    # so they differ only where an activation's last bit moves a value across a rounding step
    model, feeds = _dq_lstm_model(direction, wtype, per_column, zero=zero)
    want, got = _ort_and_native(model, feeds, threads)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-5)


def test_dynamic_quantize_lstm_with_weights_fed_at_run_time():
    model, feeds = _dq_lstm_model("bidirectional", np.int8, True, constant_weights=False)
    want, got = _ort_and_native(model, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-5)


def test_dynamic_quantize_lstm_batch_with_sequence_lengths():
    # A batch: native quantizes the running rows' h on their common range; onnxruntime
    # groups the batch's rows otherwise, so the two agree to about the quantization step
    # of h (max 1.4e-3 here), not to the last bit.
    model, feeds = _dq_lstm_model("bidirectional", batch=3, lens=True)
    want, got = _ort_and_native(model, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=5e-3)
    y = got[0]
    assert not y[3:, :, 1].any() and not y[5:, :, 2].any()  # zero past each row's length


def test_dynamic_quantize_lstm_non_finite_scale_names_the_node():
    model, feeds = _dq_lstm_model("forward")
    scale = next(t for t in model.graph.initializer if t.name == "R_scale")
    scale.CopyFrom(onnx.numpy_helper.from_array(np.array([np.inf], np.float32), "R_scale"))
    with pytest.raises(kiln.KilnError, match="qlstm.*R_scale holds a value that is not finite"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None).run([feeds["X"]])


def test_dynamic_quantize_lstm_nan_input_is_an_input_error():
    model, feeds = _dq_lstm_model("forward")
    x = feeds["X"].copy()
    x[2, 0, 3] = np.nan
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.KilnError, match="qlstm.*X holds NaN"):
        rep.run([x])


def test_dynamic_quantize_lstm_weights_of_the_wrong_shape_name_the_node():
    model, feeds = _dq_lstm_model("forward", constant_weights=False)
    feeds["R"] = np.zeros([1, 16, 60], np.int8)
    model.graph.input[2].type.tensor_type.shape.dim[2].dim_value = 60
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.KilnError, match="qlstm.*R has shape"):
        rep.run([feeds[i.name] for i in model.graph.input])

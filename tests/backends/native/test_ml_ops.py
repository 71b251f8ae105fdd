"""The native ai.onnx.ml kernels (src/ops/ml.cpp, src/ops/tree_ensemble.cpp) against
onnxruntime: scikit-learn models converted by skl2onnx, trained here on small random data,
and hand-built graphs for the cases converters rarely write. Labels must be equal, scores
within 1e-5; every case runs strict native (no fallback) at 1 and 2 threads."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import kiln
import kiln.backend

pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")

rng = np.random.default_rng(5)
ML = "ai.onnx.ml"
FEATURES = 6
ROWS = 300  # past one block of rows, so two threads split the batch


def _data(rows: int = ROWS, features: int = FEATURES) -> np.ndarray:
    return rng.standard_normal((rows, features)).astype(np.float32)


def _labels(x: np.ndarray, classes: int) -> np.ndarray:
    score = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + 0.3 * rng.standard_normal(len(x))
    edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(score, edges).astype(np.int64) * 3 + 1  # labels 1, 4, 7, ...


def _onnx(estimator, x: np.ndarray, ml_opset: int = 3) -> onnx.ModelProto:
    from skl2onnx import to_onnx

    options = {"zipmap": False} if hasattr(estimator, "predict_proba") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(estimator, x[:1], options=options,
                       target_opset={"": 17, ML: ml_opset})


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _native(model: onnx.ModelProto, feeds: dict, threads: int) -> list[np.ndarray]:
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None, threads=threads)
    return list(rep.run([feeds[i.name] for i in model.graph.input]))


def _check(model: onnx.ModelProto, feeds: dict, threads: int) -> None:
    want = _ort(model, feeds)
    got = _native(model, feeds, threads)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def _graph(node: onnx.NodeProto, inputs: list, outputs: list,
           ml_opset: int = 1) -> onnx.ModelProto:
    graph = helper.make_graph([node], "ml", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(ML, ml_opset)])


def _vi(name: str, dtype: int, shape: list | None = None):
    """A value of `shape`; unsaid, [N, C] (labels: [N])."""
    if shape is None:
        shape = [None] if name == "Y" and dtype in (TensorProto.INT64, TensorProto.STRING) \
            else [None, None]
    return helper.make_tensor_value_info(name, dtype, shape)


NP_TO_ONNX = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE,
              np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}


# ---- scikit-learn pipelines ------------------------------------------------------------------

def _sklearn_transforms():
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Binarizer, MinMaxScaler, Normalizer, StandardScaler

    return {
        "standard_scaler": lambda: StandardScaler(),
        "minmax_scaler": lambda: MinMaxScaler(),
        "normalizer_l1": lambda: Normalizer("l1"),
        "normalizer_l2": lambda: Normalizer("l2"),
        "normalizer_max": lambda: Normalizer("max"),
        "binarizer": lambda: Binarizer(threshold=0.25),
        "imputer": lambda: SimpleImputer(),
        "linear_regression": lambda: LinearRegression(),
        "linear_regression_2_targets": lambda: LinearRegression(),
        "logistic_binary": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        "logistic_multiclass": lambda: make_pipeline(MinMaxScaler(), LogisticRegression()),
        "logistic_3_classes": lambda: LogisticRegression(C=0.5),
    }


SKLEARN_LINEAR = list(_sklearn_transforms())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", SKLEARN_LINEAR)
def test_sklearn_linear_models_match_onnxruntime(name: str, threads: int):
    x = _data()
    estimator = _sklearn_transforms()[name]()
    if name == "imputer":
        x[rng.random(x.shape) < 0.1] = np.nan
    if name.startswith("linear_regression"):
        targets = 2 if name.endswith("targets") else 1
        y = x @ rng.standard_normal((FEATURES, targets)) + 0.1
        estimator.fit(x, y[:, 0] if targets == 1 else y)
    elif name.startswith("logistic"):
        classes = {"logistic_binary": 2, "logistic_3_classes": 3}.get(name, 4)
        estimator.fit(x, _labels(x, classes))
    else:
        estimator.fit(x)
    model = _onnx(estimator, x)  # MinMaxScaler becomes Mul and Add; the others ai.onnx.ml
    _check(model, {model.graph.input[0].name: x}, threads)


# ---- hand-built graphs: Scaler, Normalizer, Binarizer, Imputer, ArrayFeatureExtractor -------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("per_feature", [True, False])
def test_scaler_converts_inputs_as_onnxruntime(dtype, per_feature: bool):
    n = FEATURES if per_feature else 1
    node = helper.make_node("Scaler", ["X"], ["Y"], domain=ML,
                            offset=list(rng.standard_normal(n)), scale=list(rng.random(n) + 0.5))
    model = _graph(node, [_vi("X", NP_TO_ONNX[dtype], [None, FEATURES])],
                   [_vi("Y", TensorProto.FLOAT)])
    x = (rng.standard_normal((7, FEATURES)) * 50).astype(dtype)
    _check(model, {"X": x}, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer_matches_onnxruntime(dtype, norm: str):
    node = helper.make_node("Normalizer", ["X"], ["Y"], domain=ML, norm=norm)
    model = _graph(node, [_vi("X", NP_TO_ONNX[dtype], [None, 5])], [_vi("Y", TensorProto.FLOAT)])
    x = (rng.standard_normal((9, 5)) * 20).astype(dtype)
    x[3] = 0  # a zero row passes through
    _check(model, {"X": x}, 1)


def test_normalizer_one_row_vector():
    node = helper.make_node("Normalizer", ["X"], ["Y"], domain=ML, norm="L2")
    model = _graph(node, [_vi("X", TensorProto.FLOAT, [5])], [_vi("Y", TensorProto.FLOAT)])
    _check(model, {"X": rng.standard_normal(5).astype(np.float32)}, 1)


def test_binarizer_default_threshold_and_nan_refused():
    node = helper.make_node("Binarizer", ["X"], ["Y"], domain=ML)
    model = _graph(node, [_vi("X", TensorProto.FLOAT, [None, 4])], [_vi("Y", TensorProto.FLOAT)])
    x = np.array([[-1, 0, 1e-8, 3]], np.float32)
    _check(model, {"X": x}, 1)
    x[0, 2] = np.nan
    with pytest.raises(kiln.KilnError, match="NaN"):
        _native(model, {"X": x}, 1)


@pytest.mark.parametrize("case", ["float_nan", "float_value", "float_one", "int64"])
def test_imputer_matches_onnxruntime(case: str):
    if case == "int64":
        attrs = {"imputed_value_int64s": [7, 8, 9], "replaced_value_int64": -1}
        x = rng.integers(-2, 3, (6, 3)).astype(np.int64)
        dtype = TensorProto.INT64
    else:
        attrs = {"imputed_value_floats": [1.5] if case == "float_one" else [1.5, -2.0, 4.0],
                 "replaced_value_float": float("nan") if case == "float_nan" else 0.0}
        x = rng.standard_normal((6, 3)).astype(np.float32)
        x[rng.random(x.shape) < 0.3] = np.nan if case == "float_nan" else 0.0
        dtype = TensorProto.FLOAT
    node = helper.make_node("Imputer", ["X"], ["Y"], domain=ML, **attrs)
    model = _graph(node, [_vi("X", dtype, [None, 3])], [_vi("Y", dtype)])
    _check(model, {"X": x}, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)])
def test_array_feature_extractor_shapes_as_onnxruntime(dtype, shape):
    node = helper.make_node("ArrayFeatureExtractor", ["X", "I"], ["Z"], domain=ML)
    model = _graph(node, [_vi("X", NP_TO_ONNX[dtype], list(shape)),
                          _vi("I", TensorProto.INT64, [None])],
                   [_vi("Z", NP_TO_ONNX[dtype], [None] * max(2, len(shape)))])
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    _check(model, {"X": x, "I": np.array([4, 0, 4, 2], np.int64)}, 1)
    with pytest.raises(kiln.KilnError, match="out of range"):
        _native(model, {"X": x, "I": np.array([5], np.int64)}, 1)
    with pytest.raises(kiln.KilnError, match="out of range"):
        _native(model, {"X": x, "I": np.array([-1], np.int64)}, 1)


# ---- hand-built graphs: LinearRegressor, LinearClassifier -----------------------------------

POSTS = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor_post_transforms(post: str, targets: int):
    coef = rng.standard_normal(targets * 4) * 0.1
    node = helper.make_node("LinearRegressor", ["X"], ["Y"], domain=ML, targets=targets,
                            coefficients=list(coef), intercepts=[0.05] * targets,
                            post_transform=post)
    model = _graph(node, [_vi("X", TensorProto.FLOAT, [None, 4])], [_vi("Y", TensorProto.FLOAT)])
    x = rng.random((20, 4)).astype(np.float32)  # PROBIT wants scores inside (0, 1)
    if post == "SOFTMAX_ZERO":
        x[:2] = 0
    _check(model, {"X": x}, 1)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("classes,labels", [(3, [5, 6, 9]), (1, [0, 1]), (1, [3, 8]), (1, [])])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_linear_classifier_matches_onnxruntime(post: str, classes: int, labels: list, dtype):
    coef = rng.standard_normal(classes * 4) * 0.2
    attrs = {"coefficients": list(coef), "intercepts": list(rng.standard_normal(classes) * 0.1),
             "post_transform": post}
    if labels:
        attrs["classlabels_ints"] = labels
    node = helper.make_node("LinearClassifier", ["X"], ["Y", "Z"], domain=ML, **attrs)
    model = _graph(node, [_vi("X", NP_TO_ONNX[dtype], [None, 4])],
                   [_vi("Y", TensorProto.INT64), _vi("Z", TensorProto.FLOAT)])
    x = (rng.random((25, 4)) * (3 if dtype in (np.int64, np.int32) else 1)).astype(dtype)
    if post == "PROBIT" and classes == 1 and len(labels) == 2:
        # onnxruntime writes the N probits packed at the start of the [N, 2] scores and
        # leaves the rest unwritten
        want, got = _ort(model, {"X": x}), _native(model, {"X": x}, 1)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1].reshape(-1)[:len(x)], want[1].reshape(-1)[:len(x)],
                                   rtol=1e-5, atol=1e-5)
        return
    _check(model, {"X": x}, 1)


def test_linear_classifier_string_labels_stay_on_the_fallback():
    node = helper.make_node("LinearClassifier", ["X"], ["Y", "Z"], domain=ML,
                            coefficients=[1.0, -1.0, 0.5, 0.5], intercepts=[0.0, 0.1],
                            classlabels_strings=["a", "b"])
    model = _graph(node, [_vi("X", TensorProto.FLOAT, [None, 2])],
                   [_vi("Y", TensorProto.STRING), _vi("Z", TensorProto.FLOAT)])
    with pytest.raises(kiln.UnsupportedError, match="(?i)string"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    x = rng.standard_normal((4, 2)).astype(np.float32)
    got = kiln.Session(model, backend="native").run(None, {"X": x})
    want = _ort(model, {"X": x})
    np.testing.assert_array_equal(got[0], want[0])


def test_wrong_feature_count_is_a_clear_error():
    node = helper.make_node("LinearClassifier", ["X"], ["Y", "Z"], domain=ML,
                            coefficients=[1.0, -1.0, 0.5, 0.5, 0.1, 0.2], intercepts=[0.0, 0.1],
                            classlabels_ints=[0, 1])
    model = _graph(node, [_vi("X", TensorProto.FLOAT, [None, None])],
                   [_vi("Y", TensorProto.INT64), _vi("Z", TensorProto.FLOAT)])
    with pytest.raises(kiln.KilnError, match="features need 8"):
        _native(model, {"X": np.zeros((2, 4), np.float32)}, 1)

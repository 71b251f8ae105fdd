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
    # one thread: with more, onnxruntime splits a forest's trees across threads and adds the
    # partial sums, an order of its own (1 ulp apart, which PROBIT's cancellation magnifies)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _native(model: onnx.ModelProto, feeds: dict, threads: int) -> list[np.ndarray]:
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None, threads=threads)
    return list(rep.run([feeds[i.name] for i in model.graph.input]))


#: PROBIT is Winitzki's erfinv approximation in float; onnxruntime's evaluation of it rounds
#: differently from the one written out (within 3e-6 relative), and near a probability of 0.5
#: the approximation's cancellation turns that into up to 6e-5 absolute
PROBIT_ATOL = 1e-4


def _check(model: onnx.ModelProto, feeds: dict, threads: int, atol: float = 1e-5) -> None:
    want = _ort(model, feeds)
    got = _native(model, feeds, threads)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol)


def _atol(post: str) -> float:
    return PROBIT_ATOL if post == "PROBIT" else 1e-5


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
    _check(model, {"X": x}, 1, _atol(post))


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
                                   rtol=1e-5, atol=PROBIT_ATOL)
        return
    _check(model, {"X": x}, 1, _atol(post))


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


# ---- tree ensembles: scikit-learn --------------------------------------------------------------

def _tree_estimators():
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    return {
        "random_forest_binary": (lambda: RandomForestClassifier(12, max_depth=6), 2),
        "random_forest_4": (lambda: RandomForestClassifier(12, max_depth=8), 4),
        "extra_trees_3": (lambda: ExtraTreesClassifier(10, max_depth=6), 3),
        "gradient_boosting_binary": (lambda: GradientBoostingClassifier(n_estimators=15), 2),
        "gradient_boosting_3": (lambda: GradientBoostingClassifier(n_estimators=10), 3),
        "decision_tree_5": (lambda: make_pipeline(StandardScaler(), DecisionTreeClassifier()), 5),
        "random_forest_regressor": (lambda: RandomForestRegressor(10, max_depth=6), 0),
        "extra_trees_regressor_2": (lambda: ExtraTreesRegressor(8, max_depth=5), -2),
        "gradient_boosting_regressor": (lambda: GradientBoostingRegressor(n_estimators=20), 0),
        "decision_tree_regressor": (lambda: DecisionTreeRegressor(max_depth=7), 0),
    }


def _fit_trees(name: str) -> tuple[object, np.ndarray]:
    make, classes = _tree_estimators()[name]
    x = _data()
    estimator = make()
    if classes > 0:
        estimator.fit(x, _labels(x, classes))
    else:
        y = np.stack([x[:, 0] * x[:, 1] + np.sin(3 * x[:, 2]), x[:, 3] - x[:, 4] ** 2], 1)
        estimator.fit(x, y if classes == -2 else y[:, 0])
    return estimator, x


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ml_opset", [1, 3])
@pytest.mark.parametrize("name", list(_tree_estimators()))
def test_sklearn_trees_match_onnxruntime(name: str, ml_opset: int, threads: int):
    estimator, x = _fit_trees(name)
    model = _onnx(estimator, x, ml_opset)
    assert any(n.op_type.startswith("TreeEnsemble") for n in model.graph.node)
    feeds = {model.graph.input[0].name: x}
    _check(model, feeds, threads)
    _check(model, {k: v[:1] for k, v in feeds.items()}, threads)  # one row


def test_sklearn_forest_on_double_inputs():
    # (skl2onnx gives some double models double scores, which onnxruntime refuses)
    estimator, x = _fit_trees("random_forest_4")
    x64 = x.astype(np.float64)
    model = _onnx(estimator, x64)  # ai.onnx.ml 3: double thresholds as tensors
    _check(model, {model.graph.input[0].name: x64}, 2)


# ---- tree ensembles: hand-built ---------------------------------------------------------------

MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _forest(trees: int, depth: int, targets: int, modes: list[str], features: int = 4,
            one_target: int | None = None, signed: bool = True, missing: bool = False,
            seed: int = 0) -> dict:
    """Attributes of random complete trees; leaves weigh `targets` outputs (or only
    `one_target`). Thresholds are small integers so EQ / NEQ and ties are exercised."""
    r = np.random.default_rng(seed)
    a: dict[str, list] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "w_trees", "w_nodes", "w_ids", "w_weights")}
    for t in range(trees):
        count = 2 ** (depth + 1) - 1
        for i in range(count):
            leaf = i >= 2 ** depth - 1
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(i)
            a["nodes_featureids"].append(0 if leaf else int(r.integers(features)))
            a["nodes_values"].append(0.0 if leaf else float(r.integers(-2, 3)))
            a["nodes_modes"].append("LEAF" if leaf else str(r.choice(modes)))
            a["nodes_truenodeids"].append(0 if leaf else 2 * i + 1)
            a["nodes_falsenodeids"].append(0 if leaf else 2 * i + 2)
            a["nodes_missing_value_tracks_true"].append(int(missing and r.random() < 0.5))
            if leaf:
                for k in range(targets) if one_target is None else [one_target]:
                    a["w_trees"].append(t)
                    a["w_nodes"].append(i)
                    a["w_ids"].append(k)
                    w = float(r.standard_normal()) if signed else float(r.random())
                    a["w_weights"].append(w)
    return a


def _ensemble(kind: str, a: dict, dtype=np.float32, as_tensor: bool = False,
              **attrs) -> onnx.ModelProto:
    prefix = "class" if kind == "classifier" else "target"
    fields = {k: v for k, v in a.items() if not k.startswith("w_")}
    fields.update({f"{prefix}_treeids": a["w_trees"], f"{prefix}_nodeids": a["w_nodes"],
                   f"{prefix}_ids": a["w_ids"]})
    weights = a["w_weights"]
    tensor_type = np.float64 if dtype == np.float64 else np.float32
    if as_tensor:
        def tensor(values):
            return onnx.numpy_helper.from_array(np.array(values, tensor_type))
        fields["nodes_values_as_tensor"] = tensor(fields.pop("nodes_values"))
        fields[f"{prefix}_weights_as_tensor"] = tensor(weights)
        if "base_values" in attrs:
            attrs["base_values_as_tensor"] = tensor(attrs.pop("base_values"))
    else:
        fields[f"{prefix}_weights"] = weights
    fields.update(attrs)
    op = "TreeEnsembleClassifier" if kind == "classifier" else "TreeEnsembleRegressor"
    outputs = ["Y", "Z"] if kind == "classifier" else ["Y"]
    node = helper.make_node(op, ["X"], outputs, domain=ML, **fields)
    values = ([_vi("Y", TensorProto.INT64), _vi("Z", TensorProto.FLOAT)]
              if kind == "classifier" else [_vi("Y", TensorProto.FLOAT)])
    return _graph(node, [_vi("X", NP_TO_ONNX[dtype], [None, 4])], values,
                  ml_opset=3 if as_tensor else 1)


def _tree_inputs(dtype=np.float32, rows: int = 200, nan: bool = False) -> np.ndarray:
    x = rng.integers(-3, 4, (rows, 4)).astype(dtype)  # exact ties with the thresholds
    if dtype in (np.float32, np.float64):
        x[rows // 2:] += rng.standard_normal((rows - rows // 2, 4)).astype(dtype)
        if nan:
            x[rng.random(x.shape) < 0.2] = np.nan
    return x


@pytest.mark.parametrize("modes", [["BRANCH_LEQ"], ["BRANCH_LT"], ["BRANCH_GTE"], ["BRANCH_GT"],
                                   ["BRANCH_EQ"], ["BRANCH_NEQ"], MODES])
@pytest.mark.parametrize("missing", [False, True])
def test_tree_node_modes_and_missing_values(modes: list[str], missing: bool):
    a = _forest(5, 4, 3, modes, missing=missing)
    model = _ensemble("regressor", a, n_targets=3)
    _check(model, {"X": _tree_inputs(nan=True)}, 1)


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("targets", [1, 3])
@pytest.mark.parametrize("base", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_tree_regressor_aggregates_and_base_values(aggregate: str, targets: int, base: bool,
                                                   threads: int):
    a = _forest(7, 3, targets, MODES)
    attrs = {"n_targets": targets, "aggregate_function": aggregate}
    if base:  # onnxruntime takes none or one per target
        attrs["base_values"] = list(rng.standard_normal(targets))
    model = _ensemble("regressor", a, **attrs)
    _check(model, {"X": _tree_inputs(rows=300)}, threads)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("targets", [1, 3])
def test_tree_regressor_post_transforms(post: str, targets: int):
    a = _forest(4, 3, targets, ["BRANCH_LEQ"], signed=False)
    model = _ensemble("regressor", a, n_targets=targets, post_transform=post,
                      aggregate_function="AVERAGE")  # averages of [0, 1) suit PROBIT
    _check(model, {"X": _tree_inputs()}, 1, _atol(post))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_tree_input_types(dtype, as_tensor: bool):
    if as_tensor and dtype not in (np.float32, np.float64):
        pytest.skip("onnxruntime reads *_as_tensor in the input's float type")
    a = _forest(6, 4, 3, MODES)
    model = _ensemble("classifier", a, dtype, as_tensor, classlabels_int64s=[2, 4, 6],
                      base_values=[0.1, -0.2, 0.3], post_transform="SOFTMAX")
    _check(model, {"X": _tree_inputs(dtype)}, 1)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("classes", [2, 3])
def test_tree_classifier_post_transforms(post: str, classes: int):
    a = _forest(5, 3, classes, MODES, signed=False)
    model = _ensemble("classifier", a, classlabels_int64s=list(range(10, 10 + classes)),
                      post_transform=post)
    _check(model, {"X": _tree_inputs()}, 1, _atol(post))


@pytest.mark.parametrize("weighted", [0, 1])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("base", [0, 1, 2])
@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_tree_binary_classifier_special_cases(weighted: int, signed: bool, base: int, post: str):
    # every weight on one class: onnxruntime derives the other class's score itself
    a = _forest(6, 3, 2, MODES, one_target=weighted, signed=signed)
    attrs = {"classlabels_int64s": [-1, 5], "post_transform": post}
    if base:
        attrs["base_values"] = [0.25, -0.5][:base]
    model = _ensemble("classifier", a, **attrs)
    _check(model, {"X": _tree_inputs()}, 2)


def test_tree_wrong_feature_count_and_rank_are_clear_errors():
    model = _ensemble("regressor", _forest(3, 3, 1, MODES), n_targets=1)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    with pytest.raises(kiln.KilnError, match="feature 3 but input X has 2"):
        _native(model, {"X": np.zeros((4, 2), np.float32)}, 1)


def test_tree_string_labels_stay_on_the_fallback():
    # (a ZipMap output, a sequence of maps, is refused by kiln's importer before any backend)
    from sklearn.ensemble import RandomForestClassifier

    x = _data()
    estimator = RandomForestClassifier(5, max_depth=4).fit(x, _labels(x, 3).astype(str))
    model = _onnx(estimator, x)
    with pytest.raises(kiln.UnsupportedError, match="string class labels|STRING"):
        kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    name = model.graph.input[0].name
    got = kiln.Session(model, backend="native").run(None, {name: x})
    want = _ort(model, {name: x})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_empty_batches_give_empty_outputs():
    scaler = _graph(helper.make_node("Scaler", ["X"], ["Y"], domain=ML, offset=[1.0, 2.0],
                                     scale=[0.5, 2.0]),
                    [_vi("X", TensorProto.FLOAT, [None, 2])], [_vi("Y", TensorProto.FLOAT)])
    imputer = _graph(helper.make_node("Imputer", ["X"], ["Y"], domain=ML,
                                      imputed_value_floats=[1.0, 2.0]),
                     [_vi("X", TensorProto.FLOAT, [None, 2])], [_vi("Y", TensorProto.FLOAT)])
    forest = _ensemble("classifier", _forest(3, 3, 3, MODES), classlabels_int64s=[1, 2, 3])
    for model in (scaler, imputer):
        _check(model, {"X": np.zeros((0, 2), np.float32)}, 1)
    _check(forest, {"X": np.zeros((0, 4), np.float32)}, 2)


def test_sklearn_model_with_wrong_feature_count_is_refused_before_running():
    estimator, x = _fit_trees("random_forest_4")
    model = _onnx(estimator, x)
    rep = kiln.backend.prepare(model, "CPU", backend="native", fallback=None)
    with pytest.raises(kiln.InputError, match=model.graph.input[0].name):
        rep.run([x[:, :4]])


def test_tree_input_of_rank_three_is_a_clear_error():
    model = _ensemble("regressor", _forest(2, 2, 1, MODES), n_targets=1)
    shape = model.graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for name in ("A", "B", "C"):
        shape.dim.add().dim_param = name
    with pytest.raises(kiln.KilnError, match="expected \\[N, C\\]"):
        _native(model, {"X": np.zeros((2, 2, 4), np.float32)}, 1)

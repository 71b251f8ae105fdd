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

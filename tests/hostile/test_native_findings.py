"""What the hostile suite found in the native engine that is not hostile at all (now fixed:
the fallback piece carries the outer-scope values a Loop body reads)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.backends import registry

from .cases import F, body, const, h, model, vi


def loop_reading_outer_initializer():
    """y = x + 3, by a Loop whose body adds the outer-scope initializer 'one' three times."""
    loop_body = body([h.make_node("Identity", ["cond_in"], ["cond_out"]),
                      h.make_node("Add", ["v_in", "one"], ["v_out"])],
                     [vi("i", [], 7), vi("cond_in", [], 9), vi("v_in", [1])],
                     [vi("cond_out", [], 9), vi("v_out", [1])])
    return model([h.make_node("Loop", ["M", "", "x"], ["y"], body=loop_body)], [vi("x", [1], F)],
                 [vi("y", [1])], inits=(const("M", 3), const("one", [1.0], np.float32)))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "native"])
def test_loop_body_reading_an_outer_initializer(backend):
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    [y] = kiln.Session(loop_reading_outer_initializer(), backend=backend).run(
        None, {"x": np.zeros(1, np.float32)})
    np.testing.assert_array_equal(y, [3.0])

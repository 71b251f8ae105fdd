"""A run that outlasts ``timeout`` is cancelled where the backend can stop one (onnxruntime:
RunOptions.terminate), so no native run is left behind: under AddressSanitizer an abandoned
onnxruntime run was seen reading freed globals at interpreter exit. (OpenVINO's
InferRequest.cancel does not stop a running Loop node, so there the run is left in the
background and the error says so; that case runs in a child, see cases.run_exceeds_timeout.)"""

from __future__ import annotations

import threading
import time

import pytest

import kiln
from kiln.backends import registry

from .cases import by_name


@pytest.mark.parametrize("backend", ["onnxruntime", ["onnxruntime"]],
                         ids=["onnxruntime", "partitioned"])
def test_timed_out_run_is_cancelled(backend, tmp_path):
    if not registry.availability("onnxruntime").ok:
        pytest.skip("onnxruntime unavailable")
    source, feeds, options = by_name("run_exceeds_timeout").build(tmp_path)
    session = kiln.Session(source, backend=backend, **options)
    started = time.monotonic()
    with pytest.raises(kiln.ResourceError, match=r"timeout of 0.3 s \(cancelled\)"):
        session.run(None, feeds)
    assert time.monotonic() - started < 15
    assert not [t for t in threading.enumerate() if t.name == "kiln-run"]

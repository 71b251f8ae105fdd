"""The batcher's admission control on a real Session: with a queue deadline, a request whose
estimated start is past it is refused at submit instead of queued."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.runtime.serve.batcher import DynamicBatcher, Overloaded


def conv_stack(path: Path, layers: int = 6) -> Path:
    """x: float32[batch, 32, 64, 64] through ``layers`` 3x3 convolutions: a few ms a row."""
    rng = np.random.default_rng(0)
    nodes, inits, name = [], [], "x"
    for i in range(layers):
        weight = (rng.standard_normal((32, 32, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [name, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        name = f"c{i}"
    graph = helper.make_graph(
        nodes, "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32, 64, 64])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 32, 64, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> kiln.Session:
    return kiln.Session(str(conv_stack(tmp_path_factory.mktemp("convs") / "model.onnx")),
                        threads=1)


def test_admission_refuses_what_would_start_past_the_deadline(session: kiln.Session) -> None:
    feeds = {"x": np.ones((1, 32, 64, 64), np.float32)}
    for _ in range(3):  # one batch's time, as the instance will measure it
        start = time.perf_counter()
        session.run(None, feeds)
        batch_s = time.perf_counter() - start
    batcher = DynamicBatcher([session], max_batch=1, max_queue=64,
                             timeout_ms=3 * batch_s * 1e3)
    try:
        for _ in range(3):  # the instance measures its batch time
            batcher.submit(feeds).result(30)
        accepted, refused = [], []
        for _ in range(16):
            try:
                accepted.append(batcher.submit(feeds))
            except Overloaded as exc:
                refused.append(str(exc))
        assert 1 <= len(accepted) <= 8, (len(accepted), batch_s)
        assert refused and "past its" in refused[0] and "queue deadline" in refused[0]
        for future in accepted:  # what was admitted is answered (or dropped at its deadline)
            try:
                assert future.result(30)["c5"].shape == (1, 32, 64, 64)
            except Overloaded:
                pass
    finally:
        batcher.close()


def test_no_deadline_no_estimate(session: kiln.Session) -> None:
    feeds = {"x": np.ones((1, 32, 64, 64), np.float32)}
    batcher = DynamicBatcher([session], max_batch=1, max_queue=8)
    try:
        batcher.submit(feeds).result(30)
        futures, refused = [], []
        for _ in range(16):  # only the queue's size refuses
            try:
                futures.append(batcher.submit(feeds))
            except Overloaded as exc:
                refused.append(str(exc))
        assert len(futures) >= 8 and refused
        assert all("max-queue 8" in message for message in refused)
        assert all(f.result(30)["c5"].shape == (1, 32, 64, 64) for f in futures)
    finally:
        batcher.close()

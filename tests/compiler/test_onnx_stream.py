"""Parsing an ONNX file a field at a time gives the model parsing it whole gives (order of
every repeated field included); what the scan does not read plainly answers None, so the
frontend parses the file whole and reports its errors."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import onnx_stream
from kiln.compiler.onnx_stream import parse_file


def _model() -> onnx.ModelProto:
    """Initializers large and small interleaved, nodes, value infos, functions, metadata."""
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(6):
        width = 600 if i % 2 else 4  # 600 x 600 floats: over the batch size when it is small
        inits.append(numpy_helper.from_array(
            rng.standard_normal((width, width)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(np.array([i], np.float32), f"b{i}"))
        nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"h{i}"], name=f"add{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1])], inits,
        value_info=[helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="kiln-test")
    helper.set_model_props(model, {"k": "v"})
    return model


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch):
    monkeypatch.setattr(onnx_stream, "_BATCH_BYTES", 1 << 16)  # large tensors go alone


def test_the_same_model_as_a_whole_parse(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    data = path.read_bytes()
    whole = onnx.ModelProto()
    whole.ParseFromString(data)
    proto = parse_file(path)
    assert proto == whole
    assert [t.name for t in proto.graph.initializer] == [t.name for t in whole.graph.initializer]


def test_a_graph_field_split_in_the_file_merges_as_protobuf_does(tmp_path):
    model = _model()
    first, second = onnx.ModelProto(), onnx.ModelProto()
    first.graph.node.extend(model.graph.node[:3])
    second.CopyFrom(model)
    del second.graph.node[:3]
    path = tmp_path / "m.onnx"
    data = first.SerializeToString() + second.SerializeToString()  # two graph fields
    path.write_bytes(data)
    whole = onnx.ModelProto()
    whole.ParseFromString(data)
    assert parse_file(path) == whole


@pytest.mark.parametrize("cut", [1, 100, -1])
def test_a_truncated_file_answers_none(tmp_path, cut):
    data = _model().SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    assert parse_file(path) is None


def test_a_group_wire_type_answers_none(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes([(3 << 3) | 3]) + _model().SerializeToString())
    assert parse_file(path) is None


def test_the_frontend_streams_large_files(tmp_path, monkeypatch):
    from kiln.compiler import frontend

    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    streamed = []
    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    monkeypatch.setattr(frontend, "parse_file",
                        lambda p, aside=None: streamed.append(p) or parse_file(p, aside))
    proto, _, digest = frontend.load_proto(path)
    assert streamed and len(proto.graph.initializer) == 12
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_forged_length_answers_none_without_allocating_it(tmp_path):
    path = tmp_path / "m.onnx"
    huge = onnx_stream._varint_bytes(1 << 60)
    path.write_bytes(bytes([7 << 3 | 2]) + huge + b"\x00" * 16)  # graph of 2**60 bytes
    assert parse_file(path) is None
    path.write_bytes(bytes([7 << 3 | 2, 20, 5 << 3 | 2]) + huge + b"\x00" * 16)
    assert parse_file(path) is None


def test_large_values_go_aside_and_the_tensors_say_where(tmp_path):
    model = _model()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    aside = onnx_stream.WeightsAside()
    proto = parse_file(path, aside)
    aside.finish()  # the copies run beside the scan
    assert aside.names == {"w1", "w3", "w5"}  # 600 x 600 floats; the 4 x 4 ones stay inline
    for tensor in proto.graph.initializer:
        assert tensor.HasField("raw_data") == (tensor.name not in aside.names)
    info = {e.key: e.value for e in proto.graph.initializer[2].external_data}  # w1
    assert info["location"] == onnx_stream.WeightsAside.FILE
    assert int(info["offset"]) % 4096 == 0 and int(info["length"]) == 600 * 600 * 4
    onnx.load_external_data_for_model(proto, aside.folder)
    for tensor in proto.graph.initializer:
        tensor.ClearField("data_location")  # onnx sets it to DEFAULT, which a parse leaves unset
    assert proto == model  # nothing else changed, order included


def test_nothing_goes_aside_when_the_file_is_parsed_whole(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString()[:-1])  # truncated
    aside = onnx_stream.WeightsAside()
    assert parse_file(path, aside) is None
    assert not aside.names and not os.path.exists(aside.folder)


def _refuse(*args):
    raise OSError(18, "Invalid cross-device link")


_KERNEL_COPY = getattr(os, "copy_file_range", None)


def _partly(source, dest, count, offset, offset_dest):  # 1000 bytes a call, refuses the third
    _partly.calls = getattr(_partly, "calls", 0) + 1
    if _partly.calls % 3 == 0:
        raise OSError(18, "Invalid cross-device link")
    return _KERNEL_COPY(source, dest, min(count, 1000), offset, offset_dest)


@pytest.mark.parametrize("kernel_copy", ["absent", _refuse, _partly])
def test_values_go_aside_the_same_where_the_kernel_does_not_copy(tmp_path, monkeypatch,
                                                                 kernel_copy):
    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    whole = onnx.ModelProto()
    whole.ParseFromString(path.read_bytes())
    aside = onnx_stream.WeightsAside()
    if kernel_copy == "absent":
        monkeypatch.delattr(os, "copy_file_range")
    else:
        monkeypatch.setattr(os, "copy_file_range", kernel_copy)
    proto = parse_file(path, aside)
    aside.finish()
    onnx.load_external_data_for_model(proto, aside.folder)
    for tensor in proto.graph.initializer:
        tensor.ClearField("data_location")
    assert proto == whole


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_the_scan_goes_on_while_the_values_are_copied_and_finish_waits(tmp_path, monkeypatch):
    import threading

    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    whole = onnx.ModelProto.FromString(path.read_bytes())
    held = threading.Event()
    copy = onnx_stream._copy_range
    monkeypatch.setattr(onnx_stream, "_copy_range",
                        lambda *job: held.wait(10) and copy(*job))
    fds = _open_fds()
    aside = onnx_stream.WeightsAside()
    proto = parse_file(path, aside)  # returns with every copy still held
    assert aside.names == {"w1", "w3", "w5"}
    assert os.path.getsize(os.path.join(aside.folder, aside.FILE)) == 0
    held.set()
    aside.finish()
    aside.finish()  # at once, the second time
    onnx.load_external_data_for_model(proto, aside.folder)
    for tensor in proto.graph.initializer:
        tensor.ClearField("data_location")
    assert proto == whole
    assert _open_fds() == fds  # the thread closed its descriptors, finish the weights file


def test_a_file_cut_while_its_values_are_copied_fails_finish_every_time(tmp_path, monkeypatch):
    import threading

    path = tmp_path / "m.onnx"
    data = _model().SerializeToString()
    path.write_bytes(data)
    held = threading.Event()
    copy = onnx_stream._copy_range
    monkeypatch.setattr(onnx_stream, "_copy_range",
                        lambda *job: held.wait(10) and copy(*job))
    aside = onnx_stream.WeightsAside()
    assert parse_file(path, aside) is not None
    with open(path, "r+b") as f:  # rewritten in place, shorter, before the copies ran
        f.truncate(len(data) // 3)
    held.set()
    with pytest.raises(OSError, match="changed while kiln read it"):
        aside.finish()
    with pytest.raises(OSError, match="changed while kiln read it"):
        aside.finish()
    aside.discard()
    assert not os.path.exists(aside.folder)


def test_discard_stops_the_copies_and_removes_the_folder(tmp_path, monkeypatch):
    import threading

    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    held, started = threading.Event(), threading.Event()
    copied = []

    def copy(*job):
        started.set()
        held.wait(10)
        copied.append(job)

    monkeypatch.setattr(onnx_stream, "_copy_range", copy)
    aside = onnx_stream.WeightsAside()
    assert parse_file(path, aside) is not None
    assert started.wait(10)  # the thread is in its first copy (the scan may end before that)
    threading.Timer(0.2, held.set).start()  # the first copy ends after discard began
    aside.discard()
    assert len(copied) == 1 and not os.path.exists(aside.folder)


def test_the_switch_interval_is_short_only_while_copies_run(tmp_path, monkeypatch):
    """The copier gets the interpreter back promptly between copies; the interval the process
    had comes back after the last copy, and one someone set meanwhile is left alone."""
    import sys
    import threading

    path = tmp_path / "m.onnx"
    path.write_bytes(_model().SerializeToString())
    before = sys.getswitchinterval()
    copy = onnx_stream._copy_range
    release = threading.Event()
    during: list[float] = []

    def held(*job):
        during.append(sys.getswitchinterval())
        release.wait(10)
        return copy(*job)

    monkeypatch.setattr(onnx_stream, "_copy_range", held)
    try:
        aside = onnx_stream.WeightsAside()
        parse_file(path, aside)
        release.set()
        aside.finish()
        assert during and all(v <= onnx_stream.COPY_SWITCH_INTERVAL * 1.01 for v in during)
        assert sys.getswitchinterval() == before
        release.clear()
        aside = onnx_stream.WeightsAside()
        parse_file(path, aside)
        sys.setswitchinterval(0.002)  # the application's own choice, made meanwhile
        release.set()
        aside.finish()
        assert abs(sys.getswitchinterval() - 0.002) < 1e-9
    finally:
        sys.setswitchinterval(before)

"""External data may only come from regular files inside the model's own folder.

Each escape (relative ``..``, absolute path, symlinked file, symlinked folder, hard link,
offset or length past the end, a FIFO) is refused with a ModelError naming the problem, on
every CPU backend, and the file outside is proven never opened nor read by anyone in this
process (Python or C++): the kernel reports every open/read of it through inotify, which we
watch while kiln loads the model. A FIFO outside makes the proof stricter still: opening it for
reading would block forever, so a load that returns at all did not open it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper as h

import kiln
from kiln.backends import registry

from .cases import CPU_BACKENDS

IN_ACCESS, IN_OPEN = 0x1, 0x20
SECRET = np.arange(16, dtype=np.float32).tobytes()


class InotifyWatch:
    """Every open or read of ``paths`` by any code in any process, via the kernel."""

    def __init__(self, *paths: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        for path in paths:
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), IN_ACCESS | IN_OPEN)
            assert wd >= 0, f"{path}: {os.strerror(ctypes.get_errno())}"

    def events(self) -> int:
        """How many open/access events arrived since the last call."""
        count = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(data):  # struct inotify_event: wd, mask, cookie, len, name
                length = int.from_bytes(data[offset + 12:offset + 16], sys.byteorder)
                count += 1
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


opened_paths: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        opened_paths.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def model_with_external(folder: Path, location: str, offset: int | None = None,
                        length: int | None = None) -> Path:
    tensor = onnx.TensorProto(name="W", data_type=onnx.TensorProto.FLOAT, dims=[4])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    graph = h.make_graph([h.make_node("Add", ["x", "W"], ["y"])], "ext",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
                         initializer=[tensor])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 10
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture()
def layout(tmp_path):
    """tmp/model/ (the model's folder) and tmp/outside/secret.bin (must never be read)."""
    inside, outside = tmp_path / "model", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(SECRET)
    return inside, outside, secret


def _escape(kind: str, inside: Path, outside: Path, secret: Path) -> tuple[Path, str]:
    if kind == "relative":
        return model_with_external(inside, "../outside/secret.bin"), "resolves outside"
    if kind == "relative_deep":
        return model_with_external(inside, "a/../../outside/secret.bin"), "resolves outside"
    if kind == "absolute":
        return model_with_external(inside, str(secret)), "absolute paths are refused"
    if kind == "symlink":
        (inside / "weights.bin").symlink_to(secret)
        return model_with_external(inside, "weights.bin"), "symbolic links are refused"
    if kind == "symlinked_folder":
        (inside / "sub").symlink_to(outside, target_is_directory=True)
        return model_with_external(inside, "sub/secret.bin"), "symbolic links are refused"
    if kind == "hard_link":
        os.link(secret, inside / "weights.bin")
        return model_with_external(inside, "weights.bin"), "has 2 hard links"
    raise AssertionError(kind)


ESCAPES = ["relative", "relative_deep", "absolute", "symlink", "symlinked_folder", "hard_link"]


def test_watch_sees_reads_through_any_link(layout):
    """The proof's control: inotify does report an open+read, also through a hard link."""
    inside, _, secret = layout
    os.link(secret, inside / "alias.bin")
    watch = InotifyWatch(secret)
    try:
        assert watch.events() == 0
        (inside / "alias.bin").read_bytes()
        assert watch.events() >= 2  # IN_OPEN and IN_ACCESS
    finally:
        watch.close()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ESCAPES)
def test_escape_refused_and_outside_never_read(kind, backend, layout):
    if not registry.availability(backend).ok:
        pytest.skip(f"{backend} unavailable")
    inside, outside, secret = layout
    path, message = _escape(kind, inside, outside, secret)
    watch = InotifyWatch(secret, outside)
    opened_paths.clear()
    try:
        with pytest.raises(kiln.ModelError, match=message) as info:
            kiln.Session(str(path), backend=backend)
        assert "tensor 'W' external data" in str(info.value)
        assert watch.events() == 0, f"{secret} was opened or read"
    finally:
        watch.close()
    touched = [p for p in opened_paths if Path(p).name in ("secret.bin", "weights.bin")]
    assert touched == [], f"kiln opened {touched}"


@pytest.mark.parametrize(("offset", "length", "message"), [
    (100, None, r"offset 100 is past the end of the file \(64 bytes\)"),
    (8, 64, r"offset 8 \+ length 64 is past the end of the file \(64 bytes\)"),
    (-4, None, r"offset -4 is negative"),
    ("1e3", None, r"offset '1e3' is not an integer"),
])
def test_offset_and_length_past_end_refused_unread(tmp_path, offset, length, message):
    inside = tmp_path / "model"
    inside.mkdir()
    data = inside / "weights.bin"
    data.write_bytes(SECRET)
    path = model_with_external(inside, "weights.bin", offset, length)
    watch = InotifyWatch(data)
    try:
        with pytest.raises(kiln.ModelError, match=message):
            kiln.Session(str(path), backend="onnxruntime")
        assert watch.events() == 0
    finally:
        watch.close()


def _load_in_thread(path: Path, seconds: float = 20.0) -> BaseException | None:
    """Load ``path``; a FIFO opened for reading would block, so give up after ``seconds``."""
    box: dict[str, BaseException | None] = {"error": None}

    def target() -> None:
        try:
            kiln.Session(str(path), backend="onnxruntime")
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "kiln blocked opening a FIFO"
    return box["error"]


def test_fifo_inside_refused_without_opening(tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    os.mkfifo(inside / "weights.bin")
    error = _load_in_thread(model_with_external(inside, "weights.bin"))
    assert isinstance(error, kiln.ModelError) and "not a regular file" in str(error)


def test_fifo_outside_behind_symlink_never_opened(tmp_path):
    inside, outside = tmp_path / "model", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    os.mkfifo(outside / "pipe")
    (inside / "weights.bin").symlink_to(outside / "pipe")
    error = _load_in_thread(model_with_external(inside, "weights.bin"))
    assert isinstance(error, kiln.ModelError) and "symbolic links are refused" in str(error)


@pytest.mark.parametrize(("location", "message"), [
    ("a\x00b", "contains a NUL byte"),
    ("x" * 5000, "cannot read: File name too long"),
    (".", "not a regular file"),
    ("", "no location given"),
    ("absent.bin", "cannot read: No such file or directory"),
])
def test_odd_locations_refused(tmp_path, location, message):
    path = model_with_external(tmp_path / "model", location)
    with pytest.raises(kiln.ModelError, match=message):
        kiln.Session(str(path), backend="onnxruntime")


def test_inside_file_loads(tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    (inside / "weights.bin").write_bytes(SECRET)
    path = model_with_external(inside, "weights.bin", offset=16, length=16)
    session = kiln.Session(str(path), backend="onnxruntime")
    [y] = session.run(None, {"x": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(y, np.arange(4, 8, dtype=np.float32))


def test_external_data_from_bytes_refused(tmp_path):
    path = model_with_external(tmp_path / "model", "weights.bin")
    with pytest.raises(kiln.ModelError, match="refers to external data files, which need a "
                                               "folder"):
        kiln.Session(path.read_bytes(), backend="onnxruntime")

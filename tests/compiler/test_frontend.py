import hashlib
import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import save_matmul_model
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.compiler import frontend
from kiln.compiler.frontend import import_model
from kiln.compiler.source_digest import source_sha256
from kiln.errors import ModelError


def test_path_bytes_and_proto_give_the_same_graph(tmp_path, conv_model):
    proto = conv_model
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    models = [import_model(path), import_model(proto.SerializeToString()), import_model(proto)]
    assert {len(m.graph) for m in models} == {5}
    digests = {source_sha256(m) for m in models}
    assert digests == {hashlib.sha256(path.read_bytes()).hexdigest()}


def test_old_ir_initializer_inputs_become_constants(squeezenet_path):
    model = import_model(squeezenet_path)
    assert [v.name for v in model.graph.inputs] == ["data_0"]
    kept = import_model(squeezenet_path, initializers_as_inputs=True)
    assert len(kept.graph.inputs) == 53


def test_missing_path_is_a_model_error(tmp_path):
    with pytest.raises(kiln.ModelError, match="no such file"):
        import_model(tmp_path / "absent.onnx")


def test_truncated_file_is_a_model_error(tmp_path, squeezenet_path):
    data = squeezenet_path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(kiln.ModelError, match="cut.onnx"):
        import_model(path)


def test_empty_file_is_a_model_error(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(kiln.ModelError, match="empty"):
        import_model(path)


def test_checker_rejection_names_the_model():
    graph = helper.make_graph([helper.make_node("Relu", ["missing"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(kiln.ModelError, match="reads 'missing'"):  # kiln.compiler.validate
        import_model(model)


def _external_model(folder, location: str, offset: int = 0, length: int | None = None):
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[tensor])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_external_data_inside_the_folder_loads(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    model = import_model(_external_model(tmp_path, "w.bin", length=16))
    out = kiln.Session(model, backend="onnxruntime").run(None, {"x": np.ones(4, np.float32)})
    np.testing.assert_array_equal(out[0], [1, 2, 3, 4])


@pytest.mark.parametrize("backend", ["onnxruntime", "native"])
def test_large_external_data_is_copied_to_a_file_of_kilns_own(tmp_path, backend):
    """A large external tensor is not read into memory: kiln's thread copies it to kiln's
    weights file, which the IR maps (the user may then change or remove theirs); a small one
    is read in, as shape inference reads values."""
    from kiln.compiler.onnx_stream import WEIGHTS_DIR

    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 64)).astype(np.float32)
    small = rng.standard_normal(64).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "big"], ["h"]),
         helper.make_node("Add", ["h", "small"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(big, "big"), numpy_helper.from_array(small, "small")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
              size_threshold=0)
    model = import_model(path)
    tensors = {name: v.const_value for name, v in model.graph.initializers.items()}
    assert isinstance(tensors["big"], ir.ExternalTensor) and WEIGHTS_DIR in model.meta
    assert str(tensors["big"].base_dir) == model.meta[WEIGHTS_DIR] != str(tmp_path)
    assert not isinstance(tensors["small"], ir.ExternalTensor)
    (tmp_path / "m.data").unlink()  # kiln reads its own copy from here on
    np.testing.assert_array_equal(tensors["big"].numpy(), big)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    out = kiln.Session(model, backend=backend).run(None, {"x": x})
    np.testing.assert_allclose(out[0], x @ big + small, rtol=1e-5, atol=1e-5)


def test_external_data_is_copied_only_when_kilns_file_is_needed(tmp_path):
    """onnxruntime opens the user's files itself for a graph no pass changed: kiln's copy is
    made only when something reads kiln's file (here the save), from the files as read; one
    changed since is refused where its values are read."""
    from kiln.compiler.onnx_stream import WEIGHTS_DIR, WeightsAside

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((64, 64)).astype(np.float32)
    path = save_matmul_model(tmp_path / "m.onnx", weight, save_as_external_data=True,
                             location="m.data", size_threshold=0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    session = kiln.Session(path, backend="onnxruntime")
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ weight, rtol=1e-5, atol=1e-5)
    copy = os.path.join(session.model.meta[WEIGHTS_DIR], WeightsAside.FILE)
    assert os.path.getsize(copy) == 0  # not needed so far
    saved = kiln.Session(session.save(tmp_path / "m.kiln"))
    np.testing.assert_allclose(saved.run(None, {"x": x})[0], x @ weight, rtol=1e-5, atol=1e-5)

    model = import_model(path)
    data = tmp_path / "m.data"
    os.utime(data, ns=(10**18, 10**18))
    data.write_bytes(np.zeros_like(weight).tobytes())  # the same size, other values
    with pytest.raises(kiln.ModelError, match="changed after kiln read it"):
        model.graph.initializers["w"].const_value.numpy()


def test_a_model_of_many_data_files_holds_only_a_few_open(tmp_path, monkeypatch):
    """One file per tensor (a common export): past MAX_HELD_FILES, values are copied at once
    instead of keeping every file open until kiln's copy is needed."""
    from kiln.compiler import onnx_stream
    from kiln.compiler.frontend import WEIGHTS_ASIDE

    monkeypatch.setattr(onnx_stream, "MAX_HELD_FILES", 2)
    rng = np.random.default_rng(2)
    weights = [rng.standard_normal((48, 48)).astype(np.float32) for _ in range(5)]
    nodes, value = [], "x"
    for i in range(5):
        nodes.append(helper.make_node("MatMul", [value, f"w{i}"], [f"h{i}"]))
        value = f"h{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48])],
        [helper.make_tensor_value_info(value, TensorProto.FLOAT, [1, 48])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    model = import_model(path)
    assert len(model.meta[WEIGHTS_ASIDE]._held) == 2  # noqa: SLF001
    for i, w in enumerate(weights):
        np.testing.assert_array_equal(model.graph.initializers[f"w{i}"].const_value.numpy(), w)


def test_large_constant_nodes_come_in_as_initializers():
    """Paddle2ONNX's weights are Constant nodes: the large ones become initializers at once, so
    the checks' copies leave them out; small ones, and a model of IR 3 (whose initializers
    would have to be inputs), stay as they are."""
    rng = np.random.default_rng(3)
    big = rng.standard_normal((32, 48)).astype(np.float32)
    small = rng.standard_normal(48).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(big)),
             helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(small)),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = import_model(proto)
    assert [n.op_type for n in model.graph] == ["Constant", "MatMul", "Add"]
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), big)
    x = rng.standard_normal((1, 32)).astype(np.float32)
    out = kiln.Session(model, backend="onnxruntime").run(None, {"x": x})
    np.testing.assert_allclose(out[0], x @ big + small, rtol=1e-5, atol=1e-5)
    proto.ir_version = 3
    assert frontend._lift_large_constants(proto) is None


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    with pytest.raises(kiln.ModelError, match="outside|absolute"):
        import_model(_external_model(folder, location))


def test_external_data_symlink_and_hardlink_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 16)
    os.symlink(outside, folder / "link.bin")
    with pytest.raises(kiln.ModelError, match="symbolic"):
        import_model(_external_model(folder, "link.bin"))
    os.link(outside, folder / "hard.bin")
    with pytest.raises(kiln.ModelError, match="hard link"):
        import_model(_external_model(folder, "hard.bin"))


def test_external_data_past_end_of_file_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    with pytest.raises(kiln.ModelError, match="past the end"):
        import_model(_external_model(tmp_path, "w.bin", offset=8, length=16))


BACKENDS = ("onnxruntime", "openvino", "native")


@pytest.mark.parametrize("backend", BACKENDS)
def test_minus_one_dim_is_a_dynamic_dim(backend):
    """Paddle2ONNX writes dim_value -1, or the name '?' on several axes, for a dynamic dim;
    onnxruntime reads both so, and kiln takes any size there."""
    import onnxruntime as ort
    from model_builders import make_dynamic_dim_model

    model = make_dynamic_dim_model()
    session = kiln.Session(model, backend=backend)
    assert session.inputs[0].shape[0] is None
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    for batch, height, width in ((1, 8, 8), (3, 6, 10)):
        x = np.random.default_rng(batch).standard_normal((batch, 3, height, width)).astype(
            np.float32)
        np.testing.assert_allclose(session(x=x)["y"], reference.run(None, {"x": x})[0],
                                   rtol=1e-4, atol=1e-4)


def test_an_ir_model_with_minus_one_dims_runs_any_batch():
    import onnx_ir as ir
    from model_builders import make_dynamic_dim_model

    session = kiln.Session(ir.from_proto(make_dynamic_dim_model()), backend="onnxruntime")
    assert session(x=np.zeros((3, 3, 8, 8), np.float32))["y"].shape == (3, 4)


def test_import_drops_minus_one_dims_and_unused_imports():
    from model_builders import make_dynamic_dim_model, make_unused_domains_model

    model = import_model(make_dynamic_dim_model())
    dim = model.graph.inputs[0].shape[0]
    assert not isinstance(dim, int) and dim.value is None
    assert set(import_model(make_unused_domains_model()).opset_imports) == {""}


def test_other_negative_dims_are_refused():
    from model_builders import make_dynamic_dim_model

    model = make_dynamic_dim_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -3
    with pytest.raises(kiln.ModelError, match=r"dim -3 at axis 0 is negative \(only -1 means "
                       "a dynamic dim\\)"):
        import_model(model)
    model = make_dynamic_dim_model()
    model.graph.initializer[0].dims[0] = -1  # a tensor's data has no dynamic dims
    with pytest.raises(kiln.ModelError, match="tensor 'w': dim -1 at axis 0 is negative"):
        import_model(model)


def test_an_output_of_unknown_rank_is_not_refused():
    """onnx's checker wants a shape on every graph output; onnxruntime runs a model whose
    output declares none (unknown rank), and so does kiln."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    imported = import_model(model)
    assert imported.graph.outputs[0].shape == [2]  # shape inference fills it in
    assert not model.graph.output[0].type.tensor_type.HasField("shape")  # source untouched


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_local_function_runs_on_every_backend(backend):
    """A call of a function the model defines: its domain asks no backend anything, and the
    call is inlined for the backends that do not read local functions."""
    function = helper.make_function(
        "custom.fn", "DoubleRelu", ["a"], ["b"],
        [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Add", ["r", "r"], ["b"])],
        [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("DoubleRelu", ["x"], ["y"], domain="custom.fn")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("custom.fn", 1)])
    session = kiln.Session(model, backend=backend)
    np.testing.assert_array_equal(session(x=np.array([1.5, -1], np.float32))["y"], [3, 0])


@pytest.mark.parametrize("values, dims", [(np.zeros(2048, np.float32), [4096]),   # too few
                                          (np.zeros(8192, np.float32), [2048])])  # too many
def test_large_raw_data_that_disagrees_with_its_dims_is_refused(values, dims):
    weight = numpy_helper.from_array(values, "w")
    del weight.dims[:]
    weight.dims.extend(dims)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0]])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(kiln.ModelError):
        import_model(model.SerializeToString())


def test_weights_set_aside_map_their_file_which_goes_with_the_last_tensor(tmp_path,
                                                                           monkeypatch):
    import gc

    from kiln.compiler.onnx_stream import WEIGHTS_DIR

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    values = np.arange(4096, dtype=np.float32).reshape(64, 64)
    path = save_matmul_model(tmp_path / "m.onnx", values)
    model = frontend.import_model(path)
    folder = model.meta[WEIGHTS_DIR]
    tensor = model.graph.initializers["w"].const_value
    assert isinstance(tensor, ir.ExternalTensor)
    del model
    gc.collect()
    np.testing.assert_array_equal(tensor.numpy(), values)  # the folder outlives the model
    tensor.release()
    del tensor
    gc.collect()
    assert not os.path.exists(folder)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_fork_while_weights_are_still_copied_gives_the_child_the_whole_file(tmp_path,
                                                                           monkeypatch):
    """The import returns with the copies still running; a child forked then has no thread
    to finish them, so the fork waits for them first."""
    import time

    from kiln.compiler import onnx_stream

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    copy = onnx_stream._copy_range
    monkeypatch.setattr(onnx_stream, "_copy_range", lambda *job: time.sleep(0.3) or copy(*job))
    values = np.arange(4096, dtype=np.float32).reshape(64, 64)
    path = save_matmul_model(tmp_path / "m.onnx", values)
    model = frontend.import_model(path)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only for the whole weights
        try:
            same = np.array_equal(model.graph.initializers["w"].const_value.numpy(), values)
        finally:
            os._exit(0 if same else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), values)


def test_a_tensor_set_aside_with_the_wrong_byte_count_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    tensor = numpy_helper.from_array(np.zeros((64, 64), np.float32), "w")
    tensor.dims[:] = [64, 65]  # 16640 bytes declared, 16384 held
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 65])], [tensor])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(ModelError, match="16384 bytes of external data .* need 16640"):
        frontend.import_model(path)


def test_a_file_cut_while_its_weights_are_copied_is_a_model_error(tmp_path, monkeypatch):
    from kiln.compiler import onnx_stream

    monkeypatch.setattr(frontend, "STREAM_PARSE_BYTES", 1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(np.ones((64, 64), np.float32), "w")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    size = path.stat().st_size
    copy = onnx_stream._copy_range

    def cut_then_copy(*job):  # the file is rewritten shorter after the scan read it
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        return copy(*job)

    monkeypatch.setattr(onnx_stream, "_copy_range", cut_then_copy)
    # the scan may still be reading when the cut comes, else the copies find it, and the
    # weights are refused where they are first read
    with pytest.raises(ModelError, match="m.onnx: (not a valid ONNX protobuf .truncated|"
                                         "cannot read the weights: .*changed while kiln)"):
        model = frontend.import_model(path)
        model.graph.initializers["w"].const_value.numpy()

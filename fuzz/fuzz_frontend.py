"""atheris harness over kiln's frontend (parse, validate, check, infer shapes, convert), its
resource guards and the native backend's plan builder.

Any exception that is not a kiln.KilnError, and any crash, is a finding; each one becomes a
regression case in tests/hostile/. Run it outside CI for a fixed budget:

    python fuzz/fuzz_frontend.py fuzz/.corpus -max_total_time=600 -rss_limit_mb=6144 -timeout=30

With ``KILN_FUZZ=structured`` the input instead drives edits of a valid seed model (dims,
op types, attribute values, opsets, node order and wiring), so most inputs parse and reach the
checker, shape inference and the guards rather than dying in protobuf decoding.

The seed corpus (every hostile case of tests/hostile/cases.py that builds a model, plus valid
small models) is written into the corpus folder on first run; nothing binary is kept in git.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

# kiln's editable install loads modules through its own loader, which atheris's import hook
# cannot wrap, so kiln's functions are instrumented after import (``_instrument_kiln``);
# atheris.instrument_all() would also work but instruments ~25,000 functions first.
from kiln.compiler.frontend import import_model
from kiln.compiler.target import Target
from kiln.errors import KilnError
from kiln.runtime import guards

HERE = Path(__file__).resolve().parent
GUARDS = guards.Guards(max_memory=2**30, max_loop_iterations=2**16)


def _native():
    try:
        from kiln.backends import registry
        from kiln.backends.base import CompileOptions

        if registry.availability("native").ok:
            return registry.get_backend("native"), CompileOptions()
    except Exception:
        pass
    return None, None


NATIVE, OPTIONS = _native()
TARGET = Target.parse("auto")


def _instrument_kiln() -> int:
    """Instrument every function and method defined in a kiln module; returns how many."""
    import inspect

    count = 0
    for name, module in list(sys.modules.items()):
        if not (name == "kiln" or name.startswith("kiln.")) or module is None:
            continue
        for obj in list(vars(module).values()):
            members = [obj] if inspect.isfunction(obj) else (
                [m for m in vars(obj).values() if inspect.isfunction(m)]
                if inspect.isclass(obj) else [])
            for func in members:
                if getattr(func, "__module__", None) == name:
                    atheris.instrument_func(func)
                    count += 1
    return count


def one_input(data: bytes) -> None:
    try:
        model = import_model(bytes(data))
        guards.check_model(model, GUARDS, "openvino")
        if NATIVE is not None:
            NATIVE.compile(model, TARGET, OPTIONS)  # the plan builder; never runs it
    except KilnError:
        pass


_OPS = sorted({s.name for s in __import__("onnx").defs.get_all_schemas() if s.domain == ""})


def _seeds() -> list:
    sys.path.insert(0, str(HERE.parent / "tests" / "hostile"))
    import cases  # noqa: PLC0415

    models = [cases.relu_model(), cases.add_model()]
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases.CASES:
            try:
                source, _, _ = case.build(Path(scratch))
            except Exception:
                continue
            if hasattr(source, "SerializeToString"):
                models.append(source)
    return models


SEEDS: list = []


def structured_input(data: bytes) -> None:
    """Edit a seed model as ``data`` says, then hand it to the frontend as bytes."""
    import onnx

    fdp = atheris.FuzzedDataProvider(data)
    proto = onnx.ModelProto()
    proto.CopyFrom(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    graph = proto.graph
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        choice = fdp.ConsumeIntInRange(0, 7)
        nodes = graph.node
        if choice == 0 and nodes:
            nodes[fdp.ConsumeIntInRange(0, len(nodes) - 1)].op_type = fdp.PickValueInList(_OPS)
        elif choice == 1:
            values = list(graph.input) + list(graph.output) + list(graph.value_info)
            dims = [d for v in values for d in v.type.tensor_type.shape.dim]
            if dims:
                dims[fdp.ConsumeIntInRange(0, len(dims) - 1)].dim_value = fdp.ConsumeIntInRange(
                    -(2**63), 2**63 - 1)
        elif choice == 2 and proto.opset_import:
            proto.opset_import[0].version = fdp.ConsumeIntInRange(-2, 40)
        elif choice == 3 and nodes:
            node = nodes[fdp.ConsumeIntInRange(0, len(nodes) - 1)]
            attribute = node.attribute.add()
            attribute.name = fdp.PickValueInList(["axis", "to", "perm", "axes", "mode",
                                                  "keepdims", "batch_dims", "value"])
            attribute.type = onnx.AttributeProto.INTS if fdp.ConsumeBool() else \
                onnx.AttributeProto.INT
            attribute.i = fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
            attribute.ints.extend(fdp.ConsumeIntListInRange(3, -(2**63), 2**63 - 1))
        elif choice == 4 and len(nodes) > 1:
            i, j = fdp.ConsumeIntInRange(0, len(nodes) - 1), fdp.ConsumeIntInRange(
                0, len(nodes) - 1)
            a, b = onnx.NodeProto(), onnx.NodeProto()
            a.CopyFrom(nodes[i])
            b.CopyFrom(nodes[j])
            nodes[i].CopyFrom(b)
            nodes[j].CopyFrom(a)
        elif choice == 5 and graph.initializer:
            tensor = graph.initializer[fdp.ConsumeIntInRange(0, len(graph.initializer) - 1)]
            if tensor.dims:
                tensor.dims[0] = fdp.ConsumeIntInRange(-4, 2**40)
            tensor.data_type = fdp.ConsumeIntInRange(0, 25)
        elif choice == 6 and nodes:
            node = nodes[fdp.ConsumeIntInRange(0, len(nodes) - 1)]
            node.input.append(fdp.PickValueInList(
                [v.name for v in graph.input] + [t.name for t in graph.initializer] + [""]))
        elif choice == 7:
            proto.ir_version = fdp.ConsumeIntInRange(-1, 15)
    one_input(proto.SerializeToString())


def write_seeds(corpus: Path) -> None:
    sys.path.insert(0, str(HERE.parent / "tests" / "hostile"))
    import cases  # noqa: PLC0415

    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases.CASES:
            try:
                source, _, _ = case.build(Path(scratch))
            except Exception:
                continue
            data = source.SerializeToString() if hasattr(source, "SerializeToString") else source
            if isinstance(data, bytes) and data:
                (corpus / f"seed_{case.name}").write_bytes(data)
    for name, model in (("relu", cases.relu_model()), ("add", cases.add_model())):
        (corpus / f"seed_{name}").write_bytes(model.SerializeToString())


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    if folders and not folders[0].is_file() and (
            not folders[0].exists() or not any(folders[0].iterdir())):
        write_seeds(folders[0])
    import os

    structured = os.environ.get("KILN_FUZZ") == "structured"
    if structured:
        SEEDS.extend(_seeds())
    print(f"kiln fuzz: instrumented {_instrument_kiln()} kiln functions", flush=True)
    atheris.Setup(sys.argv, structured_input if structured else one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

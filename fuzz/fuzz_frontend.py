"""atheris harness over kiln's frontend (parse, validate, check, infer shapes, convert), its
resource guards and the native backend's plan builder.

Any exception that is not a kiln.KilnError, and any crash, is a finding; each one becomes a
regression case in tests/hostile/. Run it outside CI for a fixed budget:

    python fuzz/fuzz_frontend.py fuzz/.corpus -max_total_time=600 -rss_limit_mb=6144 -timeout=30

The seed corpus (every hostile case of tests/hostile/cases.py that builds a model, plus valid
small models) is written into the corpus folder on first run; nothing binary is kept in git.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["kiln"]):
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


def one_input(data: bytes) -> None:
    try:
        model = import_model(bytes(data))
        guards.check_model(model, GUARDS, "openvino")
        if NATIVE is not None:
            NATIVE.compile(model, TARGET, OPTIONS)  # the plan builder; never runs it
    except KilnError:
        pass


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
    if folders and (not folders[0].exists() or not any(folders[0].iterdir())):
        write_seeds(folders[0])
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

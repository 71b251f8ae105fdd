"""The element types each default-domain ONNX op accepts on each input, without onnx's registry.

The validator checks the types it knows up front (graph inputs, weights) against each op's
schema. Asking onnx for one schema builds its whole schema registry first: ~20 ms and ~7 MB,
paid inside a warm .kiln load. The same facts, written out once per onnx release by
``python -m kiln.compiler.onnx_input_types``, sit beside this module in a small JSON file
(~60 kB, parsed in under a millisecond); it is used only when it was written by the onnx
version installed, else the registry answers. tests/compiler/test_onnx_input_types.py checks
the file against the registry of the installed onnx.

    input_constraints("Expand", 17)  # (("input", {"tensor(float)", ...}, False),
                                     #  ("shape", {"tensor(int64)"}, False))
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import onnx

TABLE = Path(__file__).with_name("onnx_input_types.json")

#: one formal input: (name, permitted type strings, variadic)
Formal = tuple[str, frozenset[str], bool]


@functools.lru_cache(maxsize=1024)
def input_constraints(op_type: str, opset: int) -> tuple[Formal, ...]:
    """The formal inputs of default-domain ``op_type`` at ``opset`` (the schema onnx's
    ``get_schema(op_type, opset)`` returns); empty for an op unknown at that opset."""
    table = _shipped_table()
    if table is None:
        return _from_registry(op_type, opset)
    versions = table["ops"].get(op_type)
    if not isinstance(versions, list):
        return ()
    best = max((v for v in versions if v[0] <= opset), key=lambda v: v[0], default=None)
    if best is None:
        return ()
    types = table["types"]
    return tuple((name, frozenset(types[index]), bool(variadic))
                 for name, index, variadic in best[1])


def _from_registry(op_type: str, opset: int) -> tuple[Formal, ...]:
    try:
        schema = onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return ()
    allowed = {c.type_param_str: frozenset(c.allowed_type_strs)
               for c in schema.type_constraints}
    return tuple((f.name, allowed.get(f.type_str, frozenset({f.type_str})), _variadic(f))
                 for f in schema.inputs)


def _variadic(formal: Any) -> bool:
    return formal.option == onnx.defs.OpSchema.FormalParameterOption.Variadic


@functools.cache
def _shipped_table() -> dict[str, Any] | None:
    """The JSON table when the installed onnx wrote it, else None (the registry answers)."""
    try:
        table = json.loads(TABLE.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(table, dict) or table.get("onnx") != onnx.__version__:
        return None
    return table


def build_table() -> dict[str, Any]:
    """Every default-domain schema version's formal inputs, from onnx's registry. Type sets
    are stored once (``types``) and referred to by index."""
    types: dict[tuple[str, ...], int] = {}
    ops: dict[str, list] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain not in ("", "ai.onnx"):
            continue
        allowed = {c.type_param_str: tuple(sorted(c.allowed_type_strs))
                   for c in schema.type_constraints}
        formals = []
        for formal in schema.inputs:
            permitted = allowed.get(formal.type_str, (formal.type_str,))
            formals.append([formal.name, types.setdefault(permitted, len(types)),
                            int(_variadic(formal))])
        ops.setdefault(schema.name, []).append([schema.since_version, formals])
    for versions in ops.values():
        versions.sort(key=lambda v: v[0])
    return {"onnx": onnx.__version__, "types": [list(t) for t in types],
            "ops": dict(sorted(ops.items()))}


if __name__ == "__main__":  # regenerate after an onnx upgrade
    TABLE.write_text(json.dumps(build_table(), separators=(",", ":")) + "\n")
    print(f"wrote {TABLE} for onnx {onnx.__version__}")

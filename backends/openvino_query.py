"""OpenVINO's own verdict on each node of an ONNX model; also a script, run as a child process.

``kiln.backends.openvino`` asks this in process for plain ONNX models and, for models with nodes
outside the ONNX domain (whose conversion has crashed OpenVINO's frontend), as a script in a
child process: the header line (JSON: device, output name -> op) and the model bytes arrive on
stdin, one JSON line of verdicts leaves on stdout. The script imports openvino and the standard
library only, so the child starts fast and never imports kiln.
"""

from __future__ import annotations

import io
import json
import sys


def query_by_output(data: bytes, device: str, op_types: dict[str, str]
                     ) -> tuple[dict[str, str | None], str | None]:
    """OpenVINO's verdict on each ONNX output name of the model ``data`` (``op_types``: output
    name -> (domain::)op of the node that produces it): None when ``device`` runs the
    OpenVINO operations producing it, else why not. The second value, when not None, is why
    OpenVINO could not answer for the model at all."""
    import openvino as ov

    core = ov.Core()
    verdicts: dict[str, str | None] = {}
    try:
        ov_model = core.read_model(io.BytesIO(data))
    except Exception:
        ov_model = None
    if ov_model is None:  # some op has no converter: find which, keep the rest static
        frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
        try:
            partial = frontend.convert_partially(frontend.load(io.BytesIO(data)))
        except Exception as exc:
            return {}, f"OpenVINO's ONNX frontend cannot read the model: {exc}".splitlines()[0]
        for op in partial.get_ordered_ops():
            plugin = _plugin_refusal(op, device)
            if plugin is not None:
                verdicts.update({name: plugin for output in op.outputs()
                                 for name in output.get_names() if name in op_types})
            if not any(t in op.get_type_name() for t in ("FrameworkNode", "NotSupported")):
                continue
            for output in op.outputs():
                for name in output.get_names():
                    if name in op_types:
                        domain, _, op_type = op_types[name].rpartition("::")
                        verdicts[name] = (
                            f"domain '{domain}' is not supported by openvino: its ONNX "
                            f"frontend has no converter for {op_type}" if domain else
                            f"OpenVINO's ONNX frontend did not convert {op_type} here (no "
                            "converter, or an input of unknown rank)")
        return verdicts, None
    head, _, listed = device.partition(":")
    if head in ("AUTO", "MULTI", "BATCH"):  # these pick a real device per model: ask each
        candidates = [d for d in listed.split(",") if d] or list(core.available_devices)
        per_device = [query_by_output(data, d, op_types) for d in candidates]
        for name in op_types:
            reasons = [v[name] if failed is None else failed for v, failed in per_device
                       if failed is not None or name in v]
            if len(reasons) == len(per_device) and all(r is not None for r in reasons):
                verdicts[name] = f"no {head} candidate runs it: " + "; ".join(
                    str(r) for r in reasons)
            elif reasons:
                verdicts[name] = None
        return verdicts, None
    try:
        supported = core.query_model(ov_model, device)
    except Exception as exc:
        return {}, f"OpenVINO query_model on {device} failed: {exc}".splitlines()[0]
    for op in ov_model.get_ordered_ops():
        for output in op.outputs():
            for name in output.get_names():
                if name not in op_types:
                    continue
                plugin = _plugin_refusal(op, device)
                if plugin is not None:
                    verdicts[name] = plugin
                elif op.get_friendly_name() in supported:
                    verdicts.setdefault(name, None)
                else:
                    verdicts[name] = (f"{device} does not run {op.get_type_name()} (from "
                                      f"{op_types[name].rpartition('::')[2]}) according to "
                                      "OpenVINO query_model")
    return verdicts, None


def _plugin_refusal(op, device: str) -> str | None:
    """What query_model accepts but the CPU plugin then refuses to compile (2026.4): any
    operation with an output of unknown rank, in the graph or in the bodies of an If or Loop
    ("CPU plug-in doesn't support If operation with dynamic rank")."""
    if device.partition(".")[0] != "CPU" or op.get_type_name() in ("Parameter", "Result"):
        return None
    stack = [op]
    while stack:
        current = stack.pop()
        if current.get_type_name() not in ("Parameter", "Result") and any(
                output.get_partial_shape().rank.is_dynamic for output in current.outputs()):
            inner = "" if current is op else f" (inside it: {current.get_type_name()})"
            return (f"OpenVINO's CPU plugin does not run {op.get_type_name()} with an output "
                    f"of unknown rank{inner}")
        stack.extend(inner_op for body in _bodies(current) for inner_op in body.get_ordered_ops())
    return None


def _bodies(op) -> list:
    """The body models of an If, Loop or TensorIterator operation (none for other ops)."""
    if op.get_type_name() not in ("If", "Loop", "TensorIterator"):
        return []
    bodies = []
    for index in range(2 if op.get_type_name() == "If" else 1):
        try:
            bodies.append(op.get_function(index))
        except Exception:  # no such body
            break
    return bodies


def main() -> None:
    header, _, data = sys.stdin.buffer.read().partition(b"\n")
    request = json.loads(header)
    verdicts, failed = query_by_output(data, request["device"], request["op_types"])
    print(json.dumps({"verdicts": verdicts, "failed": failed}), flush=True)


if __name__ == "__main__":
    main()

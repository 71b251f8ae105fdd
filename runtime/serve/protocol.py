"""The KServe v2 (Open Inference Protocol) wire format: JSON tensors and Triton's binary
tensor data extension.

A request body is JSON, or, when the ``Inference-Header-Content-Length: N`` header is set,
N bytes of JSON followed by the raw bytes of every input whose ``parameters.binary_data_size``
is given, in input order. Outputs go back as JSON ``data`` unless the request asked for
binary (``parameters.binary_data`` on an output, or ``binary_data_output`` on the request);
binary outputs follow the JSON header the same way, in output order.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.errors import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"

#: v2 datatype name <-> numpy dtype (BYTES is not a numeric tensor and is refused).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}


def datatype_of(dtype: Any) -> str:
    """The v2 datatype name of a numpy dtype (BYTES for strings and objects)."""
    return _NAMES.get(np.dtype(dtype), "BYTES")


@dataclasses.dataclass
class InferRequest:
    """A decoded infer request: the feeds and how each output should come back."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[str] | None          # None = every output
    binary_outputs: set[str]


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer request body; raises InputError (a 400) saying what is malformed."""
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            raise InputError(f"{HEADER_LENGTH} must be an integer, not {header_length!r}") \
                from None
        if not 0 <= json_size <= len(body):
            raise InputError(f"{HEADER_LENGTH} is {json_size} but the body holds "
                             f"{len(body)} bytes")
    else:
        json_size = len(body)
    try:
        header = json.loads(body[:json_size] or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the request is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InputError("the request must be a JSON object with an 'inputs' list")
    params = _params(header, "request")
    binary = memoryview(body)[json_size:]
    offset = 0
    feeds: dict[str, np.ndarray] = {}
    for item in header["inputs"]:
        name, value, used = _decode_input(item, binary, offset)
        if name in feeds:
            raise InputError(f"input '{name}' is given twice")
        feeds[name] = value
        offset += used
    if offset != len(binary):
        raise InputError(f"the body has {len(binary) - offset} bytes of binary data that no "
                         "input claims")
    all_binary = bool(params.get("binary_data_output", False))
    outputs: list[str] | None = None
    binary_outputs: set[str] = set()
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise InputError("'outputs' must be a list")
        outputs = []
        for item in header["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InputError("every requested output needs a 'name'")
            outputs.append(item["name"])
            if _params(item, f"output '{item['name']}'").get("binary_data", all_binary):
                binary_outputs.add(item["name"])
    elif all_binary:
        binary_outputs = {"*"}
    request_id = header.get("id")
    return InferRequest(id=None if request_id is None else str(request_id), feeds=feeds,
                        outputs=outputs, binary_outputs=binary_outputs)


def _params(item: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"'parameters' of the {what} must be an object")
    return params


def _decode_input(item: Any, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InputError("every input needs a 'name'")
    name = item["name"]
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise InputError(f"input '{name}' has datatype {datatype!r}; kiln serves "
                         f"{', '.join(DATATYPES)}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputError(f"input '{name}' needs a 'shape' of non-negative integers, "
                         f"not {shape!r}")
    dtype = DATATYPES[datatype]
    count = int(np.prod(shape, dtype=np.int64))
    size = _params(item, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise InputError(f"input '{name}' has both 'data' and binary_data_size")
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise InputError(f"input '{name}' of shape {shape} and datatype {datatype} needs "
                             f"{count * dtype.itemsize} bytes, binary_data_size is {size!r}")
        if offset + size > len(binary):
            raise InputError(f"input '{name}' claims {size} binary bytes but only "
                             f"{len(binary) - offset} remain in the body")
        raw = np.frombuffer(binary[offset:offset + size], dtype=dtype)
        return name, raw.reshape(shape), size
    if "data" not in item:
        raise InputError(f"input '{name}' has neither 'data' nor binary_data_size")
    try:
        value = np.asarray(item["data"], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input '{name}': data is not {datatype}: {exc}") from None
    if value.size != count:
        raise InputError(f"input '{name}' has shape {shape} ({count} elements) but "
                         f"{value.size} data elements")
    return name, value.reshape(shape), 0


def encode_response(model_name: str, version: str, request: InferRequest,
                    results: Mapping[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary outputs, the JSON header's length."""
    outputs = []
    chunks: list[bytes] = []
    for name, value in results.items():
        value = np.ascontiguousarray(value)
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(value.dtype),
                                 "shape": list(value.shape)}
        if name in request.binary_outputs or "*" in request.binary_outputs:
            raw = value.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = value.ravel().tolist()
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": version,
                                "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def tensor_metadata(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """v2 metadata of model inputs or outputs: symbolic and unknown dims are -1."""
    return [{"name": s.name, "datatype": datatype_of(s.dtype),
             "shape": [-1] if s.shape is None else
             [d if isinstance(d, int) else -1 for d in s.shape]} for s in specs]


def encode_request(feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
                   binary: bool = True) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request body and its headers (kiln's own load generator uses this)."""
    inputs = []
    chunks = []
    for name, value in feeds.items():
        value = np.ascontiguousarray(value)
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(value.dtype),
                                 "shape": list(value.shape)}
        if binary:
            raw = value.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = value.ravel().tolist()
        inputs.append(entry)
    request: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        request["outputs"] = [{"name": n, "parameters": {"binary_data": binary}}
                              for n in outputs]
    elif binary:
        request["parameters"] = {"binary_data_output": True}
    head = json.dumps(request, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
    if binary:
        headers[HEADER_LENGTH] = str(len(head))
    return head + b"".join(chunks), headers


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of a v2 infer response, by name."""
    size = int(header_length) if header_length is not None else len(body)
    header = json.loads(body[:size])
    binary = memoryview(body)[size:]
    offset = 0
    results = {}
    for item in header["outputs"]:
        dtype = DATATYPES[item["datatype"]]
        nbytes = (item.get("parameters") or {}).get("binary_data_size")
        if nbytes is not None:
            value = np.frombuffer(binary[offset:offset + nbytes], dtype=dtype)
            offset += nbytes
        else:
            value = np.asarray(item["data"], dtype=dtype)
        results[item["name"]] = value.reshape(item["shape"])
    return results

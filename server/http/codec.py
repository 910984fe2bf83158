"""Inference requests and responses over HTTP: the Open Inference Protocol's JSON tensors and
Triton's binary tensor data extension, checked by the same rules as gRPC's (server/tensors.py).

A request body is a JSON document, optionally followed by raw tensor bytes: the header
``Inference-Header-Content-Length`` then gives the JSON part's length, and an input whose
``parameters`` hold ``binary_data_size`` takes that many bytes of the rest instead of ``data``.
A requested output with ``parameters.binary_data`` (or every output, with the request parameter
``binary_data_output``) comes back the same way: its bytes after the JSON, its size in its
``parameters``, the JSON part's length in the response header of the same name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from axon.server.batching import Array
from axon.server.errors import InvalidInputError, shown
from axon.server.served_model import OutputChoice, ServedModel
from axon.server.tensors import (
    CLASSIFICATION,
    TIMEOUT,
    OutputTensor,
    batch_from_bytes,
    check_input,
    check_input_names,
    check_output_count,
    choose_output,
    refuse_repeated,
    refuse_unsupported,
)

INFERENCE_HEADER = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
JSON_BYTES_PER_VALUE = 64
"""What a JSON tensor may spend per value, separators and layout included (a float64 written
in full is 24 characters): the JSON part of a request is refused, before it is parsed, past
this times the most values the model takes at once. A JSON number costs the server about 30
times its text in Python objects while parsed; this bound keeps that proportional to what the
model can take, whatever --max-message-bytes allows (binary tensor data has no such cost)."""
JSON_OVERHEAD_BYTES = 64 * 1024
_NUMERIC_KINDS = frozenset("fiu")


@dataclass(frozen=True, slots=True)
class InferRequest:
    """An inference request read from HTTP: checked, its input converted."""

    id: str
    batch: Array
    choices: tuple[OutputChoice, ...]
    binary: tuple[bool, ...]
    """Per requested output: whether it goes back as binary data."""
    timeout: object
    """The Triton ``timeout`` parameter as sent (None: absent): tensors.deadline_from_timeout
    reads it."""


def json_limit(model: ServedModel) -> int:
    """The largest JSON part an inference request to ``model`` may have."""
    values = model.batching.max_batch_size * math.prod(model.item_shape)
    return values * JSON_BYTES_PER_VALUE + JSON_OVERHEAD_BYTES


def load_json(data: bytes | memoryview, what: str = "the request body") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{what} is not valid JSON: {error}") from None


def decode_infer(model: ServedModel, body: bytes, header_length: str | None) -> InferRequest:
    """The inference request in ``body``; ``header_length`` is the value of the
    Inference-Header-Content-Length header (None: absent, the body is all JSON)."""
    view = memoryview(body)
    json_length = _json_length(header_length, len(body))
    if json_length > json_limit(model):
        raise InvalidInputError(
            f"the request's JSON is {json_length:,} bytes; {model.name} takes at most "
            f"{json_limit(model):,} ({JSON_BYTES_PER_VALUE} per value of its largest batch): "
            "send large tensors as binary data (binary_data_size)")
    document = load_json(view[:json_length])
    if not isinstance(document, dict):
        raise InvalidInputError("the request body must be a JSON object with \"inputs\"")
    parameters = _mapping(document, "parameters", "the request's")
    refuse_unsupported(parameters)
    binary_default = _flag(parameters, BINARY_DATA_OUTPUT, "the request's")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError(f"\"id\" must be a string, got {_kind(request_id)}")
    batch = _input(model, document.get("inputs"), view[json_length:])
    choices, binary = _outputs(model, document.get("outputs"), binary_default)
    return InferRequest(request_id, batch, choices, binary, parameters.get(TIMEOUT))


def _json_length(header: str | None, body_length: int) -> int:
    if header is None:
        return body_length
    text = header.strip()
    # Ten digits are past any body's length; int() refuses strings of over 4,300.
    if not (text.isascii() and text.isdigit() and len(text) <= 10) \
            or not 0 < int(text) <= body_length:
        raise InvalidInputError(f"header {INFERENCE_HEADER} is {shown(header)}; it must be the "
                                f"length of the body's JSON part, from 1 to the body's "
                                f"{body_length:,} bytes")
    return int(text)


def _input(model: ServedModel, inputs: object, binary: memoryview) -> Array:
    if inputs is None:
        inputs = []
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
        raise InvalidInputError(f"\"inputs\" must be a list of tensors (objects), got "
                                f"{_kind(inputs)}")
    names = [tensor.get("name") for tensor in inputs]
    if not all(isinstance(name, str) for name in names):
        raise InvalidInputError("every input needs a \"name\" (a string)")
    check_input_names(model, names)
    tensor = inputs[0]
    datatype = tensor.get("datatype", "")
    if not isinstance(datatype, str):
        raise InvalidInputError(f"\"datatype\" of input {model.input_name!r} must be a string, "
                                f"got {_kind(datatype)}")
    shape = check_input(model, datatype, _shape(tensor.get("shape"), model.input_name))
    parameters = _mapping(tensor, "parameters", f"input {model.input_name!r}'s")
    refuse_unsupported(parameters)
    if BINARY_DATA_SIZE in parameters:
        size = parameters[BINARY_DATA_SIZE]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"{BINARY_DATA_SIZE} of input {model.input_name!r} must be a "
                                    f"non-negative integer, got {shown(repr(size))}")
        if "data" in tensor:
            raise InvalidInputError(f"input {model.input_name!r} has both \"data\" and "
                                    f"{BINARY_DATA_SIZE}; send one or the other")
        if size != len(binary):
            raise InvalidInputError(
                f"input {model.input_name!r} declares {BINARY_DATA_SIZE} {size:,}, but the body "
                f"holds {len(binary):,} bytes after its JSON part"
                + ("" if binary else f" (is the {INFERENCE_HEADER} header missing?)"))
        return batch_from_bytes(model, shape, binary)
    if binary:
        raise InvalidInputError(f"the body holds {len(binary):,} bytes after its JSON part, "
                                f"but no input declares {BINARY_DATA_SIZE}")
    if "data" not in tensor:
        raise InvalidInputError(f"input {model.input_name!r} has neither \"data\" nor "
                                f"parameters.{BINARY_DATA_SIZE}")
    return _values(model, shape, tensor["data"])


def _shape(shape: object, name: str) -> list[int]:
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInputError(f"\"shape\" of input {name!r} must be a list of integers, got "
                                f"{_kind(shape)}")
    return shape


def _values(model: ServedModel, shape: tuple[int, ...], data: object) -> Array:
    """FP32 ``data``: numbers, flat or nested row-major (as a list of lists, each level
    regular)."""
    name = model.input_name
    count = math.prod(shape)
    if not isinstance(data, list):
        raise InvalidInputError(f"\"data\" of input {name!r} must be a list of numbers, got "
                                f"{_kind(data)}")
    if data and not isinstance(data[0], list) and len(data) != count:
        # Flat: the count is known before anything is converted.
        raise InvalidInputError(f"input {name!r} has {len(data):,} values in \"data\"; shape "
                                f"{list(shape)} needs {count:,}")
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInputError(f"\"data\" of input {name!r} must hold numbers, in nested lists "
                                "of equal lengths if nested") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInputError(f"\"data\" of input {name!r} must hold numbers only (FP32), not "
                                f"{_ARRAY_KINDS.get(array.dtype.kind, 'other values')}")
    if array.size != count:
        raise InvalidInputError(f"input {name!r} has {array.size:,} values in \"data\"; shape "
                                f"{list(shape)} needs {count:,}")
    with np.errstate(over="ignore"):  # beyond FP32's range: infinite, refused just below
        batch = array.astype(np.float32).reshape(shape)
    model.check_values(batch)
    return batch


_ARRAY_KINDS = {"b": "true/false", "U": "strings",
                "O": "null, objects, integers past 64 bits or a mix"}


def _outputs(model: ServedModel, outputs: object,
             binary_default: bool) -> tuple[tuple[OutputChoice, ...], tuple[bool, ...]]:
    if outputs is None:
        return model.output_choices, (binary_default,) * len(model.output_choices)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInputError(f"\"outputs\" must be a list of requested outputs (objects), "
                                f"got {_kind(outputs)}")
    check_output_count(model, len(outputs))
    choices: list[OutputChoice] = []
    binary: list[bool] = []
    for output in outputs:
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidInputError("every requested output needs a \"name\" (a string)")
        refuse_repeated(name, choices, model)
        parameters = _mapping(output, "parameters", f"output {shown(name)}'s")
        refuse_unsupported(parameters)
        choices.append(choose_output(model, name, parameters.get(CLASSIFICATION)))
        binary.append(_flag(parameters, BINARY_DATA, f"output {shown(name)}'s", binary_default))
    return tuple(choices), tuple(binary)


def _mapping(document: Mapping[str, Any], key: str, whose: str) -> Mapping[str, Any]:
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{whose} \"{key}\" must be an object, got {_kind(value)}")
    return value


def _flag(parameters: Mapping[str, Any], key: str, whose: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{whose} parameter {key!r} must be true or false, got "
                                f"{shown(repr(value))}")
    return value


def _kind(value: object) -> str:
    """What a JSON value is, for error messages (never the value: it may be huge)."""
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


def encode_infer(model: ServedModel, request: InferRequest,
                 tensors: Sequence[OutputTensor]) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary outputs follow it."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor, binary in zip(tensors, request.binary, strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": list(tensor.shape)}
        if binary:
            raw = tensor.raw()
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            blobs.append(raw)
        elif tensor.array is not None:
            entry["data"] = np.ascontiguousarray(tensor.array).ravel()
        else:
            entry["data"] = [s.decode() for s in tensor.strings]
        outputs.append(entry)
    # "id" always, empty when the request had none, as gRPC's field: the protocol calls it
    # optional, but KServe's data model requires it.
    document: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version),
                                "id": request.id, "outputs": outputs}
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)

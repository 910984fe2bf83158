"""Inference requests checked against a model's signature, and its outputs as the protocol's
tensors: the rules both transports share (gRPC in servicers/tensors.py, HTTP in http/codec.py).

Each transport reads its own wire format into plain values (names, datatype, shape, bytes or
numbers, parameter names) and calls these, so a request means the same and fails with the same
message whichever way it came. Names, datatype and the declared shape are checked before any
contents are converted: a request declaring an absurd shape costs nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from axon.server.batching import Array
from axon.server.errors import InvalidInputError, shown, shown_all
from axon.server.served_model import FP32_BYTES, OutputChoice, ServedModel

MODEL_DATATYPE = "FP32"
BYTES_DATATYPE = "BYTES"
WIRE_FP32 = np.dtype("<f4")
"""The protocol's FP32: little-endian, whatever the server's byte order."""
MAX_RANK = 8
CLASSIFICATION = "classification"
TIMEOUT = "timeout"
_LENGTH = struct.Struct("<I")

# Parameters of Triton extensions Axon does not implement. Ignoring them would change what the
# caller gets without telling it (no shared memory read, no sequence state).
_UNSUPPORTED_PARAMETERS = {
    "shared_memory_region": "the shared-memory extension",
    "shared_memory_byte_size": "the shared-memory extension",
    "shared_memory_offset": "the shared-memory extension",
    "sequence_id": "sequence batching",
    "sequence_start": "sequence batching",
    "sequence_end": "sequence batching",
    "triton_enable_empty_final_response": "decoupled final responses",
}


def signature(model: ServedModel) -> str:
    """``one input 'input' FP32 [-1, 784]``: what a caller must send, for error messages."""
    shape = ", ".join(map(str, (-1, *model.item_shape)))
    return f"one input {model.input_name!r} {MODEL_DATATYPE} [{shape}]"


def refuse_unsupported(parameters: Iterable[str]) -> None:
    """Refuse a request, input or output parameter of an extension Axon does not implement."""
    for name in parameters:
        if name in _UNSUPPORTED_PARAMETERS:
            raise InvalidInputError(f"parameter {name!r} asks for "
                                    f"{_UNSUPPORTED_PARAMETERS[name]}, which Axon does not "
                                    "implement")


def check_input_names(model: ServedModel, names: Sequence[str]) -> None:
    """Check the names of a request's inputs, in request order: exactly the model's one."""
    if len(names) != 1 or names[0] != model.input_name:
        raise InvalidInputError(f"{_input_names_problem(names, model.input_name)}; {model.name} "
                                f"takes {signature(model)}")


def check_input(model: ServedModel, datatype: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Check the model's input's ``datatype`` and declared ``shape`` (its name is checked by
    ``check_input_names``); return the shape."""
    name = model.input_name
    if datatype != MODEL_DATATYPE:
        given = shown(datatype) if datatype else "(none)"
        raise InvalidInputError(f"input {name!r} has datatype {given}; {model.name} takes "
                                f"{signature(model)}")
    if len(shape) > MAX_RANK:
        # Refused before check_shape, whose message lists the shape: thousands of dimensions
        # would make it longer than a status message may be.
        raise InvalidInputError(f"input {name!r} has {len(shape):,} dimensions; {model.name} "
                                f"takes {signature(model)}")
    dims = tuple(shape)
    model.check_shape(dims)
    return dims


def batch_from_bytes(model: ServedModel, shape: tuple[int, ...],
                     raw: bytes | memoryview) -> Array:
    """The input from its raw little-endian FP32 bytes (``shape`` already checked)."""
    count = math.prod(shape)
    if len(raw) != count * FP32_BYTES:
        raise InvalidInputError(f"input {model.input_name!r} has {len(raw):,} bytes of raw "
                                f"contents; shape {list(shape)} of FP32 needs "
                                f"{count * FP32_BYTES:,}")
    batch: Array = np.frombuffer(raw, dtype=WIRE_FP32).reshape(shape)
    model.check_values(batch)
    return batch


def batch_from_values(model: ServedModel, shape: tuple[int, ...], values: Sequence[float],
                      what: str = "fp32_contents values") -> Array:
    """The input from a flat sequence of numbers (``shape`` already checked)."""
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(f"input {model.input_name!r} has {len(values):,} {what}; "
                                f"shape {list(shape)} needs {count:,}")
    batch = np.asarray(values, dtype=np.float32).reshape(shape)
    model.check_values(batch)
    return batch


def _input_names_problem(names: Sequence[str], expected: str) -> str:
    if not names:
        return "the request has no inputs"
    if expected not in names:
        return f"missing input {expected!r} (got {shown_all(names)})"
    extra = [name for name in names if name != expected]
    if extra:
        return f"unexpected inputs {shown_all(extra)}"
    return f"input {expected!r} is given {len(names)} times"


def check_output_count(model: ServedModel, requested: int) -> None:
    """Refuse more requested outputs than ``model`` has, before any is looked at: each costs
    work on the event loop, and a request may name a million within the message limit."""
    if requested > len(model.output_names):
        raise InvalidInputError(f"{requested:,} outputs requested; {model.name} has "
                                f"{len(model.output_names)} ({shown_all(model.output_names)}): "
                                "name each at most once")


def refuse_repeated(name: str, chosen: Sequence[OutputChoice], model: ServedModel) -> None:
    """Refuse an output named twice in one request (its answer would hold two tensors of one
    name, which clients look up by name)."""
    if any(model.output_names[choice.output] == name for choice in chosen):
        raise InvalidInputError(f"output {shown(name)} is requested twice; name each output "
                                "at most once")


def choose_output(model: ServedModel, name: str, classification: object = None) -> OutputChoice:
    """The output ``name`` asks for; ``classification`` is its classification parameter's value
    as the transport read it (None: absent)."""
    if name not in model.output_names:
        outputs = ", ".join(map(repr, model.output_names))
        raise InvalidInputError(f"unknown output {shown(name)} requested; {model.name} has "
                                f"outputs {outputs}")
    index = model.output_names.index(name)
    if classification is None:
        return OutputChoice(index)
    if isinstance(classification, bool) or not isinstance(classification, int) \
            or classification < 1:
        raise InvalidInputError(f"parameter 'classification' of output {name!r} must be a "
                                f"positive integer (the number of classes), got "
                                f"{shown(repr(classification))}")
    return OutputChoice(index, min(classification, math.prod(model.runtime.outputs[index].shape)))


class OutputTensor(NamedTuple):
    """An output as the protocol carries it: FP32 rows, or classification strings.

    (A tuple: one is made per output of every response, and a tuple is the cheapest to make.)
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: Array | None = None
    strings: tuple[bytes, ...] = ()
    """BYTES tensors: the elements, row-major."""

    def raw(self) -> bytes:
        """The contents as raw bytes: little-endian FP32, or each string after its length
        (4 bytes, little-endian), as Triton writes BYTES tensors."""
        if self.array is not None:
            return self.array.astype(WIRE_FP32, copy=False).tobytes()
        return b"".join(_LENGTH.pack(len(s)) + s for s in self.strings)


def output_tensors(model: ServedModel, outputs: Sequence[Array],
                   choices: Sequence[OutputChoice]) -> list[OutputTensor]:
    """The requested outputs of one answered request, in request order."""
    tensors = []
    for choice in choices:
        array = outputs[choice.output]
        name = model.output_names[choice.output]
        if choice.classes:
            strings = class_strings(model, array, choice.classes)
            tensors.append(OutputTensor(name, BYTES_DATATYPE, (len(array), choice.classes),
                                        strings=strings))
        else:
            tensors.append(OutputTensor(name, MODEL_DATATYPE, array.shape, array))
    return tensors


def class_strings(model: ServedModel, array: Array, k: int) -> tuple[bytes, ...]:
    """Each item's ``k`` highest values as Triton's classification extension writes them:
    ``"score:index:label"`` (score as C's ``%f``, label from the model card; ``score:index``
    where the output has no label for that position), highest first, ties by index."""
    rows = array.reshape(len(array), -1)
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    labels = model.card.labels if rows.shape[1] == len(model.card.labels) else ()
    strings = []
    for row, top in zip(rows.tolist(), order.tolist(), strict=True):
        for index in top:
            text = f"{row[index]:f}:{index}"
            strings.append((f"{text}:{labels[index]}" if labels else text).encode())
    return tuple(strings)


def deadline_from_timeout(value: object, started: float) -> float | None:
    """The deadline (a ``time.monotonic()`` instant) a Triton ``timeout`` parameter sets:
    microseconds from ``started``; 0 or absent: none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError("parameter 'timeout' must be a non-negative integer (a timeout "
                                f"in microseconds), got {shown(repr(value))}")
    return started + value / 1e6 if value else None


def earliest(*deadlines: float | None) -> float | None:
    """The soonest of the deadlines given (None: none at all)."""
    known = [d for d in deadlines if d is not None]
    return min(known) if known else None

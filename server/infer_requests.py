"""ModelInfer requests read without parsing their input's bytes.

A ModelInferRequest is a few short fields (the model's name, the input's name, datatype and
shape) and the input's raw bytes, which protobuf writers put last: ``raw_input_contents`` has
the highest field number, and fields are written in number order. A client sends the same
short fields call after call. ``InferRequestReader``, the request parser the server registers
for ModelInfer (server/parsing.py), finds where the raw contents start, parses the bytes before
them once per distinct head, kept and shared by every request that starts with the same bytes,
and hands on the raw contents as a view of grpcio's own bytes. A request then costs no
protobuf parse, no copy of its input, and the servicer checks a head once per model version
(server/servicers/inference.py) instead of reading a dozen protobuf fields per call.

Anything else is parsed by protobuf as before: a request with an id (its head would differ on
every call), fields of another wire type or number, raw contents that are not last or come
twice, bytes that end early. A head protobuf cannot parse is parsed whole again, so that the
error is protobuf's own.
"""

from __future__ import annotations

from typing import Any

from axon.protocol import open_inference_pb2 as pb
from axon.server.wire import field_tag, read_length

MAX_HEADS = 256
"""Distinct heads kept; all are forgotten when one more comes (clients send few)."""
MAX_HEAD_BYTES = 4096
"""Longer heads (long parameters, many outputs) are parsed whole, not kept: the heads kept
stay within a megabyte whatever callers send."""
_RAW_INPUT_CONTENTS = field_tag(pb.ModelInferRequest.RAW_INPUT_CONTENTS_FIELD_NUMBER)[0]
_HEAD_KEYS = frozenset(field_tag(number)[0] for number in (
    pb.ModelInferRequest.MODEL_NAME_FIELD_NUMBER, pb.ModelInferRequest.MODEL_VERSION_FIELD_NUMBER,
    pb.ModelInferRequest.PARAMETERS_FIELD_NUMBER, pb.ModelInferRequest.INPUTS_FIELD_NUMBER,
    pb.ModelInferRequest.OUTPUTS_FIELD_NUMBER))
"""The keys (field number and wire type, one byte each: numbers below 16) a head may hold."""


class RequestHead:
    """Every field of a ModelInferRequest but its raw contents, parsed once."""

    __slots__ = ("checked", "message", "model_name", "model_version")

    def __init__(self, message: pb.ModelInferRequest) -> None:
        self.message = message
        """Shared by every request with this head: nothing may change it."""
        # Read on every request: kept as strings, not read from protobuf each time.
        self.model_name = message.model_name
        self.model_version = message.model_version
        self.checked: Any = None
        """What the servicer found the head to ask of the model version it last checked it
        against (its own type; server/servicers/inference.py)."""


class SplitRequest:
    """A ModelInferRequest as its shared head and its own raw input contents."""

    __slots__ = ("head", "raw")

    def __init__(self, head: RequestHead, raw: memoryview) -> None:
        self.head = head
        self.raw = raw

    def whole(self) -> pb.ModelInferRequest:
        """The request as protobuf would have parsed it."""
        message = pb.ModelInferRequest()
        message.CopyFrom(self.head.message)
        message.raw_input_contents.append(bytes(self.raw))
        return message


class InferRequestReader:
    """ModelInfer's request parser: a ``SplitRequest`` where it can, else protobuf's message."""

    def __init__(self, max_heads: int = MAX_HEADS) -> None:
        self._heads: dict[bytes, RequestHead] = {}
        self._max_heads = max_heads
        self._last_head_bytes = 0
        """Where the last split request's raw contents started: a client's next request
        starts its raw contents there too."""

    def __call__(self, data: bytes) -> SplitRequest | pb.ModelInferRequest:
        split = self._split(data)
        return split if split is not None else pb.ModelInferRequest.FromString(data)

    def _split(self, data: bytes) -> SplitRequest | None:
        end = len(data)
        at = self._last_head_bytes
        # The bytes before ``at`` are a head already kept (every head kept was read field by
        # field below), followed by raw contents up to the end: then the message is that
        # head and those contents, with no field to walk.
        if at < end and data[at] == _RAW_INPUT_CONTENTS:
            head = self._heads.get(data[:at])
            if head is not None:
                try:
                    start, length = read_length(data, at + 1)
                except IndexError:
                    return None
                if start + length == end:
                    return SplitRequest(head, memoryview(data)[start:])
        at = 0
        try:
            while at < end:
                if at > MAX_HEAD_BYTES:
                    return None
                key = data[at]
                if key == _RAW_INPUT_CONTENTS:
                    start, length = read_length(data, at + 1)
                    if start + length != end:
                        return None  # not last, or cut short
                    return self._with_head(data, at, memoryview(data)[start:])
                if key not in _HEAD_KEYS:
                    return None  # an id, or any other field: protobuf's to read
                start, length = read_length(data, at + 1)
                at = start + length
        except IndexError:  # a length that runs past the end
            return None
        return None  # no raw contents: typed contents, or nothing

    def _with_head(self, data: bytes, raw_at: int, raw: memoryview) -> SplitRequest | None:
        head_bytes = data[:raw_at]
        self._last_head_bytes = raw_at
        head = self._heads.get(head_bytes)
        if head is None:
            try:
                message = pb.ModelInferRequest.FromString(head_bytes)
            except Exception:  # protobuf's DecodeError, raised again by the whole parse
                return None
            if len(self._heads) >= self._max_heads:
                self._heads.clear()
            head = self._heads[head_bytes] = RequestHead(message)
        return SplitRequest(head, raw)

"""Protobuf wire format, written by hand where a response is hot: ModelInfer's (and the one
length its request parser reads, server/infer_requests.py).

A ModelInferResponse is mostly what every response of one model version shares (names,
datatypes, shapes), plus the request's id and the output bytes. Serializing the shared part
once and appending the rest as encoded fields costs about half of building a message per
response and serializing it (docs/performance.md, "The response as wire bytes"). The protobuf
encoding allows it: a message is its fields' encodings one after another, and a parser reads
fields in any order (written here in field-number order all the same).

Handlers that answer with such bytes are registered with ``passing_bytes`` around the method's
serializer, so gRPC sends them as they are and serializes messages as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_length(data: bytes, at: int) -> tuple[int, int]:
    """The varint length starting at ``at`` in ``data``: where the field's bytes start, and
    how many. IndexError when the bytes end first (or the varint runs past 64 bits)."""
    byte = data[at]
    if byte < 0x80:
        return at + 1, byte
    length, shift = byte & 0x7F, 7
    while True:
        at += 1
        byte = data[at]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return at + 1, length
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def field_tag(number: int) -> bytes:
    """The key of length-delimited field ``number`` (strings, bytes, messages)."""
    return varint(number << 3 | _LENGTH_DELIMITED)


def bytes_field(tag: bytes, value: bytes) -> list[bytes]:
    """A length-delimited field's encoding, as parts to join: its key, length and bytes."""
    return [tag, varint(len(value)), value]


def passing_bytes(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """A response serializer that sends ``bytes`` as they are (a handler serialized the
    message itself) and serializes anything else with ``serialize``."""
    def serialize_unless_bytes(response: Any) -> bytes:
        if isinstance(response, bytes):
            return response
        return serialize(response) if serialize is not None else response
    return serialize_unless_bytes

"""Triton's JSON form of a protobuf message: field names as the .proto spells them, every field
present (defaults included), enums by name, and 64-bit integers as JSON numbers -- protobuf's
own JSON mapping writes those as strings, Triton's HTTP server and its clients use numbers."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_WIDE = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                   FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED64,
                   FieldDescriptor.TYPE_SFIXED64})


def message_json(message: Message) -> dict[str, Any]:
    document = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    _numbers(document, message.DESCRIPTOR)  # type: ignore[arg-type]
    return document


def _numbers(document: dict[str, Any], descriptor: Descriptor) -> None:
    """Turn the 64-bit integers of ``document`` (a message of type ``descriptor``) back into
    numbers, in place."""
    for field in descriptor.fields:
        value = document.get(field.name)
        if value is None:
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name["value"]
                if entry.message_type is not None:
                    for item in value.values():
                        _numbers(item, entry.message_type)
                elif entry.type in _WIDE:
                    document[field.name] = {k: int(v) for k, v in value.items()}
            elif field.is_repeated:
                for item in value:
                    _numbers(item, field.message_type)
            else:
                _numbers(value, field.message_type)
        elif field.type in _WIDE:
            document[field.name] = [int(v) for v in value] if field.is_repeated else int(value)

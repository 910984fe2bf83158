"""A protocol's wire contract as plain JSON-able data, so two copies can be compared.

Axon's stubs and tritonclient's both define the protobuf package ``inference``, and one process's
descriptor pool cannot hold both. ``python -m tests.interop.descriptors`` prints Axon's contract
from a fresh interpreter; the tests describe tritonclient's copy in their own process with the
same function, so both sides go through identical code.
"""

from __future__ import annotations

import json
from typing import TypedDict

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor


class FieldShape(TypedDict):
    number: int
    type: int
    repeated: bool
    message_type: str | None
    enum_type: str | None
    oneof: str | None


class MethodShape(TypedDict):
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool


class Contract(TypedDict):
    messages: dict[str, dict[str, FieldShape]]
    """Every message, nested ones (map entries included) too: full name -> field name -> shape."""
    services: dict[str, dict[str, MethodShape]]
    """Full service name -> method name -> shape."""


def describe_field(field: FieldDescriptor) -> FieldShape:
    # Everything that decides how the field's bytes are read; json_name and comments do not.
    return FieldShape(
        number=field.number, type=field.type, repeated=field.is_repeated,
        message_type=field.message_type.full_name if field.message_type else None,
        enum_type=field.enum_type.full_name if field.enum_type else None,
        oneof=field.containing_oneof.name if field.containing_oneof else None)


def _messages(message: Descriptor) -> dict[str, dict[str, FieldShape]]:
    found = {message.full_name: {f.name: describe_field(f) for f in message.fields}}
    for nested in message.nested_types:
        found |= _messages(nested)
    return found


def describe(file: FileDescriptor) -> Contract:
    messages: dict[str, dict[str, FieldShape]] = {}
    for message in file.message_types_by_name.values():
        messages |= _messages(message)
    services = {service.full_name: {method.name: MethodShape(
        input_type=method.input_type.full_name, output_type=method.output_type.full_name,
        client_streaming=method.client_streaming, server_streaming=method.server_streaming)
        for method in service.methods} for service in file.services_by_name.values()}
    return Contract(messages=messages, services=services)


def describe_all(*files: FileDescriptor) -> Contract:
    """The contract of several files of one package (the service and the model
    configuration, which both Axon and Triton keep in a file of their own)."""
    merged = Contract(messages={}, services={})
    for file in files:
        contract = describe(file)
        merged["messages"] |= contract["messages"]
        merged["services"] |= contract["services"]
    return merged


def main() -> None:
    """Print Axon's contract; importing the stubs is why this runs in its own interpreter."""
    from axon.protocol import model_config_pb2, open_inference_pb2

    print(json.dumps(describe_all(open_inference_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR)))


if __name__ == "__main__":
    main()

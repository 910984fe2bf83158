"""The hand-written wire format (server/wire.py) against protobuf's own serializer: the bytes
of a ModelInfer answer must be exactly what protobuf would write for the same message."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from axon.protocol import open_inference_pb2 as pb
from axon.server.served_model import OutputChoice, ServedModel
from axon.server.servicers.tensors import infer_response, stream_response
from axon.server.wire import bytes_field, field_tag, passing_bytes, read_length, varint

LABELS = tuple(f"class {i}" for i in range(10))


@pytest.mark.parametrize("length", [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152])
def test_a_bytes_field_is_encoded_as_protobuf_encodes_it(length: int) -> None:
    value = bytes(range(256)) * (length // 256) + bytes(length % 256)
    expected = pb.ModelInferResponse(raw_output_contents=[value]).SerializeToString()
    tag = field_tag(pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER)
    assert b"".join(bytes_field(tag, value)) == expected


@pytest.mark.parametrize(("value", "encoded"), [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"),
                                                 (128, b"\x80\x01"), (300, b"\xac\x02"),
                                                 (2**32, b"\x80\x80\x80\x80\x10")])
def test_varints_are_base_128_low_group_first(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 200_704, 2**32])
def test_a_length_reads_back_what_varint_wrote(value: int) -> None:
    data = b"\x3a" + varint(value) + b"rest"
    assert read_length(data, 1) == (1 + len(varint(value)), value)


def test_a_length_cut_short_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        read_length(b"\x3a\x80\x80", 1)


def _model() -> ServedModel:
    """What ``infer_response`` reads of a served model."""
    return cast(ServedModel, SimpleNamespace(
        name="digits", version=3, output_names=("logits", "probabilities"),
        output_choices=(OutputChoice(0), OutputChoice(1)),
        response_templates={}, card=SimpleNamespace(labels=LABELS)))


def _expected(request_id: str, outputs: list[np.ndarray],
              choices: tuple[OutputChoice, ...]) -> pb.ModelInferResponse:
    """The same answer built field by field, as the servicer built it before."""
    response = pb.ModelInferResponse(model_name="digits", model_version="3", id=request_id)
    for choice in choices:
        name = ("logits", "probabilities")[choice.output]
        array = outputs[choice.output]
        if choice.classes:
            response.outputs.add(name=name, datatype="BYTES", shape=[len(array), choice.classes])
            strings = []
            for row in array:
                for index in np.argsort(-row, kind="stable")[:choice.classes]:
                    strings.append(f"{row[index]:f}:{index}:{LABELS[index]}".encode())
            response.raw_output_contents.append(
                b"".join(len(s).to_bytes(4, "little") + s for s in strings))
        else:
            response.outputs.add(name=name, datatype="FP32", shape=array.shape)
            response.raw_output_contents.append(array.astype("<f4").tobytes())
    return response


@pytest.mark.parametrize("choices", [None,  # the request names no outputs: the model's own
                                     (OutputChoice(0), OutputChoice(1)),
                                     (OutputChoice(1),),
                                     (OutputChoice(1, classes=3), OutputChoice(0))])
def test_an_answer_is_the_bytes_protobuf_writes_for_the_same_message(
        choices: tuple[OutputChoice, ...] | None) -> None:
    model = _model()
    if choices is None:
        choices = model.output_choices
    rng = np.random.default_rng(0)
    # Twice per id and batch size: the second answer is made from the kept template.
    for request_id in ("", "request-7", "ünïcode", "", "request-7"):
        for items in (1, 64, 1):
            outputs = [rng.random((items, 10), dtype=np.float32) for _ in range(2)]
            wire = infer_response(request_id, model, outputs, choices)
            expected = _expected(request_id, outputs, choices)
            assert wire == expected.SerializeToString(deterministic=True)
            assert pb.ModelInferResponse.FromString(wire) == expected
    assert len(model.response_templates) == 2  # one per batch size


def test_a_stream_answer_carries_the_answer_as_its_message() -> None:
    outputs = [np.ones((2, 10), np.float32), np.zeros((2, 10), np.float32)]
    choices = (OutputChoice(0), OutputChoice(1))
    answer = infer_response("s1", _model(), outputs, choices)
    expected = pb.ModelStreamInferResponse(infer_response=_expected("s1", outputs, choices))
    assert stream_response(answer) == expected.SerializeToString(deterministic=True)


def test_the_serializer_sends_bytes_as_they_are_and_serializes_messages() -> None:
    message = pb.ModelInferResponse(model_name="digits", id="x")
    serialize = passing_bytes(pb.ModelInferResponse.SerializeToString)
    assert serialize(b"\x0a\x01a") == b"\x0a\x01a"
    assert serialize(message) == message.SerializeToString()
    assert passing_bytes(None)(b"raw") == b"raw"

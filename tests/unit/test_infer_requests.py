"""server/infer_requests.py: ModelInfer requests split into a kept head and their raw input.

Whatever the bytes, the reader must mean what protobuf means: a split request put back together
equals protobuf's parse of the same bytes, anything not split is protobuf's parse, and bytes
protobuf refuses are refused the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from axon.protocol import open_inference_pb2 as pb
from axon.server.infer_requests import MAX_HEAD_BYTES, InferRequestReader, SplitRequest


def _request(items: int = 1, **fields: object) -> pb.ModelInferRequest:
    batch = np.random.default_rng(items).random((items, 784), dtype=np.float32)
    return pb.ModelInferRequest(**{
        "model_name": "digits", "inputs": [pb.ModelInferRequest.InferInputTensor(
            name="input", datatype="FP32", shape=[items, 784])],
        "raw_input_contents": [batch.tobytes()], **fields})  # type: ignore[arg-type]


def _raw_field() -> bytes:
    """The raw contents field of ``_request()``, alone."""
    return pb.ModelInferRequest(
        raw_input_contents=_request().raw_input_contents).SerializeToString()


def test_a_request_as_clients_write_it_is_split_and_its_head_kept() -> None:
    reader = InferRequestReader()
    first, second = (_request(items).SerializeToString() for items in (1, 1))
    split = reader(first)
    assert isinstance(split, SplitRequest)
    assert split.head.model_name == "digits" and split.head.model_version == ""
    assert not split.head.message.raw_input_contents
    assert bytes(split.raw) == _request(1).raw_input_contents[0]
    assert split.whole() == pb.ModelInferRequest.FromString(first)
    again = reader(second)
    assert isinstance(again, SplitRequest) and again.head is split.head
    # A view of the bytes grpcio passed, not a copy of them.
    assert split.raw.obj is first


@pytest.mark.parametrize("request_bytes", [
    _request(id="call-1").SerializeToString(),  # an id: its head would differ every call
    pb.ModelInferRequest(model_name="digits", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, 2],
        contents=pb.InferTensorContents(fp32_contents=[1, 2]))]).SerializeToString(),
    # Raw contents before the model's name, and twice.
    _raw_field() + pb.ModelInferRequest(model_name="digits").SerializeToString(),
    _request().SerializeToString() + _raw_field(),
    # A field of another wire type (an unknown varint field, number 9).
    bytes([9 << 3 | 0, 1]) + _request().SerializeToString(),
    # A head longer than the heads kept.
    _request(parameters={"note": pb.InferParameter(
        string_param="x" * MAX_HEAD_BYTES)}).SerializeToString(),
], ids=["an id", "typed contents", "raw contents first", "raw contents twice",
        "another wire type", "a long head"])
def test_anything_else_is_protobuf_s_parse(request_bytes: bytes) -> None:
    parsed = InferRequestReader()(request_bytes)
    assert isinstance(parsed, pb.ModelInferRequest)
    assert parsed == pb.ModelInferRequest.FromString(request_bytes)


@pytest.mark.parametrize("cut", [1, 100, 3000])
def test_bytes_that_end_early_are_refused_as_protobuf_refuses_them(cut: int) -> None:
    request_bytes = _request().SerializeToString()[:-cut]
    with pytest.raises(DecodeError):
        pb.ModelInferRequest.FromString(request_bytes)
    with pytest.raises(DecodeError):
        InferRequestReader()(request_bytes)


def test_a_head_protobuf_cannot_parse_is_refused_by_protobuf() -> None:
    # The model name field claims 5 bytes that are not UTF-8.
    request_bytes = b"\x0a\x05\xff\xfe\xfd\xfc\xfb" + _raw_field()
    with pytest.raises(DecodeError):
        InferRequestReader()(request_bytes)


def test_the_heads_kept_are_bounded() -> None:
    reader = InferRequestReader(max_heads=2)
    heads = []
    for name in ("a", "b", "c", "a"):
        split = reader(_request(model_name=name).SerializeToString())
        assert isinstance(split, SplitRequest)
        heads.append(split.head)
    # "c" made room by forgetting both: "a" is parsed afresh.
    assert heads[3] is not heads[0]
    assert heads[3].message == heads[0].message


def test_a_known_head_then_anything_is_read_in_full() -> None:
    reader = InferRequestReader()
    request_bytes = _request().SerializeToString()
    assert isinstance(reader(request_bytes), SplitRequest)
    # The kept head, then raw contents that end early, then ones that run on into more fields.
    with pytest.raises(DecodeError):
        reader(request_bytes[:-1])
    longer = request_bytes + pb.ModelInferRequest(model_version="2").SerializeToString()
    parsed = reader(longer)
    assert isinstance(parsed, pb.ModelInferRequest) and parsed.model_version == "2"
    assert parsed == pb.ModelInferRequest.FromString(longer)


_fields = st.fixed_dictionaries({}, optional={
    "model_name": st.text(max_size=20),
    "model_version": st.text(max_size=5),
    "id": st.text(max_size=10),
    "parameters": st.dictionaries(st.text(max_size=10), st.builds(
        pb.InferParameter, int64_param=st.integers(-2**63, 2**63 - 1)), max_size=3),
    "inputs": st.lists(st.builds(
        pb.ModelInferRequest.InferInputTensor, name=st.text(max_size=10),
        datatype=st.sampled_from(["FP32", "INT8", ""]),
        shape=st.lists(st.integers(-1, 2**40), max_size=4)), max_size=3),
    "outputs": st.lists(st.builds(pb.ModelInferRequest.InferRequestedOutputTensor,
                                  name=st.text(max_size=10)), max_size=3),
    "raw_input_contents": st.lists(st.binary(max_size=300), max_size=3),
})


_SHARED_READER = InferRequestReader(max_heads=4)
"""One reader for every example: what it kept from one message must not change the next's
meaning."""


@settings(max_examples=300, deadline=None)
@given(_fields, st.binary(max_size=40))
def test_every_message_means_what_protobuf_says_it_means(fields: dict[str, object],
                                                          suffix: bytes) -> None:
    reader = _SHARED_READER
    written = pb.ModelInferRequest(**fields).SerializeToString()  # type: ignore[arg-type]
    for request_bytes in (written, written + suffix):
        try:
            expected = pb.ModelInferRequest.FromString(request_bytes)
        except DecodeError:
            with pytest.raises(DecodeError):
                reader(request_bytes)
            continue
        parsed = reader(request_bytes)
        got = parsed.whole() if isinstance(parsed, SplitRequest) else parsed
        assert got == expected
        # As clients write it: one raw contents entry (written last) and no id.
        if request_bytes is written and len(expected.raw_input_contents) == 1 \
                and not expected.id:
            assert isinstance(parsed, SplitRequest)

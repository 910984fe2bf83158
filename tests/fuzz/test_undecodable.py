"""Well-formed gRPC calls whose message bytes are not the request message they claim to be.

gRPC parses each message before Axon's code sees it. On a stream, the parse happens as the
servicer reads (server/servicers/streams.py): the messages before the bad one are answered,
then the stream ends INVALID_ARGUMENT. A unary request is parsed by gRPC before any Axon code
runs; left alone, grpcio answers UNKNOWN ("Unexpected <class 'DecodeError'>") and logs a
traceback, so the server gives Axon's unary methods a parser that marks such bytes and refuses
them with INVALID_ARGUMENT (server/parsing.py).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import given
from hypothesis import strategies as st

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls
from tests.fuzz.properties import (
    CODE,
    GOOD_DIGITS,
    assert_still_serving,
    check_rpc_error,
    fuzz_settings,
)
from tests.support.images import real_png
from tests.support.repositories import DIGITS

STREAMS = {
    "/inference.GRPCInferenceService/ModelStreamInfer": (
        oip.ModelInferRequest, infer_request(DIGITS, GOOD_DIGITS)),
    "/axon.v1.Classifier/ClassifyStream": (
        cls.ClassifyStreamRequest, cls.ClassifyStreamRequest(request=cls.ClassifyRequest(
            model_name=DIGITS, images=[cls.Image(encoded=real_png())]))),
}
"""Each stream method, the message type it reads, and a good message for it."""
UNARY = {
    "/inference.GRPCInferenceService/ModelInfer": oip.ModelInferRequest,
    "/inference.GRPCInferenceService/ServerLive": oip.ServerLiveRequest,
    "/inference.GRPCInferenceService/RepositoryModelLoad": oip.RepositoryModelLoadRequest,
    "/axon.v1.Classifier/Classify": cls.ClassifyRequest,
}


def parses(message_type: type[Message], data: bytes) -> bool:
    try:
        message_type.FromString(data)
    except DecodeError:
        return False
    return True


def undecodable(message_type: type[Message]) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=64).filter(lambda data: not parses(message_type, data))


@st.composite
def broken_streams(draw: st.DrawFn) -> tuple[str, list[bytes], int]:
    """A stream method and its messages: good ones, then bytes that do not parse, then good
    ones again (never read); and how many good ones come first."""
    method = draw(st.sampled_from(sorted(STREAMS)))
    message_type, good = STREAMS[method]
    before, after = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    encoded = good.SerializeToString()
    return method, [encoded] * before + [draw(undecodable(message_type))] + [encoded] * after, \
        before


@fuzz_settings(share=1 / 3)
@given(stream=broken_streams())
def test_a_stream_message_that_does_not_parse_ends_the_stream_invalid_argument(
        fuzz_server: ServerProcess, fuzz_client: AxonClient,
        stream: tuple[str, list[bytes], int]) -> None:
    method, messages, answerable = stream
    call = fuzz_client.channel.stream_stream(method, request_serializer=bytes,
                                             response_deserializer=bytes)
    answers = call(iter(messages), timeout=30)
    received = 0
    with pytest.raises(grpc.RpcError) as caught:
        for _ in answers:
            received += 1
    assert check_rpc_error(caught.value) == CODE.INVALID_ARGUMENT
    assert received == answerable
    assert_still_serving(fuzz_server, fuzz_client)


@fuzz_settings(share=1 / 15)
@given(method=st.sampled_from(sorted(UNARY)), data=st.data())
def test_a_unary_request_that_does_not_parse_is_invalid_argument(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, method: str,
        data: st.DataObject) -> None:
    body = data.draw(undecodable(UNARY[method]))
    call = fuzz_client.channel.unary_unary(method, request_serializer=bytes,
                                           response_deserializer=bytes)
    with pytest.raises(grpc.RpcError) as refused:
        call(body, timeout=30)
    error = refused.value
    assert check_rpc_error(error) == CODE.INVALID_ARGUMENT
    assert isinstance(error, grpc.Call)
    assert error.details() == "the request is not a valid message for " \
                              f"{method.rpartition('/')[2]}"
    assert_still_serving(fuzz_server, fuzz_client)

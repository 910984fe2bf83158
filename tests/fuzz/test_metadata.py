"""Fuzzing the call around the request: gRPC metadata (headers), deadlines and compression on
good requests of every API. Whatever a client may send there, the answer is the good answer or
a deliberate status (a deadline too short for the call: DEADLINE_EXCEEDED; headers past gRPC's
size limit: RESOURCE_EXHAUSTED)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls
from tests.fuzz.properties import GOOD_DIGITS, assert_still_serving, check_call, fuzz_settings
from tests.fuzz.strategies import metadata
from tests.support.images import real_png
from tests.support.repositories import DIGITS

Call = Callable[[AxonClient, dict[str, Any]], object]

CALLS: dict[str, Call] = {
    "ModelInfer": lambda client, options: client.inference.ModelInfer(
        infer_request(DIGITS, GOOD_DIGITS), **options),
    "Classify": lambda client, options: client.classifier.Classify(
        cls.ClassifyRequest(model_name=DIGITS, images=[cls.Image(encoded=real_png())]),
        **options),
    "ServerReady": lambda client, options: client.inference.ServerReady(
        oip.ServerReadyRequest(), **options),
    "ModelMetadata": lambda client, options: client.inference.ModelMetadata(
        oip.ModelMetadataRequest(name=DIGITS), **options),
    "ListModels": lambda client, options: client.classifier.ListModels(
        cls.ListModelsRequest(), **options),
    "Health": lambda client, options: client.health_stub.Check(
        health_pb2.HealthCheckRequest(), **options),
}
compressions = st.sampled_from([None, grpc.Compression.NoCompression, grpc.Compression.Deflate,
                                grpc.Compression.Gzip])
timeouts = st.one_of(st.just(30.0), st.floats(1e-6, 0.01), st.floats(1e-6, 30.0))


call_options = st.fixed_dictionaries({"metadata": metadata, "timeout": timeouts,
                                      "compression": compressions})


@fuzz_settings()
@given(call=st.sampled_from(sorted(CALLS)), options=call_options)
def test_any_metadata_deadline_and_compression_is_answered_deliberately(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, call: str,
        options: dict[str, Any]) -> None:
    check_call(lambda: CALLS[call](fuzz_client, options))
    assert_still_serving(fuzz_server, fuzz_client)

"""Fuzzing the calls that take a model's name and version but no tensors: readiness, metadata,
statistics, the repository index, load and unload. Names and versions are random; so are the
load and unload parameters (Axon takes none but ``unload_dependents``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from hypothesis import assume, example, given
from hypothesis import strategies as st

from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from tests.fuzz.properties import SERVED_MODELS, assert_still_serving, check_call, fuzz_settings
from tests.fuzz.strategies import served_or_any_name, short_text, versions

ModelCall = tuple[str, Any]
"""The stub method's name and its request message."""

control_parameters = st.dictionaries(
    st.one_of(st.sampled_from(["config", "unload_dependents", "file:1/model.onnx", ""]),
              short_text),
    st.one_of(st.builds(oip.ModelRepositoryParameter, bool_param=st.booleans()),
              st.builds(oip.ModelRepositoryParameter, string_param=short_text),
              st.builds(oip.ModelRepositoryParameter, bytes_param=st.binary(max_size=64))),
    max_size=3)
repository_names = st.one_of(st.just(""), st.just("models"), short_text)


@st.composite
def model_calls(draw: st.DrawFn) -> ModelCall:
    name = draw(served_or_any_name)
    version = draw(st.one_of(st.just(""), versions))
    method = draw(st.sampled_from(["ModelReady", "ModelMetadata", "ModelStatistics",
                                   "RepositoryIndex", "RepositoryModelLoad",
                                   "RepositoryModelUnload"]))
    requests: dict[str, Callable[[], Message]] = {
        "ModelReady": lambda: oip.ModelReadyRequest(name=name, version=version),
        "ModelMetadata": lambda: oip.ModelMetadataRequest(name=name, version=version),
        "ModelStatistics": lambda: oip.ModelStatisticsRequest(name=name, version=version),
        "RepositoryIndex": lambda: oip.RepositoryIndexRequest(
            repository_name=draw(repository_names), ready=draw(st.booleans())),
        "RepositoryModelLoad": lambda: oip.RepositoryModelLoadRequest(
            repository_name=draw(repository_names), model_name=name,
            parameters=draw(control_parameters)),
        "RepositoryModelUnload": lambda: oip.RepositoryModelUnloadRequest(
            repository_name=draw(repository_names), model_name=name,
            parameters=draw(control_parameters)),
    }
    return method, requests[method]()


@fuzz_settings(share=1 / 2)
@given(call=model_calls())
# Found by this test: the invalid name was shown whole, and a long one made the message longer
# than gRPC delivers: RESOURCE_EXHAUSTED reached the caller instead of INVALID_ARGUMENT.
@example(call=("RepositoryModelLoad", oip.RepositoryModelLoadRequest(model_name="0" * 1_000)))
@example(call=("RepositoryModelLoad", oip.RepositoryModelLoadRequest(
    model_name="mnist", parameters={f"{'p' * 80}{i}": oip.ModelRepositoryParameter()
                                    for i in range(400)})))
def test_model_calls_answer_deliberately(fuzz_server: ServerProcess, fuzz_client: AxonClient,
                                         call: ModelCall) -> None:
    method, request = call
    # Unloading a served model is a success that would fail the next good request.
    assume(method != "RepositoryModelUnload" or request.model_name not in SERVED_MODELS)
    stub_method: Callable[..., object] = getattr(fuzz_client.inference, method)
    check_call(lambda: stub_method(request, timeout=30))
    assert_still_serving(fuzz_server, fuzz_client)

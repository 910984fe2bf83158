"""The KServe Python SDK from PyPI against a real Axon server: its InferenceRESTClient (httpx)
and InferenceGRPCClient for health and inference, its own generated gRPC stub and its REST data
models (pydantic) for metadata. Tensors are compared bit for bit with onnxruntime's answers,
computed by Axon's interpreter in tests/kserve/prepare.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as kserve_pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as kserve_grpc
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.v2_datamodels import (
    InferenceResponse,
    ModelMetadataResponse,
    ServerMetadataResponse,
)

from axon.client.server_process import ServerProcess

MODEL = "mnist"
OUTPUTS = ("logits", "probabilities")
ResultT = TypeVar("ResultT")


def run(work: Callable[[], Awaitable[ResultT]]) -> ResultT:
    return asyncio.run(work())  # type: ignore[arg-type]


def rest_client() -> InferenceRESTClient:
    return InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))


def request(batch: np.ndarray, binary: bool, request_id: str = "") -> InferRequest:
    tensor = InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return InferRequest(model_name=MODEL, infer_inputs=[tensor], request_id=request_id or None,
                        request_outputs=[RequestedOutput(name, {"binary_data": binary})
                                         for name in OUTPUTS])


def outputs(response: Any) -> dict[str, np.ndarray]:
    return {output.name: output.as_numpy() for output in response.outputs}


def test_rest_client_health(server: ServerProcess) -> None:
    async def probe() -> tuple[Any, ...]:
        client = rest_client()
        try:
            return (await client.is_server_live(server.url),
                    await client.is_server_ready(server.url),
                    await client.is_model_ready(server.url, MODEL),
                    await client.is_model_ready(server.url, "no-such-model"))
        finally:
            await client.close()

    assert run(probe) == (True, True, True, False)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rest_client_infer_equals_onnxruntime(server: ServerProcess, binary: bool,
                                              digits: dict[str, np.ndarray]) -> None:
    async def infer() -> Any:
        client = rest_client()
        try:
            return await client.infer(server.url, request(digits["inputs"], binary, "k-1"),
                                      model_name=MODEL)
        finally:
            await client.close()

    response = run(infer)
    assert (response.model_name, response.id) == (MODEL, "k-1")
    got = outputs(response)
    for name in OUTPUTS:
        assert got[name].dtype == np.float32 and got[name].shape == (64, 10)
        assert got[name].tobytes() == digits[name].tobytes(), name


def test_rest_client_reports_errors(server: ServerProcess,
                                    digits: dict[str, np.ndarray]) -> None:
    async def infer() -> None:
        client = rest_client()
        try:
            await client.infer(server.url, request(digits["inputs"][:, :700].copy(), True),
                               model_name=MODEL)
        finally:
            await client.close()

    with pytest.raises(httpx.HTTPStatusError) as error:
        run(infer)
    assert error.value.response.status_code == 400
    assert "must have shape [N, 784]" in str(error.value)  # KServe read our {"error": ...}


def test_grpc_client_health_and_infer(server: ServerProcess,
                                      digits: dict[str, np.ndarray]) -> None:
    async def session() -> tuple[Any, ...]:
        client = InferenceGRPCClient(server.address, retries=0, timeout=30)
        try:
            return (await client.is_server_live(), await client.is_server_ready(),
                    await client.is_model_ready(MODEL),
                    await client.infer(request(digits["inputs"], True, "g-1")))
        finally:
            await client.close()

    live, ready, model_ready, response = run(session)
    assert (live, ready, model_ready) == (True, True, True)
    assert response.id == "g-1"
    got = outputs(response)
    for name in OUTPUTS:
        assert got[name].tobytes() == digits[name].tobytes(), name


def test_metadata_through_kserves_stub_and_data_models(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        server_metadata = stub.ServerMetadata(kserve_pb.ServerMetadataRequest(), timeout=30)
        model_metadata = stub.ModelMetadata(kserve_pb.ModelMetadataRequest(name=MODEL),
                                            timeout=30)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        rest_server = ServerMetadataResponse.model_validate(http.get("/v2").json())
        rest_model = ModelMetadataResponse.model_validate(http.get(f"/v2/models/{MODEL}").json())
    assert (rest_server.name, rest_server.version, rest_server.extensions) == \
        (server_metadata.name, server_metadata.version, list(server_metadata.extensions))
    assert (rest_model.name, rest_model.platform, rest_model.versions) == \
        (model_metadata.name, model_metadata.platform, list(model_metadata.versions)) == \
        (MODEL, "onnxruntime_onnx", ["1"])
    assert [(t.name, t.datatype, t.shape) for t in rest_model.inputs] == \
        [(t.name, t.datatype, list(t.shape)) for t in model_metadata.inputs] == \
        [("input", "FP32", [-1, 784])]
    assert [t.name for t in rest_model.outputs] == list(OUTPUTS)


def test_json_inference_through_kserves_data_model(server: ServerProcess,
                                                   digits: dict[str, np.ndarray]) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 784],
                        "data": digits["inputs"][:2].ravel().tolist()}]}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200
    response = InferenceResponse.model_validate(answer.json())
    assert response.model_name == MODEL
    for output in response.outputs:
        got = np.asarray(output.data, dtype=np.float32).reshape(output.shape)
        assert got.tobytes() == digits[output.name][:2].tobytes(), output.name

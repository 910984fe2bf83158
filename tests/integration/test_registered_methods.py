"""Which methods the real server registers with gRPC's core, and that every method answers.

grpcio's asyncio server keeps one pending request per registered method, and one for all the
others, and waits on all of them for every call it accepts (server/parsing.py): Axon registers
only its unary inference methods. The server is built in this process, so that its event
loop's tasks can be counted; it is called through real gRPC on a loopback port.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from axon.client.common import infer_request
from axon.protocol import open_inference_pb2 as oip
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from axon.protocol.v1 import classification_pb2 as cls
from axon.protocol.v1 import classification_pb2_grpc as cls_grpc
from axon.server.app import build_server
from axon.server.config import load_settings
from tests.support.repositories import DIGITS


def pending_requests() -> Counter[str]:
    """gRPC's pending requests for calls, by kind: one ``_request_registered_call`` per
    registered method, one ``_request_call`` for every other."""
    names = (getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks())
    return Counter(name.rsplit(".", 1)[-1] for name in names
                   if name.endswith(("._request_registered_call", "._request_call")))


async def registered_and_answers(repository: Path) -> tuple[Counter[str], list[str]]:
    settings = load_settings(model_repository=repository, models=[DIGITS],
                             address="127.0.0.1:0", http=False, metrics=False)
    server = await build_server(settings)
    try:
        pending = pending_requests()
        answers = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            inference = oip_grpc.GRPCInferenceServiceStub(channel)
            answers.append(f"live {(await inference.ServerLive(oip.ServerLiveRequest())).live}")
            metadata = await inference.ModelMetadata(oip.ModelMetadataRequest(name=DIGITS))
            answers.append(f"metadata {metadata.name}")
            reply = await inference.ModelInfer(infer_request(DIGITS,
                                                             np.zeros((2, 784), np.float32)))
            answers.append(f"infer {list(reply.outputs[0].shape)}")
            models = await cls_grpc.ClassifierStub(channel).ListModels(cls.ListModelsRequest())
            answers.append(f"models {DIGITS in [model.name for model in models.models]}")
            check = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest())
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(check.status)
            answers.append(f"health {status}")
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            services = [service.name async for response in stream
                        for service in response.list_services_response.service]
            answers.append(f"reflection {'inference.GRPCInferenceService' in services}")
        return pending, answers
    finally:
        await server.stop(0)


def test_only_the_unary_inference_methods_are_registered_and_every_method_answers(
        serving_repository: Path) -> None:
    pending, answers = asyncio.run(registered_and_answers(serving_repository))
    # ModelInfer and Classify; the generated code registered all 18 methods of the four
    # services.
    assert pending == Counter({"_request_registered_call": 2, "_request_call": 1})
    assert answers == ["live True", f"metadata {DIGITS}", "infer [2, 10]", "models True",
                       "health SERVING", "reflection True"]

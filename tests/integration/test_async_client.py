"""The asyncio client against the real server: the sync client's answers, concurrently; streams
with a bounded window; errors with their status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from axon.client.async_client import AsyncAxonClient
from axon.client.common import AxonClientError
from axon.client.demo import SAMPLES
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol.v1 import classification_pb2 as cls
from tests.support.repositories import DIGITS


def test_concurrent_calls_get_the_sync_clients_answers(server: ServerProcess) -> None:
    files = sorted(SAMPLES.glob("*.png"))
    images = [f.read_bytes() for f in files]
    with AxonClient(server.address) as sync:
        expected = [sync.classify([image], model=DIGITS, top_k=2).results[0]
                    for image in images]
        expected_outputs = sync.infer(DIGITS, np.full((3, 784), 0.25, np.float32))

    async def main() -> None:
        async with AsyncAxonClient(server.address) as client:
            assert await client.ready()
            answers = await asyncio.gather(*(
                client.classify([image], model=DIGITS, top_k=2) for image in images))
            assert [a.results[0] for a in answers] == expected
            outputs = await client.infer(DIGITS, np.full((3, 784), 0.25, np.float32))
            assert np.array_equal(outputs["probabilities"], expected_outputs["probabilities"])
            metadata = await client.model_metadata(DIGITS)
            assert metadata.name == DIGITS and list(metadata.inputs[0].shape) == [-1, 784]
            assert DIGITS in {m.name for m in await client.models()}
            with pytest.raises(AxonClientError) as error:
                await client.classify([images[0]], model="no-such-model")
            assert error.value.code == grpc.StatusCode.NOT_FOUND
            assert client.retries == 0

    asyncio.run(main())


def test_a_stream_keeps_its_window_and_answers_every_id(server: ServerProcess) -> None:
    image = cls.Image(encoded=next(SAMPLES.glob("*.png")).read_bytes())
    window = 4
    sent = 0
    received = 0
    most_in_flight = 0

    async def requests() -> AsyncIterator[tuple[str, cls.ClassifyRequest]]:
        nonlocal sent, most_in_flight
        for index in range(60):
            images = [] if index == 17 else [image]  # one bad request, answered in band
            sent += 1
            most_in_flight = max(most_in_flight, sent - received)
            yield f"r{index}", cls.ClassifyRequest(model_name=DIGITS, images=images)

    async def main() -> dict[str, cls.ClassifyStreamResponse]:
        nonlocal received
        answers = {}
        async with AsyncAxonClient(server.address) as client:
            async for answer in client.classify_stream(requests(), window=window):
                received += 1
                answers[answer.id] = answer
        return answers

    answers = asyncio.run(main())
    assert set(answers) == {f"r{index}" for index in range(60)}
    assert answers["r17"].error.status == "INVALID_ARGUMENT"
    assert all(a.response.results for key, a in answers.items() if key != "r17")
    # The generator runs one request ahead of the window while it waits for a slot.
    assert 1 < most_in_flight <= window + 1


def test_both_clients_read_server_and_model_health(server: ServerProcess) -> None:
    with AxonClient(server.address) as sync:
        assert sync.health() == "SERVING"
        assert sync.health(DIGITS) == "SERVING"
        with pytest.raises(AxonClientError) as error:
            sync.health("no-such-model")
        assert error.value.code == grpc.StatusCode.NOT_FOUND

    async def main() -> None:
        async with AsyncAxonClient(server.address) as client:
            assert await client.health() == "SERVING"
            assert await client.health(DIGITS) == "SERVING"
            with pytest.raises(AxonClientError) as error:
                await client.health("no-such-model")
            assert error.value.code == grpc.StatusCode.NOT_FOUND

    asyncio.run(main())

"""ModelInfer on split requests (server/infer_requests.py): a head is checked once per model
version, and every request's own input is still checked.

The servicer is called as grpcio calls it, through the parser the server registers, on real
trained models; over the network the same path serves every test that sends requests
without an id (tests/integration/test_bad_input.py among them).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from axon import __version__
from axon.client.common import infer_request
from axon.model_repository import ModelRepository
from axon.protocol import open_inference_pb2 as pb
from axon.server.config import load_settings
from axon.server.data_plane import DataPlane
from axon.server.errors import InvalidInputError, ModelNotReadyError
from axon.server.infer_requests import InferRequestReader, SplitRequest
from axon.server.metrics import Metrics
from axon.server.model_manager import ModelManager
from axon.server.runtime import SessionSettings
from axon.server.servicers.inference import InferenceServicer
from axon.server.version_policy import VersionPolicy
from tests.support.repositories import DIGITS


class _Context:
    def time_remaining(self) -> float | None:
        return None


def _answer(response: bytes) -> np.ndarray:
    return np.frombuffer(pb.ModelInferResponse.FromString(response).raw_output_contents[0],
                         np.float32)


def test_a_kept_head_is_checked_again_for_each_input_and_each_model_version(
        serving_repository: Path) -> None:
    async def scenario() -> None:
        models = ModelManager(ModelRepository(serving_repository), VersionPolicy(),
                              SessionSettings(), load_settings().batching,
                              observer=Metrics(CollectorRegistry(), server_version=__version__))
        servicer = InferenceServicer(DataPlane(models))
        reader = InferRequestReader()
        rng = np.random.default_rng(0)

        async def infer(batch: np.ndarray) -> bytes:
            request = reader(infer_request(DIGITS, batch).SerializeToString())
            assert isinstance(request, SplitRequest)
            return await servicer.ModelInfer(request, _Context())  # type: ignore[arg-type]

        try:
            await models.load(DIGITS)
            first = models.get(DIGITS)
            good = rng.random((2, 784), dtype=np.float32)
            expected = first.runtime.run(good)[0].reshape(-1)
            np.testing.assert_array_equal(_answer(await infer(good)), expected)
            # The same head (two images declared), with contents that do not fit it.
            request = reader(infer_request(DIGITS, good).SerializeToString())
            assert isinstance(request, SplitRequest)
            short = SplitRequest(request.head, request.raw[:-4])
            with pytest.raises(InvalidInputError, match="6,268 bytes of raw contents"):
                await servicer.ModelInfer(short, _Context())  # type: ignore[arg-type]
            bad = good.copy()
            bad[1, 5] = np.nan
            with pytest.raises(InvalidInputError, match="1 NaN or infinite values"):
                await infer(bad)
            np.testing.assert_array_equal(_answer(await infer(good)), expected)

            # Raw contents starting at every offset modulo 4 (a parameter's length moves them),
            # so some arrive unaligned for float32.
            for pad in range(4):
                padded = infer_request(DIGITS, good)
                padded.parameters["pad"].string_param = "x" * pad
                split = reader(padded.SerializeToString())
                assert isinstance(split, SplitRequest)
                for _ in range(2):  # checked whole, then by its kept head
                    response = await servicer.ModelInfer(split, _Context())  # type: ignore[arg-type]
                    np.testing.assert_array_equal(_answer(response), expected)
                padded.raw_input_contents[0] = bad.tobytes()
                split = reader(padded.SerializeToString())
                assert isinstance(split, SplitRequest)
                with pytest.raises(InvalidInputError, match="1 NaN or infinite values"):
                    await servicer.ModelInfer(split, _Context())  # type: ignore[arg-type]

            await models.unload(DIGITS)
            with pytest.raises(ModelNotReadyError, match="is not loaded"):
                await infer(good)
            await models.load(DIGITS)
            second = models.get(DIGITS)
            assert second is not first
            np.testing.assert_array_equal(_answer(await infer(good)), expected)
            checked = request.head.checked
            assert checked is not None and checked.model() is second
        finally:
            await models.close()

    asyncio.run(scenario())

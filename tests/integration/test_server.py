"""The real server over real gRPC channels: inference, classification, batching, streams."""

from __future__ import annotations

import io
import time
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from PIL import Image

from axon.client.common import AxonClientError, infer_request, response_arrays
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.model_card import ModelCard
from axon.model_repository import CARD_FILENAME, MODEL_FILENAME
from axon.preprocessing import load_image
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls
from axon.training.datasets import ImageDataset
from tests.support.repositories import BATCHED, DIGITS, PETS
from tests.support.stall_model import stall_request


def offline(repository: Path, name: str, version: int,
            batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Probabilities from onnxruntime in this process, one image per run: the unbatched truth."""
    path = repository / name / str(version) / MODEL_FILENAME
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["probabilities"], {"input": row[np.newaxis]})[0]
                           for row in batch])


def card(repository: Path, name: str, version: int = 1) -> ModelCard:
    return ModelCard.read_json(repository / name / str(version) / CARD_FILENAME)


def flat(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Images as [N, 784] float32 in [0, 1] (any values the model accepts will do here)."""
    return (images.reshape(len(images), -1) / 255).astype(np.float32)


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> AxonClient:
    client = AxonClient(server.address)
    client.wait_ready()
    return client


def test_liveness_readiness_and_metadata(client: AxonClient) -> None:
    assert client.inference.ServerLive(oip.ServerLiveRequest()).live
    assert client.inference.ServerReady(oip.ServerReadyRequest()).ready
    metadata = client.inference.ModelMetadata(oip.ModelMetadataRequest(name=DIGITS))
    assert list(metadata.versions) == ["1", "2"]  # version policy "all" in its config.json
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == \
        [("input", "FP32", [-1, 784])]
    assert [t.name for t in metadata.outputs] == ["logits", "probabilities"]
    assert metadata.properties["execution_provider"] == "CPUExecutionProvider"
    server = client.inference.ServerMetadata(oip.ServerMetadataRequest())
    assert server.name == "axon" and "statistics" in server.extensions


def test_classification_on_real_mnist_equals_offline_evaluation(
        client: AxonClient, mnist: ImageDataset, serving_repository: Path) -> None:
    """All 10,000 test images, half as PNG files and half as raw pixels, in 256-image calls."""
    images, labels = mnist.test.images, mnist.test.labels
    predicted = []
    for start in range(0, len(images), 256):
        chunk = images[start:start + 256]
        sources = [png(p[..., 0]) if i % 2 else p for i, p in enumerate(chunk)]
        answer = client.classify(sources, model=DIGITS, version="1", top_k=3)
        assert (answer.model_name, answer.model_version) == (DIGITS, "1")
        predicted += [result[0].index for result in answer.results]
        assert all(len(r) == 3 and r[0].probability >= r[1].probability >= r[2].probability
                   for r in answer.results)
    model = card(serving_repository, DIGITS)
    session = ort.InferenceSession(str(serving_repository / DIGITS / "1" / MODEL_FILENAME))
    (expected,) = session.run(["logits"], {"input": model.preprocessing.apply(images)})
    assert np.array_equal(np.array(predicted), expected.argmax(1))
    accuracy = float((np.array(predicted) == labels).mean())
    assert accuracy == pytest.approx(model.test_accuracy, abs=1e-12)
    assert accuracy > 0.85


def test_dynamic_batching_merges_concurrent_requests_exactly(
        client: AxonClient, mnist: ImageDataset, serving_repository: Path) -> None:
    """64 single-image requests sent while the model is busy -> they run together when it is
    free (the next batch takes everything queued), answers as if unbatched."""
    batch = card(serving_repository, BATCHED).preprocessing.apply(mnist.test.images[:64])
    stalled = client.inference.ModelInfer.future(stall_request(BATCHED, 1.0), timeout=30)
    time.sleep(0.3)
    (before,) = client.statistics(BATCHED)
    calls = [client.inference.ModelInfer.future(infer_request(BATCHED, row[np.newaxis]),
                                                timeout=30) for row in batch]
    answers = np.concatenate([response_arrays(c.result())["probabilities"] for c in calls])
    stalled.result()
    (after,) = client.statistics(BATCHED)
    executions = after.execution_count - before.execution_count - 1  # less the stall
    assert after.inference_count - before.inference_count == 64 + 1
    assert 1 <= executions <= 8, f"64 requests took {executions} executions"
    assert np.array_equal(answers, offline(serving_repository, BATCHED, 1, batch))
    sizes = {s.batch_size for s in after.batch_stats}
    assert max(sizes) >= 8


def test_requested_outputs_ids_and_typed_contents(client: AxonClient,
                                                  mnist: ImageDataset) -> None:
    batch = flat(mnist.test.images[:3])
    raw = client.inference.ModelInfer(infer_request(DIGITS, batch, outputs=["probabilities"],
                                                    request_id="req-7"))
    assert raw.id == "req-7" and [t.name for t in raw.outputs] == ["probabilities"]
    typed_request = oip.ModelInferRequest(model_name=DIGITS, inputs=[
        oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[3, 784],
                                               contents=oip.InferTensorContents(
                                                   fp32_contents=batch.ravel()))])
    typed = client.inference.ModelInfer(typed_request)
    assert typed.model_version == "2"  # no version asked: the highest loaded
    assert np.array_equal(response_arrays(typed)["probabilities"],
                          response_arrays(raw)["probabilities"])


def test_model_stream_infer_answers_each_request_and_survives_a_bad_one(
        client: AxonClient, mnist: ImageDataset) -> None:
    batch = flat(mnist.test.images[:20])
    requests = [infer_request(DIGITS, batch[i:i + 1], request_id=f"r{i}") for i in range(20)]
    requests.insert(10, infer_request("no-such-model", batch[:1], request_id="bad"))
    answers = {a.infer_response.id: a for a in client.inference.ModelStreamInfer(
        iter(requests), timeout=30)}
    assert set(answers) == {f"r{i}" for i in range(20)} | {"bad"}
    assert answers["bad"].error_message.startswith("NOT_FOUND: unknown model 'no-such-model'")
    for i in range(20):
        assert not answers[f"r{i}"].error_message
        single = client.infer(DIGITS, batch[i:i + 1])["probabilities"]
        assert np.array_equal(response_arrays(answers[f"r{i}"].infer_response)["probabilities"],
                              single)


def test_classify_stream_echoes_ids_and_reports_errors_in_band(
        client: AxonClient, mnist: ImageDataset) -> None:
    requests = [(f"img-{i}", cls.ClassifyRequest(model_name=DIGITS, images=[
        cls.Image(encoded=png(mnist.test.images[i][..., 0]))])) for i in range(30)]
    requests.append(("corrupt", cls.ClassifyRequest(model_name=DIGITS, images=[
        cls.Image(encoded=b"\x89PNG\r\n\x1a\n not really")])))
    answers = {a.id: a for a in client.classify_stream(iter(requests))}
    assert set(answers) == {i for i, _ in requests}
    assert answers["corrupt"].error.status == "INVALID_ARGUMENT"
    assert answers["corrupt"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "image 0" in answers["corrupt"].error.message
    unary = client.classify([png(mnist.test.images[i][..., 0]) for i in range(30)], model=DIGITS)
    for i in range(30):
        assert answers[f"img-{i}"].response.results[0].classes[0].index == \
            unary.results[i][0].index


def test_rgb_model_decodes_resizes_and_converts_like_training(
        client: AxonClient, serving_repository: Path) -> None:
    model = card(serving_repository, PETS)
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)  # not the model's 16x16
    grey = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)  # greyscale into an RGB model
    answer = client.classify([png(photo), photo, grey], model=PETS, top_k=2)
    assert [r[0].label in ("cats", "dogs") for r in answer.results] == [True] * 3
    expected_pixels = np.stack([load_image(png(photo), 16, 16, "RGB")] * 2 +
                               [load_image(png(grey), 16, 16, "RGB")])
    expected = offline(serving_repository, PETS, 1, model.preprocessing.apply(expected_pixels))
    got = np.array([[c.probability for c in sorted(r, key=lambda c: c.index)]
                    for r in answer.results])
    assert np.array_equal(got, expected)


def test_list_models_reports_provider_and_batching(client: AxonClient) -> None:
    described = {(m.name, m.version): m for m in client.models()}
    assert {(DIGITS, "1"), (DIGITS, "2"), (PETS, "1"), (BATCHED, "1")} <= set(described)
    pets = described[(PETS, "1")]
    assert list(pets.labels) == ["cats", "dogs"] and pets.image_channels == 3
    assert pets.execution_provider == "CPUExecutionProvider"
    assert described[(BATCHED, "1")].max_batch_size == 64  # its config.json's


def test_statistics_count_items_and_time(client: AxonClient, mnist: ImageDataset) -> None:
    (before,) = client.statistics(DIGITS, "1")
    client.infer(DIGITS, flat(mnist.test.images[:5]), version="1")
    (after,) = client.statistics(DIGITS, "1")
    assert after.inference_count - before.inference_count == 5
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.last_inference >= int(time.time() * 1000) - 60_000
    with pytest.raises(AxonClientError) as error:
        client.statistics("no-such-model")
    assert error.value.code == grpc.StatusCode.NOT_FOUND

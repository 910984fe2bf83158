"""Bad input: each case gets a precise status and a useful message, and the next good request
still succeeds. Requests are built with the raw stubs so they can be wrong in every way."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from PIL import Image

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls
from tests.support.repositories import BROKEN, DIGITS, PETS

Tensor = oip.ModelInferRequest.InferInputTensor
GOOD = np.full((1, 784), 0.5, dtype=np.float32)
CODE = grpc.StatusCode


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` greyscale pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def real_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def infer(**fields: object) -> Callable[[AxonClient], object]:
    request = oip.ModelInferRequest(**fields)  # type: ignore[arg-type]
    return lambda client: client.inference.ModelInfer(request, timeout=10)


def tensor(shape: list[int], datatype: str = "FP32", name: str = "input") -> Tensor:
    return Tensor(name=name, datatype=datatype, shape=shape)


def raw(*arrays: np.ndarray) -> list[bytes]:
    return [a.tobytes() for a in arrays]


def classify(*images: cls.Image, model: str = DIGITS,
             top_k: int = 1) -> Callable[[AxonClient], object]:
    request = cls.ClassifyRequest(model_name=model, images=images, top_k=top_k)
    return lambda client: client.classifier.Classify(request, timeout=10)


def pixels(height: int, width: int, channels: int, size: int | None = None) -> cls.Image:
    data = b"\x80" * (height * width * channels if size is None else size)
    return cls.Image(pixels=cls.PixelTensor(height=height, width=width, channels=channels,
                                            data=data))


@dataclass(frozen=True)
class Case:
    call: Callable[[AxonClient], object]
    code: grpc.StatusCode
    message: str


CASES = {
    "unknown model": Case(infer(model_name="resnet", inputs=[tensor([1, 784])],
                                raw_input_contents=raw(GOOD)),
                          CODE.NOT_FOUND, "unknown model 'resnet'; loaded models: "),
    "unknown version": Case(infer(model_name=DIGITS, model_version="9",
                                  inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD)),
                            CODE.NOT_FOUND, "has no loaded version 9 (loaded: 1, 2)"),
    "version not a number": Case(infer(model_name=DIGITS, model_version="latest",
                                       inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD)),
                                 CODE.INVALID_ARGUMENT, "must be a positive integer"),
    "no model name": Case(infer(inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD)),
                          CODE.INVALID_ARGUMENT, "a model name is required"),
    "wrong dtype": Case(infer(model_name=DIGITS, inputs=[tensor([1, 784], "INT32")],
                              raw_input_contents=raw(GOOD.astype(np.int32))),
                        CODE.INVALID_ARGUMENT, "has datatype 'INT32'; mnist takes one input "
                        "'input' FP32 [-1, 784]"),
    "wrong shape": Case(infer(model_name=DIGITS, inputs=[tensor([1, 783])],
                              raw_input_contents=raw(GOOD[:, :783])),
                        CODE.INVALID_ARGUMENT, "must have shape [N, 784] with N from 1 to 256, "
                        "got [1, 783]"),
    "wrong rank": Case(infer(model_name=DIGITS, inputs=[tensor([784])],
                             raw_input_contents=raw(GOOD)),
                       CODE.INVALID_ARGUMENT, "got [784]"),
    "absurd shape with no contents": Case(
        infer(model_name=DIGITS, inputs=[tensor([0, 2**62, 2**62])], raw_input_contents=[b""]),
        CODE.INVALID_ARGUMENT, "got [0, 4611686018427387904, 4611686018427387904]"),
    "huge batch declared, nothing sent": Case(
        infer(model_name=DIGITS, inputs=[tensor([2**40, 784])]),
        CODE.INVALID_ARGUMENT, "holds 1099511627776 items"),
    "a 100 kB model name": Case(infer(model_name="m" * 100_000, inputs=[tensor([1, 784])],
                                      raw_input_contents=raw(GOOD)),
                                CODE.NOT_FOUND, "unknown model 'mmmmmmmmmmmm"),
    "a Triton extension parameter": Case(
        infer(model_name=DIGITS, inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD),
              outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(
                  name="probabilities",
                  parameters={"shared_memory_region": oip.InferParameter(string_param="r")})]),
        CODE.INVALID_ARGUMENT, "parameter 'shared_memory_region' asks for the shared-memory "
        "extension, which Axon does not implement"),
    "an output requested twice": Case(
        infer(model_name=DIGITS, inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD),
              outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")]
              * 2),
        CODE.INVALID_ARGUMENT, "output 'probabilities' is requested twice; name each output "
        "at most once"),
    "a hundred thousand outputs requested": Case(
        infer(model_name=DIGITS, inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD),
              outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="logits")]
              * 100_000),
        CODE.INVALID_ARGUMENT,
        "100,000 outputs requested; mnist has 2 ('logits', 'probabilities')"),
    "a classification count that is not a count": Case(
        infer(model_name=DIGITS, inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD),
              outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(
                  name="probabilities",
                  parameters={"classification": oip.InferParameter(int64_param=0)})]),
        CODE.INVALID_ARGUMENT, "parameter 'classification' of output 'probabilities' must be "
        "a positive integer (the number of classes), got '0'"),
    "a timeout that is not a duration": Case(
        infer(model_name=DIGITS, inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD),
              parameters={"timeout": oip.InferParameter(string_param="1s")}),
        CODE.INVALID_ARGUMENT, "parameter 'timeout' must be a non-negative integer (a timeout "
        "in microseconds), got \"'1s'\""),
    "negative dimension": Case(infer(model_name=DIGITS, inputs=[tensor([-1, 784])],
                                     raw_input_contents=raw(GOOD)),
                               CODE.INVALID_ARGUMENT, "holds -1 items; expected [N, 784]"),
    "byte length not matching shape": Case(
        infer(model_name=DIGITS, inputs=[tensor([2, 784])], raw_input_contents=raw(GOOD)),
        CODE.INVALID_ARGUMENT, "has 3,136 bytes of raw contents; shape [2, 784] of FP32 "
        "needs 6,272"),
    "NaN": Case(infer(model_name=DIGITS, inputs=[tensor([1, 784])],
                      raw_input_contents=raw(np.where(np.arange(784) == 7, np.nan, GOOD)
                                             .astype(np.float32))),
                CODE.INVALID_ARGUMENT, "holds 1 NaN or infinite values"),
    "Inf": Case(infer(model_name=DIGITS, inputs=[tensor([1, 784])],
                      raw_input_contents=raw(np.full((1, 784), np.inf, np.float32))),
                CODE.INVALID_ARGUMENT, "holds 784 NaN or infinite values"),
    "empty batch": Case(infer(model_name=DIGITS, inputs=[tensor([0, 784])],
                              raw_input_contents=[b""]),
                        CODE.INVALID_ARGUMENT, "holds 0 items"),
    "batch too large": Case(infer(model_name=DIGITS, inputs=[tensor([257, 784])],
                                  raw_input_contents=raw(np.zeros((257, 784), np.float32))),
                            CODE.INVALID_ARGUMENT, "holds 257 items; expected [N, 784] with N "
                            "from 1 to 256"),
    "missing inputs": Case(infer(model_name=DIGITS), CODE.INVALID_ARGUMENT,
                           "the request has no inputs"),
    "wrong input name": Case(infer(model_name=DIGITS, inputs=[tensor([1, 784], name="pixels")],
                                   raw_input_contents=raw(GOOD)),
                             CODE.INVALID_ARGUMENT, "missing input 'input' (got 'pixels')"),
    "extra input": Case(infer(model_name=DIGITS, inputs=[tensor([1, 784]),
                                                         tensor([1, 2], name="extra")],
                              raw_input_contents=raw(GOOD, GOOD[:, :2])),
                        CODE.INVALID_ARGUMENT, "unexpected inputs 'extra'"),
    "wrong output name": Case(infer(model_name=DIGITS, inputs=[tensor([1, 784])],
                                    raw_input_contents=raw(GOOD),
                                    outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(
                                        name="scores")]),
                              CODE.INVALID_ARGUMENT, "unknown output 'scores' requested"),
    "raw and typed contents together": Case(
        infer(model_name=DIGITS, inputs=[Tensor(name="input", datatype="FP32", shape=[1, 784],
                                                contents=oip.InferTensorContents(
                                                    fp32_contents=GOOD.ravel()))],
              raw_input_contents=raw(GOOD)),
        CODE.INVALID_ARGUMENT, "both typed contents and raw_input_contents"),
    "typed contents too short": Case(
        infer(model_name=DIGITS, inputs=[Tensor(name="input", datatype="FP32", shape=[1, 784],
                                                contents=oip.InferTensorContents(
                                                    fp32_contents=[0.5] * 700))]),
        CODE.INVALID_ARGUMENT, "has 700 fp32_contents values; shape [1, 784] needs 784"),
    "more raw contents than inputs": Case(
        infer(model_name=DIGITS, inputs=[tensor([1, 784])], raw_input_contents=raw(GOOD, GOOD)),
        CODE.INVALID_ARGUMENT, "raw_input_contents has 2 entries for 1 input"),
    "message over the size limit": Case(
        infer(model_name=DIGITS, inputs=[tensor([2700, 784])],
              raw_input_contents=raw(np.zeros((2700, 784), np.float32))),
        CODE.RESOURCE_EXHAUSTED, "larger than max"),
    "corrupt PNG": Case(classify(cls.Image(encoded=b"\x89PNG\r\n\x1a\n garbage")),
                        CODE.INVALID_ARGUMENT, "image 0: 16-byte image: not a decodable"),
    "truncated PNG": Case(classify(cls.Image(encoded=real_png()[:40])),
                          CODE.INVALID_ARGUMENT, "not a decodable PNG/JPEG image"),
    "decompression bomb": Case(classify(cls.Image(encoded=png_declaring(5000, 5000))),
                               CODE.INVALID_ARGUMENT, "declares 5000x5000 pixels (25,000,000); "
                               "the limit is 16,777,216"),
    "huge decompression bomb": Case(classify(cls.Image(encoded=png_declaring(10**5, 10**5))),
                                    CODE.INVALID_ARGUMENT, "image 0:"),
    "empty image": Case(classify(cls.Image(encoded=b"")), CODE.INVALID_ARGUMENT,
                        "image 0: the image is empty"),
    "image with no content": Case(classify(cls.Image()), CODE.INVALID_ARGUMENT,
                                  "image 0: the image has neither encoded bytes nor pixels"),
    "raw pixels of the wrong size": Case(classify(pixels(28, 28, 1, size=700)),
                                         CODE.INVALID_ARGUMENT, "28x28x1 uint8 pixels need 784 "
                                         "bytes, got 700"),
    "raw pixels with 2 channels": Case(classify(pixels(28, 28, 2)), CODE.INVALID_ARGUMENT,
                                       "1 or 3 channels"),
    "no images": Case(classify(), CODE.INVALID_ARGUMENT, "the request holds no images"),
    "too many images": Case(classify(*[pixels(28, 28, 1)] * 257), CODE.INVALID_ARGUMENT,
                            "holds 257 images; model mnist takes at most 256"),
    "top_k above the class count": Case(classify(pixels(28, 28, 1), top_k=11),
                                        CODE.INVALID_ARGUMENT, "top_k must be between 1 and 10"),
    "load an unknown model": Case(
        lambda c: c.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(
            model_name="resnet")), CODE.NOT_FOUND, "model 'resnet' is not in the model "
        "repository"),
    "load a model name that is a path": Case(
        lambda c: c.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(
            model_name="../etc")), CODE.INVALID_ARGUMENT, "invalid model name '../etc'"),
    "load an absolute path": Case(
        lambda c: c.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(
            model_name="/etc/passwd")), CODE.INVALID_ARGUMENT, "invalid model name '/etc/passwd'"),
    "unload a nested path": Case(
        lambda c: c.inference.RepositoryModelUnload(oip.RepositoryModelUnloadRequest(
            model_name=f"{DIGITS}/1")), CODE.INVALID_ARGUMENT, f"invalid model name '{DIGITS}/1'"),
    "model ready with a version that is a path": Case(
        lambda c: c.inference.ModelReady(oip.ModelReadyRequest(name=DIGITS, version="1/../2")),
        CODE.INVALID_ARGUMENT, "must be a positive integer"),
    "load a corrupt model": Case(
        lambda c: c.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(
            model_name=BROKEN)), CODE.FAILED_PRECONDITION,
        "broken/1/model.onnx: onnxruntime cannot load it"),
    "load with a config parameter": Case(
        lambda c: c.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(
            model_name=PETS, parameters={"config": oip.ModelRepositoryParameter(
                string_param="{}")})), CODE.INVALID_ARGUMENT, "unsupported parameters 'config'"),
    "unload a model not loaded": Case(
        lambda c: c.inference.RepositoryModelUnload(oip.RepositoryModelUnloadRequest(
            model_name="resnet")), CODE.NOT_FOUND, "model 'resnet' is not loaded"),
    "index of another repository": Case(
        lambda c: c.inference.RepositoryIndex(oip.RepositoryIndexRequest(
            repository_name="elsewhere")), CODE.NOT_FOUND, "unknown repository 'elsewhere'"),
    "model ready with a bad version": Case(
        lambda c: c.inference.ModelReady(oip.ModelReadyRequest(name=DIGITS, version="x")),
        CODE.INVALID_ARGUMENT, "must be a positive integer"),
    "statistics of a version without a model": Case(
        lambda c: c.inference.ModelStatistics(oip.ModelStatisticsRequest(version="1")),
        CODE.INVALID_ARGUMENT, "a version needs a model name"),
}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> AxonClient:
    client = AxonClient(server.address)
    client.wait_ready()
    return client


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_a_precise_status_and_the_server_carries_on(
        client: AxonClient, case: Case) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        case.call(client)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == case.code, error.details()
    assert case.message in (error.details() or ""), error.details()
    assert "Traceback" not in (error.details() or "")
    assert len(error.details() or "") < 1000, "messages stay readable whatever the input"
    good = client.inference.ModelInfer(infer_request(DIGITS, GOOD), timeout=10)
    assert good.outputs[1].shape == [1, 10]
    assert len(client.classify([real_png()], model=DIGITS).results) == 1



def test_per_image_errors_fail_only_the_bad_images(client: AxonClient) -> None:
    """With per_image_errors a request's bad images each get their own INVALID_ARGUMENT and the
    good ones are classified as they would be alone; without it, the first bad one fails the
    request, named by its position."""
    good = real_png()
    images = [cls.Image(encoded=good), cls.Image(encoded=good[:40]), cls.Image(encoded=b""),
              cls.Image(), cls.Image(encoded=png_declaring(5000, 5000)),
              cls.Image(pixels=cls.PixelTensor(height=28, width=28, channels=1, data=b"x")),
              cls.Image(encoded=good)]
    request = cls.ClassifyRequest(model_name=DIGITS, images=images, top_k=2,
                                  per_image_errors=True)
    answer = client.classifier.Classify(request, timeout=10)
    alone = client.classifier.Classify(cls.ClassifyRequest(
        model_name=DIGITS, images=[cls.Image(encoded=good)], top_k=2), timeout=10).results[0]
    results = list(answer.results)
    assert len(results) == len(images)
    for index in (0, 6):
        assert not results[index].HasField("error") and results[index] == alone
    expected = {1: "not a decodable PNG/JPEG image", 2: "the image is empty",
                3: "the image has neither encoded bytes nor pixels",
                4: "declares 5000x5000 pixels", 5: "28x28x1 uint8 pixels need 784 bytes"}
    for index, message in expected.items():
        error = results[index].error
        assert (error.code, error.status) == (CODE.INVALID_ARGUMENT.value[0], "INVALID_ARGUMENT")
        assert message in error.message and not results[index].classes
        assert not error.message.startswith("image "), "its place in the answer says which"
    with pytest.raises(grpc.RpcError) as caught:
        client.classifier.Classify(cls.ClassifyRequest(model_name=DIGITS, images=images),
                                   timeout=10)
    assert caught.value.code() == CODE.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("image 1: ")


def test_a_request_of_only_bad_images_with_per_image_errors_is_answered(
        client: AxonClient) -> None:
    request = cls.ClassifyRequest(model_name=DIGITS, per_image_errors=True,
                                  images=[cls.Image(encoded=b"junk"), cls.Image()])
    results = client.classifier.Classify(request, timeout=10).results
    assert [r.error.status for r in results] == ["INVALID_ARGUMENT"] * 2

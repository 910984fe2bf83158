"""Fuzzing Classify and ClassifyStream: random bytes, broken and lying image files, raw pixel
tensors whose sizes disagree, and random top_k.

The encoded images come from tests/fuzz/image_strategies.py.
"""

from __future__ import annotations

import grpc
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol.v1 import classification_pb2 as cls
from tests.fuzz.image_strategies import encoded_images, pixels_wide, valid_files
from tests.fuzz.properties import (
    CODE,
    assert_still_serving,
    check_call,
    check_rpc_error,
    check_status,
    fuzz_settings,
)
from tests.fuzz.strategies import served_or_any_name, versions
from tests.support.images import real_png, tiff_with_float_strip_offsets
from tests.support.repositories import DIGITS, PETS


@st.composite
def pixel_tensors(draw: st.DrawFn) -> cls.PixelTensor:
    height, width = draw(pixels_wide), draw(pixels_wide)
    channels = draw(st.one_of(st.sampled_from([1, 3]), st.integers(0, 2**32 - 1)))
    needed = height * width * channels
    if needed <= 200_000 and draw(st.booleans()):
        size = max(0, needed + draw(st.sampled_from([0, 0, 0, -1, 1])))
        data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(size)
    else:
        data = draw(st.binary(max_size=64))
    return cls.PixelTensor(height=height, width=width, channels=channels, data=data)


@st.composite
def valid_pixel_tensors(draw: st.DrawFn) -> cls.PixelTensor:
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    channels = draw(st.sampled_from([1, 3]))
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(height * width * channels)
    return cls.PixelTensor(height=height, width=width, channels=channels, data=data)


valid_images = st.one_of(st.builds(lambda data: cls.Image(encoded=data), valid_files),
                         st.builds(lambda pixels: cls.Image(pixels=pixels), valid_pixel_tensors()))
hostile_images = st.one_of(
    *(kind.map(lambda data: cls.Image(encoded=data)) for kind in encoded_images),
    pixel_tensors().map(lambda pixels: cls.Image(pixels=pixels)), st.just(cls.Image()))


@st.composite
def image_requests(draw: st.DrawFn) -> cls.ClassifyRequest:
    """One hostile image among valid ones, for a served model and a top_k it allows: the
    hostile image decides the answer."""
    images = draw(st.lists(valid_images, max_size=2))
    images.insert(draw(st.integers(0, len(images))), draw(hostile_images))
    return cls.ClassifyRequest(model_name=draw(st.sampled_from([DIGITS, PETS])),
                               images=images, top_k=draw(st.integers(0, 2)))


@st.composite
def envelope_requests(draw: st.DrawFn) -> cls.ClassifyRequest:
    """Random everything around the images: model, version, top_k, how many images."""
    image_lists = st.one_of(st.lists(st.one_of(valid_images, hostile_images), max_size=4),
                            st.builds(lambda image, count: [image] * count,
                                      valid_images, st.integers(250, 300)))
    return cls.ClassifyRequest(
        model_name=draw(served_or_any_name),
        model_version=draw(st.one_of(st.just(""), versions)), images=draw(image_lists),
        top_k=draw(st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1))))


classify_requests = st.one_of(image_requests(), envelope_requests())


def assert_classifies(client: AxonClient) -> None:
    """A good Classify succeeds: the image decoders are still at work, too."""
    request = cls.ClassifyRequest(model_name=DIGITS, images=[cls.Image(encoded=real_png())])
    assert len(client.classifier.Classify(request, timeout=10).results) == 1


@fuzz_settings()
@given(request=image_requests())
# Found by fuzzing the decoder: Pillow raised TypeError, which the decoder did not expect, and
# the caller got INTERNAL (with a traceback in the log) for a broken file.
@example(request=cls.ClassifyRequest(model_name=DIGITS, images=[
    cls.Image(encoded=tiff_with_float_strip_offsets())]))
def test_classify_answers_each_image_deliberately(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, request: cls.ClassifyRequest) -> None:
    check_classify(fuzz_server, fuzz_client, request)


@fuzz_settings(share=1 / 2)
@given(request=envelope_requests())
def test_classify_answers_any_request_deliberately(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, request: cls.ClassifyRequest) -> None:
    check_classify(fuzz_server, fuzz_client, request)


def check_classify(server: ServerProcess, client: AxonClient,
                   request: cls.ClassifyRequest) -> None:
    """A success answers every image with top_k classes; a failure is deliberate; then the
    server serves both APIs."""
    response = check_call(lambda: client.classifier.Classify(request, timeout=30))
    if response is not None:
        assert len(response.results) == len(request.images)
        assert {len(result.classes) for result in response.results} == {request.top_k or 1}
    assert_still_serving(server, client)
    assert_classifies(client)


@fuzz_settings(share=1 / 3)
@given(stream=st.lists(classify_requests, min_size=1, max_size=4))
def test_classify_stream_answers_each_message_deliberately(
        fuzz_server: ServerProcess, fuzz_client: AxonClient,
        stream: list[cls.ClassifyRequest]) -> None:
    """Each message gets its own answer and the stream ends OK -- unless a message is over the
    size limit, which ends it RESOURCE_EXHAUSTED."""
    messages = [cls.ClassifyStreamRequest(id=str(i), request=r) for i, r in enumerate(stream)]
    answers = fuzz_client.classifier.ClassifyStream(iter(messages), timeout=30)
    try:
        received = list(answers)
    except grpc.RpcError as error:
        assert check_rpc_error(error) == CODE.RESOURCE_EXHAUSTED
    else:
        assert sorted(answer.id for answer in received) == [m.id for m in messages]
        for answer in received:
            if answer.HasField("error"):
                code = check_status(CODE.__members__[answer.error.status], answer.error.message)
                assert code.value[0] == answer.error.code
    assert_still_serving(fuzz_server, fuzz_client)

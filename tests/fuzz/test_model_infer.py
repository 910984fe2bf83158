"""Fuzzing ModelInfer and ModelStreamInfer with random requests and nearly valid ones.

Random requests exercise the checks at the door (names, versions, datatypes, shapes, contents);
nearly valid ones -- a correct request with a few things broken, or none -- get past them, to
the value checks, the batcher and the model.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from tests.fuzz.properties import (
    CODE,
    MAX_MESSAGE_BYTES,
    assert_still_serving,
    check_call,
    check_rpc_error,
    check_stream_error,
    fuzz_settings,
)
from tests.fuzz.strategies import (
    long_text,
    model_names,
    parameters,
    served_or_any_name,
    short_text,
    versions,
)
from tests.support.repositories import DIGITS, PETS

Tensor = oip.ModelInferRequest.InferInputTensor
Output = oip.ModelInferRequest.InferRequestedOutputTensor
Request = oip.ModelInferRequest
Mutation = Callable[[st.DrawFn, Request], None]

MODEL_INPUTS = ((DIGITS, (784,)), (PETS, (3, 16, 16)))
"""The fuzz server's models and the shape of one item of their input."""
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES")
"""Every Open Inference Protocol datatype."""

datatypes = st.one_of(st.sampled_from(DATATYPES),
                      st.sampled_from(["fp32", "FP32 ", "FLOAT", "TYPE_FP32", ""]), short_text)
dimensions = st.one_of(st.integers(-3, 1_024),
                       st.sampled_from([784, 3, 16, 256, 257, 2**31, 2**32, 2**62, 2**63 - 1,
                                        -2**63]),
                       st.integers(-2**63, 2**63 - 1))
shapes = st.one_of(st.lists(dimensions, max_size=10),
                   st.builds(lambda dimension, rank: [dimension] * rank,
                             dimensions, st.integers(10, 5_000)))
input_names = st.one_of(st.sampled_from(["input", "INPUT", "input ", "logits", ""]),
                        short_text, long_text)
typed_contents = st.builds(
    oip.InferTensorContents,
    bool_contents=st.lists(st.booleans(), max_size=8),
    int_contents=st.lists(st.integers(-2**31, 2**31 - 1), max_size=8),
    int64_contents=st.lists(st.integers(-2**63, 2**63 - 1), max_size=8),
    uint_contents=st.lists(st.integers(0, 2**32 - 1), max_size=8),
    uint64_contents=st.lists(st.integers(0, 2**64 - 1), max_size=8),
    fp32_contents=st.lists(st.floats(width=32), max_size=8),
    fp64_contents=st.lists(st.floats(), max_size=8),
    bytes_contents=st.lists(st.binary(max_size=16), max_size=4))
raw_contents = st.one_of(st.lists(st.binary(max_size=64), max_size=3),
                         st.builds(lambda piece, times: [piece * times],
                                   st.binary(min_size=1, max_size=8), st.integers(1, 100_000)))
outputs = st.builds(Output, name=st.one_of(st.sampled_from(["logits", "probabilities", ""]),
                                           short_text),
                    parameters=parameters)


@st.composite
def random_tensors(draw: st.DrawFn) -> Tensor:
    tensor = Tensor(name=draw(input_names), datatype=draw(datatypes), shape=draw(shapes),
                    parameters=draw(parameters))
    if draw(st.booleans()):
        tensor.contents.CopyFrom(draw(typed_contents))
    return tensor


many_inputs = st.builds(lambda count, stem: [Tensor(name=f"{stem}{i}", datatype="FP32",
                                                    shape=[1, 784]) for i in range(count)],
                        st.integers(20, 400), st.sampled_from(["x", "input", "n" * 80]))
"""Hundreds of inputs: every name could end up in one error message."""


@st.composite
def random_requests(draw: st.DrawFn) -> Request:
    return Request(model_name=draw(served_or_any_name),
                   model_version=draw(st.one_of(st.just(""), versions)),
                   id=draw(st.one_of(short_text, long_text)), parameters=draw(parameters),
                   inputs=draw(st.one_of(st.lists(random_tensors(), max_size=3), many_inputs)),
                   outputs=draw(st.lists(outputs, max_size=3)),
                   raw_input_contents=draw(raw_contents))


def _retype(draw: st.DrawFn, request: Request) -> None:
    request.inputs[0].datatype = draw(datatypes)


def _reshape(draw: st.DrawFn, request: Request) -> None:
    shape = request.inputs[0].shape
    if shape:
        shape[draw(st.integers(0, len(shape) - 1))] = draw(dimensions)


def _change_rank(draw: st.DrawFn, request: Request) -> None:
    shape = request.inputs[0].shape
    if len(shape) > 0 and draw(st.booleans()):
        del shape[-1]
    else:
        shape.append(draw(dimensions))


def _resize_contents(draw: st.DrawFn, request: Request) -> None:
    tensor = request.inputs[0]
    if request.raw_input_contents:
        raw = request.raw_input_contents[0]
        cut = draw(st.integers(0, len(raw) + 16))
        request.raw_input_contents[0] = raw[:cut] + bytes(max(0, cut - len(raw)))
    else:
        values = list(tensor.contents.fp32_contents)
        tensor.contents.fp32_contents[:] = values[:draw(st.integers(0, len(values) + 4))]


def _both_contents(draw: st.DrawFn, request: Request) -> None:
    request.inputs[0].contents.fp32_contents.append(draw(st.floats(width=32)))
    request.raw_input_contents.append(draw(st.binary(max_size=16)))


def _extra_input(draw: st.DrawFn, request: Request) -> None:
    request.inputs.append(draw(random_tensors()))
    if len(request.raw_input_contents) > 0 and draw(st.booleans()):
        request.raw_input_contents.append(draw(st.binary(max_size=64)))


def _rename(draw: st.DrawFn, request: Request) -> None:
    request.inputs[0].name = draw(input_names)


def _add_parameters(draw: st.DrawFn, request: Request) -> None:
    target = request if draw(st.booleans()) else request.inputs[0]
    for key, value in draw(parameters).items():
        target.parameters[key].CopyFrom(value)


def _ask_outputs(draw: st.DrawFn, request: Request) -> None:
    request.outputs.extend(draw(st.lists(outputs, min_size=1, max_size=4)))


def _other_version(draw: st.DrawFn, request: Request) -> None:
    request.model_version = draw(versions)


def _other_model(draw: st.DrawFn, request: Request) -> None:
    request.model_name = draw(model_names)


def _non_finite(draw: st.DrawFn, request: Request) -> None:
    value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    tensor = request.inputs[0]
    if request.raw_input_contents:
        raw = bytearray(request.raw_input_contents[0])
        at = draw(st.integers(0, max(0, len(raw) // 4 - 1))) * 4
        raw[at:at + 4] = np.float32(value).astype("<f4").tobytes()
        request.raw_input_contents[0] = bytes(raw)
    elif tensor.contents.fp32_contents:
        contents = tensor.contents.fp32_contents
        contents[draw(st.integers(0, len(contents) - 1))] = value


MUTATIONS: dict[str, Mutation] = {
    "retype": _retype, "reshape": _reshape, "change rank": _change_rank,
    "resize contents": _resize_contents, "both contents": _both_contents,
    "extra input": _extra_input, "rename": _rename, "add parameters": _add_parameters,
    "ask outputs": _ask_outputs, "other version": _other_version, "other model": _other_model,
    "non-finite": _non_finite,
}


@st.composite
def nearly_valid_requests(draw: st.DrawFn) -> Request:
    """A correct request for a served model (any finite float32 values, extremes included),
    then up to three mutations."""
    name, item_shape = draw(st.sampled_from(MODEL_INPUTS))
    rows = draw(st.one_of(st.integers(1, 4), st.just(256)))
    largest = float(np.finfo(np.float32).max)
    finite = st.floats(-largest, largest, width=32)
    batch = draw(arrays(np.float32, (rows, *item_shape), elements=finite, fill=finite))
    request = Request(model_name=name,
                      inputs=[Tensor(name="input", datatype="FP32", shape=batch.shape)])
    if draw(st.booleans()):
        request.raw_input_contents.append(batch.astype("<f4").tobytes())
    else:
        request.inputs[0].contents.fp32_contents.extend(batch.ravel().tolist())
    for mutation in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=3)):
        MUTATIONS[mutation](draw, request)
    return request


requests = st.one_of(nearly_valid_requests(), random_requests())


# Found by this test: each name, and each dimension, was listed in the error message, so
# enough of them made it longer than gRPC delivers (16 KiB): the caller got RESOURCE_EXHAUSTED,
# "received metadata size exceeds hard limit", instead of INVALID_ARGUMENT and the reason.
MANY_NAMES = Request(model_name=DIGITS, inputs=[
    Tensor(name=f"{'n' * 80}{i}", datatype="FP32", shape=[1, 784]) for i in range(400)])
MANY_DIMENSIONS = Request(model_name=DIGITS, inputs=[
    Tensor(name="input", datatype="FP32", shape=[1] * 5_000)], raw_input_contents=[b"\0" * 4])

OVERSIZED = Request(model_name=DIGITS,
                    inputs=[Tensor(name="input", datatype="FP32", shape=[1, 784])],
                    raw_input_contents=[bytes(MAX_MESSAGE_BYTES)])
"""Over the message limit: gRPC refuses it before the server sees it (RESOURCE_EXHAUSTED)."""


@fuzz_settings()
@given(request=requests)
@example(request=MANY_NAMES)
@example(request=MANY_DIMENSIONS)
@example(request=OVERSIZED)
def test_model_infer_answers_deliberately(fuzz_server: ServerProcess, fuzz_client: AxonClient,
                                          request: Request) -> None:
    response = check_call(lambda: fuzz_client.inference.ModelInfer(request, timeout=30))
    if response is not None:  # each output holds one row per item sent
        rows = request.inputs[0].shape[0]
        assert [output.shape[0] for output in response.outputs] == [rows] * len(response.outputs)
    assert_still_serving(fuzz_server, fuzz_client)


@fuzz_settings(share=1 / 3)
@given(stream=st.lists(requests, min_size=1, max_size=4))
def test_model_stream_infer_answers_each_message_deliberately(
        fuzz_server: ServerProcess, fuzz_client: AxonClient, stream: list[Request]) -> None:
    """Each message gets its own answer (success or a deliberate error) and the stream ends
    OK -- unless a message is over the size limit, which ends it RESOURCE_EXHAUSTED."""
    answers = fuzz_client.inference.ModelStreamInfer(iter(stream), timeout=30)
    try:
        errors = [answer.error_message for answer in answers]
    except grpc.RpcError as error:
        assert check_rpc_error(error) == CODE.RESOURCE_EXHAUSTED
    else:
        assert len(errors) == len(stream)
        for text in errors:
            check_stream_error(text)
    assert_still_serving(fuzz_server, fuzz_client)

"""Open Inference Protocol tensors (protobuf) <-> numpy; the rules are server/tensors.py's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from axon.protocol import open_inference_pb2 as pb
from axon.server.batching import Array
from axon.server.errors import InvalidInputError
from axon.server.served_model import FP32_BYTES, OutputChoice, ResponseTemplate, ServedModel
from axon.server.tensors import (
    CLASSIFICATION,
    MODEL_DATATYPE,
    TIMEOUT,
    WIRE_FP32,
    OutputTensor,
    batch_from_bytes,
    batch_from_values,
    check_input,
    check_input_names,
    check_output_count,
    choose_output,
    deadline_from_timeout,
    output_tensors,
    refuse_repeated,
    refuse_unsupported,
)
from axon.server.wire import bytes_field, field_tag, varint

_MAX_TEMPLATES = 1024
"""Response templates kept per model version (one per batch size and output choice)."""
_ID = field_tag(pb.ModelInferResponse.ID_FIELD_NUMBER)
_RAW_OUTPUT_CONTENTS = field_tag(pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER)
_STREAM_INFER_RESPONSE = field_tag(pb.ModelStreamInferResponse.INFER_RESPONSE_FIELD_NUMBER)
_SHAPE = attrgetter("shape")


def parameter_value(parameter: pb.InferParameter) -> Any:
    """An InferParameter's value, whichever field of its oneof is set (None: none is)."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def requested_outputs(request: pb.ModelInferRequest,
                      model: ServedModel) -> tuple[OutputChoice, ...]:
    """The outputs to return, in request order (every output when none is named)."""
    if not request.outputs:
        return model.output_choices
    check_output_count(model, len(request.outputs))
    choices: list[OutputChoice] = []
    for output in request.outputs:
        refuse_repeated(output.name, choices, model)
        classification = None
        if output.parameters:
            refuse_unsupported(output.parameters)
            if CLASSIFICATION in output.parameters:
                classification = parameter_value(output.parameters[CLASSIFICATION])
        choices.append(choose_output(model, output.name, classification))
    return tuple(choices)


def request_deadline(request: pb.ModelInferRequest, started: float) -> float | None:
    """The deadline the request's Triton ``timeout`` parameter (microseconds) sets, if any."""
    if TIMEOUT not in request.parameters:
        return None
    return deadline_from_timeout(parameter_value(request.parameters[TIMEOUT]), started)


def request_batch(request: pb.ModelInferRequest, model: ServedModel) -> Array:
    """The request's input tensor as a float32 array the model accepts, or InvalidInputError.

    Every request passes here, so a well-formed one (the model's input, FP32, raw contents of
    the declared shape) is checked in a few comparisons; anything else takes the path that
    says precisely what is wrong.
    """
    if request.parameters:
        refuse_unsupported(request.parameters)
    inputs = request.inputs
    if len(inputs) == 1:
        tensor = inputs[0]
        shape = tuple(tensor.shape)
        raw_contents = request.raw_input_contents
        # shape[1:] equal to the item shape makes shape[0] exist.
        if tensor.name == model.input_name and tensor.datatype == MODEL_DATATYPE \
                and shape[1:] == model.item_shape and 0 < shape[0] <= model.max_batch_size \
                and len(raw_contents) == 1 and not tensor.parameters \
                and not tensor.HasField("contents"):
            raw = raw_contents[0]
            if len(raw) == shape[0] * model.item_bytes:
                batch: Array = np.frombuffer(raw, dtype=WIRE_FP32).reshape(shape)
                model.check_values(batch)
                return batch
    return _checked_batch(request, model)


def _checked_batch(request: pb.ModelInferRequest, model: ServedModel) -> Array:
    """``request_batch`` for any request: each rule in turn, the first broken one raised."""
    inputs = request.inputs
    check_input_names(model, [tensor.name for tensor in inputs])
    tensor = inputs[0]
    shape = check_input(model, tensor.datatype, tensor.shape)
    if tensor.parameters:
        refuse_unsupported(tensor.parameters)
    raw_contents = request.raw_input_contents
    if raw_contents:
        if len(raw_contents) != 1:
            raise InvalidInputError(f"raw_input_contents has {len(raw_contents)} entries for 1 "
                                    "input")
        if tensor.HasField("contents"):
            raise InvalidInputError(f"input {tensor.name!r} has both typed contents and "
                                    "raw_input_contents; send one or the other")
        return batch_from_bytes(model, shape, raw_contents[0])
    return batch_from_values(model, shape, tensor.contents.fp32_contents)


def infer_response(request_id: str, model: ServedModel, outputs: Sequence[Array],
                   choices: tuple[OutputChoice, ...]) -> bytes:
    """The serialized ModelInferResponse to the request ``request_id``: raw contents, one entry
    per requested output.

    Everything but the id and the contents is the same for every response of one model version
    with the same outputs and shapes: it is serialized once, and each response is those bytes
    with the id and contents encoded around them (server/wire.py).
    """
    # Every output as a tensor (a request that names none) is the common case: each output's
    # contents are then its shape's size, so their fields' keys and lengths come from the
    # template too, and no OutputTensor is made.
    tensors = None if choices is model.output_choices \
        else output_tensors(model, outputs, choices)
    key = (choices, *map(_SHAPE, outputs if tensors is None else tensors))
    template = model.response_templates.get(key)
    if template is None:
        template = _new_template(model, key, tensors if tensors is not None else [
            OutputTensor(name, MODEL_DATATYPE, array.shape, array)
            for name, array in zip(model.output_names, outputs, strict=True)])
    head, outputs_part, content_keys = template
    parts = [head]
    if request_id:
        parts += bytes_field(_ID, request_id.encode())
    parts.append(outputs_part)
    if tensors is None:
        for content_key, array in zip(content_keys, outputs, strict=True):
            parts.append(content_key)
            parts.append(array.astype(WIRE_FP32, copy=False).tobytes())
    else:
        for tensor in tensors:
            parts += bytes_field(_RAW_OUTPUT_CONTENTS, tensor.raw())
    return b"".join(parts)


def _new_template(model: ServedModel, key: tuple[object, ...],
                  tensors: Sequence[OutputTensor]) -> ResponseTemplate:
    """The parts of the responses with ``key``'s outputs and shapes that do not change: the
    head, the outputs' descriptions and, for FP32 outputs, each contents field's key and
    length."""
    templates = model.response_templates
    if len(templates) >= _MAX_TEMPLATES:
        templates.clear()
    template = templates[key] = (
        pb.ModelInferResponse(model_name=model.name,
                              model_version=str(model.version)).SerializeToString(),
        pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            for tensor in tensors]).SerializeToString(),
        tuple(_RAW_OUTPUT_CONTENTS + varint(math.prod(tensor.shape) * FP32_BYTES)
              for tensor in tensors if tensor.datatype == MODEL_DATATYPE))
    return template


def stream_response(serialized_response: bytes) -> bytes:
    """A ModelStreamInferResponse carrying a serialized ModelInferResponse."""
    return b"".join(bytes_field(_STREAM_INFER_RESPONSE, serialized_response))

"""Open Inference Protocol tensors <-> numpy, checked against the model's signature."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from axon.protocol import open_inference_pb2 as pb
from axon.server.batching import Array
from axon.server.errors import InvalidInputError, shown, shown_all
from axon.server.served_model import ServedModel

MODEL_DATATYPE = "FP32"
_FP32_BYTES = 4
_WIRE_FP32 = np.dtype("<f4")
"""The protocol's FP32: little-endian, whatever the server's byte order."""
_MAX_RANK = 8
_MAX_TEMPLATES = 1024
"""Response templates kept per model version (one per batch size and output choice)."""


def signature(model: ServedModel) -> str:
    """``'input' FP32 [-1, 784]``: what a caller must send, for error messages."""
    shape = ", ".join(map(str, (-1, *model.item_shape)))
    return f"one input {model.input_name!r} {MODEL_DATATYPE} [{shape}]"


def requested_outputs(request: pb.ModelInferRequest, model: ServedModel) -> tuple[int, ...]:
    """Indexes (into the model's outputs) of the outputs to return, in request order."""
    if not request.outputs:
        return model.output_indexes
    indexes = []
    for output in request.outputs:
        if output.parameters:
            _refuse_unsupported(output.parameters)
        if output.name not in model.output_names:
            outputs = ", ".join(map(repr, model.output_names))
            raise InvalidInputError(f"unknown output {shown(output.name)} requested; "
                                    f"{model.name} has outputs {outputs}")
        indexes.append(model.output_names.index(output.name))
    return tuple(indexes)


def request_batch(request: pb.ModelInferRequest, model: ServedModel) -> Array:
    """The request's input tensor as a float32 array the model accepts, or InvalidInputError.

    Names, datatype and the declared shape are checked before any contents are touched. (Every
    request passes here: the common case is kept to a few attribute reads.)
    """
    if request.parameters:
        _refuse_unsupported(request.parameters)
    inputs = request.inputs
    if len(inputs) != 1 or inputs[0].name != model.input_name:
        names = [tensor.name for tensor in inputs]
        raise InvalidInputError(f"{_input_names_problem(names, model.input_name)}; {model.name} "
                                f"takes {signature(model)}")
    tensor = inputs[0]
    if tensor.parameters:
        _refuse_unsupported(tensor.parameters)
    if tensor.datatype != MODEL_DATATYPE:
        given = shown(tensor.datatype) if tensor.datatype else "(none)"
        raise InvalidInputError(f"input {tensor.name!r} has datatype {given}; {model.name} "
                                f"takes {signature(model)}")
    shape = tuple(tensor.shape)
    if len(shape) > _MAX_RANK:
        # Refused before check_shape, whose message lists the shape: thousands of dimensions
        # would make it longer than gRPC delivers, and the caller would get RESOURCE_EXHAUSTED.
        raise InvalidInputError(f"input {tensor.name!r} has {len(shape):,} dimensions; "
                                f"{model.name} takes {signature(model)}")
    model.check_shape(shape)
    count = math.prod(shape)
    raw_contents = request.raw_input_contents
    if raw_contents:
        if len(raw_contents) != 1:
            raise InvalidInputError(f"raw_input_contents has {len(raw_contents)} entries for 1 "
                                    "input")
        if tensor.HasField("contents"):
            raise InvalidInputError(f"input {tensor.name!r} has both typed contents and "
                                    "raw_input_contents; send one or the other")
        raw = raw_contents[0]
        if len(raw) != count * _FP32_BYTES:
            raise InvalidInputError(f"input {tensor.name!r} has {len(raw):,} bytes of raw "
                                    f"contents; shape {list(shape)} of FP32 needs "
                                    f"{count * _FP32_BYTES:,}")
        batch: Array = np.frombuffer(raw, dtype=_WIRE_FP32).reshape(shape)
    else:
        typed = tensor.contents.fp32_contents
        if len(typed) != count:
            raise InvalidInputError(f"input {tensor.name!r} has {len(typed):,} fp32_contents "
                                    f"values; shape {list(shape)} needs {count:,}")
        batch = np.asarray(typed, dtype=np.float32).reshape(shape)
    model.check_values(batch)
    return batch


# Parameters of Triton extensions Axon does not implement. Ignoring them would change what the
# caller gets without telling it (raw tensors instead of class labels, no shared memory read).
_UNSUPPORTED_PARAMETERS = {
    "shared_memory_region": "the shared-memory extension",
    "shared_memory_byte_size": "the shared-memory extension",
    "shared_memory_offset": "the shared-memory extension",
    "classification": "the classification extension (use axon.v1.Classifier)",
    "sequence_id": "sequence batching",
    "sequence_start": "sequence batching",
    "sequence_end": "sequence batching",
    "triton_enable_empty_final_response": "decoupled final responses",
}


def _refuse_unsupported(parameters: Iterable[str]) -> None:
    """Refuse a request, input or output parameter of an extension Axon does not implement."""
    for name in parameters:
        if name in _UNSUPPORTED_PARAMETERS:
            raise InvalidInputError(f"parameter {name!r} asks for "
                                    f"{_UNSUPPORTED_PARAMETERS[name]}, which Axon does not "
                                    "implement")


def _input_names_problem(names: list[str], expected: str) -> str:
    if not names:
        return "the request has no inputs"
    if expected not in names:
        return f"missing input {expected!r} (got {shown_all(names)})"
    extra = [name for name in names if name != expected]
    if extra:
        return f"unexpected inputs {shown_all(extra)}"
    return f"input {expected!r} is given {len(names)} times"


def infer_response(request: pb.ModelInferRequest, model: ServedModel, outputs: Sequence[Array],
                   indexes: tuple[int, ...]) -> pb.ModelInferResponse:
    """The response for ``request``: raw contents, one entry per requested output.

    Everything but the id and the contents is the same for every response of one model version
    with the same outputs and shapes: it is built once, kept serialized, and parsed back per
    response, which costs a third of building the message field by field.
    """
    chosen = [outputs[i] for i in indexes]
    key = (indexes, *(array.shape for array in chosen))
    templates = model.response_templates
    template = templates.get(key)
    if template is None:
        if len(templates) >= _MAX_TEMPLATES:
            templates.clear()
        template = templates[key] = pb.ModelInferResponse(
            model_name=model.name, model_version=str(model.version),
            outputs=[pb.ModelInferResponse.InferOutputTensor(
                name=model.output_names[i], datatype=MODEL_DATATYPE, shape=array.shape)
                for i, array in zip(indexes, chosen, strict=True)]).SerializeToString()
    response = pb.ModelInferResponse.FromString(template)
    if request.id:
        response.id = request.id
    response.raw_output_contents.extend([array.tobytes() for array in chosen])
    return response

"""The Open Inference Protocol's HTTP routes, with Triton's extensions that Axon has over gRPC
(model configuration, statistics, the model repository, binary tensor data, classification),
and ``/classify`` for images: JSON in and out around the data plane, the tensor rules and the
image classifier that gRPC uses too.

Not-ready answers 503 with ``{"ready": false}`` (server and model alike): Kubernetes probes and
load balancers read it as "not now", and it is what KServe's own server answers.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

import orjson

from axon import __version__
from axon.server.data_plane import EXTENSIONS, SERVER_NAME, DataPlane
from axon.server.errors import DeadlineExpiredError, InvalidInputError, shown
from axon.server.http.codec import INFERENCE_HEADER, decode_infer, encode_infer, load_json
from axon.server.http.proto_json import message_json
from axon.server.http.router import HttpRequest, HttpResponse, Route
from axon.server.image_classification import ImageFailure, classify
from axon.server.tensors import deadline_from_timeout, output_tensors

INFERENCE = "/inference.GRPCInferenceService/"
CLASSIFIER = "/axon.v1.Classifier/"
OCTET_STREAM = "application/octet-stream"


def json_response(document: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), status)


class Routes:
    """The handlers; ``table()`` lists them with their methods and paths."""

    def __init__(self, plane: DataPlane, decoder: Executor, *, max_image_pixels: int,
                 max_image_bytes: int) -> None:
        self._plane = plane
        self._decoder = decoder
        self._max_image_pixels = max_image_pixels
        self._max_image_bytes = max_image_bytes

    def table(self) -> list[Route]:
        model, version = ("v2", "models", "{model}"), ("versions", "{version}")
        routes = [
            Route("GET", ("v2", "health", "live"), INFERENCE + "ServerLive", self.live,
                  open=True),
            Route("GET", ("v2", "health", "ready"), INFERENCE + "ServerReady", self.ready,
                  open=True),
            Route("GET", ("v2",), INFERENCE + "ServerMetadata", self.server_metadata),
            Route("GET", ("v2", "models", "stats"), INFERENCE + "ModelStatistics",
                  self.statistics),
            Route("POST", ("v2", "repository", "index"), INFERENCE + "RepositoryIndex",
                  self.repository_index, body="json"),
            Route("POST", ("v2", "repository", "models", "{model}", "load"),
                  INFERENCE + "RepositoryModelLoad", self.load, body="json"),
            Route("POST", ("v2", "repository", "models", "{model}", "unload"),
                  INFERENCE + "RepositoryModelUnload", self.unload, body="json"),
        ]
        for prefix in (model, (*model, *version)):
            routes += [
                Route("GET", prefix, INFERENCE + "ModelMetadata", self.model_metadata),
                Route("GET", (*prefix, "ready"), INFERENCE + "ModelReady", self.model_ready),
                Route("GET", (*prefix, "config"), INFERENCE + "ModelConfig", self.config),
                Route("GET", (*prefix, "stats"), INFERENCE + "ModelStatistics",
                      self.statistics),
                Route("POST", (*prefix, "infer"), INFERENCE + "ModelInfer", self.infer,
                      body="tensor"),
                Route("POST", (*prefix, "classify"), CLASSIFIER + "Classify", self.classify,
                      body="image"),
            ]
        return routes

    async def live(self, request: HttpRequest) -> HttpResponse:
        return json_response({"live": True})

    async def ready(self, request: HttpRequest) -> HttpResponse:
        ready = self._plane.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: HttpRequest) -> HttpResponse:
        return json_response({"name": SERVER_NAME, "version": __version__,
                              "extensions": list(EXTENSIONS)})

    async def model_metadata(self, request: HttpRequest) -> HttpResponse:
        metadata = self._plane.model_metadata(*_model(request))
        return json_response({
            "name": metadata.name, "versions": metadata.versions,
            "platform": metadata.platform,
            "inputs": [_tensor(t) for t in metadata.inputs],
            "outputs": [_tensor(t) for t in metadata.outputs],
            "properties": metadata.properties})

    async def model_ready(self, request: HttpRequest) -> HttpResponse:
        name, version = _model(request)
        ready = self._plane.model_ready(name, version)
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)

    async def config(self, request: HttpRequest) -> HttpResponse:
        return json_response(message_json(self._plane.model_config(*_model(request))))

    async def statistics(self, request: HttpRequest) -> HttpResponse:
        stats = await self._plane.statistics(*_model(request))
        return json_response({"model_stats": [message_json(s) for s in stats]})

    async def repository_index(self, request: HttpRequest) -> HttpResponse:
        document = _json_object(request.body)
        ready = document.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInputError(f"\"ready\" must be true or false, got {shown(repr(ready))}")
        entries = await self._plane.repository_index(_repository(document), ready)
        return json_response([{"name": e.name, "version": str(e.version), "state": e.state,
                               "reason": e.reason} for e in entries])

    async def load(self, request: HttpRequest) -> HttpResponse:
        document = _json_object(request.body)
        await self._plane.load(request.params["model"], _repository(document),
                               _parameters(document))
        return json_response({})

    async def unload(self, request: HttpRequest) -> HttpResponse:
        document = _json_object(request.body)
        await self._plane.unload(request.params["model"], _repository(document),
                                 _parameters(document))
        return json_response({})

    async def infer(self, request: HttpRequest) -> HttpResponse:
        model = self._plane.resolve(*_model(request))
        infer_request = decode_infer(model, request.body, request.headers.get(INFERENCE_HEADER))
        deadline = deadline_from_timeout(infer_request.timeout, request.started)
        if deadline is None:
            outputs = await model.infer(infer_request.batch)
        else:
            try:
                async with asyncio.timeout_at(deadline):
                    outputs = await model.infer(infer_request.batch, deadline)
            except TimeoutError:
                raise DeadlineExpiredError(f"the request's timeout "
                                           f"({infer_request.timeout} µs) passed") from None
        body, json_length = encode_infer(
            model, infer_request, output_tensors(model, outputs, infer_request.choices))
        if json_length is None:
            return HttpResponse(body)
        return HttpResponse(body, content_type=OCTET_STREAM,
                            headers={INFERENCE_HEADER: str(json_length)})

    async def classify(self, request: HttpRequest) -> HttpResponse:
        """One PNG or JPEG image as the body; its ``top_k`` (query, default 1) most probable
        classes, decoded and normalised by the model card as the gRPC Classify does."""
        name, version = _model(request)
        top_k = _top_k(request.query.get("top_k", "1"))
        image: bytes | ImageFailure = request.body if request.body \
            else ImageFailure("the body is empty; send the image file as the body")
        model, (result,) = await classify(
            lambda: self._plane.resolve(name, version), [image], top_k,
            max_image_pixels=self._max_image_pixels, decoder=self._decoder)
        assert not isinstance(result, ImageFailure)  # failures raise without per-image errors
        return json_response({
            "model_name": model.name, "model_version": str(model.version),
            "classes": [{"index": s.index, "label": s.label, "probability": s.probability}
                        for s in result]})


def _model(request: HttpRequest) -> tuple[str, str]:
    return request.params.get("model", ""), request.params.get("version", "")


def _tensor(tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def _json_object(body: bytes) -> dict[str, Any]:
    """A small JSON request body (empty: ``{}``)."""
    if not body.strip():
        return {}
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return document


def _repository(document: dict[str, Any]) -> str:
    name = document.get("repository_name", "")
    if not isinstance(name, str):
        raise InvalidInputError("\"repository_name\" must be a string")
    return name


def _parameters(document: dict[str, Any]) -> list[str]:
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError("\"parameters\" must be an object")
    return list(parameters)


def _top_k(text: str) -> int:
    if not (text.isascii() and text.strip().isdigit()):
        raise InvalidInputError(f"top_k must be a positive integer, got {shown(text)}")
    return int(text)

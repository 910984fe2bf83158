"""Wiring: settings -> model manager -> servicers and HTTP routes -> a started gRPC server and
HTTP server on one event loop. Nothing else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from axon import __version__
from axon.cpus import run_anywhere, spread_cpus
from axon.errors import AxonError
from axon.model_repository import ModelRepository
from axon.protocol import open_inference_pb2, open_inference_pb2_grpc
from axon.protocol.v1 import classification_pb2, classification_pb2_grpc
from axon.server.auth import Token, TokenAuthenticator, load_tokens
from axon.server.config import ServerSettings
from axon.server.data_plane import DataPlane
from axon.server.drain import Drain
from axon.server.http.edge import HttpEdge, Limits
from axon.server.http.router import Router
from axon.server.http.routes import Routes
from axon.server.http.server import HttpServer, start_http
from axon.server.infer_requests import InferRequestReader
from axon.server.memory_release import start_idle_memory_release
from axon.server.metrics import Metrics, MetricsEndpoint, serve_metrics
from axon.server.model_manager import ModelManager
from axon.server.model_states import watch_models
from axon.server.parsing import register_tolerantly, register_unregistered
from axon.server.repository_watch import RepositoryWatcher
from axon.server.runtime import SessionSettings, load_gpu_libraries, resolve_providers
from axon.server.servicers.classifier import ClassifierServicer
from axon.server.servicers.inference import InferenceServicer
from axon.server.status import guard
from axon.server.tls import server_credentials, server_ssl_context
from axon.server.version_policy import VersionPolicy
from axon.server.worker_group import READY, WorkerGroup

log = logging.getLogger(__name__)

_CLOSE_MARGIN_S = 10.0
INFERENCE_SERVICE = open_inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
CLASSIFIER_SERVICE = classification_pb2.DESCRIPTOR.services_by_name["Classifier"]


@dataclass
class AxonServer:
    """A started server and the parts a caller may need to stop or inspect it."""

    server: grpc.aio.Server
    port: int
    models: ModelManager
    plane: DataPlane
    health: health.aio.HealthServicer
    decoder: ThreadPoolExecutor
    drain: Drain
    metrics: Metrics | None = None
    metrics_endpoint: MetricsEndpoint | None = None
    watcher: asyncio.Task[None] | None = None
    memory_release: asyncio.Task[None] | None = None
    http: HttpServer | None = None
    group: WorkerGroup | None = None

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls with UNAVAILABLE, give the admitted ones up to
        ``grace`` s to finish, then close the port and the models."""
        self.plane.ready = False
        for task in (self.watcher, self.memory_release):
            if task is not None:
                task.cancel()
        try:
            await self.health.enter_graceful_shutdown()
            started = time.monotonic()
            if not await self.drain.close(grace):
                log.warning("%d call(s) still running after the %.1f s grace period are "
                            "cancelled", self.drain.in_flight, grace)
            if self.http is not None:
                await self.http.close(max(0.0, grace - (time.monotonic() - started)))
            await self.server.stop(max(0.0, grace - (time.monotonic() - started)))
            try:
                # Every call has ended; what is left is draining the batchers, which only a
                # hung model execution could hold up.
                await asyncio.wait_for(self.models.close(), timeout=grace + _CLOSE_MARGIN_S)
            except TimeoutError:
                log.error("models did not close within %.0f s of the grace period; stopping "
                          "anyway", _CLOSE_MARGIN_S)
            self.decoder.shutdown(wait=False)
        finally:
            if self.group is not None:
                self.group.stop()
            # Last, so Prometheus can watch the drain.
            if self.metrics_endpoint is not None:
                await asyncio.to_thread(self.metrics_endpoint.close)


@dataclass(frozen=True)
class GroupLink:
    """What a worker of a worker group (server/supervisor.py) starts with."""

    worker: int
    connection: Connection
    generation: Any
    """The group's shared generation counter (server/worker_group.py)."""
    models: tuple[str, ...]
    """The models to load: those the group serves now."""
    bind_first: bool
    """Bind the ports before loading (the group's first start: liveness answers meanwhile), or
    after (a restarted worker must not take calls it cannot answer yet)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Models the group could not load, and why: a restarted worker says so too."""


async def build_server(settings: ServerSettings, link: GroupLink | None = None) -> AxonServer:
    """Start serving ``settings.model_repository``; return once every model is loaded.

    The ports (gRPC, and HTTP/REST unless the settings turn it off) are bound first, so
    liveness answers while models load; readiness (ServerReady, ``/v2/health/ready``, the
    health service) turns on after the last model is in. A model that fails to load stops
    the server and raises: a deployment should fail where it is made, not at the first request.

    With ``link``, this is one worker of a group sharing the ports: readiness waits for every
    worker (the supervisor says when), metrics go to the supervisor, which serves them for all,
    and statistics, the index and model control speak for the whole group.
    """
    health_servicer = health.aio.HealthServicer()
    if not settings.model_repository.is_dir():
        raise AxonError(f"model repository {settings.model_repository} is not a folder; train "
                        "a model first (axon train) or point --model-repository at one")
    repository = ModelRepository(settings.model_repository)
    metrics = Metrics(CollectorRegistry(), server_version=__version__) if settings.metrics \
        else None
    models = _model_manager(settings, repository, _reporter(health_servicer), metrics)
    if metrics is not None:
        watch_models(metrics, models, asyncio.get_running_loop())
    plane = DataPlane(models, model_control=settings.model_control)
    inference = InferenceServicer(plane, max_stream_in_flight=settings.max_stream_in_flight,
                                  metrics=metrics)
    # Image decoding runs here, off the event loop: a 49 KB PNG can declare 16 megapixels.
    # Pillow lets go of the interpreter lock as it decodes, so decoding spreads over cores:
    # on every CPU the server may use, also in a worker kept to its share of them (the
    # kernel may deal one worker most of the connections).
    decoder = ThreadPoolExecutor(spread_cpus(), thread_name_prefix="decode",
                                 initializer=run_anywhere)
    classifier = ClassifierServicer(models, decoder, max_image_pixels=settings.max_image_pixels,
                                    max_image_bytes=settings.max_image_bytes,
                                    max_stream_in_flight=settings.max_stream_in_flight,
                                    metrics=metrics)

    credentials, interceptors, authenticator = _security(settings, metrics)
    server = _grpc_server(settings, interceptors, shared=link is not None)
    drain = Drain(settings.max_concurrent_rpcs)
    # Only the unary inference methods are registered with gRPC's core: every registered
    # method costs each accepted call (server/parsing.py).
    register_tolerantly(open_inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
                        guard(inference, INFERENCE_SERVICE, metrics, drain), server,
                        parsers={"ModelInfer": InferRequestReader()}, registered=("ModelInfer",))
    register_tolerantly(classification_pb2_grpc.add_ClassifierServicer_to_server,
                        guard(classifier, CLASSIFIER_SERVICE, metrics, drain), server,
                        registered=("Classify",))
    register_unregistered(health_pb2_grpc.add_HealthServicer_to_server, health_servicer, server)
    if settings.reflection:
        # reflection.enable_server_reflection written out, to register it as the rest.
        register_unregistered(reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
                              reflection.aio.ReflectionServicer((
                                  INFERENCE_SERVICE.full_name, CLASSIFIER_SERVICE.full_name,
                                  health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                  reflection.SERVICE_NAME)), server)
    endpoint = None if metrics is None or link is not None else \
        _serve_metrics(metrics, settings.metrics_address)
    await health_servicer.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING)
    http = None if not settings.serves_http else _http_edge(
        settings, plane, decoder=decoder, drain=drain, metrics=metrics,
        authenticator=authenticator)
    running = AxonServer(server, 0, models, plane, health_servicer, decoder, drain, metrics,
                         endpoint)
    if link is None or link.bind_first:
        await _start(running, settings, credentials, http, shared=link is not None)
    if link is not None:
        running.group = plane.group = WorkerGroup(link.worker, link.connection,
                                                  link.generation, models, metrics)
        running.group.start(link.failed)
    names = list(link.models) if link is not None else \
        list(settings.models) or repository.model_names()
    if not names and (link is None or link.worker == 0):
        log.warning("the model repository %s holds no models; load them later with "
                    "RepositoryModelLoad", repository.root)
    try:
        for name in names:
            await models.load(name)
        if link is not None and not link.bind_first:
            # gRPC listens as soon as a port is added, HTTP as soon as it binds: the kernel would
            # hand this worker connections it could not answer until its models are in.
            await _start(running, settings, credentials, http, shared=True)
    except BaseException:
        await running.stop(0)
        raise
    if settings.repository_poll_seconds > 0 and (link is None or link.worker == 0):
        # One watcher per group: its reloads reach every worker through the group.
        watcher = RepositoryWatcher(
            models, settings.repository_poll_seconds, load_new=not settings.models,
            load=models.load if running.group is None else running.group.load)
        running.watcher = asyncio.create_task(watcher.run(), name="repository watcher")
    running.memory_release = start_idle_memory_release(
        settings.release_memory_after_idle_seconds)
    if running.group is None:
        await _ready(running)
    else:
        group = running.group
        group.on_group_ready = lambda: group.spawn(_ready(running))
        group.tell(READY, len(models.loaded()))
    return running


async def _start(running: AxonServer, settings: ServerSettings,
                 credentials: grpc.ServerCredentials | None, http: HttpEdge | None, *,
                 shared: bool) -> None:
    """Listen on the gRPC address, and the HTTP one when ``http`` is given, and start taking
    calls; ``shared``: a worker of a group, on ports its siblings listen on too."""
    started = False
    try:
        try:
            running.port = running.server.add_insecure_port(settings.address) \
                if credentials is None \
                else running.server.add_secure_port(settings.address, credentials)
        except RuntimeError as exc:
            raise AxonError(f"cannot listen on {settings.address}: {exc}") from exc
        await running.server.start()
        started = True
        if http is not None:
            running.http = await _serve_http(settings, http, running.drain, shared=shared)
    except BaseException:
        if started:
            await running.server.stop(0)
        if running.metrics_endpoint is not None:
            running.metrics_endpoint.close()
        raise


async def _ready(running: AxonServer) -> None:
    running.plane.ready = True
    await running.health.set(health.OVERALL_HEALTH, health_pb2.HealthCheckResponse.SERVING)


def _reporter(health_servicer: health.aio.HealthServicer,
              ) -> Callable[[str, bool], Coroutine[Any, Any, None]]:
    """Tells the health service when a model starts or stops serving."""
    async def report(name: str, serving: bool) -> None:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING if serving
                                  else health_pb2.HealthCheckResponse.NOT_SERVING)
    return report


def _grpc_server(settings: ServerSettings, interceptors: list[grpc.aio.ServerInterceptor], *,
                 shared: bool) -> grpc.aio.Server:
    # No maximum_concurrent_rpcs: the drain enforces it for less (server/drain.py).
    return grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Calls gRPC core holds while the event loop is behind, before Axon sees them. Its
        # defaults (1,000 to 3,000) let admitted calls wait over a second at twice the
        # capacity (docs/reliability-security.md, "Overload").
        ("grpc.server.max_pending_requests", settings.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", 2 * settings.max_pending_calls),
        # gRPC shares ports by default; then a second server started on a busy port would
        # silently take half its traffic instead of failing. A worker group shares on purpose,
        # once its supervisor has checked that the port was free.
        ("grpc.so_reuseport", int(shared)),
    ])


def _model_manager(settings: ServerSettings, repository: ModelRepository,
                   on_change: Callable[[str, bool], Coroutine[Any, Any, None]],
                   metrics: Metrics | None) -> ModelManager:
    """The model manager, with the execution providers this machine has."""
    choice = resolve_providers(settings.providers)
    for name, reason in choice.skipped:
        log.info("execution provider %s skipped: %s", name, reason)
    load_gpu_libraries(choice.usable)
    session = SessionSettings(
        providers=choice.usable, intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        solo_threads=None if settings.solo_execution_threads == "auto"
        else settings.solo_execution_threads,
        graph_optimization=settings.graph_optimization, device_id=settings.device_id)
    return ModelManager(repository, VersionPolicy.parse(settings.version_policy), session,
                        settings.batching, on_change=on_change, observer=metrics)


def _security(settings: ServerSettings, metrics: Metrics | None,
              ) -> tuple[grpc.ServerCredentials | None, list[grpc.aio.ServerInterceptor],
                         TokenAuthenticator | None]:
    """TLS credentials for the port and the token interceptor, as the settings ask."""
    credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    tokens = load_tokens(
        settings.tokens.get_secret_value() if settings.tokens is not None else None,
        settings.tokens_file)
    log.info("%s; %s", "plain text (no TLS)" if credentials is None else
             "TLS, client certificates required" if settings.tls_client_ca else "TLS",
             _describe(tokens))
    authenticator = TokenAuthenticator(
        tokens, on_refusal=None if metrics is None else metrics.auth_refused) if tokens else None
    interceptors: list[grpc.aio.ServerInterceptor] = [authenticator] if authenticator else []
    return credentials, interceptors, authenticator


def _http_edge(settings: ServerSettings, plane: DataPlane, *, decoder: ThreadPoolExecutor,
               drain: Drain, metrics: Metrics | None,
               authenticator: TokenAuthenticator | None) -> HttpEdge:
    """The HTTP/REST binding's routes, on the same data plane, drain, metrics and tokens as
    gRPC."""
    routes = Routes(plane, decoder, max_image_pixels=settings.max_image_pixels,
                    max_image_bytes=settings.max_image_bytes)
    return HttpEdge(Router(routes.table()), drain,
                    Limits(settings.max_message_bytes, settings.max_image_bytes),
                    metrics=metrics, authenticator=authenticator)


async def _serve_http(settings: ServerSettings, edge: HttpEdge, drain: Drain, *,
                      shared: bool) -> HttpServer:
    """Listen on the HTTP/REST port (with SO_REUSEPORT in a worker group: its supervisor has
    checked that the port was free)."""
    context = server_ssl_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    try:
        return await start_http(edge, drain, settings.http_address,
                                body_timeout=settings.http_body_timeout_seconds,
                                ssl_context=context, reuse_port=shared)
    except OSError as exc:
        raise AxonError(f"cannot listen on {settings.http_address} (HTTP): "
                        f"{exc.strerror or exc}") from exc


def _describe(tokens: list[Token]) -> str:
    if not tokens:
        return "no token authentication"
    roles = Counter(token.role.value for token in tokens)
    return "bearer tokens required except for health (" + ", ".join(
        f"{count} {role}" for role, count in sorted(roles.items())) + ")"


def _serve_metrics(metrics: Metrics, address: str) -> MetricsEndpoint:
    try:
        return serve_metrics(metrics.registry, address)
    except OSError as exc:
        raise AxonError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc

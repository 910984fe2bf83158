"""The server's settings: one typed object fed by flags, environment and an optional file.

Precedence, highest first: command-line flags, ``AXON_*`` environment variables, the settings
file (``--config FILE``, TOML or JSON, same field names), then the defaults below. Per-model
``config.json`` files in the model repository override the batching defaults for their model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from axon.batching_settings import BATCHING_FIELDS, DEFAULT_BATCHING, BatchingSettings
from axon.cpus import usable_cpus
from axon.server.providers import provider_name
from axon.server.version_policy import VersionPolicy

ENV_PREFIX = "AXON_"
CommaList = Annotated[tuple[str, ...], NoDecode]
"""A list given as ``a,b,c`` in flags and environment variables (an array in files)."""


class ServerSettings(BaseSettings):
    """Everything ``axon serve`` can be told. Field docs double as ``--help`` texts."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    model_repository: Path = Field(Path("model_repository"),
                                   description="the model repository to serve")
    address: str = Field("0.0.0.0:8001", description="host:port to listen on; port 0 picks "
                         "a free port (printed at start)")
    models: CommaList = Field((), description="models to load at start (default: every "
                                    "model in the repository)")
    version_policy: str = Field("latest", description="versions to serve: latest, latest:N, "
                                "all or specific:V1,V2")
    providers: CommaList = Field(("cuda", "cpu"), description="execution providers in "
                                       "order of preference: tensorrt, cuda, cpu, ...; those "
                                       "this machine lacks are skipped")
    device_id: int = Field(0, ge=0, description="GPU for the CUDA/TensorRT providers")
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per execution "
                                  "(0: one per core)")
    inter_op_threads: int = Field(1, ge=0, description="onnxruntime inter-op threads")
    solo_execution_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="onnxruntime threads of an execution with no other in flight, "
        "from the batch size on which the load-time profile found them to save at least "
        "twice the CPU they add in time; auto: the model's instances (the CPUs they would "
        "use, at most the usable ones); 1: never. Holds each model's weights a second "
        "time (CPU provider only)")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level")
    max_batch_size: int = Field(DEFAULT_BATCHING.max_batch_size, ge=1, description="default "
                                "most images per model execution; larger requests are refused")
    max_queue_delay_ms: float = Field(DEFAULT_BATCHING.max_queue_delay_ms, ge=0, description=
                                      "default longest wait of the oldest request for its "
                                      "batch to fill while the server is busy with other calls "
                                      "(an idle server runs a batch at once)")
    max_queue_size: int = Field(DEFAULT_BATCHING.max_queue_size, ge=1, description="default "
                                "most images queued per model; more are refused with "
                                "RESOURCE_EXHAUSTED")
    instances: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="default concurrent executions per model (worker threads); auto: "
        "one per usable CPU (affinity and cgroup quota), so a model that is the bottleneck "
        "keeps every core busy")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="server processes sharing the gRPC and HTTP ports (and the "
        "metrics port, through a supervisor); auto: one per usable CPU. One process uses about "
        "one core: Python's gRPC path holds the interpreter lock")
    pin_workers: bool = Field(False, description="with worker processes, keep each one's "
                              "event loop and gRPC threads on its own equal share of the "
                              "usable CPUs (one each when there are as many workers as CPUs; "
                              "not at all when they do not divide evenly): a call passes "
                              "between those threads several times, and within one CPU each "
                              "pass costs less. Executions on worker threads and image "
                              "decoding still run on any CPU")
    worker_timeout_seconds: float = Field(30.0, ge=0, description="with worker processes, "
                                          "how long a worker may leave its supervisor's "
                                          "check unanswered (a stuck event loop) before it "
                                          "is killed and started again; 0: never")
    max_inline_ms: float = Field(DEFAULT_BATCHING.max_inline_ms, ge=0, description="default "
                                 "longest expected execution run on the event loop itself when "
                                 "it has nothing else to do (no thread hand-off); 0: always on "
                                 "a worker thread")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest request "
                                   "or response message")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="largest image (width x "
                                  "height) the classification API decodes, read from the "
                                  "image's header before decoding")
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1, description="largest encoded "
                                 "(PNG/JPEG) image the classification API accepts")
    max_stream_in_flight: int = Field(256, ge=1, description="requests answered at once per "
                                      "stream; reading pauses past it")
    max_concurrent_rpcs: int = Field(4096, ge=1, description="calls (streams included) "
                                     "served at once; more are refused with "
                                     "RESOURCE_EXHAUSTED")
    max_pending_calls: int = Field(256, ge=1, description="calls gRPC may hold for the "
                                   "server while it is behind; past this it sheds new ones at "
                                   "random (CANCELLED), all past twice this: under overload "
                                   "this bounds how long an admitted call waits")
    release_memory_after_idle_seconds: float = Field(
        5.0, ge=0, description="after a busy spell, hand the memory the allocator keeps for "
        "reuse back to the system once a whole interval this long passes with next to no CPU "
        "used (glibc only); 0: keep it")
    http: bool = Field(True, description="serve the Open Inference Protocol's HTTP/REST "
                       "binding (with Triton's extensions) on http_address too, on the same "
                       "models")
    http_address: str = Field("0.0.0.0:8000", description="host:port of the HTTP/REST port; "
                              "port 0 picks a free port (printed at start); empty: no HTTP")
    http_body_timeout_seconds: float = Field(30.0, gt=0, description="longest an HTTP client "
                                             "may take to send a request's body; past it the "
                                             "request is answered 408 and its connection "
                                             "closed")
    metrics: bool = Field(True, description="serve Prometheus metrics at "
                          "http://METRICS_ADDRESS/metrics and record them")
    metrics_address: str = Field("0.0.0.0:8002", description="host:port of the Prometheus "
                                 "metrics endpoint; port 0 picks a free port (printed at "
                                 "start)")
    model_control: bool = Field(True, description="allow RepositoryModelLoad/Unload")
    repository_poll_seconds: float = Field(0.0, ge=0, description="look for changed models "
                                           "(a new version, a replaced file or config.json) "
                                           "this often and reload them without downtime; 0: "
                                           "never (reload with RepositoryModelLoad)")
    reflection: bool = Field(True, description="serve gRPC server reflection")
    grace_seconds: float = Field(5.0, ge=0, description="on SIGTERM, how long in-flight "
                                 "requests may take to finish")
    tls_cert: Path | None = Field(None, description="server certificate chain (PEM); with "
                                  "tls_key the gRPC and HTTP ports speak TLS only")
    tls_key: Path | None = Field(None, description="the server certificate's private key "
                                 "(PEM)")
    tls_client_ca: Path | None = Field(None, description="CA certificate(s) (PEM) that client "
                                       "certificates must chain to; set, every client must "
                                       "present one (mutual TLS)")
    tokens: SecretStr | None = Field(None, description="bearer tokens as ROLE:TOKEN,... "
                                     "(roles: infer, admin); set here or in tokens_file, "
                                     "every call but health needs one. Prefer the file or "
                                     "the AXON_TOKENS variable: flags show in ps")
    tokens_file: Path | None = Field(None, description="file of ROLE:TOKEN lines (# "
                                     "comments); see tokens")

    @field_validator("models", "providers", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def batching(self) -> BatchingSettings:
        """The batching defaults of every model (a model's config.json may override them)."""
        values = {name: getattr(self, name) for name in BATCHING_FIELDS}
        if values["instances"] == "auto":
            # Each worker process runs its own models: together they should keep every CPU
            # busy, not each of them.
            values["instances"] = max(1, usable_cpus() // self.worker_count)
        return BatchingSettings(**values)

    @property
    def worker_count(self) -> int:
        """How many server processes ``workers`` asks for."""
        return usable_cpus() if self.workers == "auto" else self.workers

    @model_validator(mode="after")
    def _valid_batching(self) -> ServerSettings:
        self.batching  # noqa: B018 -- raises when the settings contradict each other
        return self

    @field_validator("version_policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        VersionPolicy.parse(value)
        return value

    @field_validator("providers")
    @classmethod
    def _valid_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one execution provider")
        for alias in value:
            provider_name(alias)
        return value

    @property
    def serves_http(self) -> bool:
        return self.http and bool(self.http_address)

    @field_validator("address", "metrics_address", "http_address")
    @classmethod
    def _valid_address(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "http_address" and not value:
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"address must be host:port, got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls),
                JsonConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **flags: Any) -> ServerSettings:
    """Settings from ``flags`` (None values ignored), the environment and ``config_file``."""
    given = {key: value for key, value in flags.items() if value is not None}
    if config_file is None:
        return ServerSettings(**given)
    if not config_file.is_file():
        raise FileNotFoundError(f"settings file {config_file} does not exist")
    file_source = SettingsConfigDict(json_file=config_file) if config_file.suffix == ".json" \
        else SettingsConfigDict(toml_file=config_file)

    class FileSettings(ServerSettings):
        model_config = file_source

    return FileSettings(**given)

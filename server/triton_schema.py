"""Triton's extension messages built from a served model: its configuration (the model
configuration extension) and its statistics. gRPC answers with these messages; HTTP with their
JSON form (server/http/proto_json.py), so both protocols always say the same."""

from __future__ import annotations

import json

from axon.model_repository import MODEL_FILENAME
from axon.protocol import model_config_pb2 as mc
from axon.protocol import open_inference_pb2 as pb
from axon.server.providers import CPU_PROVIDER
from axon.server.served_model import PLATFORM, ServedModel
from axon.server.statistics import Duration, ModelStatistics
from axon.server.version_policy import VersionPolicy

BACKEND = "onnxruntime"


def model_config(model: ServedModel, policy: VersionPolicy) -> mc.ModelConfig:
    """``model``'s configuration in Triton's schema; ``policy`` selects its versions."""
    runtime, batching = model.runtime, model.batching
    layout = model.card.preprocessing.layout
    return mc.ModelConfig(
        name=model.name, platform=PLATFORM, backend=BACKEND,
        default_model_filename=MODEL_FILENAME, version_policy=version_policy(policy),
        max_batch_size=batching.max_batch_size,
        input=[mc.ModelInput(
            name=runtime.input.name, data_type=mc.TYPE_FP32, dims=runtime.input.shape,
            format=mc.ModelInput.FORMAT_NCHW if layout == "nchw" else mc.ModelInput.FORMAT_NONE)],
        output=[mc.ModelOutput(name=output.name, data_type=mc.TYPE_FP32, dims=output.shape)
                for output in runtime.outputs],
        instance_group=[mc.ModelInstanceGroup(
            name=f"{model.name}_0", count=batching.instances, kind=_kind(model),
            gpus=[] if runtime.device_id is None else [runtime.device_id])],
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=[model.batcher.times.preferred_size(batching.max_batch_size)],
            max_queue_delay_microseconds=round(batching.max_queue_delay_ms * 1000),
            default_queue_policy=mc.ModelQueuePolicy(max_queue_size=batching.max_queue_size)),
        parameters={
            "execution_provider": mc.ModelParameter(string_value=model.provider),
            "labels": mc.ModelParameter(string_value=json.dumps(list(model.card.labels))),
        })


def version_policy(policy: VersionPolicy) -> mc.ModelVersionPolicy:
    if policy.kind == "all":
        return mc.ModelVersionPolicy(all=mc.ModelVersionPolicy.All())
    if policy.kind == "specific":
        return mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(
            versions=policy.versions))
    return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(
        num_versions=policy.latest_count))


def _kind(model: ServedModel) -> mc.ModelInstanceGroup.Kind.ValueType:
    if model.runtime.device_id is not None:
        return mc.ModelInstanceGroup.KIND_GPU
    if model.provider == CPU_PROVIDER:
        return mc.ModelInstanceGroup.KIND_CPU
    return mc.ModelInstanceGroup.KIND_MODEL  # OpenVINO, DNNL, CoreML: the provider places it


def statistics_message(name: str, version: int,
                       stats: ModelStatistics) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=name, version=str(version), last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count, execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success), fail=_duration(stats.fail),
            queue=_duration(stats.queue), compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output)),
        batch_stats=[pb.InferBatchStatistics(
            batch_size=size, compute_input=_duration(per_size.compute_input),
            compute_infer=_duration(per_size.compute_infer),
            compute_output=_duration(per_size.compute_output))
            for size, per_size in sorted(stats.batches.items())])


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)

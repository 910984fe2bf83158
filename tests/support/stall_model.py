"""A digit model that can be told to take its time: to hold requests in a real server's queue.

The batcher runs a batch as soon as nothing else is waiting for the event loop (a lone request
never waits), so a test that needs requests queued -- deadlines passing in the queue,
cancellations, a full queue, many requests batched together -- first keeps the model's one
instance busy. This model computes real 784 -> 10 logits (a fixed random matrix, so answers can
be checked bit for bit against onnxruntime offline) and, before that, spins an ONNX Loop as many
times as the largest first pixel of the batch says: 0 for ordinary requests (no delay), millions
for a request that holds the model for a second or more (``stall_batch``). The loop's result is
multiplied by zero into the logits, so no optimisation can drop it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from axon.model_card import Architecture, ModelCard
from axon.preprocessing import PreprocessingSpec

if TYPE_CHECKING:
    # Not at run time: tests/interop loads tritonclient's copy of the protocol package, and
    # this module is imported by the conftest every test directory shares.
    from axon.protocol import open_inference_pb2 as oip

LABELS = tuple(str(digit) for digit in range(10))
ITEM = 784
OPSET = 17
WEIGHTS = np.random.default_rng(11).normal(size=(ITEM, len(LABELS))).astype(np.float32)
STALL_CONFIG = {"instances": 1, "max_batch_size": 8, "max_queue_size": 8,
                "max_queue_delay_ms": 0, "max_inline_ms": 0}
"""One instance, always on a worker thread (a stalled run must not hold the event loop), no
waiting for batches: a queue forms only behind a running batch."""


def card(name: str) -> ModelCard:
    return ModelCard(
        name=name, version=1, dataset="synthetic", labels=LABELS,
        preprocessing=PreprocessingSpec(height=28, width=28, channels=1, layout="flat",
                                        mean=(0.0,), std=(1.0,)),
        architecture=Architecture(preset="stall", hidden_layers=(), activation="none",
                                  parameters=WEIGHTS.size),
        test_accuracy=0.0, test_samples=0, training_seconds=0.0, opset=OPSET,
        created_at="2026-01-01T00:00:00+00:00")


def stall_model(name: str, idle_trips: int = 0) -> onnx.ModelProto:
    """``idle_trips``: loop turns for an image whose first pixel is 0, fewer as it nears 1 --
    a model slow to load (the server warms and times it on images of zeros) and quick to
    answer images whose first pixel is 1. 0: turns as many as the first pixel says."""
    scalar: list[str | int] = []
    body = helper.make_graph(
        [helper.make_node("Add", ["spun_in", "one"], ["spun_out"]),
         helper.make_node("Identity", ["go_in"], ["go_out"])],
        "spin",
        inputs=[helper.make_tensor_value_info("trip", TensorProto.INT64, scalar),
                helper.make_tensor_value_info("go_in", TensorProto.BOOL, scalar),
                helper.make_tensor_value_info("spun_in", TensorProto.FLOAT, scalar)],
        outputs=[helper.make_tensor_value_info("go_out", TensorProto.BOOL, scalar),
                 helper.make_tensor_value_info("spun_out", TensorProto.FLOAT, scalar)],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    spin = [helper.make_node("Mul", ["first", "idle_trips"], ["scaled"]),
            helper.make_node("Sub", ["idle_trips", "scaled"], ["left"]),
            helper.make_node("Relu", ["left"], ["turns"])] if idle_trips else \
        [helper.make_node("Identity", ["first"], ["turns"])]
    nodes = [
        helper.make_node("Gather", ["input", "first_column"], ["first"], axis=1),
        *spin,
        helper.make_node("ReduceMax", ["turns"], ["most"], keepdims=0),
        helper.make_node("Cast", ["most"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "true", "zero"], ["spun"], body=body),
        helper.make_node("Mul", ["spun", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["input", "weights"], ["product"]),
        helper.make_node("Add", ["product", "nothing"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", ITEM])],
        outputs=[helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", len(LABELS)])
                 for output in ("logits", "probabilities")],
        initializer=[numpy_helper.from_array(np.array(0, np.int64), "first_column"),
                     numpy_helper.from_array(np.array(True), "true"),
                     numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                     numpy_helper.from_array(WEIGHTS, "weights"),
                     *([numpy_helper.from_array(np.array(idle_trips, np.float32), "idle_trips")]
                       if idle_trips else [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="axon-tests")
    model.ir_version = 8
    for key, value in card(name).to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def save_stall_model(folder: Path, name: str, idle_trips: int = 0) -> Path:
    """``folder/model.onnx`` (and its card), a version of the stall model called ``name``
    (``idle_trips``: see ``stall_model``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(stall_model(name, idle_trips), str(path))
    card(name).write_json(folder / "model.json")
    return path


_trips_per_second: float | None = None


def trips_for(seconds: float) -> int:
    """Loop turns that keep the model busy about ``seconds`` on this machine (measured once
    per test session, on this machine, with onnxruntime in process)."""
    global _trips_per_second  # noqa: PLW0603 -- measured once per session
    if _trips_per_second is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(stall_model("calibration").SerializeToString(),
                                       options, providers=["CPUExecutionProvider"])
        trips = 200_000
        started = time.perf_counter()
        session.run(None, {"input": stall_batch(trips)})
        _trips_per_second = trips / (time.perf_counter() - started)
    return int(_trips_per_second * seconds)


def stall_batch(trips: int, rows: int = 1) -> npt.NDArray[np.float32]:
    """``rows`` images whose first pixel asks for ``trips`` loop turns."""
    batch = np.zeros((rows, ITEM), np.float32)
    batch[:, 0] = trips
    return batch




def stall_request(model: str, seconds: float = 1.5) -> oip.ModelInferRequest:
    """A ModelInfer request for stall model ``model`` that keeps it busy about ``seconds``."""
    from axon.client.common import infer_request

    return infer_request(model, stall_batch(trips_for(seconds)))

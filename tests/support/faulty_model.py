"""A model that fails inside onnxruntime for some inputs and not others, with Axon's model card,
in a repository of its own: to test what a failing batch does to the server.

The graph computes ``logits = input @ WEIGHTS + OFFSETS[int(input[:, 0])]``, then their
softmax. The offset is looked up with a Gather whose index comes from the input, so an item
whose first value is ``POISON`` indexes past the table and onnxruntime raises ("indices element
out of data bounds"). The Gather feeds both outputs, so no graph optimisation can drop it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from axon.model_card import Architecture, ModelCard
from axon.model_repository import CARD_FILENAME, CONFIG_FILENAME, MODEL_FILENAME
from axon.preprocessing import PreprocessingSpec

NAME = "faulty"
LABELS = ("low", "high")
ITEM = 4
"""Values per item: a 2x2 greyscale picture, flattened."""
ROWS = 10
"""Rows of the offset table: an item's first value must be in [-ROWS, ROWS) (truncated)."""
POISON = 1e6
OPSET = 17
WEIGHTS = (np.arange(ITEM * len(LABELS)).reshape(ITEM, len(LABELS)) / 10).astype(np.float32)
OFFSETS = np.arange(ROWS * len(LABELS), dtype=np.float32).reshape(ROWS, len(LABELS))


def card() -> ModelCard:
    return ModelCard(
        name=NAME, version=1, dataset="synthetic", labels=LABELS,
        preprocessing=PreprocessingSpec(height=2, width=2, channels=1, layout="flat",
                                        mean=(0.0,), std=(1.0,)),
        architecture=Architecture(preset="gather", hidden_layers=(), activation="none",
                                  parameters=WEIGHTS.size + OFFSETS.size),
        test_accuracy=0.0, test_samples=0, training_seconds=0.0, opset=OPSET,
        created_at="2026-01-01T00:00:00+00:00")


def faulty_model() -> onnx.ModelProto:
    batch: list[str | int] = ["batch", ITEM]
    nodes = [
        helper.make_node("Gather", ["input", "first_column"], ["first"], axis=1),
        helper.make_node("Cast", ["first"], ["row"], to=TensorProto.INT64),
        helper.make_node("Gather", ["offsets", "row"], ["offset"], axis=0),
        helper.make_node("MatMul", ["input", "weights"], ["product"]),
        helper.make_node("Add", ["product", "offset"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, NAME,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, batch)],
        outputs=[helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", len(LABELS)])
                 for name in ("logits", "probabilities")],
        initializer=[numpy_helper.from_array(np.array(0, np.int64), "first_column"),
                     numpy_helper.from_array(WEIGHTS, "weights"),
                     numpy_helper.from_array(OFFSETS, "offsets")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="axon-tests")
    model.ir_version = 8  # what every supported onnxruntime reads
    for key, value in card().to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def unbatched_output_model() -> onnx.ModelProto:
    """Logits of the input's first values, and their sum over the whole batch: a second
    output with no row per item (a scalar)."""
    nodes = [helper.make_node("MatMul", ["input", "weights"], ["logits"]),
             helper.make_node("ReduceSum", ["logits"], ["total"], keepdims=0)]
    graph = helper.make_graph(
        nodes, NAME,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", ITEM])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                               ["batch", len(LABELS)]),
                 helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(WEIGHTS, "weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="axon-tests")
    model.ir_version = 8
    for key, value in card().to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def expected_logits(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """What the model answers for ``batch`` (no poisoned item in it)."""
    logits: npt.NDArray[np.float32] = batch @ WEIGHTS + OFFSETS[batch[:, 0].astype(np.int64)]
    return logits


def build_faulty_repository(root: Path, config: dict[str, object],
                            model: onnx.ModelProto | None = None) -> Path:
    """``root`` holding the faulty model (or ``model``) as v1, served with ``config``
    (config.json)."""
    folder = root / NAME / "1"
    folder.mkdir(parents=True)
    onnx.save(model or faulty_model(), str(folder / MODEL_FILENAME))
    card().write_json(folder / CARD_FILENAME)
    (root / NAME / CONFIG_FILENAME).write_text(json.dumps(config))
    return root

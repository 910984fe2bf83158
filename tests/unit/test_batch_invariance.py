"""The batcher's promise that batched answers equal unbatched ones rests on onnxruntime giving
each row the same bits whatever the batch around it, and whichever session runs it (a batch
with no other execution in flight may run on a second session of more threads,
``ModelRuntime.add_solo_session``). Checked here on the graphs Axon exports (Gemm -> Relu ->
... -> Gemm -> Softmax, as torch.onnx writes them) at every preset's size."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper


def dense_net(widths: tuple[int, ...], seed: int = 0) -> bytes:
    """An MLP 784 -> widths -> 10 with random weights, logits and softmax outputs."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    previous, size = "input", 784
    for index, width in enumerate((*widths, 10)):
        weight = (rng.standard_normal((width, size)) / np.sqrt(size)).astype(np.float32)
        bias = rng.standard_normal(width).astype(np.float32) * 0.1
        weights += [numpy_helper.from_array(weight, f"w{index}"),
                    numpy_helper.from_array(bias, f"b{index}")]
        output = "logits" if index == len(widths) else f"h{index}"
        nodes.append(helper.make_node("Gemm", [previous, f"w{index}", f"b{index}"],
                                      [output if index == len(widths) else f"g{index}"],
                                      transB=1))
        if index < len(widths):
            nodes.append(helper.make_node("Relu", [f"g{index}"], [output]))
        previous, size = output, width
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 10])
         for name in ("logits", "probabilities")], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("widths", [(20,), (256, 128), (1024, 1024)],
                         ids=["primer", "compact", "default"])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_row_of_a_batch_equals_its_own_run(widths: tuple[int, ...], threads: int) -> None:
    runner = session(dense_net(widths), threads)
    batch: npt.NDArray[np.float32] = np.random.default_rng(1).standard_normal(
        (256, 784)).astype(np.float32)
    alone = [np.concatenate([runner.run([name], {"input": row[np.newaxis]})[0]
                             for row in batch]) for name in ("logits", "probabilities")]
    for size in (2, 3, 7, 16, 64, 100, 256):
        together = runner.run(["logits", "probabilities"], {"input": batch[:size]})
        for got, want in zip(together, alone, strict=True):
            assert np.array_equal(got, want[:size]), f"batch of {size} differs"


@pytest.mark.parametrize("widths", [(20,), (256, 128), (1024, 1024)],
                         ids=["primer", "compact", "default"])
def test_a_batch_on_two_threads_equals_it_on_one(widths: tuple[int, ...]) -> None:
    model = dense_net(widths)
    one, two = session(model, 1), session(model, 2)
    batch: npt.NDArray[np.float32] = np.random.default_rng(2).standard_normal(
        (256, 784)).astype(np.float32)
    for size in (1, 7, 16, 64, 100, 256):
        names = ["logits", "probabilities"]
        for got, want in zip(two.run(names, {"input": batch[:size]}),
                             one.run(names, {"input": batch[:size]}), strict=True):
            assert np.array_equal(got, want), f"batch of {size} differs"

"""The baseline ``axon bench --baseline naive`` measures Axon against, in the same run.

The simplest honest Open Inference Protocol server: one grpc.aio process that calls onnxruntime
inline on the event loop for each request (one intra-op thread, as Axon's default), no batching,
no checks beyond what numpy does, no metrics, no authentication. It answers ModelInfer,
ServerLive/ServerReady and, so that bench can check the load against the server's own count,
ModelStatistics (two integers per request). It runs on the same interpreter as bench, so both
servers share whatever the interpreter costs.

    python -m benchmarks.naive_server MODEL.onnx NAME PORT   # prints "ready PORT" when serving
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort

from axon.client.server_process import ServerFailedError
from axon.protocol import open_inference_pb2 as pb
from axon.protocol import open_inference_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class NaiveServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, path: str, name: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._name = name
        self._requests = 0
        self._items = 0

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: Context) -> pb.ModelInferResponse:
        tensor = request.inputs[0]
        batch = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(
            list(tensor.shape))
        outputs = self._session.run(None, {self._input: batch})
        response = pb.ModelInferResponse(model_name=self._name, model_version="1", id=request.id)
        for name, output in zip(self._outputs, outputs, strict=True):
            response.outputs.add(name=name, datatype="FP32", shape=list(output.shape))
            response.raw_output_contents.append(
                np.ascontiguousarray(output, np.float32).tobytes())
        self._requests += 1
        self._items += len(batch)
        return response

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Context) -> pb.ModelStatisticsResponse:
        return pb.ModelStatisticsResponse(model_stats=[pb.ModelStatistics(
            name=self._name, version="1", inference_count=self._items,
            execution_count=self._requests,
            inference_stats=pb.InferStatistics(
                success=pb.StatisticDuration(count=self._requests)))])


async def serve(path: str, name: str, port: int) -> None:
    server = grpc.aio.server()
    # The methods it lacks answer UNIMPLEMENTED, as gRPC's base servicer does.
    servicer = NaiveServicer(path, name)  # type: ignore[abstract]
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"ready {bound}", flush=True)
    await server.wait_for_termination()


@dataclass
class NaiveServer:
    """The naive baseline server (benchmarks/naive_server.py) in a subprocess."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def running_naive_server(model_path: Path, name: str, timeout: float = 60, *,
                         launcher: Sequence[str] = (sys.executable, "-m", __name__),
                         env: dict[str, str] | None = None) -> Iterator[NaiveServer]:
    """The naive server on ``model_path`` on a free loopback port, on this interpreter;
    ``launcher`` is the command that takes this module's arguments."""
    process = subprocess.Popen(
        [*launcher, str(model_path), name, "0"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.startswith(b"ready "):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise ServerFailedError(f"the naive server exited with {process.returncode}")
        if not line.startswith(b"ready "):
            raise ServerFailedError(f"the naive server did not start in {timeout} s")
        yield NaiveServer(process, int(line.split()[1]))
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))

"""The end of ``axon quickstart``: serve the model for real and classify the sample digits.

The samples are ten MNIST test images (one per digit, named ``digit-<label>-test<index>.png``)
shipped with Axon, sent as PNG files through a real server process over gRPC.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from clients.client import AxonClient
from clients.server_process import running_server

SAMPLES = Path(__file__).resolve().parent / "samples"
_LABEL = re.compile(r"^digit-(\d)-")


def serve_and_classify(repository: Path, model: str, samples: Path = SAMPLES) -> int:
    """Print each sample's top classes; return how many were classified correctly."""
    files = sorted(samples.glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp, \
            running_server(repository, Path(tmp) / "server.log", "--models", model) as server, \
            AxonClient(server.address) as client:
        client.wait_ready()
        answer = client.classify([f.read_bytes() for f in files], model=model, top_k=2)
        print(f"\nserved by a real server on {server.address}: {model} v{answer.model_version}, "
              f"{len(files)} sample images sent as PNG over gRPC")
    correct = 0
    for file, ranked in zip(files, answer.results, strict=True):
        match = _LABEL.match(file.name)
        expected = match[1] if match else "?"
        correct += ranked[0].label == expected
        mark = "ok" if ranked[0].label == expected else "WRONG"
        print(f"  {file.name:24s} true {expected}  predicted {ranked[0].label} "
              f"({ranked[0].probability:.1%}; next {ranked[1].label} "
              f"{ranked[1].probability:.1%})  {mark}")
    print(f"  {correct}/{len(files)} correct")
    return correct

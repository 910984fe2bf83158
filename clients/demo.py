"""The end of ``axon quickstart``: serve the model for real and classify sample digits with it.

The digits are PNG files named ``<label>-test<index>.png`` (what ``axon export-samples``
writes) or ``digit-<label>-test<index>.png`` (the ten MNIST test images shipped in
``clients/samples``, for when MNIST itself is not at hand). They are streamed through a real
server process over gRPC the way ``axon classify`` streams them, and the label in each name is
checked against the answer.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from axon.client.file_stream import FileResult, classify_files, image_paths
from axon.client.server_process import running_server
from axon.client.sync_client import AxonClient

SAMPLES = Path(__file__).resolve().parent / "samples"
SHOWN = 10
"""Answers printed one per line; past these, only the wrong ones are."""
_LABEL = re.compile(r"^(?:digit-)?(?P<label>.+)-test\d+\.png$")


def true_label(path: Path) -> str | None:
    """The label a sample's file name carries, or None for other names."""
    match = _LABEL.match(path.name)
    return match["label"] if match else None


def serve_and_classify(repository: Path, model: str, samples: Path = SAMPLES) -> int:
    """Print the answers for the images in ``samples``; return how many were right."""
    with tempfile.TemporaryDirectory() as tmp, \
            running_server(repository, Path(tmp) / "server.log", "--models", model) as server, \
            AxonClient(server.address) as client:
        client.wait_ready()
        started = time.perf_counter()
        results = list(classify_files(client, image_paths([str(samples)]), model=model,
                                      top_k=2))
        elapsed = time.perf_counter() - started
    answered = [r for r in results if not r.error]
    version = answered[0].version if answered else "?"
    print(f"\nserved by a real server on {server.address}: {model} v{version}; "
          f"{len(results)} images from {samples} streamed as PNG over gRPC "
          f"in {elapsed:.2f} s")
    correct = 0
    for number, result in enumerate(results):
        right = _print_answer(result, shown=number < SHOWN)
        correct += right
    if len(results) > SHOWN:
        print(f"  ... {len(results) - SHOWN} more (wrong ones above)")
    print(f"  {correct}/{len(results)} correct")
    return correct


def _print_answer(result: FileResult, *, shown: bool) -> bool:
    expected = true_label(result.path) or "?"
    if result.error:
        print(f"  {result.path.name:24s} error: {result.error}")
        return False
    best, *rest = result.classes
    right = best.label == expected
    if shown or not right:
        runner_up = f"; next {rest[0].label} {rest[0].probability:.1%}" if rest else ""
        print(f"  {result.path.name:24s} true {expected}  predicted {best.label} "
              f"({best.probability:.1%}{runner_up})  {'ok' if right else 'WRONG'}")
    return right

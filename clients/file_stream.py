"""Image files through ``ClassifyStream``: found lazily, read as sent, answered in input order.

At most ``window`` files are in flight (read, sent, or answered but not yet handed back): the
sender waits for a free slot before reading the next file, so a folder of any size costs the
memory of ``window`` images. Answers arrive in completion order; they are handed back in input
order, which the window also bounds. A file that cannot be read becomes an error result and is
never sent; one the server cannot decode comes back as an error result; neither stops the run.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from axon.protocol.v1 import classification_pb2 as cls
from clients.client import AxonClient, Prediction

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class FileResult:
    """One file's answer: its top classes, or why it has none."""

    path: Path
    classes: tuple[Prediction, ...] = ()
    model: str = ""
    version: str = ""
    error: str = ""
    sent: bool = True
    """False for a file that could not be read (it never reached the server)."""


def image_paths(arguments: Iterable[str], stdin: TextIO | None = None) -> Iterator[Path]:
    """Files named by ``arguments``, in order: files as given, folders walked recursively
    (sorted, PNG/JPEG only), globs expanded (``**`` included), and ``-`` for one path per line
    of ``stdin``. A name that matches nothing is yielded as is, so reading it reports it."""
    for argument in arguments:
        if argument == "-":
            if stdin is not None:
                yield from (Path(line.strip()) for line in stdin if line.strip())
            continue
        path = Path(argument)
        if path.is_dir():
            yield from _walk(path)
        elif not path.exists() and _GLOB_CHARACTERS & set(argument):
            matches = sorted(glob.iglob(argument, recursive=True))
            for match in matches:
                found = Path(match)
                yield from (_walk(found) if found.is_dir() else (found,))
            if not matches:
                yield path
        else:
            yield path


def _walk(folder: Path) -> Iterator[Path]:
    for root, folders, files in os.walk(folder):
        folders.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name


def classify_files(client: AxonClient, paths: Iterable[Path], *, model: str = "",
                   version: str = "", top_k: int = 1, window: int = 64,
                   timeout: float | None = None) -> Iterator[FileResult]:
    """Classify every file of ``paths`` on one stream; results in input order.

    Raises ``AxonClientError`` when the stream itself fails (server gone, deadline passed).
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    slots = threading.Semaphore(window)
    sent: dict[int, Path] = {}
    unread: queue.SimpleQueue[tuple[int, FileResult]] = queue.SimpleQueue()

    def requests() -> Iterator[tuple[str, cls.ClassifyRequest]]:
        for number, path in enumerate(paths):
            try:
                data = path.read_bytes()
            except OSError as error:
                reason = "no such file or folder" if isinstance(error, FileNotFoundError) \
                    else error.strerror or str(error)
                unread.put((number, FileResult(path, error=f"cannot read: {reason}",
                                               sent=False)))
                continue
            slots.acquire()  # released once this file's result is handed back
            sent[number] = path
            yield str(number), cls.ClassifyRequest(
                model_name=model, model_version=version, top_k=top_k,
                images=[cls.Image(encoded=data)])

    ready: dict[int, FileResult] = {}
    next_number = 0
    for answer in client.classify_stream(requests(), timeout=timeout):
        number = int(answer.id)
        ready[number] = _result(sent.pop(number), answer)
        # A file that could not be read was queued before any later file was sent, so every
        # number below this answer's is in hand now: emission never waits on one.
        _collect(unread, ready)
        while next_number in ready:
            result = ready.pop(next_number)
            yield result
            if result.sent:
                slots.release()
            next_number += 1
    _collect(unread, ready)
    for number in sorted(ready):
        yield ready[number]


def _collect(unread: queue.SimpleQueue[tuple[int, FileResult]],
             ready: dict[int, FileResult]) -> None:
    while True:
        try:
            number, result = unread.get_nowait()
        except queue.Empty:
            return
        ready[number] = result


def _result(path: Path, answer: cls.ClassifyStreamResponse) -> FileResult:
    if answer.HasField("error"):
        return FileResult(path, error=f"{answer.error.status}: {answer.error.message}")
    response = answer.response
    (classes,) = response.results
    return FileResult(path, tuple(Prediction(c.index, c.label, c.probability)
                                  for c in classes.classes),
                      response.model_name, response.model_version)

"""Image files through ``ClassifyStream``: found lazily, read as sent, answered in input order.

At most ``window`` files are in flight (read, sent, or answered but not yet handed back): the
sender waits for a free slot before reading the next file, so a folder of any size costs the
memory of ``window`` images. Answers arrive in completion order; they are handed back in input
order, which the window also bounds. A file that cannot be read becomes an error result and is
never sent; one the server cannot decode comes back as an error result; neither stops the run.
Files stay in hand until answered, so a stream broken by a server restart is opened again and
the files it left unanswered are sent again: each input gets exactly one result.
"""

from __future__ import annotations

import glob
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc

from axon.protocol.v1 import classification_pb2 as cls
from clients.client import (
    RETRYABLE,
    AxonClient,
    AxonClientError,
    Prediction,
    RetryPolicy,
    retry_pause,
    retry_pauses,
    should_retry,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_GLOB_CHARACTERS = frozenset("*?[")
_TRANSIENT_NAMES = frozenset(code.name for code in RETRYABLE)


class _ReadNext:
    """What a stream sends next is a file not yet read."""


_READ = _ReadNext()


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
    """Classify every file of ``paths`` over ``ClassifyStream``; results in input order, one
    per file.

    Transient failures cost no file: a stream that breaks (server restarted, connection lost)
    is opened again and the files it left unanswered are sent again, and a file refused for a
    moment (RESOURCE_EXHAUSTED, UNAVAILABLE) is sent again after a back-off, both as the
    client's ``RetryPolicy`` allows (the stream's budget starts afresh after each answer).
    Raises ``AxonClientError`` when the stream fails for good (server gone for longer than the
    retries, deadline passed, a code that is not transient).
    """
    if window < 1:
        raise ValueError("window must be at least 1")

    def request_for(data: bytes) -> cls.ClassifyRequest:
        return cls.ClassifyRequest(model_name=model, model_version=version, top_k=top_k,
                                   images=[cls.Image(encoded=data)])

    outbox = _Outbox(iter(paths), window, request_for, client.retry)
    deadline = None if timeout is None else time.monotonic() + timeout
    ready: dict[int, FileResult] = {}
    next_number = 0
    pauses = retry_pauses(client.retry)
    try:
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for answer in client.classify_stream(outbox.open_stream(), timeout=remaining):
                    pauses = retry_pauses(client.retry)
                    number = int(answer.id)
                    path = outbox.answered(number, _transient(answer))
                    if path is None:  # to be sent again
                        client.retries += 1
                        continue
                    ready[number] = _result(path, answer)
                    # A file that could not be read was queued before any later file was
                    # sent, so every number below this answer's is in hand now: emission
                    # never waits on one.
                    _collect(outbox.unread, ready)
                    while next_number in ready:
                        result = ready.pop(next_number)
                        yield result
                        if result.sent:
                            outbox.handed_back()
                        next_number += 1
                if outbox.done():
                    break
                failure = AxonClientError(grpc.StatusCode.UNAVAILABLE,
                                          "the stream ended before every file was answered")
            except AxonClientError as error:
                failure = error
            pause = next(pauses, None)
            if not should_retry(failure, pause, deadline):
                raise failure
            log.info("classification stream interrupted (%s); resuming with %d file(s) "
                     "unanswered", failure, outbox.unanswered())
            time.sleep(pause or 0.0)
            client.retries += 1
    finally:
        outbox.close()
    _collect(outbox.unread, ready)
    for number in sorted(ready):
        yield ready[number]


@dataclass
class _Sent:
    path: Path
    request: cls.ClassifyRequest
    tries: int = 1


class _Outbox:
    """The files on their way: read lazily, and kept from sending until answered so that a
    broken stream or a transient refusal can send them again.

    Shared by two threads: gRPC's, which pulls a stream's requests from ``open_stream``'s
    iterator, and the caller's, which reads the answers. At most ``window`` files are held
    (sent, waiting to be sent again, or answered and not yet handed back).
    """

    def __init__(self, paths: Iterator[Path], window: int,
                 request_for: Callable[[bytes], cls.ClassifyRequest],
                 retry: RetryPolicy) -> None:
        self._paths = paths
        self._window = window
        self._request_for = request_for
        self._retry = retry
        self._changed = threading.Condition()
        self._stream = 0
        self._numbers = itertools.count()
        self._held = 0
        self._unanswered: dict[int, _Sent] = {}
        self._due: list[tuple[float, int]] = []
        """Heap of (monotonic time, number): unanswered files to send (again) from then on."""
        self._exhausted = False
        self._reading = False
        """One thread at a time pulls paths (a replaced stream's may still be at it)."""
        self.unread: queue.SimpleQueue[tuple[int, FileResult]] = queue.SimpleQueue()

    def open_stream(self) -> Iterator[tuple[str, cls.ClassifyRequest]]:
        """A new stream's requests: the unanswered files first, then the rest. The previous
        stream's iterator stops: whatever it sent is unanswered, so it is sent again here."""
        with self._changed:
            self._stream += 1
            waiting = dict((number, due) for due, number in self._due)
            now = time.monotonic()
            self._due = [(waiting.get(number, now), number) for number in self._unanswered]
            heapq.heapify(self._due)
            self._changed.notify_all()
            return self._requests(self._stream)

    def _requests(self, stream: int) -> Iterator[tuple[str, cls.ClassifyRequest]]:
        while True:
            with self._changed:
                due = self._next_due(stream)
            if due is None:
                return
            if not isinstance(due, _ReadNext):
                yield due
                continue
            # Reading happens outside the condition: pulling the next path may block (a path
            # list on stdin), and answers must go on being taken meanwhile.
            read = self._read_next()
            with self._changed:
                if read is None:
                    self._held -= 1  # the place reserved for it
                    self._exhausted = True
                    self._changed.notify_all()
                    continue
                number, sent = read
                self._unanswered[number] = sent
                if stream != self._stream:  # replaced while reading: the new stream sends it
                    heapq.heappush(self._due, (time.monotonic(), number))
                    self._changed.notify_all()
                    return
            yield str(number), sent.request

    def _next_due(self, stream: int) -> tuple[str, cls.ClassifyRequest] | _ReadNext | None:
        """Waits (holding the condition) for what ``stream`` sends next: a file to send again,
        ``_READ`` (a place in the window is reserved for the next file), or None when the
        stream is replaced or every file is answered (the stream then half-closes)."""
        while stream == self._stream:
            now = time.monotonic()
            if self._due and self._due[0][0] <= now:
                _, number = heapq.heappop(self._due)
                return str(number), self._unanswered[number].request
            if self._held < self._window and not self._exhausted and not self._reading:
                self._held += 1
                self._reading = True
                return _READ
            if self._exhausted and not self._unanswered:
                return None
            self._changed.wait(self._due[0][0] - now if self._due else None)
        return None

    def _read_next(self) -> tuple[int, _Sent] | None:
        """The next readable file and its number; unreadable ones on the way become error
        results. None at the end of the paths."""
        try:
            for path in self._paths:
                number = next(self._numbers)
                try:
                    data = path.read_bytes()
                except OSError as error:
                    reason = "no such file or folder" if isinstance(error, FileNotFoundError) \
                        else error.strerror or str(error)
                    self.unread.put((number, FileResult(path, error=f"cannot read: {reason}",
                                                        sent=False)))
                    continue
                return number, _Sent(path, self._request_for(data))
            return None
        finally:
            with self._changed:
                self._reading = False
                self._changed.notify_all()

    def answered(self, number: int, transient: bool) -> Path | None:
        """The path of the file answered as ``number``; None when the answer was a transient
        refusal and the file is to be sent again after a back-off."""
        with self._changed:
            sent = self._unanswered[number]
            if transient and sent.tries < self._retry.attempts:
                pause = retry_pause(self._retry, sent.tries)
                sent.tries += 1
                heapq.heappush(self._due, (time.monotonic() + pause, number))
            else:
                del self._unanswered[number]
            self._changed.notify_all()
            return None if number in self._unanswered else sent.path

    def handed_back(self) -> None:
        """A sent file's result left the caller's hands: its place in the window is free."""
        with self._changed:
            self._held -= 1
            self._changed.notify_all()

    def unanswered(self) -> int:
        with self._changed:
            return len(self._unanswered)

    def done(self) -> bool:
        with self._changed:
            return self._exhausted and not self._unanswered

    def close(self) -> None:
        """Stops the current stream's iterator, so no thread waits on it for ever."""
        with self._changed:
            self._stream = -1
            self._changed.notify_all()


def _transient(answer: cls.ClassifyStreamResponse) -> bool:
    return answer.HasField("error") and answer.error.status in _TRANSIENT_NAMES


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

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

import collections
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
from typing import Protocol, TextIO

import grpc

from axon.client.common import (
    RETRYABLE,
    AxonClientError,
    Prediction,
    RetryPolicy,
    retry_pause,
    retry_pauses,
    should_retry,
    too_large,
)
from axon.client.sync_client import AxonClient
from axon.image_formats import IMAGE_SUFFIXES
from axon.protocol.v1 import classification_pb2 as cls

log = logging.getLogger(__name__)

_GLOB_CHARACTERS = frozenset("*?[")
_TRANSIENT_NAMES = frozenset(code.name for code in RETRYABLE)


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


DEFAULT_WINDOW = 512
"""Files in flight by default (read, sent, or answered and not yet handed back): the memory of
512 files, and deep enough a pipeline to keep both ends busy (docs/performance.md)."""
DEFAULT_STREAMS = 2
"""Streams by default (each on its own connection, when the client has that many). Each stream
costs the client threads of its own that take turns at the interpreter lock, and one client
process spends about as much CPU per image as a worker does decoding it, so it cannot feed
more than a worker or two: over 20,000 MNIST files against 2 workers (docs/performance.md),
2 streams classified 18,300-19,400 images/s, 4 streams 14,400-14,800."""
MESSAGE_BYTES = 8 * 1024 * 1024
"""Most bytes of files per stream message: a message closes early rather than pass it (64
phone photos would pass gRPC's 64 MiB message limit, and fail the stream)."""
MESSAGE_OVERHEAD = 64 * 1024
"""Room left in a message for what is not file bytes (per-image framing, the model's name)."""
DEFAULT_BATCH = 64
"""Files per stream message by default. Each message costs the server a gRPC read and a
batcher submission, and each file the client a message's share of sending and answering:
measured over 10,000 MNIST files (docs/performance.md), 16 files a message gave 0.68x of one
core's decode-and-model limit, 32 gave 0.78-0.85x, 64 gave 0.88x."""


def classify_files(client: AxonClient, paths: Iterable[Path], *, model: str = "",
                   version: str = "", top_k: int = 1, window: int = DEFAULT_WINDOW,
                   batch: int = DEFAULT_BATCH, timeout: float | None = None,
                   on_answer: Callable[[], None] | None = None,
                   streams: int | None = None) -> Iterator[FileResult]:
    """Classify every file of ``paths`` over ``ClassifyStream``; results in input order, one
    per file. ``on_answer`` is called once the results an answer made ready have been yielded,
    before waiting for the next (``axon classify`` flushes its output there).

    ``streams`` (default: ``DEFAULT_STREAMS``, at most one per connection of ``client``) run
    side by side, each on its own connection, so that a server of several worker processes
    decodes on several of them: files go to the streams ``batch`` at a time, in turn, and
    share the window.

    Files go ``batch`` to a message (fewer when the paths run out, and never more than the
    model takes per request), with per-image errors, so one undecodable file fails only itself.
    At most ``window`` files are in flight.

    Transient failures cost no file: a stream that breaks (server restarted, connection lost)
    is opened again and the messages it left unanswered are sent again, and a message refused
    for a moment (RESOURCE_EXHAUSTED, UNAVAILABLE) is sent again after a back-off, both as the
    client's ``RetryPolicy`` allows (the stream's budget starts afresh after each answer).
    Raises ``AxonClientError`` when the stream fails for good (server gone for longer than the
    retries, deadline passed, a code that is not transient), after yielding a result for each
    file it had taken: those answered, and the rest as "not classified" errors.

    A message holds at most ``MESSAGE_BYTES`` of files (fewer files than ``batch`` when they
    are large); a file too large for a message of the client's ``max_message_bytes`` is an
    error result, never sent.
    """
    if window < 1 or batch < 1:
        raise ValueError("window and batch must be at least 1")
    streams = min(streams or DEFAULT_STREAMS, len(client.channels), window)
    if streams > 1:
        yield from _classify_on_streams(
            client, iter(paths), streams, batch, on_answer, model=model, version=version,
            top_k=top_k, window=window // streams, timeout=timeout)
        return
    batch = min(batch, window, _model_batch_limit(client, model, version))
    outbox = _Outbox(_PathFeed(iter(paths), batch), window, batch,
                     _request_maker(model, version, top_k), client.retry,
                     max_message_bytes=client.max_message_bytes)
    yield from _classify_stream(client, outbox, on_answer, timeout=timeout)


def _request_maker(model: str, version: str,
                   top_k: int) -> Callable[[list[bytes]], cls.ClassifyRequest]:
    def request_for(images: list[bytes]) -> cls.ClassifyRequest:
        return cls.ClassifyRequest(model_name=model, model_version=version, top_k=top_k,
                                   images=[cls.Image(encoded=data) for data in images],
                                   per_image_errors=True)

    return request_for


def _classify_stream(client: AxonClient, outbox: _Outbox,
                     on_answer: Callable[[], None] | None, *, timeout: float | None,
                     hands_back: bool = True) -> Iterator[FileResult]:
    """``classify_files`` on one stream, its messages from ``outbox``. Without
    ``hands_back``, a result's place in the window is freed by whoever finally takes it
    (``_Outbox.handed_back``), not when it is yielded."""
    in_order = _InOrder(outbox, hands_back=hands_back)
    deadline = None if timeout is None else time.monotonic() + timeout
    pauses = retry_pauses(client.retry)
    try:
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for answer in client.classify_stream(outbox.open_stream(), timeout=remaining):
                    pauses = retry_pauses(client.retry)
                    files = outbox.answered(int(answer.id), _transient(answer))
                    if files is None:  # to be sent again
                        client.retries += 1
                        continue
                    yield from in_order.add(files, _results(files, answer))
                    if on_answer is not None:
                        on_answer()
                if outbox.done():
                    break
                failure = AxonClientError(grpc.StatusCode.UNAVAILABLE,
                                          "the stream ended before every file was answered")
            except AxonClientError as error:
                failure = error
            pause = next(pauses, None)
            if not should_retry(failure, pause, deadline):
                if too_large(failure):
                    failure = AxonClientError(failure.code, (
                        f"{failure.message}: send fewer files per message (--batch), or raise "
                        "the server's --max-message-bytes"))
                # What was answered goes out, and every file taken gets a line: none is lost
                # without a word.
                yield from in_order.abandon(outbox.abandoned(), f"not classified: {failure}")
                raise failure
            log.info("classification stream interrupted (%s); resuming with %d file(s) "
                     "unanswered", failure, outbox.unanswered())
            time.sleep(pause or 0.0)
            client.retries += 1
    finally:
        outbox.close()
    yield from in_order.rest()


def _classify_on_streams(client: AxonClient, paths: Iterator[Path], streams: int, batch: int,
                         on_answer: Callable[[], None] | None, *, model: str, version: str,
                         top_k: int, window: int, timeout: float | None
                         ) -> Iterator[FileResult]:
    """``classify_files`` on ``streams`` streams (``window`` files each), fed from a thread in
    turns of a message's worth of paths; each stream's results (one per path, in its input
    order) are taken back in the order the turns were dealt, so they come out in input order.

    Paths go to the streams, and results come back from them, a message's worth at a time:
    every hand-off between threads costs a lock and a wake-up, which per file would cost the
    client more than reading the file does (measured: docs/performance.md)."""
    batch = min(batch, window, _model_batch_limit(client, model, version))
    feeds = [queue.Queue[list[Path] | None](maxsize=max(1, window // batch))
             for _ in range(streams)]
    dealt: queue.Queue[tuple[int, int] | None] = queue.Queue()
    """(stream, paths) for each turn, in input order; None after the last."""
    results = [queue.Queue[list[FileResult] | BaseException]() for _ in range(streams)]
    request_for = _request_maker(model, version, top_k)
    outboxes = [_Outbox(_DealtPaths(feed), window, batch, request_for, client.retry,
                        max_message_bytes=client.max_message_bytes) for feed in feeds]
    failure: list[BaseException] = []
    source = _PathFeed(paths, batch)

    def deal() -> None:
        try:
            stream = 0
            while turn := _read_turn(source, batch):
                dealt.put((stream, len(turn)))
                feeds[stream].put(turn)
                stream = (stream + 1) % streams
        except BaseException as error:  # handed to the reader, to raise there
            failure.append(error)
        finally:
            for feed in feeds:
                feed.put(None)
            dealt.put(None)

    def classify(stream: int) -> None:
        answered: list[FileResult] = []

        def hand_over() -> None:
            nonlocal answered
            if answered:
                results[stream].put(answered)
                answered = []

        try:
            for result in _classify_stream(client, outboxes[stream], hand_over,
                                           timeout=timeout, hands_back=False):
                answered.append(result)
            hand_over()
        except BaseException as error:  # handed to the reader, to raise there
            hand_over()
            results[stream].put(error)

    threads = [threading.Thread(target=deal, name="axon-path-dealer", daemon=True)]
    threads += [threading.Thread(target=classify, args=(stream,), daemon=True,
                                 name=f"axon-stream-{stream}") for stream in range(streams)]
    for thread in threads:
        thread.start()
    yield from _in_dealt_order(dealt, results, outboxes, on_answer)
    # Every stream half-closes once its files are answered: wait for that, or closing the
    # client would cut streams that are done but not yet ended.
    for thread in threads:
        thread.join()
    if failure:
        raise failure[0]
    for stream_results in results:  # a stream that failed after a result for every file
        while not stream_results.empty():
            if isinstance(left := stream_results.get_nowait(), BaseException):
                raise left


def _in_dealt_order(dealt: queue.Queue[tuple[int, int] | None],
                    results: list[queue.Queue[list[FileResult] | BaseException]],
                    outboxes: list[_Outbox],
                    on_answer: Callable[[], None] | None) -> Iterator[FileResult]:
    """The streams' results in the order their turns were dealt, each turn's places in its
    stream's window freed once taken; raises what a stream raised."""
    taken: list[collections.deque[FileResult]] = [collections.deque() for _ in results]
    while (turn := dealt.get()) is not None:
        stream, count = turn
        ready = taken[stream]
        handed = 0
        try:
            for _ in range(count):
                if not ready:
                    if results[stream].empty() and on_answer is not None:
                        on_answer()  # about to wait: what is out so far goes out now
                    answer = results[stream].get()
                    if isinstance(answer, BaseException):
                        raise answer
                    ready.extend(answer)
                result = ready.popleft()
                handed += result.sent
                yield result
        finally:
            outboxes[stream].handed_back(handed)


def _read_turn(source: _PathSource, size: int) -> list[Path]:
    """Up to ``size`` paths; fewer when the next is slow to come (see ``PATH_LINGER_S``),
    none at the end."""
    turn: list[Path] = []
    while len(turn) < size:
        try:
            path = source.next(timeout=PATH_LINGER_S if turn else None)
        except queue.Empty:
            break
        if path is None:
            break
        turn.append(path)
    return turn


class _InOrder:
    """Results as they are answered, handed back in input order."""

    def __init__(self, outbox: _Outbox, *, hands_back: bool = True) -> None:
        self._outbox = outbox
        self._hands_back = hands_back
        """False: whoever takes the results frees their places (``_Outbox.handed_back``)."""
        self._ready: dict[int, FileResult] = {}
        self._next = 0

    def add(self, files: list[Numbered], results: list[FileResult]) -> Iterator[FileResult]:
        """Take one answer's results; yield every result now due, in order."""
        for (number, _), result in zip(files, results, strict=True):
            self._ready[number] = result
        # A file that could not be read was queued before any later file was sent, so every
        # number below this answer's is in hand now: emission never waits on one.
        _collect(self._outbox.unread, self._ready)
        handed = 0
        try:
            while self._next in self._ready:
                result = self._ready.pop(self._next)
                self._next += 1
                handed += result.sent
                yield result
        finally:  # their places in the window, freed at once: one wake-up of the sender
            if self._hands_back:
                self._outbox.handed_back(handed)

    def abandon(self, files: list[Numbered], error: str) -> Iterator[FileResult]:
        """Everything in hand, in input order, ``files`` (taken, never answered) as errors."""
        for number, path in files:
            self._ready[number] = FileResult(path, error=error)
        yield from self.rest()

    def rest(self) -> Iterator[FileResult]:
        """What is left once the stream is over: unreadable files at the end."""
        _collect(self._outbox.unread, self._ready)
        for number in sorted(self._ready):
            yield self._ready[number]


def _model_batch_limit(client: AxonClient, model: str, version: str) -> int:
    """Most images the model takes per request (ListModels); DEFAULT_BATCH when the server
    cannot say (several models loaded and none named, or ListModels failing: the stream
    itself then reports what is wrong)."""
    try:
        models = client.models()
    except AxonClientError:
        return DEFAULT_BATCH
    described = [m for m in models if (not model or m.name == model)
                 and (not version or m.version == version)]
    names = {m.name for m in described}
    if len(names) != 1:
        return DEFAULT_BATCH
    return max(1, min(m.max_batch_size for m in described))


Numbered = tuple[int, Path]
"""A file's number in input order, and its path."""
PATH_LINGER_S = 0.02
"""How long a message being filled waits for its next path before it goes out as it is."""


class _PathSource(Protocol):
    def next(self, timeout: float | None) -> Path | None:
        """The next path; None at the end (and after); queue.Empty if none came within
        ``timeout``."""


class _DealtPaths:
    """One stream's share of the paths, dealt to it in turns by another thread (no thread of
    its own: the dealer already waits for slow paths)."""

    def __init__(self, turns: queue.Queue[list[Path] | None]) -> None:
        self._turns = turns
        self._turn: list[Path] = []
        self._taken = 0
        self._ended = False

    def next(self, timeout: float | None) -> Path | None:
        if self._taken == len(self._turn):
            if self._ended:
                return None
            turn = self._turns.get(timeout=timeout)
            if turn is None:
                self._ended = True
                return None
            self._turn, self._taken = turn, 0
        path = self._turn[self._taken]
        self._taken += 1
        return path


class _PathFeed:
    """Paths pulled from an iterator on a thread of their own, up to ``ahead`` before they are
    taken, so that the caller can stop waiting for one that is slow to come (a path list on
    stdin) and still get it later. Paths only: files are read by the caller, within its
    window."""

    _END = object()

    def __init__(self, paths: Iterator[Path], ahead: int) -> None:
        self._paths = paths
        self._ended = False
        self._pulled: queue.Queue[object] = queue.Queue(maxsize=ahead)
        self._thread = threading.Thread(target=self._pull, name="axon-path-feed", daemon=True)
        self._thread.start()

    def next(self, timeout: float | None) -> Path | None:
        """The next path; None at the end (and after); queue.Empty if none came within
        ``timeout``."""
        if self._ended:
            return None
        item = self._pulled.get(timeout=timeout)
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is self._END:
            self._ended = True
            return None
        return item  # type: ignore[return-value]

    def _pull(self) -> None:
        try:
            for path in self._paths:
                self._pulled.put(path)
        except BaseException as error:  # handed to the reader, to raise there
            self._pulled.put(error)
            return
        self._pulled.put(self._END)


@dataclass
class _Sent:
    files: list[Numbered]
    request: cls.ClassifyRequest
    tries: int = 1


class _Outbox:
    """The messages on their way: files read lazily, ``batch`` to a message, and each message
    kept until answered so that a broken stream or a transient refusal can send it again.

    Shared by two threads: gRPC's, which pulls a stream's requests from ``open_stream``'s
    iterator, and the caller's, which reads the answers. At most ``window`` files are held
    (sent, waiting to be sent again, or answered and not yet handed back).
    """

    def __init__(self, paths: _PathSource, window: int, batch: int,
                 request_for: Callable[[list[bytes]], cls.ClassifyRequest],
                 retry: RetryPolicy, *, max_message_bytes: int) -> None:
        self._paths = paths
        self._file_bytes = max_message_bytes - MESSAGE_OVERHEAD
        """Largest file a message (of that one file) can carry."""
        self._message_bytes = max(1, min(MESSAGE_BYTES, self._file_bytes))
        self._carried: Numbered | None = None
        """A file that would have taken its message past ``_message_bytes``: the next one's
        first."""
        self._window = window
        self._batch = batch
        self._request_for = request_for
        self._retry = retry
        self._changed = threading.Condition()
        self._stream = 0
        self._file_numbers = itertools.count()
        self._message_numbers = itertools.count()
        self._held = 0
        self._unanswered: dict[int, _Sent] = {}
        self._due: list[tuple[float, int]] = []
        """Heap of (monotonic time, message number): unanswered messages to send (again)
        from then on."""
        self._exhausted = False
        self._reading = False
        """One thread at a time pulls paths (a replaced stream's may still be at it)."""
        self.unread: queue.SimpleQueue[tuple[int, FileResult]] = queue.SimpleQueue()

    def open_stream(self) -> Iterator[tuple[str, cls.ClassifyRequest]]:
        """A new stream's requests: the unanswered messages first, then the rest. The previous
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
            if isinstance(due, tuple):
                yield due
                continue
            # Reading happens outside the condition: pulling the next path may block (a path
            # list on stdin), and answers must go on being taken meanwhile.
            read = self._read_next(due)
            with self._changed:
                self._held -= due - (len(read[1].files) if read else 0)  # places not used
                if read is None:
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

    def _next_due(self, stream: int) -> tuple[str, cls.ClassifyRequest] | int | None:
        """Waits (holding the condition) for what ``stream`` sends next: a message to send
        again, a number of files to read into a new message (their places in the window are
        reserved), or None when the stream is replaced or every file is answered (the stream
        then half-closes)."""
        while stream == self._stream:
            now = time.monotonic()
            if self._due and self._due[0][0] <= now:
                _, number = heapq.heappop(self._due)
                return str(number), self._unanswered[number].request
            room = min(self._batch, self._window - self._held)
            # A full message when the window allows; a smaller one only when nothing else is
            # in flight (else waiting for room fills the message).
            if room > 0 and not self._exhausted and not self._reading and \
                    (room == self._batch or not self._unanswered):
                self._held += room
                self._reading = True
                return room
            if self._exhausted and not self._unanswered:
                return None
            self._changed.wait(self._due[0][0] - now if self._due else None)
        return None

    def _read_next(self, count: int) -> tuple[int, _Sent] | None:
        """A message of up to ``count`` readable files and its number; unreadable files on the
        way become error results. None at the end of the paths. A message goes out with fewer
        files when the next path is slow to come (paths typed or piped on stdin): a file that
        has been named is never kept waiting for others."""
        files: list[Numbered] = []
        images: list[bytes] = []
        size = 0
        try:
            while len(files) < count:
                if self._carried is not None:
                    (number, path), self._carried = self._carried, None
                else:
                    try:
                        pulled = self._paths.next(timeout=PATH_LINGER_S if files else None)
                    except queue.Empty:
                        break
                    if pulled is None:
                        break
                    number, path = next(self._file_numbers), pulled
                try:
                    with open(path, "rb", buffering=0) as file:  # one read, no buffer to fill
                        length = os.fstat(file.fileno()).st_size
                        if length > self._file_bytes:
                            self.unread.put((number, FileResult(path, error=(
                                f"too large to send: {length:,} bytes, over the "
                                f"{self._file_bytes:,} a message can carry"), sent=False)))
                            continue
                        if files and size + length > self._message_bytes:
                            self._carried = number, path
                            break
                        images.append(file.read())
                except OSError as error:
                    reason = "no such file or folder" if isinstance(error, FileNotFoundError) \
                        else error.strerror or str(error)
                    self.unread.put((number, FileResult(path, error=f"cannot read: {reason}",
                                                        sent=False)))
                    continue
                size += len(images[-1])
                files.append((number, path))
            if not files:
                return None
            return next(self._message_numbers), _Sent(files, self._request_for(images))
        finally:
            with self._changed:
                self._reading = False
                self._changed.notify_all()

    def answered(self, number: int, transient: bool) -> list[Numbered] | None:
        """The files of message ``number``; None when the answer was a transient refusal and
        the message is to be sent again after a back-off."""
        with self._changed:
            sent = self._unanswered[number]
            if transient and sent.tries < self._retry.attempts:
                pause = retry_pause(self._retry, sent.tries)
                sent.tries += 1
                heapq.heappush(self._due, (time.monotonic() + pause, number))
            else:
                del self._unanswered[number]
            self._changed.notify_all()
            return None if number in self._unanswered else sent.files

    def handed_back(self, files: int) -> None:
        """Sent files' results left the caller's hands: their places in the window are free."""
        if files:
            with self._changed:
                self._held -= files
                self._changed.notify_all()

    def abandoned(self) -> list[Numbered]:
        """Files taken and never answered: sent, or carried to a message never read."""
        with self._changed:
            files = [file for sent in self._unanswered.values() for file in sent.files]
        if self._carried is not None:
            files.append(self._carried)
        return files

    def unanswered(self) -> int:
        """Files sent and not answered yet."""
        with self._changed:
            return sum(len(sent.files) for sent in self._unanswered.values())

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


def _results(files: list[Numbered], answer: cls.ClassifyStreamResponse) -> list[FileResult]:
    """One result per file of a message, from its answer."""
    if answer.HasField("error"):
        error = f"{answer.error.status}: {answer.error.message}"
        return [FileResult(path, error=error) for _, path in files]
    response = answer.response
    if len(response.results) != len(files):
        error = f"the server answered {len(response.results)} images for {len(files)}"
        return [FileResult(path, error=error) for _, path in files]
    return [_result(path, result, response) for (_, path), result
            in zip(files, response.results, strict=True)]


def _result(path: Path, result: cls.ImageClassification,
            response: cls.ClassifyResponse) -> FileResult:
    if result.HasField("error"):
        return FileResult(path, error=f"{result.error.status}: {result.error.message}")
    return FileResult(path, tuple(Prediction(c.index, c.label, c.probability)
                                  for c in result.classes),
                      response.model_name, response.model_version)

"""The dynamic batcher: merges concurrent requests into model executions.

Requests (each 1..N items, rows of one float32 array) wait in a bounded FIFO queue, and a batch
takes whole requests, oldest first, up to ``max_batch_size`` items. When to run one is the
whole design, because on this class of machine a Python gRPC call costs several times what a
small model does, and every hand-off between threads costs tens of microseconds:

- while the event loop is busy taking in other calls, the batch waits: those calls can join it,
  and the model's cost is shared by more of them;
- the moment the loop has nothing else to do (``LoopTicker``), it runs: every request that has
  reached the server is in the batch, and with time to spare on the loop waiting would only add
  latency. A lone caller never waits;
- except when the loop is saturated (``LoopLoad``: its thread on the CPU most of the time, so
  a queued request is not slowed by waiting for company) and a crowd of callers was in the
  server lately (``RecentPeak``): most of them are then between an answer and their next
  request, and the batch cut on an idle loop waits until as many are queued as were in the
  server at once (at most ``ExecutionTimes.worth_waiting_size``), or the crowd is forgotten, or
  ``max_queue_delay_ms`` ends -- a timer, armed only then. Otherwise such a crowd is run a few
  items at a time, each execution and thread hand-off paid again for little;
- it also runs once it is full, once the oldest request has waited ``max_queue_delay_ms``, or
  -- when an execution ends with at least as many items queued as it ran, so the model is the
  bottleneck -- at once with everything queued, as Triton's dynamic batcher does;
- a request so big that the model runs no cheaper per item in a larger batch
  (``ExecutionTimes.alone_from``; ``alone_on_thread_from`` for one that must go to a worker
  thread, where each execution also pays a hand-off) gains nothing from company: with nothing
  queued before it, it runs at once, on a busy loop too, as it would with nobody else about.

A batch runs inline on the event loop when the loop has nothing else to do and the batch is
expected to take at most ``max_inline_ms`` (measured per batch size, ``ExecutionTimes``):
no thread hand-off. Otherwise it runs on one of ``instances`` worker threads while the loop
goes on serving. An execution that starts with no other in flight may run on ``execute_solo``
(the model on the idle instances' threads too), from the batch size on which the load-time
profile found that to pay (``ExecutionTimes.solo_from``), while it still pays live
(``SoloWatch``: when the other cores are busy it does not, and the batcher then runs and sizes
batches from one thread's times for a while). Each request gets back its own rows of
every output; requests whose caller cancelled, or whose deadline passed while queued, are
dropped before execution.

It knows nothing of gRPC or onnxruntime: it is given an ``execute(batch) -> outputs`` function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from axon.batching_settings import BatchingSettings
from axon.cpus import run_anywhere
from axon.server.errors import (
    DeadlineExpiredError,
    InvalidInputError,
    ModelExecutionError,
    QueueFullError,
    ServingError,
    ShuttingDownError,
)
from axon.server.loop_idle import LoopTicker, ticker_for
from axon.server.solo_watch import SoloWatch

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
Execute = Callable[[Array], Sequence[Array]]
"""A model run: every output with one row per item of the input, in new memory (the batcher
reuses a joined batch's input buffer once the run returns; onnxruntime never hands back a view
of its input)."""
Outputs = Sequence[Array]


class BatchObserver(Protocol):
    """Told what the batcher did; implemented by the model's statistics and metrics."""

    def batch_executed(self, size: int, gather_ns: int, infer_ns: int, scatter_ns: int) -> None:
        ...

    def request_dequeued(self, waited_ns: int) -> None:
        ...

    def request_dropped(self, expired: bool) -> None:
        """A queued request was not run: its deadline had passed (``expired``) or its caller
        cancelled."""

    def request_refused(self) -> None:
        """A request was refused because the queue was full."""


class ExecutionTimes:
    """Recent execution time per batch size, by powers of two (an exponential average), and
    what they imply: the batch size past which a bigger batch no longer pays."""

    _WEIGHT = 0.2
    _RECHOOSE_EVERY = 16

    def __init__(self) -> None:
        self._records = 0
        self._worth_waiting: int | None = None
        self._profiled = False
        """Whether ``preferred_size`` and ``worth_waiting_size`` were fixed by ``profile``:
        times measured under load are noisy (other threads share the cores), and a size that
        flips between runs would hold big requests back in one and not in the next. The
        preferred size flipped for good: a few batches of 256 compact-net images on a worker
        thread beside another execution, timed live at the start of a burst, made 128 the
        preferred size; batches of 256 then never formed again to correct it (and those on the
        solo session are not recorded), and the server ran about 12 % slower for its whole
        life (docs/performance.md, "A preferred size that stuck")."""
        self._ns_per_item: dict[int, float] = {}
        """Bucket (``items.bit_length()``) -> time per item."""
        self._preferred: int | None = None
        self.solo_from: int | None = None
        """The smallest batch that runs on the solo session (the model on more threads) when
        no other execution is in flight; None: never. In the profile, the solo session saved
        SOLO_TIME_PER_CPU times the CPU it added for it, and more than it added for every larger
        size (``first_solo_size``). Set by ``profile`` only: live times are measured with the
        rest of the server competing for the cores."""
        self.alone_from: int | None = None
        """The smallest request that runs at once on a busy loop, without waiting for company,
        when nothing is queued before it: the profile's time per item at its size is within
        JOIN_TOLERANCE of the best at any larger size (``first_alone_size``), each size timed
        where it would run (on the solo session, for those that run there on the event loop).
        None: no profile, so no size is known to gain nothing."""
        self.alone_on_thread_from: int | None = None
        """The same for a request too long to run on the busy loop: it starts on a worker
        thread at once. Each execution there also costs EXECUTION_OVERHEAD_NS, the hand-off,
        which a batch shares among its requests: one thread's times, with that added."""
        self.alone_from_one_thread: int | None = None
        """``alone_from`` with every size costed on one thread: for while the solo session
        saves nothing live (``SoloWatch``)."""
        self._one_thread_sizes: tuple[int | None, int | None] | None = None
        """The preferred size and the size worth waiting for, chosen from one thread's times
        only (``profile``; the same when the solo session times none of the sizes)."""
        self.solo_profile: dict[int, tuple[Timing, Timing]] = {}
        """Batch size -> the profile's timings on one thread and on the solo session."""
        self.handoff_ns: float | None = None
        """What running on a worker thread adds to an execution's wall time: waking the
        thread, taking the interpreter lock there and back, waking the loop."""
        self._made_by: _ProfileArgs | None = None
        """``profile``'s arguments, for ``profile_again``."""

    def record_handoff(self, ns: int) -> None:
        known = self.handoff_ns
        self.handoff_ns = ns if known is None else known + self._WEIGHT * (ns - known)

    def record(self, items: int, ns: int) -> None:
        bucket = items.bit_length()
        per_item = ns / items
        known = self._ns_per_item.get(bucket)
        self._ns_per_item[bucket] = per_item if known is None \
            else known + self._WEIGHT * (per_item - known)
        self._records += 1
        if not self._profiled and (known is None or self._records % self._RECHOOSE_EVERY == 0):
            # Choosing costs a pass over every size: redone for a new size at once, else now
            # and then (an average moves little per execution).
            self._preferred = None

    def predict_ns(self, items: int) -> float | None:
        """Expected time for ``items``; from the nearest smaller size measured when this one
        was not (per item, small batches cost more: the guess errs long). None: nothing yet."""
        bucket = items.bit_length()
        for candidate in range(bucket, 0, -1):
            per_item = self._ns_per_item.get(candidate)
            if per_item is not None:
                return per_item * items
        return None

    def preferred_size(self, limit: int, *, one_thread: bool = False) -> int:
        """The smallest batch whose cost per item, counting EXECUTION_OVERHEAD_NS per
        execution, is within PREFERRED_TOLERANCE of the best measured (at most ``limit``):
        past it, waiting for more requests would only add to their latency. Never below
        ``worth_waiting_size``. After ``profile``, the profile's choice; before (no profile:
        TensorRT), from the times recorded live. ``one_thread``: chosen as if the solo
        session ran nothing (after ``profile``)."""
        if one_thread and self._one_thread_sizes is not None:
            return min(self._one_thread_sizes[0] or limit, limit)
        if self._preferred is None:
            self._choose()
        return min(self._preferred or limit, limit)

    def worth_waiting_size(self, limit: int, *, one_thread: bool = False) -> int:
        """The same within WORTH_WAITING_TOLERANCE: the size up to which a batch that could run
        now is worth holding back for requests still on their way (a wait costs latency, so
        only a clear saving per item pays for it). After ``profile``, a size the solo session
        would run on the event loop is costed at its time there, unless ``one_thread``."""
        if one_thread and self._one_thread_sizes is not None:
            return min(self._one_thread_sizes[1] or limit, limit)
        if self._preferred is None:
            self._choose()
        return min(self._worth_waiting or limit, limit)

    def _choose(self, solo_share: Mapping[int, float] | None = None) -> None:
        """``solo_share``: batch size -> its solo time over its one-thread time, for the sizes
        the solo session would run on the event loop (``profile``'s)."""
        # ``record`` runs on worker threads too, and may add a size or reset the choice
        # meanwhile: read one copy (made without letting go of the interpreter lock), and set
        # the sizes once chosen.
        ns_per_item = {1 << (bucket - 1): ns
                       for bucket, ns in self._ns_per_item.copy().items()}
        costs = {size: ns + EXECUTION_OVERHEAD_NS / size for size, ns in ns_per_item.items()}
        if not costs:
            return
        best = min(costs.values())
        preferred = min(size for size, cost in costs.items()
                        if cost <= best * (1 + PREFERRED_TOLERANCE))
        worth_waiting = self._worth_waiting
        if not self._profiled:
            # A batch held back is cut when the loop falls idle, and runs there when it is
            # short enough: alone, so on the solo session from solo_from on, holding the loop
            # for its time there, not for one thread's. The compact digit net's 256 images take
            # 0.6-0.65x as long on two threads, which makes 256 worth waiting for where one
            # thread's times stop at 128 (docs/performance.md, "Batches sized for the solo
            # session"). The preferred size's batches start while the loop is busy, on worker
            # threads, maybe beside another execution: one thread's times choose it, but not
            # below the size worth waiting for (below).
            share = solo_share or {}
            held = {size: ns * share.get(size, 1.0) + EXECUTION_OVERHEAD_NS / size
                    for size, ns in ns_per_item.items()}
            best_held = min(held.values())
            worth_waiting = min(size for size, cost in held.items()
                                if cost <= best_held * (1 + WORTH_WAITING_TOLERANCE))
        if worth_waiting is not None and worth_waiting > preferred:
            # Only the solo session's times can make the size worth waiting for the larger.
            # A batch cut below it on a busy loop runs on one thread, and the size an idle loop
            # waits for then rarely forms: on an Intel Xeon, where the compact digit net's 128
            # images came within 10 % of 256's cost per image on one thread in some starts,
            # those starts ran 128 images per execution at 16 callers x 64 images, 0.83-0.98x
            # the naive server against 1.26x with 256 (docs/performance.md, "On an Intel
            # Xeon").
            preferred = worth_waiting
        self._worth_waiting = worth_waiting
        self._preferred = preferred

    def profile(self, execute: Execute, item_shape: tuple[int, ...], limit: int,
                budget_ns: int = 1_000_000_000, *, execute_solo: Execute | None = None,
                inline_ns: int = 0, interrupted: Callable[[], bool] | None = None) -> bool:
        """Time batches of 1, 2, 4, ... ``limit`` items of zeros (the best of several runs
        each, after one untimed), within ``budget_ns`` of running time: the batcher's first
        estimates, made before the model takes traffic. With ``execute_solo`` (the model on
        more threads), time that too and set ``solo_from``; the size worth waiting for is
        then chosen with the solo times of the sizes from it on that take at most
        ``inline_ns`` on one thread. (A batch that short, held back for company, runs on the
        event loop once it falls idle, where no other execution is ever beside it: on the solo
        session.) False: ``interrupted()``, asked before each size, said to stop; the times
        are then incomplete."""
        self._made_by = _ProfileArgs(execute, item_shape, limit, budget_ns, execute_solo,
                                     inline_ns)
        spent = 0
        ns_per_item: dict[int, float] = {}
        sizes = [1 << k for k in range(limit.bit_length()) if 1 << k < limit] + [limit]
        sessions = [execute] if execute_solo is None else [execute, execute_solo]
        for size in sizes:
            if spent >= budget_ns:
                break
            if interrupted is not None and interrupted():
                return False
            timings = _timed_runs(sessions, np.zeros((size, *item_shape), np.float32))
            spent += sum(timing.spent_ns for timing in timings)
            ns_per_item[size] = self._ns_per_item[size.bit_length()] = timings[0].wall_ns / size
            if execute_solo is not None:
                self.solo_profile[size] = (timings[0], timings[1])
        solo_from = self.solo_from = first_solo_size(self.solo_profile)
        if execute_solo is not None:
            solo_from = self.solo_from = self._time_solo_again(execute, execute_solo,
                                                               item_shape)
        solo_share = {size: solo.wall_ns / single.wall_ns
                      for size, (single, solo) in self.solo_profile.items()
                      if solo_from is not None and size >= solo_from
                      and single.wall_ns <= inline_ns}
        self._choose()
        self._one_thread_sizes = (self._preferred, self._worth_waiting)
        if solo_share:
            self._choose(solo_share)
        # Costed as the sizes worth waiting for are: a batch that company would make big
        # enough for the solo session on the loop gains its time there.
        self.alone_from = first_alone_size(
            {size: ns * solo_share.get(size, 1.0) for size, ns in ns_per_item.items()}, limit)
        self.alone_from_one_thread = first_alone_size(ns_per_item, limit)
        self.alone_on_thread_from = first_alone_size(ns_per_item, limit, EXECUTION_OVERHEAD_NS)
        self._profiled = True
        return True

    @property
    def solo_may_pay(self) -> bool:
        """Whether the profile found no size for the solo session although one thread took
        at least SOLO_MAY_PAY_NS for the largest batch, long enough to gain on more threads:
        maybe a profile that a busy moment of the machine disturbed
        (``DynamicBatcher.look_again_when_idle``)."""
        if self.solo_from is not None or not self.solo_profile:
            return False
        return max(single.wall_ns for single, _ in self.solo_profile.values()) \
            >= SOLO_MAY_PAY_NS

    def profile_again(self, interrupted: Callable[[], bool]) -> ExecutionTimes | None:
        """A new profile, made as this one was; None if ``interrupted()`` said to stop
        before it ended. Times recorded live since are not carried over; the hand-off's are."""
        made_by = self._made_by
        if made_by is None:
            raise RuntimeError("profile_again needs a profile made before")
        fresh = ExecutionTimes()
        fresh.handoff_ns = self.handoff_ns
        if not fresh.profile(made_by.execute, made_by.item_shape, made_by.limit,
                             made_by.budget_ns, execute_solo=made_by.execute_solo,
                             inline_ns=made_by.inline_ns, interrupted=interrupted):
            return None
        return fresh

    def _time_solo_again(self, execute: Execute, execute_solo: Execute,
                         item_shape: tuple[int, ...]) -> int | None:
        """When no size paid on the solo session but some ran clearly faster there (in at most
        PROFILE_SOLO_RETRY_SHARE of one thread's time), time those again after a pause, up to
        PROFILE_SOLO_RETRIES times, keeping each session's best: the
        solo session needs a second core at once, and on these virtual machines one that was
        busy or slow to wake for a moment made every size lose in about one start in seven
        (the compact net's 256 images: 100 µs saved for 200 µs of CPU, against 185 for 70),
        leaving the server on one thread for life (docs/performance.md, "A preferred size
        that stuck")."""
        solo_from = self.solo_from
        for _ in range(PROFILE_SOLO_RETRIES):
            faster = [size for size, (single, solo) in self.solo_profile.items()
                      if size >= SOLO_MIN_ITEMS
                      and solo.wall_ns <= PROFILE_SOLO_RETRY_SHARE * single.wall_ns]
            if solo_from is not None or not faster:
                break
            time.sleep(PROFILE_SOLO_PAUSE_S)
            for size in faster:
                again = _timed_runs([execute, execute_solo],
                                    np.zeros((size, *item_shape), np.float32))
                self.solo_profile[size] = (
                    _best(self.solo_profile[size][0], again[0]),
                    _best(self.solo_profile[size][1], again[1]))
            solo_from = first_solo_size(self.solo_profile)
        return solo_from


def first_alone_size(ns_per_item: Mapping[int, float], limit: int,
                     execution_ns: float = 0.0) -> int:
    """From the profile's time per item by batch size, the smallest size whose cost per item
    (with ``execution_ns`` per execution shared by its items) is within JOIN_TOLERANCE of the
    best of every larger size: a request that big saves next to nothing by sharing an
    execution, and joining one costs it the queue, a future and a copy into the batch.
    ``limit`` (the largest batch, which no company can join) when no smaller size is."""
    cost = {size: ns + execution_ns / size for size, ns in ns_per_item.items()}
    sizes = sorted(size for size in cost if size < limit)
    for index, size in enumerate(sizes):
        larger = [cost[other] for other in [*sizes[index + 1:], limit] if other in cost]
        if larger and cost[size] <= (1 + JOIN_TOLERANCE) * min(larger):
            return size
    return limit


def first_solo_size(profile: Mapping[int, tuple[Timing, Timing]]) -> int | None:
    """From ``profile`` (batch size -> timings on one thread and on the solo session), the
    smallest size, from SOLO_MIN_ITEMS on, for which the solo session cut the time by at least
    SOLO_TIME_PER_CPU times the CPU it added, and from which on it cut every larger size's by
    more than it added; None: no such size. Either way, a cut under SOLO_MIN_SAVED_SHARE of
    one thread's time counts as none."""
    paying = [size for size, (single, solo) in profile.items()
              if size >= SOLO_MIN_ITEMS and _solo_saves(single, solo, SOLO_TIME_PER_CPU)]
    # A larger size that saves less than it adds (or nothing) ends the run: one that pays
    # between two that do not is noise, and would send batches back and forth between the
    # sessions. One that saves at least what it adds, but not twice, does not: the default
    # digit net's 128 and 256 images save 2-3x on an AMD EPYC Zen 4, and a profile that read
    # one of them just under 2x kept its 16- to 64-image batches, which mostly read 3-10x, on one
    # thread (docs/performance.md, "Sizes the profile read as paying").
    gaining = {size for size, (single, solo) in profile.items()
               if _solo_saves(single, solo, 1)}
    return next((size for size in sorted(paying)
                 if all(other in gaining for other in profile if other > size)), None)


def _solo_saves(single: Timing, solo: Timing, time_per_cpu: float) -> bool:
    saved = single.wall_ns - solo.wall_ns
    return saved >= SOLO_MIN_SAVED_SHARE * single.wall_ns \
        and saved >= time_per_cpu * (solo.cpu_ns - single.cpu_ns)


class _ProfileArgs(NamedTuple):
    execute: Execute
    item_shape: tuple[int, ...]
    limit: int
    budget_ns: int
    execute_solo: Execute | None
    inline_ns: int


class Timing(NamedTuple):
    """A profiled batch size: its best run's wall time, the least CPU a run took (the whole
    process's: a model loaded while others serve traffic counts theirs too, and chooses less
    surely), and the time the runs took in all."""

    wall_ns: int
    cpu_ns: int
    spent_ns: int


def _best(first: Timing, second: Timing) -> Timing:
    """Two timings of one session and size as one: the best of both, the time of both."""
    return Timing(min(first.wall_ns, second.wall_ns), min(first.cpu_ns, second.cpu_ns),
                  first.spent_ns + second.spent_ns)


def _timed_runs(sessions: Sequence[Execute], batch: Array) -> list[Timing]:
    """Each session's timing of ``batch``: ``PROFILE_RUNS`` timed runs after an untimed one;
    with two sessions to compare, enough for ``PROFILE_MIN_NS`` of runs, the sessions taking
    turns so that a burst of other work on the machine falls on both alike."""
    spent = [0] * len(sessions)
    for index, execute in enumerate(sessions):
        # A shape's first run plans and allocates its buffers: up to several times a later
        # run's time, and enough, timed, to move the sizes chosen from one start to the next.
        started = time.perf_counter_ns()
        execute(batch)
        spent[index] = time.perf_counter_ns() - started
    runs = PROFILE_RUNS if len(sessions) == 1 else \
        max(PROFILE_RUNS, min(PROFILE_MAX_RUNS, PROFILE_MIN_NS // max(1, min(spent))))
    walls: list[list[int]] = [[] for _ in sessions]
    cpus: list[list[int]] = [[] for _ in sessions]
    for _ in range(runs):
        for index, execute in enumerate(sessions):
            cpu_started = time.process_time_ns()
            started = time.perf_counter_ns()
            execute(batch)
            walls[index].append(time.perf_counter_ns() - started)
            cpus[index].append(time.process_time_ns() - cpu_started)
            spent[index] += walls[index][-1]
    return [Timing(min(wall), min(cpu), total)
            for wall, cpu, total in zip(walls, cpus, spent, strict=True)]


PROFILE_RUNS = 3
PROFILE_MAX_RUNS = 50
PROFILE_MIN_NS = 5_000_000
"""Comparing the sessions, a short batch is timed more often: the best of a few runs of 100 µs
is the luck of a moment, and the solo session's time, which needs two cores at once, is the
more disturbed (it adds 0.1-0.2 s to loading the digit nets)."""
PROFILE_SOLO_RETRIES = 2
PROFILE_SOLO_PAUSE_S = 0.1
PROFILE_SOLO_RETRY_SHARE = 0.9
"""When no size paid, the sizes the solo session ran in at most this share of one thread's time
are timed again, after the pause, as many times (``ExecutionTimes._time_solo_again``). A
disturbed start ran the compact digit net's 256 images in 0.79-0.82 of the time; a model too
small to gain (784 -> 20 -> 10) ran them in 0.95 for 45 % more CPU, and is not kept waiting
(a retry costs its load 0.2 s)."""


SOLO_MAY_PAY_NS = 250_000
"""A model whose largest batch takes one thread this long could gain on the solo session (the
most it can save, half, is at least twice the ~30-70 µs of CPU that waking the other threads
adds); one that found no solo size is then profiled again when the server is idle. The
primer's digit net (784 -> 20 -> 10) takes 61 µs for 256 images on one thread here and never
gains; the compact net takes 504 µs and gains in a calm start."""
SECOND_LOOKS = 3
"""Profiles ``DynamicBatcher.look_again_when_idle`` makes at most, one per idle moment."""
SECOND_LOOK_IDLE_S = 1.0
SECOND_LOOK_BACKOFF = 4
"""How long no request may have arrived before the server counts as idle for a second look;
for each look made, this many times longer (1, 4 and 16 s)."""
TO_PROFILE_AGAIN = "to be profiled again when the server is idle"
PROFILED_AGAIN = "profiled again while the server was idle"
NEVER_HELD = "never held back for others to join"
"""What the log says of a model that will look again, of one a look gave a solo size, and of
the requests that run alone (server/model_manager.py); ``axon bench`` reads the log for
them."""


SOLO_TIME_PER_CPU = 2
"""The solo session runs a batch size whose time it cuts by at least this many times the CPU it
adds. Waking the other threads costs a fixed ~30-70 µs of CPU per execution on this class of
machine, so small batches lose and long ones gain: the default digit net's single image saves
~20 µs for ~35 µs of CPU, its 64 images save 1.1 ms for 2 % more (2.34 ms on one thread, 1.26
on two). At 2, CPU is bought only where it buys clearly more time, and a lone caller's single
images, whose CPU per call is a serving target, stay on one thread by a wide margin
(docs/performance.md, "A batch on the idle instances' cores"), and by SOLO_MIN_ITEMS where
a quiet profile reads otherwise."""
SOLO_MIN_SAVED_SHARE = 0.1
"""A cut smaller than this share of one thread's time is no cut: the CPU a profile reads for
two threads can come out at or below one thread's (the difference of two close figures), and
such a run then read as paying for a microsecond saved. On an AMD EPYC Zen 4 the compact digit
net's 64 images once took 308 µs on one thread and 307 on two for 308 µs of CPU (the second
thread never took part), and in that start every batch of 64 images or more went to the
solo session. Where the second thread does take part, it cuts 30-45 % from 16 images on (the
default digit net) or 128 (the compact one)."""
SOLO_MIN_ITEMS = 2
"""The smallest batch the solo session may run, whatever the profile read: a lone caller's
single images, whose CPU per call is a serving target, stay on one thread. At load, quiet, the
profile can read a second thread as costing no CPU for them: on an AMD EPYC Zen 4 (AVX-512) the
default digit net's single image took 228 µs on one thread and 162 µs on two for 224 µs of CPU,
in some starts. Live, beside gRPC's threads, every lone call on two threads then cost 76 µs more CPU
than on one (836 against 760 µs, 5 rounds), for 1 % less latency (docs/performance.md, "Single
images on two threads")."""


EXECUTION_OVERHEAD_NS = 100_000
"""What one execution costs beyond the model's own time, for choosing the preferred batch size:
a hand-off to a worker thread and back, measured at about 80 µs of CPU on this class of
virtual machine (docs/performance.md)."""
PREFERRED_TOLERANCE = 0.1
JOIN_TOLERANCE = 0.1
"""A request whose size runs within this share of the best time per item of any larger batch
runs alone (``first_alone_size``). Joining a batch costs a request ~10-15 µs (the queue, its
future, the copy into the batch; docs/performance.md, "Where the rest of the gap is"). On an
AMD EPYC Zen 4 the compact digit net's 64 images ran within 2-7 % of the best larger batch's
time per image in each of 8 profiles in a row (5-20 µs per request), its 32 images 12-15 %
above them (a server's start-up profile read 32 within a tenth in most starts: a saving of
~15 µs a request either way). At 16 callers x 64 images such requests had waited for a second
one, to run 128 images per execution for no saving: 0.88x the naive server's throughput at
1.15x its CPU per request, against 1.03x and 0.98x alone (docs/performance.md, "Requests that
gain nothing from company")."""
WORTH_WAITING_TOLERANCE = 0.2
"""Measured (docs/performance.md, "Raised to 6 ms"): with it the default digit net holds batches
back up to 16 images and the compact net up to 128, in every fresh start tried. At 25 % the
default net's cost per image at 8 sat on the line (1.25-1.33x the best), so some starts
chose 8 and formed 8-image batches at 64 callers; the compact net's at 64 did the same between
64 and 128. At 10 % (with earlier rules) the compact net lost 4 % of its throughput at 16
callers x 64 images, holding 64-image requests back for a second one."""


MAX_KEPT_BYTES = 64 * 1024 * 1024
"""At most this much memory kept in gathering arrays per model (large images in large batches
are allocated afresh instead: at that size the copy, not the allocation, is the cost)."""


class GatherBuffers:
    """Arrays kept to join a batch's requests into, one per execution that may run at once.

    A fresh array per batch costs more than the copy into it: past glibc's mmap threshold
    (128 KiB, a batch of 42 MNIST images) each one is new memory, faulted in page by page and
    handed back after, about 25 page faults per 64 images (measured: 20-36 faults per request
    at 16 callers x 64 images, against 4 for the naive server, and 11 % of its throughput).
    """

    def __init__(self, max_rows: int, keep: int) -> None:
        self._max_rows = max_rows
        self._keep = keep
        self._free: list[Array] = []
        self._lent: list[Array] = []

    def take(self, rows: int, item_shape: tuple[int, ...]) -> Array:
        """An array of ``rows`` rows of ``item_shape`` (a view of a kept one when it fits)."""
        for index, kept in enumerate(self._free):
            if len(kept) >= rows and kept.shape[1:] == item_shape:
                del self._free[index]
                break
        else:
            capacity = min(self._max_rows, 1 << (rows - 1).bit_length())
            kept = np.empty((max(capacity, rows), *item_shape), np.float32)
        self._lent.append(kept)
        view: Array = kept[:rows]
        return view

    def give_back(self, view: Array) -> None:
        """Return what ``take`` gave, once the execution that read it has ended (other arrays
        are ignored)."""
        base = view.base
        for index, lent in enumerate(self._lent):
            if lent is base:
                del self._lent[index]
                kept = sum(array.nbytes for array in self._free)
                if len(self._free) < self._keep and kept + lent.nbytes <= MAX_KEPT_BYTES:
                    self._free.append(lent)
                return


class RecentPeak:
    """The most items in the server at once (queued or being run) over the last one to two
    windows: how many callers are about, as far as the server can tell. Two rotating maxima,
    so that a crowd that has gone is forgotten within ``2 * window_ns``."""

    def __init__(self, window_ns: int = 50_000_000) -> None:
        self._window_ns = window_ns
        self._window_start = 0
        self._current = 0
        self._previous = 0

    def note(self, items: int, now_ns: int) -> None:
        age = now_ns - self._window_start
        if age >= self._window_ns:
            self._previous = self._current if age < 2 * self._window_ns else 0
            self._current = 0
            self._window_start = now_ns
        self._current = max(self._current, items)

    def peak(self, now_ns: int) -> int:
        age = now_ns - self._window_start
        if age < self._window_ns:
            return max(self._current, self._previous)
        return self._current if age < 2 * self._window_ns else 0

    def next_change_ns(self, now_ns: int) -> int:
        """How long until ``peak`` may fall, with no new ``note``."""
        age = now_ns - self._window_start
        return self._window_ns - age if age < self._window_ns else 2 * self._window_ns - age


SATURATED_FROM = 0.75
SATURATED_UNTIL = 0.6


class LoopLoad:
    """The share of wall time the event loop's thread spends on the CPU, sampled at most
    every ``period_ns`` (``time.thread_time_ns`` is a system call): near 1, the loop is the
    server's bottleneck and a request queued is not slowed by waiting for company; well
    below, the loop has spare time and waiting would only add latency."""

    _WEIGHT = 0.3

    def __init__(self, period_ns: int = 20_000_000) -> None:
        self._period_ns = period_ns
        self._wall_ns = 0
        self._cpu_ns = 0
        self._waited_ns = 0
        self._waited_at_sample_ns = 0
        self.busy = 0.0
        self.saturated = False
        """Busy from SATURATED_FROM on, until it falls below SATURATED_UNTIL (bigger batches
        cost less per request, which alone would take the loop out of saturation)."""

    def sample(self, now_ns: int) -> None:
        elapsed = now_ns - self._wall_ns
        if elapsed < self._period_ns:
            return
        cpu_ns = time.thread_time_ns()
        if elapsed < 4 * self._period_ns:
            busy_ns = cpu_ns - self._cpu_ns + self._waited_ns - self._waited_at_sample_ns
            self.busy += self._WEIGHT * (busy_ns / elapsed - self.busy)
        else:  # quiet for a while: start afresh
            self.busy = 0.0
        self._wall_ns, self._cpu_ns = now_ns, cpu_ns
        self._waited_at_sample_ns = self._waited_ns
        if self.busy >= SATURATED_FROM:
            self.saturated = True
        elif self.busy < SATURATED_UNTIL:
            self.saturated = False

    def waited(self, ns: int) -> None:
        """The loop's thread spent ``ns`` off the CPU but not free: waiting, inside a solo
        execution it ran, for the model's other threads (busy all the same)."""
        self._waited_ns += ns


def output_rows_problem(outputs: Outputs, rows: int) -> str | None:
    """What is wrong with ``outputs`` for a batch of ``rows`` items; None: a row per item (a
    batch is split among its requests by the outputs' first dimension)."""
    for output in outputs:
        if output.shape[:1] != (rows,):
            shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
            return (f"the model returned outputs of shapes {shapes} for a batch of {rows}: "
                    "each needs one row per item")
    return None


class _ThreadJob:
    """A batch handed to a worker thread, and what came of it."""

    __slots__ = ("batch", "compared", "dispatched_ns", "error", "gather_ns", "infer_ns",
                 "inputs", "outputs", "solo")

    def __init__(self, batch: list[_Request], inputs: Array, gather_ns: int,
                 dispatched_ns: int, solo: Execute | None, *, compared: bool = False) -> None:
        self.batch = batch
        self.inputs = inputs
        self.solo = solo
        self.compared = compared
        """Run on one thread where the solo session would have taken it: a check's run
        (``SoloWatch``)."""
        self.gather_ns = gather_ns
        self.dispatched_ns = dispatched_ns
        self.outputs: Outputs = ()
        self.infer_ns = 0
        self.error: Exception | None = None


class _Request:
    __slots__ = ("deadline", "enqueued_ns", "future", "inputs", "items")

    def __init__(self, inputs: Array, future: asyncio.Future[Outputs],
                 deadline: float | None, enqueued_ns: int) -> None:
        self.inputs = inputs
        self.items = len(inputs)
        self.future = future
        self.deadline = deadline
        self.enqueued_ns = enqueued_ns


class DynamicBatcher:
    """Batches ``submit`` calls of one model; must be used from one event loop."""

    def __init__(self, execute: Execute, settings: BatchingSettings,
                 observer: BatchObserver | None = None, name: str = "model",
                 load: LoopLoad | None = None, *, execute_solo: Execute | None = None) -> None:
        """``execute_solo``: the model on more threads, for a batch of ``times.solo_from``
        items or more with no other execution in flight (``ExecutionTimes.profile`` sets
        it)."""
        self.settings = settings
        # Read per request: kept as numbers, not recomputed by the settings' properties.
        self._max_inline_ns = settings.max_inline_ns
        self._max_queue_delay_ns = settings.max_queue_delay_ns
        self.times = ExecutionTimes()
        self._execute = execute
        self._execute_solo = execute_solo
        self.solo_watch = SoloWatch(name)
        """Whether the solo session saves time live; while it does not, the batcher runs and
        sizes batches as if there were none."""
        self._observer = observer
        self._name = name
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._running = 0
        self._running_items = 0
        """Items in executions on worker threads (those inline block the loop: nobody sees
        them)."""
        self._peak = RecentPeak()
        self._load = load or LoopLoad()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._drained: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: LoopTicker | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._buffers = GatherBuffers(settings.max_batch_size, settings.instances)
        self._arrivals = 0
        """Requests submitted so far: what tells a second look an idle moment."""
        self._second_look: asyncio.Task[None] | None = None

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def submit(self, inputs: Array, deadline: float | None = None) -> Outputs:
        """Run ``inputs`` ([N, ...]) as part of a batch; return this request's output rows.

        ``deadline`` is a ``time.monotonic()`` instant after which the request is not run.
        Raises QueueFullError, DeadlineExpiredError, ShuttingDownError, InvalidInputError or
        ModelExecutionError.
        """
        if self._closed:
            raise ShuttingDownError(f"model {self._name} is being unloaded")
        if deadline is not None and deadline <= time.monotonic():
            # As if it had expired in the queue: the path that skips the queue runs no check.
            self._report_drop(True)
            raise DeadlineExpiredError(f"the deadline passed before the request reached model "
                                       f"{self._name}")
        self._arrivals += 1
        items = len(inputs)
        settings = self.settings
        if not 0 < items <= settings.max_batch_size:
            raise InvalidInputError(f"a request must hold 1 to {settings.max_batch_size} items "
                                    f"for model {self._name}, got {items}")
        if self._queued_items + items > settings.max_queue_size:
            if self._observer is not None:
                self._observer.request_refused()
            raise QueueFullError(f"model {self._name} has {self._queued_items} items queued, the "
                                 f"bound is {settings.max_queue_size}; retry later")
        ticker = self._ticker
        if ticker is None:
            ticker = self._start()
        free = self._running < settings.instances
        idle = ticker.idle()
        now_ns = time.monotonic_ns()
        self._peak.note(self._queued_items + self._running_items + items, now_ns)
        self._load.sample(now_ns)
        times = self.times
        watch = self.solo_watch
        if not watch.usable:
            watch.tick(now_ns)
        alone_from = times.alone_from if watch.usable else times.alone_from_one_thread
        needs_no_company = alone_from is not None and items >= alone_from
        if free and not self._queue and (needs_no_company or (idle and (
                not self._load.saturated or self._fill_target(now_ns) <= items))) \
                and self._cheap(items, idle):
            # Nobody else is being taken in or on the way, or company would save this request
            # nothing: the naive server's path, no queue, no future.
            return self._run_alone(inputs)
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[Outputs] = loop.create_future()
        self._queue.append(_Request(inputs, future, deadline, now_ns))
        self._queued_items += items
        if free:
            self._start_or_wait(items, idle, now_ns, ticker)
        return await future

    def _start_or_wait(self, items: int, idle: bool, now_ns: int, ticker: LoopTicker) -> None:
        """A request of ``items`` was queued with an instance free: start batches now, or have
        the ticker ask ``decide`` on the coming loop iterations."""
        on_thread_from = self.times.alone_on_thread_from
        try:
            start_now = self._queued_items >= self._preferred_size() \
                or (len(self._queue) == 1 and on_thread_from is not None
                    and items >= on_thread_from) \
                or (idle and self._queued_items >= self._fill_target(now_ns))
        except Exception as exc:  # queued: it must not wait for a decision never made
            self.decision_failed(exc)
            return
        if start_now:
            self._dispatch(idle)
        else:
            ticker.wait(self)

    def decide(self, loop_idle: bool) -> bool:
        """Run a batch if it is time (see the module's docstring); called by the ticker once
        per loop iteration. True: no more ticks needed."""
        if not self._queue or self._running >= self.settings.instances:
            return True  # an ending execution decides again
        now_ns = time.monotonic_ns()
        waited_ns = now_ns - self._queue[0].enqueued_ns
        if self._closed or self._queued_items >= self._preferred_size() \
                or waited_ns >= self._max_queue_delay_ns \
                or (loop_idle and self._queued_items >= self._fill_target(now_ns)):
            self._dispatch(loop_idle)
        elif loop_idle:
            # More callers are about than are queued, but none is being taken in: ticking on
            # would spin the idle loop. The next request to arrive, or a timer, decides.
            self._arm_timer(now_ns, waited_ns)
            return True
        return not self._queue or self._running >= self.settings.instances

    def _arm_timer(self, now_ns: int, waited_ns: int) -> None:
        """Decide again once the oldest request has waited out the delay, or the recent crowd
        is forgotten, whichever comes first."""
        if self._timer is None and self._loop is not None:
            wait_ns = min(self._max_queue_delay_ns - waited_ns,
                          self._peak.next_change_ns(now_ns))
            self._timer = self._loop.call_later(max(wait_ns, 0) / 1e9, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        try:
            if self._queue and self._running < self.settings.instances:
                now_ns = time.monotonic_ns()
                waited_ns = now_ns - self._queue[0].enqueued_ns
                if waited_ns >= self._max_queue_delay_ns \
                        or self._queued_items >= self._fill_target(now_ns):
                    self._dispatch()
                else:
                    self._arm_timer(now_ns, waited_ns)
        except Exception as exc:  # nobody else would decide for the queue (see ``_dispatch``)
            self.decision_failed(exc)

    def look_again_when_idle(self, on_new_profile: Callable[[], None] | None = None) -> None:
        """If the load-time profile found no batch size for the solo session where one may
        pay (``ExecutionTimes.solo_may_pay``), profile again, in a thread, once no request has
        arrived for SECOND_LOOK_IDLE_S (longer after each look), up to SECOND_LOOKS times; a
        profile that finds a solo size replaces the load-time one, and ``on_new_profile`` is
        called. A request arriving meanwhile stops the profile at the next batch size and
        discards it.

        On these virtual machines the other core can be busy or slow to wake for seconds
        while a model loads: even after the profile's own retries one start in five to twenty
        found no solo size, and ran every batch on one thread for its whole life, some 10 %
        slower under load (docs/performance.md, "A second look when idle")."""
        if self._execute_solo is None or not self.times.solo_may_pay or self._closed \
                or self._second_look is not None:
            return
        self._second_look = asyncio.get_running_loop().create_task(
            self._look_again(on_new_profile), name=f"second look at {self._name}'s profile")

    async def _look_again(self, on_new_profile: Callable[[], None] | None) -> None:
        looks = 0
        while looks < SECOND_LOOKS:
            arrivals = self._arrivals
            # Longer each time: what disturbed the last look may be a spell of seconds.
            await asyncio.sleep(SECOND_LOOK_IDLE_S * SECOND_LOOK_BACKOFF ** looks)
            if self._closed:
                return
            if self._arrivals != arrivals or self._running or self._queue:
                continue
            looks += 1

            def interrupted(arrivals: int = arrivals) -> bool:
                return self._closed or self._arrivals != arrivals

            fresh = await asyncio.to_thread(self.times.profile_again, interrupted)
            if self._closed:
                return
            if fresh is None or interrupted():
                log.info("%s: a request arrived while the model was profiled again; that "
                         "profile is dropped", self._name)
            elif fresh.solo_from is not None:
                self.times = fresh
                self.solo_watch = SoloWatch(self._name)
                if on_new_profile is not None:
                    on_new_profile()
                return
            else:
                log.info("%s: profiled again while the server was idle (%d of %d): still no "
                         "batch size gains enough on the solo session", self._name, looks,
                         SECOND_LOOKS)

    def refuse_new(self) -> None:
        """From now on ``submit`` raises ShuttingDownError; queued requests still run."""
        self._closed = True
        if self._queue and self._ticker is not None:
            self._ticker.wait(self)

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, then release the worker threads. If
        cancelled meanwhile, the requests still queued fail with ShuttingDownError."""
        self.refuse_new()
        try:
            while self._queue or self._running:
                if self._drained is None:  # one event for every caller of close
                    self._drained = asyncio.Event()
                self._drained.clear()
                await self._drained.wait()
        finally:
            if self._queue:
                # Cancelled (a shutdown that stopped waiting): nothing would run these now.
                self._fail_queued(ShuttingDownError(f"model {self._name} was unloaded before "
                                                    "this request ran"))
            if self._second_look is not None:
                self._second_look.cancel()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._executor is not None:
                self._executor.shutdown(wait=False)

    def _fail_queued(self, error: ServingError) -> None:
        while self._queue:
            request = self._queue.popleft()
            self._queued_items -= request.items
            if not request.future.done():
                request.future.set_exception(error)

    def _start(self) -> LoopTicker:
        self._loop = asyncio.get_running_loop()
        self._ticker = ticker_for(self._loop)
        return self._ticker

    def _preferred_size(self) -> int:
        return self.times.preferred_size(self.settings.max_batch_size,
                                         one_thread=not self.solo_watch.usable)

    def _fill_target(self, now_ns: int) -> int:
        """Items a batch cut on an idle loop should hold. When the loop is saturated: those
        queued plus the callers of the recent crowd not in the server now (between an answer
        and their next request), but no more than the size worth waiting for. Otherwise 1:
        the loop has time to spare, and waiting would only add latency."""
        if not self._load.saturated:
            return 1
        return max(1, min(self._peak.peak(now_ns) - self._running_items,
                          self.times.worth_waiting_size(self.settings.max_batch_size,
                                                        one_thread=not self.solo_watch.usable)))

    def _cheap(self, items: int, loop_idle: bool) -> bool:
        """Whether a batch of ``items`` runs inline: expected within max_inline_ms, and either
        the loop has nothing else to do or the run costs less than handing it to a worker
        thread would add (a busy loop's time is what every other call waits for)."""
        predicted = self.times.predict_ns(items)
        if predicted is None or predicted > self._max_inline_ns:
            return False
        if loop_idle:
            return True
        handoff = self.times.handoff_ns
        return handoff is not None and predicted <= handoff

    def _dispatch(self, loop_idle: bool = False) -> None:
        """Start batches while the queue holds requests and an instance is free."""
        batch: list[_Request] = []
        try:
            while self._queue and self._running < self.settings.instances:
                batch, items = self._take_batch()
                if not batch:
                    continue
                if self._cheap(items, loop_idle):
                    self._run_inline(batch)
                    loop_idle = False  # that run was the loop's work
                else:
                    self._run_in_thread(batch)
                batch = []
        except Exception as exc:
            # A fault here would otherwise leave the batch in hand, and the queue, waiting
            # for a decision that may never come: nothing may wedge the model.
            self._fail_held(batch, exc)
        self._check_drained()

    def decision_failed(self, exc: Exception) -> None:
        """The ticker's call when ``decide`` raised: see ``_fail_held``."""
        self._fail_held([], exc)
        self._check_drained()

    def _fail_held(self, batch: list[_Request], exc: Exception) -> None:
        """Fail ``batch`` and every queued request with one INTERNAL error, the fault logged
        under its incident id. The batcher goes on: the next request is decided afresh."""
        held = sum(r.items for r in batch) + self._queued_items
        error = self._internal_error(
            exc, f"could not schedule {held} waiting item{'' if held == 1 else 's'}")
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)
        self._fail_queued(error)

    def _take_batch(self) -> tuple[list[_Request], int]:
        """Pop whole requests, oldest first, up to max_batch_size items; drop dead ones."""
        batch: list[_Request] = []
        items = 0
        now = time.monotonic()
        now_ns = time.monotonic_ns()
        observer = self._observer
        limit = self.settings.max_batch_size
        while self._queue and items + self._queue[0].items <= limit:
            request = self._queue.popleft()
            self._queued_items -= request.items
            expired = request.deadline is not None and request.deadline <= now
            if request.future.done():
                # Cancelled: by its caller, or by gRPC when the deadline passed (which gRPC
                # usually notices before this does).
                self._report_drop(expired)
            elif expired:
                request.future.set_exception(DeadlineExpiredError(
                    f"the deadline passed while the request waited for model {self._name}"))
                self._report_drop(expired)
            else:
                batch.append(request)
                items += request.items
                if observer is not None:
                    observer.request_dequeued(now_ns - request.enqueued_ns)
        return batch, items

    def _run_alone(self, inputs: Array) -> Outputs:
        """Run one request inline, now, without queueing it."""
        observer = self._observer
        if observer is not None:
            observer.request_dequeued(0)
        items = len(inputs)
        solo, solo_from = self._execute_solo, self.times.solo_from
        self._running += 1
        try:
            # ``_solo`` and ``_timed_execute`` written out: this is every lone caller's path.
            eligible = solo is not None and solo_from is not None and items >= solo_from \
                and self._running == 1
            if solo is not None and eligible and self.solo_watch.choose_solo():
                outputs, infer_ns = self._timed_solo(solo, inputs, on_loop=True)
            else:
                started = time.monotonic_ns()
                outputs = self._execute(inputs)
                infer_ns = time.monotonic_ns() - started
                self.times.record(items, infer_ns)
                if eligible:
                    self.solo_watch.record_one_thread(items, infer_ns, started + infer_ns)
        except Exception as exc:
            error = self._failure(items, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._running -= 1
        misfit = output_rows_problem(outputs, items)
        if misfit is not None:
            raise self._failure(items, ValueError(misfit))
        if observer is not None:
            observer.batch_executed(items, 0, infer_ns, 0)
        return outputs

    def _run_inline(self, batch: list[_Request]) -> None:
        self._running += 1
        inputs: Array | None = None
        try:
            inputs, gather_ns = self._gather(batch)
            eligible = self._solo_eligible(len(inputs))
            solo = self._execute_solo if eligible and self.solo_watch.choose_solo() else None
            outputs, infer_ns = self._timed_execute(inputs, solo, on_loop=True)
        except Exception as exc:  # joining the rows can fail too (no memory for them)
            self._running -= 1
            if inputs is not None:
                self._buffers.give_back(inputs)
            self._fail(batch, exc)
            return
        self._running -= 1
        if eligible and solo is None:
            self.solo_watch.record_one_thread(len(inputs), infer_ns, time.monotonic_ns())
        self._buffers.give_back(inputs)
        try:
            self._answer(batch, outputs, len(inputs), gather_ns, infer_ns)
        except Exception as exc:  # nothing may leave a caller of the batch waiting
            self._fail(batch, exc)

    def _run_in_thread(self, batch: list[_Request]) -> None:
        if self._executor is None:
            # On any CPU, also in a worker process kept to its share of them: executions run
            # without the interpreter lock, and one worker may be dealt most of the
            # connections (server/worker.py).
            self._executor = ThreadPoolExecutor(self.settings.instances,
                                                thread_name_prefix=f"run-{self._name}",
                                                initializer=run_anywhere)
        self._running += 1
        inputs: Array | None = None
        try:
            # Gathered here, on the loop, which holds the interpreter lock anyway: the worker
            # thread then needs the lock only to enter and leave onnxruntime, and each time
            # it needs it it may wait for the busy loop to let go.
            inputs, gather_ns = self._gather(batch)
            eligible = self._solo_eligible(len(inputs))
            solo = self._execute_solo if eligible and self.solo_watch.choose_solo() else None
            job = _ThreadJob(batch, inputs, gather_ns, time.monotonic_ns(), solo,
                             compared=eligible and solo is None)
            self._executor.submit(self._execute_in_thread, job)
        except Exception as exc:  # no memory to join the rows, no thread to start, ...
            self._running -= 1
            if inputs is not None:
                self._buffers.give_back(inputs)
            self._fail(batch, exc)
            return
        # Counted once submitted: ``_finished``, which takes it back, runs on this loop later.
        self._running_items += len(inputs)

    def _execute_in_thread(self, job: _ThreadJob) -> None:
        loop = self._loop
        assert loop is not None
        try:
            job.outputs, job.infer_ns = self._timed_execute(job.inputs, job.solo)
        except Exception as exc:
            job.error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left to answer
            loop.call_soon_threadsafe(self._finished, job)

    def _finished(self, job: _ThreadJob) -> None:
        self._running -= 1
        self._running_items -= len(job.inputs)
        self._buffers.give_back(job.inputs)
        if job.error is not None:
            self._fail(job.batch, job.error)
            self._after_execution(len(job.inputs))
            return
        try:
            now_ns = time.monotonic_ns()
            self.times.record_handoff(now_ns - job.dispatched_ns - job.infer_ns)
            if job.solo is not None:
                self.solo_watch.record_solo(len(job.inputs), job.infer_ns,
                                            self.times.predict_ns(len(job.inputs)), now_ns)
            elif job.compared:
                self.solo_watch.record_one_thread(len(job.inputs), job.infer_ns, now_ns)
            answered = self._answer(job.batch, job.outputs, len(job.inputs), job.gather_ns,
                                    job.infer_ns)
        except Exception as exc:  # nothing may leave a caller waiting, nor the queue behind
            self._fail(job.batch, exc)
            answered = len(job.inputs)
        self._after_execution(answered)

    def _answer(self, batch: list[_Request], outputs: Outputs, rows: int, gather_ns: int,
                infer_ns: int) -> int:
        """Give each request its rows; return the items answered (``rows``, the batch's).
        Outputs without a row per item fail the whole batch: sliced, they would give callers
        other callers' rows, or none."""
        misfit = output_rows_problem(outputs, rows)
        if misfit is not None:
            self._fail(batch, ValueError(misfit))
            return rows
        scatter_start = time.monotonic_ns()
        start = 0
        for request in batch:
            stop = start + request.items
            if not request.future.done():
                request.future.set_result([output[start:stop] for output in outputs])
            start = stop
        if self._observer is not None:
            self._observer.batch_executed(start, gather_ns, infer_ns,
                                          time.monotonic_ns() - scatter_start)
        return start

    def _after_execution(self, items_run: int) -> None:
        """An execution has ended: when the requests queued meanwhile hold at least as many
        items as it ran, the model is the bottleneck and the next batch starts now with all
        of them; otherwise the loop's idleness decides, as for any other batch."""
        if self._queue and self._running < self.settings.instances:
            if self._queued_items >= min(items_run, self._preferred_size()) or self._closed:
                self._dispatch()
            else:
                assert self._ticker is not None
                self._ticker.wait(self)
        self._check_drained()

    def _fail(self, batch: list[_Request], exc: Exception) -> None:
        """Answer every request of ``batch`` with the error (logged unless a ServingError)."""
        error = self._failure(sum(r.items for r in batch), exc)
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _failure(self, items: int, exc: Exception) -> ServingError:
        if isinstance(exc, ServingError):
            return exc
        return self._internal_error(exc, f"failed on a batch of {items}")

    def _internal_error(self, exc: Exception, what: str) -> ModelExecutionError:
        """``model NAME WHAT (incident ID)``: the error text can name files and internals, so
        it goes to the log under the incident id; the callers get the fact and where to look."""
        incident = uuid.uuid4().hex[:12]
        log.error("incident %s: model %s %s", incident, self._name, what, exc_info=exc)
        return ModelExecutionError(f"model {self._name} {what} (incident {incident}); the "
                                   "server log has the details")

    def _gather(self, batch: list[_Request]) -> tuple[Array, int]:
        """The batch's inputs as one array, and the time it took to join them."""
        if len(batch) == 1:
            return batch[0].inputs, 0
        started = time.monotonic_ns()
        first = batch[0].inputs
        inputs = self._buffers.take(sum(r.items for r in batch), first.shape[1:])
        np.concatenate([r.inputs for r in batch], out=inputs)
        return inputs, time.monotonic_ns() - started

    def _solo_eligible(self, items: int) -> bool:
        """Whether a batch of ``items`` that is starting (counted in ``_running``) is one the
        solo session takes: no other execution beside it, and long enough for it to pay. It
        runs there if ``solo_watch`` says so (``choose_solo``)."""
        solo_from = self.times.solo_from
        return self._execute_solo is not None and self._running == 1 \
            and solo_from is not None and items >= solo_from

    def _timed_execute(self, inputs: Array, solo: Execute | None = None, *,
                       on_loop: bool = False) -> tuple[Outputs, int]:
        """Run ``inputs`` (on ``solo`` when given); ``on_loop``: on the event loop's thread."""
        if solo is not None:
            return self._timed_solo(solo, inputs, on_loop=on_loop)
        started = time.monotonic_ns()
        outputs = self._execute(inputs)
        infer_ns = time.monotonic_ns() - started
        self.times.record(len(inputs), infer_ns)
        return outputs, infer_ns

    def _timed_solo(self, solo: Execute, inputs: Array, *,
                    on_loop: bool) -> tuple[Outputs, int]:
        cpu_started = time.thread_time_ns() if on_loop else 0
        started = time.monotonic_ns()
        outputs = solo(inputs)
        ended = time.monotonic_ns()
        infer_ns = ended - started
        if on_loop:
            # Part of the time the loop's thread waits for the model's others: the loop's time
            # all the same. Seen as idle, LoopLoad would stop batches waiting for company.
            self._load.waited(infer_ns - (time.thread_time_ns() - cpu_started))
            # On a worker thread: recorded by ``_finished``, on the loop's.
            self.solo_watch.record_solo(len(inputs), infer_ns,
                                        self.times.predict_ns(len(inputs)), ended)
        # Not recorded in the times: they predict what a batch costs on one thread.
        return outputs, infer_ns

    def _check_drained(self) -> None:
        if self._drained is not None and not self._queue and not self._running:
            self._drained.set()

    def _report_drop(self, expired: bool) -> None:
        if self._observer is not None:
            self._observer.request_dropped(expired)

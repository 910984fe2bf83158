"""Whether the solo session still saves time live: the batcher's check that the other cores
its threads need are free now, not only when the model was profiled.

The load-time profile times the solo session (the model on more onnxruntime threads) on a quiet
machine, and the batcher builds on it: such sizes run there, and a request that company would
make that big waits for company. Under load the other core may be taken (the load generator,
gRPC's own threads, a host stealing the virtual CPU): on an AMD EPYC Zen 4 the compact digit
net's 128 images took 630 µs live on two threads against 369 µs in the profile, and 563 µs on
one thread in the profile (docs/performance.md, "The solo session, live").

``SoloWatch`` keeps an exponential average of each solo execution's wall time over what one
thread is expected to take for its size. The expectation comes from the profile until a check
has measured one thread live. Once that share passes ``CHECK_FROM_SHARE`` over ``MIN_RUNS``
executions, a check starts (at most one per ``CHECK_INTERVAL_NS``): the next executions the
solo session would take alternate between one thread and the solo session, ``CHECK_RUNS``
each, both timed live, because one thread is slower live too and the profile's time flatters
it. If the solo session took more than ``SET_ASIDE_FROM_SHARE`` of one thread's time, it counts
as not paying (``usable`` False): the batcher runs on one thread and chooses its sizes from one
thread's times; after ``RETRY_AFTER_NS`` it is tried again. Otherwise the check's one-thread
time becomes the expectation. Where the solo session runs about as fast as the profile
found, no check starts.

It knows nothing of the batcher; the batcher calls it from the event loop's thread only.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CHECK_FROM_SHARE = 0.9
"""A check starts once the solo session's executions average more than this share of one
thread's expected time: the profile's bar (``SOLO_MIN_SAVED_SHARE``, a tenth saved)."""
SET_ASIDE_FROM_SHARE = 0.95
"""A check sets the solo session aside when it took more than this share of one thread's time.
Above the bar that starts a check: where the solo session pays live, a check's share read
0.51-0.89 (mostly 0.73-0.85) on an AMD EPYC Zen 4 at 16 callers x 64 compact-net images, and
a check of a few runs each is that noisy; where it did not, 1.0-1.5."""
MIN_RUNS = 8
"""Solo executions averaged before a check may start: one can be slowed by a moment's
preemption."""
CHECK_RUNS = 6
"""Executions on each side of a check."""
CHECK_INTERVAL_NS = 5_000_000_000
"""The least time from a check that kept the solo session to the next: each costs CHECK_RUNS
executions on one thread where the solo session was faster."""
RETRY_AFTER_NS = 5_000_000_000
"""How long the solo session stays unused once it stopped paying. A try costs MIN_RUNS solo
executions and a check, where the solo session is still no faster."""
WEIGHT = 0.2


class SoloWatch:
    """The solo session's live share of one thread's time, and the verdict on it."""

    __slots__ = ("_check", "_next_check_ns", "_one_thread_ns_per_item", "_retry_at_ns", "_runs",
                 "_said", "_share", "_turn", "checking", "name", "usable")

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.usable = True
        """Whether the batcher may count on the solo session now. True until executions show
        otherwise, so a model whose solo session never runs keeps the profile's choices."""
        self.checking = False
        """Whether executions alternate between one thread and the solo session now."""
        self._share = 0.0
        self._runs = 0
        self._one_thread_ns_per_item: float | None = None
        """One thread's time per item, measured live by the last check."""
        self._check = (_Side(), _Side())
        """A check's solo executions and one thread's."""
        self._turn = False
        self._retry_at_ns = 0
        self._next_check_ns = 0
        self._said = False

    @property
    def share(self) -> float | None:
        """The live average of solo time over one thread's; None: no runs since the last try
        or check."""
        return self._share if self._runs else None

    def choose_solo(self) -> bool:
        """Whether an execution that the solo session would take runs there (False: not
        paying now, or one thread's turn in a check)."""
        if not self.usable:
            return False
        if self.checking:
            self._turn = not self._turn
            return self._turn
        return True

    def record_solo(self, items: int, wall_ns: int, one_thread_ns: float | None,
                    now_ns: int) -> None:
        """A solo execution of ``items`` took ``wall_ns``; ``one_thread_ns``: the batcher's
        expectation for one thread (None: nothing to compare with, not counted)."""
        if not self.usable:
            return
        if self.checking:
            self._count(self._check[0], items, wall_ns, now_ns)
            return
        if self._one_thread_ns_per_item is not None:
            one_thread_ns = self._one_thread_ns_per_item * items
        if not one_thread_ns:
            return
        share = wall_ns / one_thread_ns
        self._runs += 1
        self._share = share if self._runs == 1 else self._share + WEIGHT * (share - self._share)
        if self._runs >= MIN_RUNS and self._share > CHECK_FROM_SHARE \
                and now_ns >= self._next_check_ns:
            self.checking = True
            self._check = (_Side(), _Side())
            self._turn = False

    def record_one_thread(self, items: int, wall_ns: int, now_ns: int) -> None:
        """An execution that the solo session would have taken ran on one thread (only a
        check counts it)."""
        if self.checking:
            self._count(self._check[1], items, wall_ns, now_ns)

    def tick(self, now_ns: int) -> None:
        """Try the solo session again once its pause is over; called with the time at hand."""
        if not self.usable and now_ns >= self._retry_at_ns:
            self.usable = True
            self._runs = 0

    def _count(self, side: _Side, items: int, wall_ns: int, now_ns: int) -> None:
        side.runs += 1
        side.items += items
        side.wall_ns += wall_ns
        solo, one_thread = self._check
        if solo.runs < CHECK_RUNS or one_thread.runs < CHECK_RUNS:
            return
        self.checking = False
        self._runs = 0
        one_thread_per_item = one_thread.wall_ns / one_thread.items
        share = solo.wall_ns / solo.items / one_thread_per_item
        if share <= SET_ASIDE_FROM_SHARE:
            self._one_thread_ns_per_item = one_thread_per_item
            self._next_check_ns = now_ns + CHECK_INTERVAL_NS
            return
        self.usable = False
        self._retry_at_ns = now_ns + RETRY_AFTER_NS
        # Said once at INFO: on a host that stays busy the verdict is renewed every try.
        level = logging.DEBUG if self._said else logging.INFO
        self._said = True
        log.log(level, "%s: live, the solo session took %.2f of one thread's time (other cores "
                "busy): batches run on one thread for %.0f s, then it is tried again",
                self.name, share, RETRY_AFTER_NS / 1e9)


class _Side:
    """One side of a check: executions, their items and their wall time."""

    __slots__ = ("items", "runs", "wall_ns")

    def __init__(self) -> None:
        self.runs = 0
        self.items = 0
        self.wall_ns = 0

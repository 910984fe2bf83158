"""bench repeats a timed run during which the host stole CPU, and keeps the least-stolen one;
the longer benchmarks (overload, soak, scale-out) print the share stolen.

The host's steal cannot be produced on demand here, so the machine's CPU counters are a
scripted sequence: (steal, total) ticks read before and after each run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from axon.benchmarks.bench import STEAL_ATTEMPTS, STEAL_LIMIT, least_stolen, machine_ticks
from axon.benchmarks.common import Sample


def counters(steal_shares: list[float], ticks_per_run: int = 1000,
             ) -> Callable[[], tuple[int, int]]:
    """Machine counters under which run n has ``steal_shares[n]`` of its ticks stolen."""
    def readings() -> Iterator[tuple[int, int]]:
        steal = total = 0
        for share in steal_shares:
            yield steal, total
            steal += round(share * ticks_per_run)
            total += ticks_per_run
            yield steal, total
    sequence = readings()
    return lambda: next(sequence)


def numbered_runs() -> Callable[[], int]:
    made = iter(range(1, 100))
    return lambda: next(made)


def test_a_run_within_the_limit_is_kept_at_once() -> None:
    kept, steal, runs = least_stolen(numbered_runs(), machine_times=counters([0.01]))
    assert (kept, runs) == (1, 1) and steal == 0.01


def test_a_stolen_run_is_repeated_until_one_is_within_the_limit() -> None:
    kept, steal, runs = least_stolen(numbered_runs(),
                                     machine_times=counters([0.20, 0.08, 0.03]))
    assert (kept, runs, steal) == (3, 3, 0.03)


def test_after_the_last_attempt_the_least_stolen_run_is_kept() -> None:
    shares = [0.30, 0.07, 0.12][:STEAL_ATTEMPTS]
    kept, steal, runs = least_stolen(numbered_runs(), machine_times=counters(shares))
    assert runs == STEAL_ATTEMPTS and kept == 2 and steal == 0.07 > STEAL_LIMIT


def test_the_limit_is_a_share_of_the_machines_cpu_time() -> None:
    # 5 % exactly is within the limit; a hair more is not.
    assert least_stolen(numbered_runs(), machine_times=counters([STEAL_LIMIT]))[2] == 1
    assert least_stolen(numbered_runs(),
                        machine_times=counters([STEAL_LIMIT + 0.001, 0.0]))[2] == 2


def test_the_machine_counters_split_busy_steal_and_idle_time() -> None:
    busy, steal, total = machine_ticks()
    assert 0 < busy < total and 0 <= steal < total
    later_busy, later_steal, later_total = machine_ticks()
    assert later_busy >= busy and later_steal >= steal and later_total >= total


def test_the_long_benchmarks_samples_give_the_share_stolen_between_them() -> None:
    # overload, soak: a sample every few seconds; the reports print busy and steal per phase.
    def sample(at: float, busy: float, total: float, steal: float) -> Sample:
        return Sample(at, 0, 0.0, Counter(), (busy, total, steal))

    earlier, later = sample(0, 10.0, 100.0, 1.0), sample(10, 30.0, 140.0, 4.0)
    assert later.machine_busy(earlier) == 20.0 / 40.0
    assert later.machine_stolen(earlier) == 3.0 / 40.0
    assert earlier.machine_stolen(earlier) == 0.0  # no time between: no share

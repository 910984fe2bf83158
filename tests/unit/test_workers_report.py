"""What ``python -m axon.benchmarks.workers`` prints from its rounds: medians, ratios to one
worker, the most steal among the kept runs, and the two-worker targets met or MISSED."""

from __future__ import annotations

from axon.benchmarks.workers import LOADS, Round, report

LABELS = [f"{generator} {scenario}" for generator, scenario in LOADS] + ["axon classify"]


def measured_round(workers: int, rate: float, steal: float = 0.0, p99: float = 10.0) -> Round:
    """A round in which every load ran at ``rate`` images/s; the n-th load (from 0) had
    ``steal`` plus n/1000 of the CPU stolen, so that each load's steal is its own."""
    return Round(workers=workers,
                 images_per_second=dict.fromkeys(LABELS, rate),
                 p99_ms=dict.fromkeys(LABELS, p99),
                 server_cpu_us_per_image=dict.fromkeys(LABELS, 100.0),
                 classify_client_cpu_us_per_image=50.0,
                 memory_mib_per_worker=[130.0] * workers,
                 supervisor_mib=0.0 if workers == 1 else 95.0,
                 steal={label: steal + n / 1000 for n, label in enumerate(LABELS)})


def table_row(lines: list[str], label: str, workers: int) -> list[str]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in lines[1].splitlines()]
    return next(row for row in rows if row[:2] == [label, str(workers)])


def test_each_row_gives_the_most_steal_of_its_load_among_its_worker_count_s_rounds() -> None:
    rounds = [measured_round(1, 1000, 0.001), measured_round(2, 1500, 0.002),
              measured_round(2, 1500, 0.043), measured_round(1, 1000, 0.012),
              measured_round(1, 1000, 0.0), measured_round(2, 1500, 0.0)]
    lines = report(rounds, [1, 2])
    assert lines[1].splitlines()[0].split("|")[-2].strip() == "most steal"
    for n, label in enumerate(LABELS):
        assert table_row(lines, label, 1)[-1] == f"{0.012 + n / 1000:.1%}"
        assert table_row(lines, label, 2)[-1] == f"{0.043 + n / 1000:.1%}"
    assert [table_row(lines, label, 2)[-1] for label in LABELS] == \
        ["4.3%", "4.4%", "4.5%", "4.6%"]


def test_ratios_are_of_medians_and_the_targets_are_judged_on_them() -> None:
    # Two workers: 1,300 / 1,500 / 9,000 (median 1,500) against one worker's 1,000: 1.5x.
    rounds = [measured_round(1, 1000, p99=10.0), measured_round(2, 1300, p99=9.0),
              measured_round(2, 9000, p99=9.0), measured_round(1, 1000, p99=10.0),
              measured_round(1, 1000, p99=10.0), measured_round(2, 1500, p99=12.0)]
    lines = report(rounds, [1, 2])
    assert table_row(lines, "h2load 16x64", 2)[2:4] == ["1,500", "1.50x"]
    assert "h2load 64x1@64: 2 workers 1.50x one (target >= 1.4): met" in lines
    assert "h2load 64x1@64 p99: 2 workers 0.90x one (target <= 1.0): met" in lines

    slower = [measured_round(r.workers, 1000 if r.workers == 1 else 1200) for r in rounds]
    assert "axon classify: 2 workers 1.20x one (target >= 1.4): MISSED" in report(slower, [1, 2])

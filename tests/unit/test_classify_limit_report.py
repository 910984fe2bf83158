"""What ``python -m axon.benchmarks.classify_limit`` prints from its rounds: medians, ratios to the
single-core limit, the targets met or MISSED, and the most steal among the kept classify runs."""

from __future__ import annotations

from axon.benchmarks.classify_limit import ClassifyRun, Limit, report


def limit(decode_us: float = 100.0, model_us: float = 60.0) -> Limit:
    return Limit(images=10_000, decode_us_per_image=decode_us, model_us_per_image=model_us)


def run(images_per_second: float, server_cpu_us: float = 200.0, steal: float = 0.0
        ) -> ClassifyRun:
    return ClassifyRun(images=10_000, seconds=10_000 / images_per_second,
                       server_cpu_us_per_image=server_cpu_us, client_cpu_us_per_image=120.0,
                       steal=steal)


def test_ratios_are_of_medians_and_the_targets_are_judged_on_them() -> None:
    # The limit's median: 100 + 60 µs per image, 6,250 images/s. Classify's median: 5,000.
    lines = report([limit(), limit(90, 50), limit(120, 80)],
                   [run(5000, 300), run(4000, 330), run(9000, 310)])
    assert "throughput 0.80x the single-core limit (target >= 0.8): met" in lines
    assert "server CPU per image 1.94x the limit's (target <= 2.0): met" in lines

    slower = report([limit()], [run(4900, 330)])
    assert "throughput 0.78x the single-core limit (target >= 0.8): MISSED" in slower
    assert "server CPU per image 2.06x the limit's (target <= 2.0): MISSED" in slower


def test_the_first_line_gives_the_most_steal_among_the_kept_runs() -> None:
    lines = report([limit()] * 3, [run(5000, steal=0.004), run(5000, steal=0.031),
                                   run(5000, steal=0.0)])
    assert lines[0].startswith("medians of 3 rounds, 10,000 images, ")
    assert lines[0].endswith("; host CPU steal at most 3.1% in a kept classify run")

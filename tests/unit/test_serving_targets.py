"""The serving targets bench judges against the naive baseline: same-run ratios, met or MISSED."""

from __future__ import annotations

from dataclasses import replace

from axon.benchmarks.bench import Measurement, Pair, round_by_round, target_verdicts, verdicts
from axon.benchmarks.scenarios import Scenario


def measured(images_per_second: float, cpu: float, p50: float = 1.0, *,
             images: int = 1, ceiling: float = 1e9, per_execution: float = 16.0) -> Measurement:
    return Measurement(
        generator="h2load", api="infer", mode="closed", callers=64,
        offered_requests_per_second=None, images_per_request=images,
        requests_per_second=images_per_second / images, images_per_second=images_per_second,
        p50_ms=p50, p90_ms=p50, p99_ms=p50, max_ms=p50, images_per_execution=per_execution,
        server_cpu_us_per_request=cpu, generator_cpu_us_per_request=1.0,
        ceiling_images_per_second=ceiling, requests_sent=1, server_successes=1,
        server_failures=0, errors=0, errors_by_code={}, not_sent=0, send_lag_p99_ms=None,
        latency_percentiles_ms={})


def pair(scenario: str, axon: list[Measurement], naive: list[Measurement]) -> Pair:
    return Pair("h2load", "infer", Scenario.parse(scenario), axon, naive)


def test_medians_of_the_rounds_are_compared() -> None:
    # Axon's rounds 1,400 / 1,500 / 9,999 (median 1,500); the baseline's 1,000 each: 1.5x.
    axon = [measured(1400, 300), measured(1500, 300), measured(9999, 300)]
    naive = [measured(1000, 400)] * 3
    line, noisy = target_verdicts([pair("64x1@64", axon, naive)], "default")
    assert "throughput 1.50x (>= 1.4)" in line and "server CPU/request 0.75x (<= 0.85)" in line
    assert "16.0 images per execution (>= 16)" in line
    assert line.endswith(": met")
    # Rounds that far apart are flagged under the verdict.
    assert noisy.startswith("  noisy: throughput by round spread 7.14x (Axon), 1.00x (baseline)")


def test_a_verdict_on_rounds_spread_over_a_quarter_is_flagged_as_noisy() -> None:
    """2 cores of an Intel Xeon: the naive server's rounds at 64 single-image callers read 2,213,
    3,678 and 4,053 requests/s (1.83x) in one run."""
    axon = [measured(2703, 350), measured(3465, 352), measured(4561, 340)]
    naive = [measured(2213, 400), measured(3678, 351), measured(4053, 360)]
    line, noisy = target_verdicts([pair("64x1@64", axon, naive)], "compact")
    assert line.endswith(": MISSED")
    assert "1.69x (Axon), 1.83x (baseline)" in noisy and "--rounds 5" in noisy
    steady = [measured(1000, 400), measured(1100, 400), measured(1250, 400)]  # exactly 1.25x
    assert len(target_verdicts([pair("64x1@64", steady, steady)], "compact")) == 1
    # A round that served nothing is as noisy as it gets.
    _, stalled = target_verdicts([pair("64x1@64", steady, [*steady[:2], measured(0, 400)])],
                                 "compact")
    assert "infx (baseline)" in stalled


def test_a_noisy_verdict_also_gives_each_round_s_own_ratio() -> None:
    """The host slows down between rounds: each side's median moves with it, each round's
    ratio does not. Here the medians read 1,100 against 1,250 (0.88x) while Axon was ahead in
    two rounds of three."""
    axon = [measured(1100, 400), measured(1600, 400), measured(800, 400)]
    naive = [measured(1000, 400), measured(1500, 400), measured(1250, 400)]
    line, noisy = target_verdicts([pair("16x64", axon, naive)], "compact")
    assert "throughput 0.88x" in line and line.endswith(": MISSED")
    assert "Axon/baseline round by round 0.64-1.10x, median 1.07x, ahead in 2 of 3" in noisy
    # A round the baseline served nothing in has no ratio; one round alone is no spread.
    assert round_by_round(pair("16x64", axon[:2], [naive[0], measured(0, 400)])) is None
    assert round_by_round(pair("16x64", axon, [measured(0, 400), *naive[1:]])) == \
        "round by round 0.64-1.07x, median 0.85x, ahead in 1 of 2"


def test_the_default_net_at_64_callers_needs_16_images_per_execution() -> None:
    # Throughput and CPU met; Axon's rounds batch 12, 15 and 20 images (median 15): missed.
    axon = [measured(1500, 300, per_execution=n) for n in (12.0, 20.0, 15.0)]
    (line,) = target_verdicts([pair("64x1@4", axon, [measured(1000, 400)] * 3)], "default")
    assert "throughput 1.50x (>= 1.4)" in line
    assert "15.0 images per execution (>= 16)" in line and line.endswith(": MISSED")
    (compact,) = target_verdicts([pair("64x1@4", axon, [measured(1000, 400)] * 3)], "compact")
    assert "images per execution" not in compact


def test_a_target_missed_by_one_measure_is_missed() -> None:
    (line,) = target_verdicts([pair("64x1@4", [measured(1500, 390)] * 3,
                                    [measured(1000, 400)] * 3)], "default")
    assert "server CPU/request 0.97x (<= 0.85)" in line and line.endswith(": MISSED")


def test_lone_caller_targets_are_latency_and_cpu() -> None:
    met = pair("1x1", [measured(900, 550, p50=1.1)] * 3, [measured(1000, 500, p50=1.0)] * 3)
    missed = pair("1x1", [measured(900, 560, p50=1.3)] * 3, [measured(1000, 500, p50=1.0)] * 3)
    lines = target_verdicts([met, missed], "compact")
    assert lines[0].endswith(": met") and "p50 1.10x (<= 1.2)" in lines[0]
    assert lines[1].endswith(": MISSED")


def test_large_requests_on_the_default_net_also_need_the_ceiling_share() -> None:
    axon = [measured(30_000, 2000, images=64, ceiling=40_000)] * 3
    naive = [measured(20_000, 3000, images=64, ceiling=40_000)] * 3
    (line,) = target_verdicts([pair("16x64", axon, naive)], "default")
    assert "75% of onnxruntime's single-thread ceiling (>= 80%)" in line
    assert line.endswith(": MISSED")


def test_scenarios_without_targets_and_unknown_presets_are_not_judged() -> None:
    scenario = pair("8x1", [measured(1, 1)] * 3, [measured(1, 1)] * 3)
    assert target_verdicts([scenario], "compact") == []
    assert target_verdicts([scenario], "primer") == [
        "no serving targets for preset 'primer' (only compact, default)"]


def test_a_run_without_a_baseline_says_why_it_judges_nothing() -> None:
    (line,) = verdicts([measured(5000, 300)])
    assert "no targets judged" in line and "--baseline naive" in line
    # A run of scenarios without targets says nothing.
    assert verdicts([replace(measured(5000, 300), callers=8)]) == []

"""``axon bench --protocol grpc,http-json,http-binary``: the same load over each protocol, on the
same server, in alternating rounds (ABC, CBA, ...) so that drift in the machine's speed falls on
every protocol alike; medians per protocol, and each one's ratios to the first protocol's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from axon.benchmarks.bench import Measurement, median
from axon.benchmarks.scenarios import Scenario
from axon.markdown import LEFT, RIGHT, markdown_table


@dataclass(frozen=True)
class ProtocolRuns:
    """One scenario with one load generator, measured over several protocols."""

    generator: str
    scenario: Scenario
    runs: dict[str, list[Measurement]]
    """Protocol -> its rounds, in the order given."""


def round_order(protocols: Sequence[str], round_index: int) -> list[str]:
    """The protocols in the order round ``round_index`` measures them: forwards, backwards."""
    return list(protocols) if round_index % 2 == 0 else list(reversed(protocols))


def protocol_table(results: Sequence[ProtocolRuns]) -> str:
    """Medians over the rounds per protocol, and ratios to the first protocol (1.00: the same;
    requests/s below 1 and CPU above 1: the protocol costs more)."""
    if not results:
        return "no measurements"
    first = next(iter(results[0].runs))
    rounds = len(next(iter(results[0].runs.values())))
    rows = []
    for result in results:
        base = _medians(result.runs[first])
        for protocol, runs in result.runs.items():
            these = _medians(runs)
            rows.append([
                result.generator, result.scenario.label, protocol, f"{these['rate']:,.0f}",
                f"{these['images']:,.0f}", f"{these['p50']:.2f}", f"{these['p99']:.2f}",
                f"{these['cpu']:.0f}", _ratio(these, base, "rate"), _ratio(these, base, "cpu"),
                _ratio(these, base, "p50"), f"{these['errors']:,.0f}"])
    return f"medians of {rounds} alternating rounds; ratios to {first}\n" + markdown_table(
        ["load generator", "scenario", "protocol", "requests/s", "images/s", "p50 ms",
         "p99 ms", "server CPU µs/request", "requests/s ratio", "CPU/request ratio",
         "p50 ratio", "errors"], [LEFT, LEFT, LEFT, *[RIGHT] * 9], rows)


def _medians(runs: Sequence[Measurement]) -> dict[str, float]:
    return {"rate": median([m.requests_per_second for m in runs]),
            "images": median([m.images_per_second for m in runs]),
            "p50": median([m.p50_ms for m in runs]), "p99": median([m.p99_ms for m in runs]),
            "cpu": median([m.server_cpu_us_per_request or 0.0 for m in runs]),
            "errors": median([m.errors for m in runs])}


def _ratio(these: dict[str, float], base: dict[str, float], key: str) -> str:
    return f"{these[key] / base[key]:.2f}" if base[key] else "—"


def save_protocol_runs(results: Sequence[ProtocolRuns], path: Path) -> None:
    path.write_text(json.dumps([
        {"generator": r.generator, "scenario": r.scenario.label,
         "runs": {protocol: [asdict(m) for m in runs] for protocol, runs in r.runs.items()}}
        for r in results], indent=2) + "\n")

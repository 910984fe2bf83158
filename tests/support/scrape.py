"""Reading a server's /metrics page the way Prometheus does (its text format, parsed)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape, by name and label set."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    text: str

    def get(self, name: str, **labels: str) -> float | None:
        """The sample's value; None when the page has no such series."""
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when absent (a counter nothing has touched yet)."""
        return self.get(name, **labels) or 0.0

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return {key: value for (sample, key), value in self.samples.items()
                if sample == name and wanted <= key}


def scrape(port: int, host: str = "127.0.0.1") -> Scrape:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    return Scrape(samples, text)

"""Plot the dashboard's panels from a real Prometheus into one PNG (a preview for the docs).

Not Grafana's rendering: each panel's own PromQL (``$model`` and ``$protocol`` = all,
``$__rate_interval`` = ``--rate-interval``) is sent to Prometheus' range-query API and drawn
with matplotlib on the dashboard's grid, so the picture shows the dashboard's queries on real
data where no Grafana runs. Time series are drawn as lines, the batch-size heatmap as an image,
stat and table panels as their current values.

    python deploy/grafana/preview.py --prometheus http://127.0.0.1:9090 --minutes 5 \\
        --out docs/dashboard-preview.png
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

DASHBOARD = Path(__file__).parent / "dashboards" / "axon.json"
GRID_ROW_PX = 30
"""Grafana's grid row height; panel widths are 24ths of the page."""


def query_range(prometheus: str, expr: str, start: float, end: float,
                step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}",
                                timeout=30) as response:
        body = json.loads(response.read())
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    if not template or template == "__auto":
        return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p["type"] != "row"]


def shown_value(panel: dict[str, Any], value: float) -> str:
    """``value`` through the panel's value mappings (e.g. 1 -> READY), as Grafana shows it."""
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        if mapping.get("type") == "value":
            text = mapping["options"].get(f"{value:g}", {}).get("text")
            if text:
                return str(text)
    return f"{value:g}"


def scale(unit: str | None) -> tuple[float, str]:
    return {"percentunit": (100.0, "%"), "s": (1000.0, "ms"), "bytes": (1 / 2**20, "MiB"),
            "reqps": (1.0, "req/s")}.get(unit or "", (1.0, ""))


def draw(panel: dict[str, Any], axis: Any, prometheus: str, window: tuple[float, float, float],
         rate_interval: str) -> None:
    start, end, step = window
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    factor, suffix = scale(unit)
    axis.set_title(panel["title"], fontsize=9, loc="left")
    axis.tick_params(labelsize=7)
    series: list[tuple[str, list[float], list[float]]] = []
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", rate_interval) \
            .replace("$model", ".*").replace("$protocol", ".*")
        for result in query_range(prometheus, expr, start, end, step):
            points = [(float(t) - end, float(v) * factor) for t, v in result["values"]]
            series.append((legend(target.get("legendFormat", ""), result["metric"]),
                           [p[0] for p in points], [p[1] for p in points]))
    if not series:
        no_value = panel.get("fieldConfig", {}).get("defaults", {}).get("noValue", "No data")
        axis.text(0.5, 0.5, no_value, ha="center", va="center", fontsize=10, color="grey",
                  transform=axis.transAxes)
        axis.set_xticks([])
        axis.set_yticks([])
        return
    if panel["type"] in {"stat", "table"}:
        axis.axis("off")
        lines = [f"{name}: {shown_value(panel, values[-1] / factor)}"
                 for name, _, values in series][:12]
        axis.text(0.02, 0.95, "\n".join(lines), va="top", fontsize=7, family="monospace",
                  transform=axis.transAxes)
        return
    if panel["type"] == "heatmap":
        # Prometheus buckets are cumulative (le); a heatmap cell is one bucket's own count,
        # as Grafana's "heatmap" data format computes it.
        ordered = sorted(series, key=lambda s: float(s[0]))
        image = [[high - low for high, low in zip(values, below, strict=True)]
                 for (_, _, values), (_, _, below) in zip(
                     ordered, [("", [], [0.0] * len(ordered[0][2])), *ordered[:-1]],
                     strict=True)]
        axis.imshow(image, aspect="auto", origin="lower", cmap="viridis",
                    extent=(ordered[0][1][0] / 60, 0, 0, len(ordered)))
        axis.set_yticks([i + 0.5 for i in range(len(ordered))],
                        [name for name, _, _ in ordered], fontsize=6)
        axis.set_xlabel("minutes", fontsize=7)
        return
    for name, times, values in series[:10]:
        axis.plot([t / 60 for t in times], values, label=name, linewidth=1)
    axis.set_ylabel(suffix, fontsize=7)
    axis.set_xlabel("minutes", fontsize=7)
    axis.legend(fontsize=6, loc="upper left")
    axis.grid(alpha=0.3)


def render(prometheus: str, out: Path, minutes: float, rate_interval: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    shown = panels(dashboard)
    end = time.time()
    window = (end - minutes * 60, end, max(1.0, minutes * 60 / 200))
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in shown)
    figure = plt.figure(figsize=(16, height * GRID_ROW_PX / 100 * 1.2))
    grid = figure.add_gridspec(height, 24, hspace=2.5, wspace=1.2, top=0.965, bottom=0.02)
    for panel in shown:
        pos = panel["gridPos"]
        axis = figure.add_subplot(grid[pos["y"]:pos["y"] + pos["h"] - 1,
                                       pos["x"]:pos["x"] + pos["w"]])
        draw(panel, axis, prometheus, window, rate_interval)
    figure.suptitle(f"{dashboard['title']}: the dashboard's queries on a real Prometheus "
                    f"(last {minutes:g} min; matplotlib preview, not Grafana)",
                    fontsize=12, y=0.985)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate-interval", default="15s")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard-preview.png"))
    args = parser.parse_args()
    render(args.prometheus, args.out, args.minutes, args.rate_interval)
    print(args.out)


if __name__ == "__main__":
    main()

"""What ``axon classify`` prints: one line per file (table, CSV or JSON Lines), a progress bar on
a terminal, errors on stderr, and a summary at the end."""

from __future__ import annotations

import csv
import json
import time
from typing import TextIO

from tqdm import tqdm

from axon.client.file_stream import FileResult


class Report:
    """Writes results as they come; ``close`` prints the summary."""

    def __init__(self, output_format: str, top_k: int, out: TextIO, err: TextIO) -> None:
        self._format = output_format
        self._top_k = top_k
        self._out = out
        self._err = err
        self._started = time.perf_counter()
        self.files = 0
        self.errors = 0
        self._csv = csv.writer(out) if output_format == "csv" else None
        if self._csv is not None:
            header = ["path", "label", "probability", "error"]
            for rank in range(2, top_k + 1):
                header += [f"label_{rank}", f"probability_{rank}"]
            self._csv.writerow(header)
        self._progress = tqdm(unit="image", file=err, disable=not err.isatty(), leave=False)

    def add(self, result: FileResult) -> None:
        self.files += 1
        self._progress.update()
        if result.error:
            self.errors += 1
            # On stderr too, so a table piped elsewhere still shows what was skipped.
            self._progress.write(f"{result.path}: {result.error}", file=self._err)
        if self._format == "jsonl":
            record: dict[str, object] = {"path": str(result.path)}
            if result.error:
                record["error"] = result.error
            else:
                record |= {"model": result.model, "version": result.version, "classes": [
                    {"label": p.label, "index": p.index, "probability": round(p.probability, 6)}
                    for p in result.classes]}
            self._out.write(json.dumps(record) + "\n")
        elif self._csv is not None:
            row = [str(result.path)]
            if result.error:
                row += ["", "", result.error]
            else:
                best, *rest = result.classes
                row += [best.label, f"{best.probability:.6f}", ""]
                for prediction in rest:
                    row += [prediction.label, f"{prediction.probability:.6f}"]
            self._csv.writerow(row)
        elif not result.error:
            ranked = ", ".join(f"{p.label} {p.probability:.1%}" for p in result.classes)
            self._out.write(f"{result.path}: {ranked}\n")

    def flush(self) -> None:
        """Hand what was written on (a pipeline reading our output sees it now)."""
        self._out.flush()

    def close(self) -> None:
        self.flush()
        self._progress.close()
        elapsed = time.perf_counter() - self._started
        rate = self.files / elapsed if elapsed > 0 else 0.0
        self._err.write(f"{self.files:,} image(s) in {elapsed:.1f} s ({rate:,.0f} images/s), "
                        f"{self.errors:,} error(s)\n")

"""Markdown tables: how the benchmarks and the training targets print their results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LEFT = "---"
RIGHT = "---:"
"""Column alignments: text to the left, numbers to the right."""


def markdown_table(header: Sequence[str], alignment: Sequence[str],
                   rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, one line per row: ``header``, then ``alignment``
    (``LEFT`` or ``RIGHT`` per column), then each row's cells (``str`` of each, formatted by
    the caller). Every row has one cell per column."""
    if len(alignment) != len(header):
        raise ValueError(f"{len(header)} columns but {len(alignment)} alignments")
    lines = [_line(header), _line(alignment)]
    for cells in rows:
        if len(cells) != len(header):
            raise ValueError(f"{len(header)} columns but a row of {len(cells)} cells")
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: Iterable[object]) -> str:
    # An empty cell is one space wide ("| |"), as people write it by hand.
    return "|" + "|".join(f" {text} " if (text := str(cell)) else " " for cell in cells) + "|"

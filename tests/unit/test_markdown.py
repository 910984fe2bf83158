"""The one Markdown table builder the benchmarks and training targets print with."""

from __future__ import annotations

import pytest

from axon.markdown import LEFT, RIGHT, markdown_table


def test_header_alignment_and_rows_one_line_each() -> None:
    table = markdown_table(["", "images/s"], [LEFT, RIGHT], [["server", 1200], ["client", ""]])
    assert table.splitlines() == ["| | images/s |", "| --- | ---: |", "| server | 1200 |",
                                  "| client | |"]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="2 columns but a row of 1 cells"):
        markdown_table(["a", "b"], [LEFT, LEFT], [["x"]])
    with pytest.raises(ValueError, match="2 columns but 1 alignments"):
        markdown_table(["a", "b"], [LEFT], [])

"""A one-line bar chart of a series over policy updates, with a cursor.

Textual's Sparkline has no cursor, and replay needs one: the column of the update that the
current round was played under is drawn in reverse video and its value shown beside the
label, so the charts follow the game as it unfolds.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BARS = "▁▂▃▄▅▆▇█"
MAX_POINT_WIDTH = 6


def bucket_means(values: list[float], width: int) -> list[float]:
    """Shrink `values` to at most `width` columns, each the mean of its finite values."""
    if len(values) <= width:
        return list(values)
    columns: list[float] = []
    for column in range(width):
        start = column * len(values) // width
        stop = max(start + 1, (column + 1) * len(values) // width)
        finite = [value for value in values[start:stop] if math.isfinite(value)]
        columns.append(sum(finite) / len(finite) if finite else math.nan)
    return columns


def column_of(index: int, n_values: int, width: int) -> int:
    """The column that shows `values[index]` after `bucket_means(values, width)`."""
    if n_values <= width:
        return index
    return min(width - 1, index * width // n_values)


def format_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3f}"


class MetricChart(Widget):
    """`label  value-at-cursor  ▁▃▅▇…` for one metric over policy versions."""

    cursor: reactive[int | None] = reactive(None)

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.values: list[float] = []

    def set_values(self, values: list[float]) -> None:
        self.values = list(values)
        self.refresh()

    def render(self) -> Text:
        label_width = 24
        text = Text(f"{self.label:<15}{self._value_text():>8} ", style="bold")
        chart_width = max(1, self.size.width - label_width)
        if not self.values:
            text.append("no policy updates yet", style="dim")
            return text
        # Few points are widened (up to MAX_POINT_WIDTH columns each) so a short run still
        # reads as a chart; many are averaged down to one column each.
        point_width = max(1, min(MAX_POINT_WIDTH, chart_width // len(self.values)))
        columns = bucket_means(self.values, chart_width)
        finite = [value for value in columns if math.isfinite(value)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
        cursor_column = (
            column_of(self.cursor, len(self.values), chart_width) if self.cursor is not None else None
        )
        for column, value in enumerate(columns):
            if not math.isfinite(value):
                bar = " "
            elif high == low:
                bar = BARS[len(BARS) // 2]
            else:
                bar = BARS[round((value - low) / (high - low) * (len(BARS) - 1))]
            style = "reverse" if column == cursor_column else ""
            text.append(bar * point_width, style=style)
        return text

    def _value_text(self) -> str:
        if not self.values:
            return "–"
        index = len(self.values) - 1 if self.cursor is None else min(self.cursor, len(self.values) - 1)
        return format_value(self.values[index])

"""A one-line bar chart of a series over training windows, with a cursor and a y-range.

Textual's Sparkline has no cursor, and replay needs one: the column of the window the
current round was played in is drawn in reverse video, so the charts follow the game as it
unfolds. One rule for the value beside the label: the cursor's point when there is a cursor
(a highlighted or replayed round), else the last point; the tag after it says which
("w12" or "last"). The bars' low and high ends are printed on either side of them. A flat
series is drawn against zero (at the top when above it, at the bottom at or below it), not
at mid-height where it would read as a middling value.
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
    """`label  value tag  low ▁▃▅▇… high` for one metric over training windows."""

    cursor: reactive[int | None] = reactive(None)

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.values: list[float] = []
        self.windows: list[int] = []

    def set_values(self, values: list[float], windows: list[int] | None = None) -> None:
        self.values = list(values)
        self.windows = list(windows) if windows is not None else list(range(len(values)))
        self.refresh()

    def y_range(self) -> tuple[float, float] | None:
        """The values the lowest and highest bar stand for; None when nothing is finite."""
        finite = [value for value in self.values if math.isfinite(value)]
        if not finite:
            return None
        low, high = min(finite), max(finite)
        if low == high:  # flat: measure against zero rather than centring it
            low, high = min(low, 0.0), max(high, 0.0)
        return low, high

    def shown_point(self) -> tuple[float, str] | None:
        """The value beside the label and its tag: the cursor's window, else the last one."""
        if not self.values:
            return None
        if self.cursor is not None and 0 <= self.cursor < len(self.values):
            return self.values[self.cursor], f"w{self.windows[self.cursor]}"
        return self.values[-1], "last"

    def render(self) -> Text:
        shown = self.shown_point()
        value, tag = shown if shown is not None else (None, "")
        text = Text(f"{self.label:<15}{format_value(value):>8} ", style="bold")
        text.append(f"{tag:<6}", style="dim")
        if not self.values:
            text.append("no training windows yet", style="dim")
            return text
        y_range = self.y_range()
        low, high = y_range if y_range is not None else (math.nan, math.nan)
        low_text, high_text = f"{format_value(low):>7} ", f" {format_value(high)}"
        text.append(low_text, style="dim")
        chart_width = max(1, self.size.width - text.cell_len - len(high_text))
        # Few points are widened (up to MAX_POINT_WIDTH columns each) so a short run still
        # reads as a chart; many are averaged down to one column each.
        point_width = max(1, min(MAX_POINT_WIDTH, chart_width // len(self.values)))
        columns = bucket_means(self.values, chart_width)
        cursor_column = (
            column_of(self.cursor, len(self.values), chart_width) if self.cursor is not None else None
        )
        for column, point in enumerate(columns):
            if not math.isfinite(point) or y_range is None:
                bar = " "
            elif high == low:
                bar = BARS[0]  # flat at zero
            else:
                bar = BARS[round((point - low) / (high - low) * (len(BARS) - 1))]
            style = "reverse" if column == cursor_column else ""
            text.append(bar * point_width, style=style)
        text.append(high_text, style="dim")
        return text

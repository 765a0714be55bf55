"""A DataTable that never keeps cells drawn at a column width it has since outgrown.

DataTable measures new and updated cells when it is next idle, but caches each rendered cell
and line under a key that leaves out the column widths. A paint that falls between adding
rows and that idle (it happened about one open in ten) caches every cell cut to its header's
width, and the cut stays until the rows change again. Column widths only change in that idle
measurement, which also sets the table's virtual size; dropping the cached renderings there
makes the next paint use the measured widths.
"""

from __future__ import annotations

from textual.geometry import Size
from textual.widgets import DataTable


class MeasuredTable(DataTable):  # type: ignore[type-arg]
    def watch_virtual_size(self, old: Size, new: Size) -> None:
        if old.width != new.width:
            self._clear_caches()  # cached cells were cut to the old widths
            self.refresh()

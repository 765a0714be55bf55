"""RunReader: read a run's log, while another process may still be writing it.

    reader = RunReader("runs/r1")
    window = reader.rounds(first_seq=1024, last_seq=1087)   # list[Recorded], seq order

A reader holds no lock and opens segments read-only through memory maps, so it never
blocks the writer. Every call lists the log directory again, so it sees every segment
flushed since the previous call, and refuses a log whose listing shows a missing or
duplicated segment (verify checks the rest). A compaction may delete a segment between our
listing and our open; the read is then retried on a fresh listing (the merged segment has
the rows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from storage.errors import UserError
from storage.events import Recorded, RoundPlayed, RunStarted
from storage.codec import ROUND_COLUMNS, SEGMENT_SCHEMA, table_to_recorded
from storage.layout import LOG_DIR_NAME, SegmentFile, checked_segments, read_manifest
from storage.segments import read_segment_range

_ATTEMPTS = 5
T = TypeVar("T")


class RunReader:
    """Read-only access to one run directory's event log."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        manifest = read_manifest(self.run_dir)
        self.run_id: str = manifest["run_id"]
        self.log_dir = self.run_dir / LOG_DIR_NAME
        self.segments()  # refuses a log with a missing or duplicated segment now, not at the first read

    def segments(self) -> list[SegmentFile]:
        """The live segments now, in seq order (superseded ones left out); a UserError when
        they show damage (storage/layout.py `checked_segments`)."""
        return checked_segments(self.run_dir)

    def last_seq(self) -> int:
        """The last flushed seq, -1 when nothing has been flushed yet."""
        segments = self.segments()
        return segments[-1].last_seq if segments else -1

    def table(self, first_seq: int = 0, last_seq: int | None = None) -> pa.Table:
        """Stored rows with first_seq <= seq <= last_seq as one Arrow table (segment schema)."""
        def read() -> pa.Table:
            end = last_seq if last_seq is not None else float("inf")
            wanted = [s for s in self.segments() if s.last_seq >= first_seq and s.first_seq <= end]
            upper = last_seq if last_seq is not None else wanted[-1].last_seq if wanted else -1
            tables = [read_segment_range(s, first_seq, upper) for s in wanted]
            return pa.concat_tables(tables) if tables else SEGMENT_SCHEMA.empty_table()
        return _retry_on_compaction(read)

    def events(self, first_seq: int = 0, last_seq: int | None = None,
               types: Iterable[str | type] | None = None) -> list[Recorded]:
        """Events in seq order; `types` filters by event class or name (e.g. "LambdaUpdated")."""
        table = self.table(first_seq, last_seq)
        if types is not None:
            names = [t if isinstance(t, str) else t.event_type for t in types]
            table = table.filter(pc.is_in(table.column("event_type"), pa.array(names, pa.string())))
        return table_to_recorded(table)

    def rounds(self, first_seq: int = 0, last_seq: int | None = None, phase: str | None = None) -> list[Recorded]:
        """RoundPlayed events only, in seq order; `phase` keeps only "train" or "eval" rounds."""
        table = self._round_rows(first_seq, last_seq)
        if phase is not None:
            table = table.filter(pc.equal(table.column("phase"), phase))
        return table_to_recorded(table)

    def rounds_table(self, first_seq: int = 0, last_seq: int | None = None) -> pa.Table:
        """RoundPlayed rows as columns: run_id, seq, ts, hash, then every RoundPlayed field."""
        table = self._round_rows(first_seq, last_seq)
        return table.select(["run_id", "seq", "ts", "hash", *ROUND_COLUMNS])

    def run_started(self) -> RunStarted:
        """The run's first event, which holds the resolved config."""
        first = self.events(0, 0)
        if not first or not isinstance(first[0].event, RunStarted):
            raise UserError(f"{self.run_dir}: the log does not begin with RunStarted; "
                            f"run `minmax-engine verify {self.run_dir}`")
        return first[0].event

    def _round_rows(self, first_seq: int, last_seq: int | None) -> pa.Table:
        table = self.table(first_seq, last_seq)
        return table.filter(pc.equal(table.column("event_type"), RoundPlayed.event_type))


def _retry_on_compaction(read: Callable[[], T]) -> T:
    for attempt in range(_ATTEMPTS):
        try:
            return read()
        except FileNotFoundError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")

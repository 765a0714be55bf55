"""RunReader: read a run's log, while another process may still be writing it.

    reader = RunReader("runs/r1")
    window = reader.rounds(first_seq=1024, last_seq=1087)   # list[Recorded], seq order

A reader holds no lock and opens segments read-only through memory maps, so it never
blocks the writer. Every call lists the log directory again, so it sees every segment
flushed since the previous call, and refuses a log whose listing shows a missing or
duplicated segment (verify checks the rest). A compaction may delete a segment between our
listing and our open; the read is then retried on a fresh listing (the merged segment has
the rows).

The resume rule lives here, once, for every reader of a log (replay, resume, trackers, the
TUI, and the SQL views of storage/query.py): a `RunResumed` at seq r with
discarded_after_seq d *supersedes* every event with d < seq < r (a killed run logged them
after its last checkpoint, and the resumed run played them again). Reads return the live
events by default; `include_superseded=True` returns the log as written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from storage.codec import ROUND_COLUMNS, SEGMENT_SCHEMA, table_to_recorded
from storage.errors import UserError
from storage.events import Recorded, RoundPlayed, RunResumed, RunStarted
from storage.layout import LOG_DIR_NAME, SegmentFile, checked_segments, read_manifest
from storage.segments import open_segment, read_segment_range

_ATTEMPTS = 5
T = TypeVar("T")
SupersededRange = tuple[int, int]  # (discarded_after_seq, the RunResumed's seq): both exclusive


def resume_ranges(table: pa.Table) -> list[SupersededRange]:
    """The ranges superseded by the RunResumed rows of a table of stored events."""
    rows = table.filter(pc.equal(table.column("event_type"), RunResumed.event_type))
    return [(int(orjson.loads(payload)["discarded_after_seq"]), int(seq))
            for payload, seq in zip(rows.column("payload").to_pylist(), rows.column("seq").to_pylist())]


def superseded_seqs(events: Iterable[Recorded]) -> set[int]:
    """The seqs superseded by the RunResumed events among `events` (the log as written)."""
    voided: set[int] = set()
    for item in events:
        if isinstance(item.event, RunResumed):
            voided.update(range(item.event.discarded_after_seq + 1, item.seq))
    return voided


def without_superseded(table: pa.Table, ranges: Iterable[SupersededRange]) -> pa.Table:
    """`table` less the rows whose seq lies inside a superseded range."""
    for after, resumed in ranges:
        seqs = table.column("seq")
        table = table.filter(pc.or_(pc.less_equal(seqs, after), pc.greater_equal(seqs, resumed)))
    return table


class RunReader:
    """Read-only access to one run directory's event log."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        manifest = read_manifest(self.run_dir)
        self.run_id: str = manifest["run_id"]
        self.log_dir = self.run_dir / LOG_DIR_NAME
        # segment path -> its RunResumed ranges; segments are immutable, so each is searched once
        # (a cache of facts that never change: threads sharing a reader may fill it in any order)
        self._resumes: dict[Path, list[SupersededRange]] = {}
        self.segments()  # refuses a log with a missing or duplicated segment now, not at the first read

    def segments(self) -> list[SegmentFile]:
        """The live segments now, in seq order (superseded ones left out); a UserError when
        they show damage (storage/layout.py `checked_segments`)."""
        return checked_segments(self.run_dir)

    def last_seq(self) -> int:
        """The last flushed seq, -1 when nothing has been flushed yet."""
        segments = self.segments()
        return segments[-1].last_seq if segments else -1

    def superseded_ranges(self, after_seq: int = -1) -> list[SupersededRange]:
        """Every superseded range that reaches past `after_seq`, from the log as flushed now."""
        def read() -> list[SupersededRange]:
            found = []
            for segment in self.segments():
                if segment.last_seq <= after_seq:
                    continue  # a RunResumed supersedes only seqs below its own
                if segment.path not in self._resumes:
                    events = open_segment(segment).read_all().select(["seq", "event_type", "payload"])
                    self._resumes[segment.path] = resume_ranges(events)
                found.extend(r for r in self._resumes[segment.path] if r[1] > after_seq + 1)
            return found
        return _retry_on_compaction(read)

    def table(self, first_seq: int = 0, last_seq: int | None = None, *, include_superseded: bool = False) -> pa.Table:
        """Stored rows with first_seq <= seq <= last_seq as one Arrow table (segment schema).

        Superseded rows are left out unless `include_superseded` (see the module docstring).
        """
        def read() -> pa.Table:
            end = last_seq if last_seq is not None else float("inf")
            wanted = [s for s in self.segments() if s.last_seq >= first_seq and s.first_seq <= end]
            upper = last_seq if last_seq is not None else wanted[-1].last_seq if wanted else -1
            tables = [read_segment_range(s, first_seq, upper) for s in wanted]
            return pa.concat_tables(tables) if tables else SEGMENT_SCHEMA.empty_table()
        table = _retry_on_compaction(read)
        if include_superseded or table.num_rows == 0:
            return table
        ranges = [(after, resumed) for after, resumed in self.superseded_ranges(first_seq - 1)
                  if last_seq is None or after < last_seq]
        return without_superseded(table, ranges)

    def events(self, first_seq: int = 0, last_seq: int | None = None,
               types: Iterable[str | type] | None = None, *, include_superseded: bool = False) -> list[Recorded]:
        """Events in seq order; `types` filters by event class or name (e.g. "LambdaUpdated")."""
        table = self.table(first_seq, last_seq, include_superseded=include_superseded)
        if types is not None:
            names = [t if isinstance(t, str) else t.event_type for t in types]
            table = table.filter(pc.is_in(table.column("event_type"), pa.array(names, pa.string())))
        return table_to_recorded(table)

    def rounds(self, first_seq: int = 0, last_seq: int | None = None, phase: str | None = None,
               *, include_superseded: bool = False) -> list[Recorded]:
        """RoundPlayed events only, in seq order; `phase` keeps only "train" or "eval" rounds."""
        table = self._round_rows(first_seq, last_seq, include_superseded)
        if phase is not None:
            table = table.filter(pc.equal(table.column("phase"), phase))
        return table_to_recorded(table)

    def rounds_table(self, first_seq: int = 0, last_seq: int | None = None,
                     *, include_superseded: bool = False) -> pa.Table:
        """RoundPlayed rows as columns: run_id, seq, ts, hash, then every RoundPlayed field."""
        table = self._round_rows(first_seq, last_seq, include_superseded)
        return table.select(["run_id", "seq", "ts", "hash", *ROUND_COLUMNS])

    def run_started(self) -> RunStarted:
        """The run's first event, which holds the resolved config."""
        first = self.events(0, 0, include_superseded=True)  # seq 0 is never superseded
        if not first or not isinstance(first[0].event, RunStarted):
            raise UserError(f"{self.run_dir}: the log does not begin with RunStarted; "
                            f"run `minmax-engine verify {self.run_dir}`")
        return first[0].event

    def _round_rows(self, first_seq: int, last_seq: int | None, include_superseded: bool) -> pa.Table:
        table = self.table(first_seq, last_seq, include_superseded=include_superseded)
        return table.filter(pc.equal(table.column("event_type"), RoundPlayed.event_type))


def _retry_on_compaction(read: Callable[[], T]) -> T:
    for attempt in range(_ATTEMPTS):
        try:
            return read()
        except FileNotFoundError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")

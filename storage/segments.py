"""Segment files: the Arrow IPC files a run's events are stored in, written once, read by map.

Why immutable Arrow IPC segments rather than a DuckDB database file: a DuckDB file that the
writer holds open blocks every other process, and readers (SQL, TUI, a learner process)
must work while the game is being played. A segment is written whole under a temporary name
and renamed into place (storage/layout.py), so a reader sees a whole segment or none of it,
and a kill -9 loses at most the unflushed buffer. Arrow IPC rather than Parquet because
writing it is a memory copy and reading it is a memory map: a window of rounds is a
zero-copy slice of the batch that holds it, and DuckDB scans the mapped segments as one
Arrow table, touching only the columns a query uses.

The first seq of each record batch is kept in the file's schema metadata, so a window read
decodes only the batches it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa

from storage.codec import SEGMENT_SCHEMA
from storage.events import TRAILING_DEFAULTS, RoundPlayed
from storage.errors import UserError
from storage.layout import SegmentFile, write_file_atomically

BATCH_SEQS_KEY = b"batch_first_seqs"


def write_segment_file(log_dir: Path, final_name: str, batches: Sequence[pa.RecordBatch], *,
                       sync_directory: bool = True) -> Path:
    """Write record batches as one segment file, durably (see write_file_atomically).

    The file is serialized in memory and written in one call: the IPC writer would emit a
    system call per Arrow buffer, over a hundred for one segment.
    """
    first_seqs = [int(b.column(1)[0].as_py()) for b in batches]
    schema = SEGMENT_SCHEMA.with_metadata({BATCH_SEQS_KEY: orjson.dumps(first_seqs)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as ipc:
        for batch in batches:
            ipc.write_batch(batch)
    return write_file_atomically(log_dir, final_name, sink.getvalue(), sync_directory=sync_directory)


def open_segment(segment: SegmentFile) -> SegmentReader:
    """Memory-map a segment; a damaged file is the user's to repair, not a traceback."""
    try:
        return SegmentReader(pa.ipc.open_file(pa.memory_map(str(segment.path), "r")))
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(
            f"{segment.path}: not a readable log segment ({first_line(error)}); "
            f"run `minmax-engine verify {segment.path.parent.parent}`"
        ) from None


# Round columns added after schema 1 (storage.events.TRAILING_DEFAULTS), last in the schema.
_ADDED_ROUND_COLUMNS = TRAILING_DEFAULTS[RoundPlayed.event_type]


def _added_columns_missing(schema: pa.Schema) -> int:
    """How many of the added round columns a segment written with `schema` lacks (they were
    added in order, so it has a prefix of them): 0 for the current schema."""
    for missing in range(len(_ADDED_ROUND_COLUMNS) + 1):
        older = pa.schema(list(SEGMENT_SCHEMA)[: len(SEGMENT_SCHEMA) - missing])
        if schema.equals(older, check_metadata=False):
            return missing
    return 0  # not a schema this code wrote: reading it fails where it is read


def with_added_columns(batch: pa.RecordBatch, missing: int) -> pa.RecordBatch:
    """A batch of a segment written before the last `missing` added round columns, with them
    at the value an older round implies (e.g. judge_prompt ""; NULL on other events)."""
    is_round = [event_type == RoundPlayed.event_type for event_type in batch.column(4).to_pylist()]
    columns = list(batch.columns)
    for name, default in _ADDED_ROUND_COLUMNS[len(_ADDED_ROUND_COLUMNS) - missing:]:
        columns.append(pa.array([default if round_row else None for round_row in is_round],
                                SEGMENT_SCHEMA.field(name).type))
    return pa.RecordBatch.from_arrays(columns, schema=SEGMENT_SCHEMA)


class SegmentReader:
    """An open segment file whose rows always come in the current schema: a segment written
    before the added round columns existed reads with them filled in (with_added_columns)."""

    def __init__(self, reader: pa.ipc.RecordBatchFileReader) -> None:
        self._reader = reader
        self._missing = _added_columns_missing(reader.schema)
        self._upgrade = self._missing > 0
        self.schema = SEGMENT_SCHEMA.with_metadata(reader.schema.metadata) if self._upgrade else reader.schema

    @property
    def num_record_batches(self) -> int:
        return self._reader.num_record_batches

    def get_batch(self, index: int) -> pa.RecordBatch:
        batch = self._reader.get_batch(index)
        return with_added_columns(batch, self._missing) if self._upgrade else batch

    def read_all(self) -> pa.Table:
        if not self._upgrade:
            return self._reader.read_all()
        return pa.Table.from_batches([self.get_batch(i) for i in range(self.num_record_batches)], schema=self.schema)


def read_segment_range(segment: SegmentFile, first_seq: int, last_seq: int) -> pa.Table:
    """Rows of one segment with first_seq <= seq <= last_seq, reading only the batches needed."""
    reader = open_segment(segment)
    try:
        batch_firsts = orjson.loads(reader.schema.metadata[BATCH_SEQS_KEY])
    except (KeyError, TypeError, orjson.JSONDecodeError):
        batch_firsts = None
    if batch_firsts is None or len(batch_firsts) != reader.num_record_batches:
        wanted = range(reader.num_record_batches)
    else:
        bounds = batch_firsts + [segment.last_seq + 1]
        wanted = [i for i in range(len(batch_firsts)) if bounds[i] <= last_seq and bounds[i + 1] > first_seq]
    try:
        batches = [reader.get_batch(i) for i in wanted]
        table = pa.Table.from_batches(batches, schema=SEGMENT_SCHEMA)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(
            f"{segment.path}: damaged log segment ({first_line(error)}); "
            f"run `minmax-engine verify {segment.path.parent.parent}`"
        ) from None
    if segment.first_seq >= first_seq and segment.last_seq <= last_seq:
        return table
    seq = table.column("seq").to_numpy()
    # Rows are stored gap-free in seq order, so the window is a zero-copy slice; a damaged
    # segment (verify's business) falls back to a filter.
    start = max(first_seq - int(seq[0]), 0) if len(seq) else 0
    stop = min(last_seq - int(seq[0]) + 1, len(seq)) if len(seq) else 0
    if len(seq) and int(seq[-1]) - int(seq[0]) == len(seq) - 1:
        return table.slice(start, max(stop - start, 0))
    return table.filter(pa.array((seq >= first_seq) & (seq <= last_seq)))


def first_line(error: BaseException) -> str:
    """The first line of an error's message, for one-line UserErrors."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

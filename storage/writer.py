"""RunWriter: the one process that appends events to a run's log.

    with RunWriter.create(run_dir, run_id) as writer:
        writer.append(RunStarted(...))
        writer.append(RoundPlayed(...)); ...
        writer.flush()          # once per window: durable, and visible to readers

`append` hashes the event into the chain (storage/codec.py) and buffers it, column by column
(no I/O). `flush` writes the buffer as one immutable segment (storage/segments.py), then
head.json, and fsyncs the directory once for both renames, so a kill -9 loses at most the
events appended since the last flush. A writer that is never flushed by hand flushes on its
own every `max_buffered` events, before buffering the next one.

Compaction keeps a long run from becoming thousands of small files: once the flush segments
(level 0) written since the last merge hold `MERGE_ROWS` events, or number `MERGE_SEGMENTS`,
the flush that wrote the last of them merges them into one level-1 segment of a few large
record batches, then deletes them. One level, not a cascade: every event is rewritten once.
A failed merge loses nothing (its segments stay live, readers read them) and is retried at
a later flush.

One writer per run: `log/writer.lock` is held with fcntl.flock while the writer is open. The
OS releases the lock when the process dies, so a run killed with SIGKILL can be continued
with `open_existing`, which starts at the last stored seq + 1 chained to its hash.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from storage.codec import (
    GENESIS_HASH,
    ROUND_SPECS,
    SEGMENT_SCHEMA,
    canonical_header,
    chain_hash,
    encode_event,
    encode_round,
)
from storage.errors import UserError
from storage.events import SCHEMA_VERSION, Event, Recorded, RoundPlayed
from storage.layout import (
    LOCK_NAME,
    LOG_DIR_NAME,
    LOG_FORMAT,
    MANIFEST_NAME,
    TEMP_PREFIX,
    SegmentFile,
    fsync_directory,
    list_segment_files,
    live_segments,
    read_manifest,
    segment_name,
    write_file_atomically,
    write_head,
)
from storage.segments import open_segment, read_segment_range, write_segment_file

MERGE_ROWS = 4096
MERGE_SEGMENTS = 64
DEFAULT_MAX_BUFFERED = 4096
# A merged segment holds few, large record batches: decoding a batch's metadata costs about
# as much as scanning thousands of its rows, so SQL over many small batches is slow. The
# caps keep one batch's memory and its int32 string offsets far from their limits.
MERGED_BATCH_ROWS = 16384
MERGED_BATCH_BYTES = 256 * 2**20

_ROUND = RoundPlayed.event_type
_PACKED_KINDS = ("packed_int", "packed_float")
_NO_ROUND_HEADER = (None,) * len(ROUND_SPECS)
_NO_ROUND_PACKED = (None,) * sum(s.kind in _PACKED_KINDS for s in ROUND_SPECS)


class EventBuffer:
    """Appended, not yet flushed events, kept column by column for one record batch.

    `add` keeps what `append` already computed for the hash (the header values, the packed
    bytes); `to_batch` turns each column into an Arrow array in one call.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.clear()

    def clear(self) -> None:
        self.seqs: list[int] = []
        self.ts: list[str] = []
        self.event_types: list[str] = []
        self.prev_hashes: list[str] = []
        self.hashes: list[str] = []
        self.payloads: list[str | None] = []
        self.round_headers: list[Sequence[Any]] = []  # per event: RoundPlayed values as hashed
        self.round_packed: list[Sequence[bytes | None]] = []  # per event: packed lists' bytes

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seq: int, ts: str, event_type: str, prev_hash: str, digest: str, payload: str | None,
            round_header: Sequence[Any] | None, round_packed: Sequence[bytes | None] | None) -> None:
        self.seqs.append(seq)
        self.ts.append(ts)
        self.event_types.append(event_type)
        self.prev_hashes.append(prev_hash)
        self.hashes.append(digest)
        self.payloads.append(payload)
        # Other event types have NULL in every round column.
        self.round_headers.append(_NO_ROUND_HEADER if round_header is None else round_header)
        self.round_packed.append(_NO_ROUND_PACKED if round_packed is None else round_packed)

    def to_batch(self) -> pa.RecordBatch:
        """The buffered rows (at least one) as one record batch of the segment schema."""
        n = len(self.seqs)
        columns: list[pa.Array] = [
            pa.array([self.run_id] * n, pa.string()),
            pa.array(self.seqs, pa.int64()),
            pa.array(self.ts, pa.string()),
            pa.array([SCHEMA_VERSION] * n, pa.int32()),
            pa.array(self.event_types, pa.string()),
            pa.array(self.prev_hashes, pa.string()),
            pa.array(self.hashes, pa.string()),
            pa.array(self.payloads, pa.string()),
        ]
        # zip(*rows) transposes: one tuple per RoundPlayed field, one entry per event.
        header_columns = list(zip(*self.round_headers))
        packed_columns = iter(zip(*self.round_packed))
        for position, spec in enumerate(ROUND_SPECS):
            if spec.kind in _PACKED_KINDS:
                # the header holds each list's length (None for a None list), the bytes its values
                columns.append(_packed_column(header_columns[position], next(packed_columns), spec.arrow_type))
            else:
                columns.append(pa.array(header_columns[position], spec.arrow_type))
        return pa.RecordBatch.from_arrays(columns, schema=SEGMENT_SCHEMA)


def _packed_column(lengths: Sequence[int | None], pieces: Sequence[bytes | None], arrow_type: pa.ListType) -> pa.Array:
    """A list column from each row's length (None: a None list) and its packed bytes, the
    bytes handed to Arrow as they are (the hashed bytes are the stored bytes)."""
    rows = len(lengths)
    has_nulls = None in lengths
    sizes = np.array([0 if n is None else n for n in lengths], np.int32)
    offsets = np.zeros(rows + 1, np.int32)
    np.cumsum(sizes, out=offsets[1:])
    data = b"".join(piece for piece in pieces if piece is not None)
    values = pa.Array.from_buffers(arrow_type.value_type, int(offsets[-1]), [None, pa.py_buffer(data)])
    validity = None
    if has_nulls:  # Arrow's validity bitmap: bit i (least significant first) set when row i is present
        validity = pa.py_buffer(np.packbits([n is not None for n in lengths], bitorder="little"))
    return pa.ListArray.from_buffers(arrow_type, rows, [validity, pa.py_buffer(offsets)], children=[values])


def _acquire_lock(log_dir: Path) -> int:
    fd = os.open(log_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.05)  # a status probe (writer_alive) holds it for microseconds
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UserError(f"{log_dir.parent}: another writer (pid {holder}) is appending to this run; "
                        "stop it first, or read the run without writing (RunReader, `minmax-engine sql`)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def writer_alive(run_dir: Path) -> bool:
    """Whether a process holds the run's writer lock now (the OS drops it when a writer dies).

    Probes with a shared lock, released at once; a run without a lock file never had a writer.
    """
    try:
        fd = os.open(Path(run_dir) / LOG_DIR_NAME / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a probe lock we got
    return False


def _covering(segment: SegmentFile, live: list[SegmentFile]) -> SegmentFile:
    return next(s for s in live if s.first_seq <= segment.first_seq and segment.last_seq <= s.last_seq)


def _holds_its_range(segment: SegmentFile) -> bool:
    """The segment is readable and holds exactly the seqs its name claims."""
    try:
        reader = open_segment(segment)
        seqs = pa.concat_arrays([reader.get_batch(i).column(1) for i in range(reader.num_record_batches)])
    except (UserError, pa.ArrowInvalid, OSError):
        return False
    expected = segment.last_seq - segment.first_seq + 1
    return len(seqs) == expected and seqs.to_pylist() == list(range(segment.first_seq, segment.last_seq + 1))


def _merged_batches(group: list[SegmentFile]) -> list[pa.RecordBatch]:
    """The group's rows, in order, as record batches of up to MERGED_BATCH_ROWS rows."""
    merged: list[pa.RecordBatch] = []
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for segment in group:
        reader = open_segment(segment)
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            if pending and (rows + batch.num_rows > MERGED_BATCH_ROWS or size + batch.nbytes > MERGED_BATCH_BYTES):
                merged.append(pa.Table.from_batches(pending).combine_chunks().to_batches()[0])
                pending, rows, size = [], 0, 0
            pending.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
    if pending:
        merged.append(pa.Table.from_batches(pending).combine_chunks().to_batches()[0])
    return merged


def _utc_now() -> str:
    """ISO-8601 UTC with microseconds, read from time.time_ns (the one clock tests stop)."""
    seconds, nanoseconds = divmod(time.time_ns(), 10**9)
    return f"{datetime.fromtimestamp(seconds, timezone.utc):%Y-%m-%dT%H:%M:%S}.{nanoseconds // 1000:06d}+00:00"


class RunWriter:
    """Appends events to one run's log; the only writer of that log while it is open."""

    def __init__(
        self, *, log_dir: Path, run_id: str, next_seq: int, prev_hash: str, lock_fd: int,
        compactable: list[SegmentFile], max_buffered: int,
    ) -> None:
        # Use RunWriter.create or RunWriter.open_existing.
        self._log_dir = log_dir
        self._run_id = run_id
        self._next_seq = next_seq
        self._prev_hash = prev_hash
        self._lock_fd: int | None = lock_fd
        self._compactable = compactable  # level-0 segments since the last merge, in seq order
        self._max_buffered = max_buffered
        self._buffer = EventBuffer(run_id)

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | os.PathLike, run_id: str, *, max_buffered: int = DEFAULT_MAX_BUFFERED) -> RunWriter:
        """Start a new run's log in run_dir; refuses a directory that already has one."""
        run_dir = Path(run_dir)
        if not isinstance(run_id, str) or not run_id or any(c in run_id for c in "\n\r/\\"):
            raise UserError(f"run id {run_id!r}: use a non-empty name without slashes or newlines")
        log_dir = run_dir / LOG_DIR_NAME
        if (log_dir / MANIFEST_NAME).exists():
            raise UserError(f"{run_dir}: already has an event log; continue it with "
                            "RunWriter.open_existing (play --resume) or choose a new run directory")
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{log_dir}: cannot create the log directory ({error.strerror})") from None
        lock_fd = _acquire_lock(log_dir)
        if (log_dir / MANIFEST_NAME).exists() or list_segment_files(log_dir):
            os.close(lock_fd)
            raise UserError(f"{run_dir}: already has an event log; choose a new run directory")
        manifest = {"format": LOG_FORMAT, "run_id": run_id, "schema_version": SCHEMA_VERSION}
        write_file_atomically(log_dir, MANIFEST_NAME, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return cls(log_dir=log_dir, run_id=run_id, next_seq=0, prev_hash=GENESIS_HASH, lock_fd=lock_fd,
                   compactable=[], max_buffered=max_buffered)

    @classmethod
    def open_existing(cls, run_dir: str | os.PathLike, *, max_buffered: int = DEFAULT_MAX_BUFFERED) -> RunWriter:
        """Continue a run's log at its last stored seq + 1 (after a close or a crash)."""
        run_dir = Path(run_dir)
        manifest = read_manifest(run_dir)
        log_dir = run_dir / LOG_DIR_NAME
        lock_fd = _acquire_lock(log_dir)
        try:
            present = list_segment_files(log_dir)
            live = live_segments(present)
            # We hold the lock, so nothing else writes here: temp files are a dead writer's
            # unfinished flushes, superseded segments are a crashed compaction's leftovers.
            for entry in os.listdir(log_dir):
                if entry.startswith(TEMP_PREFIX):
                    (log_dir / entry).unlink()
            for segment in set(present) - set(live):
                if _holds_its_range(_covering(segment, live)):
                    segment.path.unlink()  # its rows are safely in the merged segment
            next_seq, prev_hash = 0, GENESIS_HASH
            if live:
                last = live[-1]
                row = read_segment_range(last, last.last_seq, last.last_seq)
                if row.num_rows != 1:
                    raise UserError(f"{last.path}: does not hold seq {last.last_seq} as its name says; "
                                    f"run `minmax-engine verify {run_dir}`")
                next_seq, prev_hash = last.last_seq + 1, row.column("hash")[0].as_py()
            first_compactable = 0
            for index, segment in enumerate(live):
                if segment.level >= 1:
                    first_compactable = index + 1
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(log_dir=log_dir, run_id=manifest["run_id"], next_seq=next_seq, prev_hash=prev_hash,
                   lock_fd=lock_fd, compactable=live[first_compactable:], max_buffered=max_buffered)

    # -- writing ------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    def append(self, event: Event) -> Recorded:
        """Hash the event into the chain and buffer it; durable only after flush()."""
        if self._lock_fd is None:
            raise RuntimeError("append on a closed RunWriter")
        if len(self._buffer) >= self._max_buffered:
            self.flush()  # before this event is buffered, so that an append that raises appended nothing
        seq, ts, prev_hash = self._next_seq, _utc_now(), self._prev_hash
        if type(event) is RoundPlayed:
            header, packed = encode_round(event)
            canonical = canonical_header(self._run_id, seq, ts, SCHEMA_VERSION, _ROUND, header)
            digest = chain_hash(prev_hash, canonical, packed)
            self._buffer.add(seq, ts, _ROUND, prev_hash, digest, None, header, packed)
        else:
            encoded = encode_event(event)  # also refuses a type that is not an event
            canonical = canonical_header(self._run_id, seq, ts, SCHEMA_VERSION, encoded.event_type,
                                         encoded.header_values)
            digest = chain_hash(prev_hash, canonical, encoded.packed.values())
            self._buffer.add(seq, ts, encoded.event_type, prev_hash, digest, encoded.payload_json, None, None)
        self._next_seq, self._prev_hash = seq + 1, digest
        return Recorded(run_id=self._run_id, seq=seq, ts=ts, schema_version=SCHEMA_VERSION,
                        prev_hash=prev_hash, hash=digest, event=event)

    def flush(self) -> None:
        """Write the buffered events as one segment: durable and visible to other processes.

        On an error the events stay buffered, so a flush after the cause is fixed loses nothing.
        """
        if len(self._buffer):
            self._write_segment()
        self._compact()

    def close(self) -> None:
        """Flush and release the run; safe to call twice."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _write_segment(self) -> None:
        """The buffer as one level-0 segment, then head.json; both renames made durable."""
        buffer = self._buffer
        first, last = buffer.seqs[0], buffer.seqs[-1]
        try:
            path = write_segment_file(self._log_dir, segment_name(first, last, 0), [buffer.to_batch()],
                                      sync_directory=False)
            write_head(self._log_dir, last, buffer.hashes[-1])
            fsync_directory(self._log_dir)  # one directory sync makes both renames durable
        except OSError as error:
            raise UserError(f"{self._log_dir}: cannot write the log ({error.strerror or error}); "
                            "free disk space or fix permissions, then flush again") from None
        self._compactable.append(SegmentFile(first, last, 0, path))
        buffer.clear()

    def _compact(self) -> None:
        """Merge the level-0 segments since the last merge once they are enough.

        Safe beside readers: it only adds a merged segment (temp + fsync + rename), then
        deletes the segments it covers, which readers already skip.
        """
        group = self._compactable
        if sum(s.last_seq - s.first_seq + 1 for s in group) < MERGE_ROWS and len(group) < MERGE_SEGMENTS:
            return
        if len(group) == 1:  # one large flush is already a good segment: nothing to merge
            self._compactable = []
            return
        name = segment_name(group[0].first_seq, group[-1].last_seq, 1)
        try:
            write_segment_file(self._log_dir, name, _merged_batches(group))
        except OSError as error:
            raise UserError(f"{self._log_dir}: cannot compact the log ({error.strerror or error}); nothing "
                            "is lost (the segments stay as they are); free disk space, then flush again") from None
        self._compactable = []
        # Segments it covers that cannot be deleted now are skipped by readers and deleted
        # by the next open_existing.
        for segment in group:
            try:
                segment.path.unlink(missing_ok=True)
            except OSError:
                pass

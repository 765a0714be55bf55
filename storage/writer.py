"""RunWriter: the one process that appends events to a run's log.

    with RunWriter.create(run_dir, run_id) as writer:
        writer.append(RunStarted(...))
        writer.append(RoundPlayed(...)); ...
        writer.flush()          # once per window: durable, and visible to readers

`append` hashes the event into the chain and buffers it (no I/O): a RoundPlayed is encoded
by a dedicated fast path (storage/segments.py `encode_round`) and buffered column by column,
so the per-event work is the unavoidable part, packing the token ids and log-probs into the
bytes that are hashed and stored (one copy per field when they come as numpy arrays, as the
engine hands them over; ~13 ns per number from a list), and SHA-256 over them; the Arrow
arrays are built once per flush. `flush` writes the buffer as one immutable segment (see
storage/segments.py for the layout and why), so a kill -9 loses at most the events appended
since the last flush. Each flush costs two fsyncs (the segment, then the directory holding
its and head.json's renames), so small flushes are bounded by the disk's fsync latency, not
the CPU.

A writer that is not flushed by hand writes a segment every `max_buffered` events on its
own, in a background thread: the appending thread builds the Arrow batch and goes on with a
fresh buffer while the thread serializes, writes and fsyncs (all of which release the GIL),
so appending runs at the speed of its own CPU work. Such a segment is only promised once
flush() or close() returns, both of which wait for it; a failed one is reported by the next
append (before it buffers anything), flush or close, with its events back in the buffer.
Memory is reused from flush to flush (buffers, the arrays behind the packed columns, the
memory a segment is serialized into), and a large written segment's pages are dropped from
the page cache: on this project's VMs a first touch of a page costs many times the copy into
it.
Appending 60,000 of the benchmark's 8 kB rounds, the process grew by 132 MB flushing every
64 (mostly the merges; 209 MB before memory was kept) and by 143 MB on its own buffering
(two 4,096-event buffers; 92 MB before).

Compaction keeps a long run from becoming tens of thousands of small files: once the flush
segments (level 0) written since the last merge hold `MERGE_ROWS` events, or number
`MERGE_SEGMENTS`, they are merged into one level-1 segment of a few large record batches.
One level, not a cascade: every event is rewritten once. The merge runs in a background
thread (Arrow's copies, the writes and fsync release the GIL), so appending goes on while it
runs; `close` waits for it, and a failed merge is reported by the next `flush` and retried
later (its segments stay live, nothing is lost). A run of N events holds about N/MERGE_ROWS
merged segments plus a few MERGE_SEGMENTS' worth of recent ones at most (about 310 for 1M
rounds flushed every 64), few enough for SQL and a window read to stay fast.

One writer per run: `log/writer.lock` is held with fcntl.flock while the writer is open. The
OS releases the lock when the process dies, so a run killed with SIGKILL can be continued
with `open_existing`, which starts at the last stored seq + 1 chained to its hash.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import orjson
import pyarrow as pa

from storage.errors import UserError
from storage.events import SCHEMA_VERSION, Event, Recorded, RoundPlayed
from storage.segments import (
    GENESIS_HASH,
    HEAD_NAME,
    LOCK_NAME,
    LOG_DIR_NAME,
    LOG_FORMAT,
    MANIFEST_NAME,
    TEMP_PREFIX,
    EventBuffer,
    SegmentFile,
    SerializeBuffer,
    canonical_header,
    chain_hash,
    encode_event,
    encode_round,
    fsync_directory,
    live_segments,
    open_segment,
    parse_segment_name,
    read_segment_range,
    segment_name,
    write_segment_file,
)

MERGE_ROWS = 4096
MERGE_SEGMENTS = 64
DEFAULT_MAX_BUFFERED = 4096
# A merged segment holds few, large record batches: decoding a batch's metadata costs about
# as much as scanning thousands of its rows, so SQL over many small batches is slow. The
# caps keep one batch's memory and its int32 string offsets far from their limits.
MERGED_BATCH_ROWS = 16384
MERGED_BATCH_BYTES = 256 * 2**20


def read_manifest(run_dir: Path) -> dict:
    """The run's manifest; a UserError naming the path when this is not a run directory."""
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such run directory; check the path")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory; pass a run directory (runs/<run_id>)")
    manifest_path = run_dir / LOG_DIR_NAME / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UserError(f"{run_dir}: not a run directory (no {LOG_DIR_NAME}/{MANIFEST_NAME}); "
                        "pass a directory written by `minmax-engine play`")
    try:
        manifest = orjson.loads(manifest_path.read_bytes())
        run_id, version = manifest["run_id"], manifest["schema_version"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{manifest_path}: damaged run manifest; it must hold run_id and schema_version") from None
    if not isinstance(run_id, str) or version != SCHEMA_VERSION:
        raise UserError(f"{manifest_path}: schema version {version!r}, this minmax-engine reads "
                        f"version {SCHEMA_VERSION}; use the matching minmax-engine release")
    return manifest


def list_segment_files(log_dir: Path) -> list[SegmentFile]:
    """Every segment file present (including ones a compaction has superseded)."""
    found = []
    with os.scandir(log_dir) as entries:
        for entry in entries:
            segment = parse_segment_name(log_dir, entry.name)
            if segment is not None:
                found.append(segment)
    return found


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


class _UtcClock:
    """ISO-8601 UTC timestamps with microseconds; formats the date part once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        nanoseconds = time.time_ns()
        second, micro = divmod(nanoseconds // 1000, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micro:06d}+00:00"


_CLOCK = _UtcClock()
_ROUND = RoundPlayed.event_type
_new_recorded = object.__new__


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
        # A full buffer is written by a background thread while appending goes on (see
        # _flush_in_background); at most one such flush at a time, finished before any other.
        self._flushing: threading.Thread | None = None
        self._flush_failure: tuple[EventBuffer | None, BaseException] | None = None
        self._flush_memory = SerializeBuffer()
        self._spare_buffers: list[EventBuffer] = []  # written and cleared, kept for their memory
        # At most one compaction runs, in a background thread (see _compact).
        self._merging: threading.Thread | None = None
        self._merge_failure: tuple[list[SegmentFile], BaseException] | None = None
        self._merge_memory = SerializeBuffer()

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
        temp = log_dir / f"{TEMP_PREFIX}{MANIFEST_NAME}"
        with open(temp, "wb") as handle:
            handle.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp, log_dir / MANIFEST_NAME)
        fsync_directory(log_dir)
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
        if self._flush_failure is not None or len(self._buffer) >= self._max_buffered:
            # Before this event is buffered, so that an append that raises has appended nothing.
            self._flush_in_background()
        seq, ts, prev_hash = self._next_seq, _CLOCK.now(), self._prev_hash
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
        # Recorded is a frozen dataclass: its __init__ pays an object.__setattr__ per field,
        # a noticeable share of an append; filling __dict__ makes the same object.
        recorded = _new_recorded(Recorded)
        recorded.__dict__.update(run_id=self._run_id, seq=seq, ts=ts, schema_version=SCHEMA_VERSION,
                                 prev_hash=prev_hash, hash=digest, event=event)
        return recorded

    def flush(self) -> None:
        """Write the buffered events as one segment: durable and visible to other processes.

        On an error the events stay buffered, so a flush after the cause is fixed loses nothing.
        """
        self._finish_background_flush()
        self._collect_merge()
        buffer = self._buffer
        if not len(buffer):
            return
        self._write_segment(buffer)  # which clears it for reuse
        self._compact()

    def close(self) -> None:
        """Flush and release the run; safe to call twice."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
        finally:
            # No flush or compaction may outlive the lock: the next writer deletes leftovers it finds.
            if self._flushing is not None:
                self._flushing.join()
            if self._merging is not None:
                self._merging.join()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self._collect_merge()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _write_segment(self, buffer: EventBuffer, batch: pa.RecordBatch | None = None) -> None:
        """The buffer (as `batch` when built already) as one level-0 segment, then head.json;
        both renames made durable."""
        first, last = buffer.seqs[0], buffer.seqs[-1]
        try:
            batch = buffer.to_batch() if batch is None else batch
            path = write_segment_file(self._log_dir, segment_name(first, last, 0), [batch],
                                      sync_directory=False, memory=self._flush_memory)
            self._write_head(last, buffer.hashes[-1])
            fsync_directory(self._log_dir)  # one directory sync makes both renames durable
        except OSError as error:
            raise UserError(f"{self._log_dir}: cannot write the log ({error.strerror or error}); "
                            "free disk space or fix permissions, then flush again") from None
        self._compactable.append(SegmentFile(first, last, 0, path))
        buffer.clear()

    def _empty_buffer(self) -> EventBuffer:
        return self._spare_buffers.pop() if self._spare_buffers else EventBuffer(self._run_id)

    def _flush_in_background(self) -> None:
        """Write the full buffer in a background thread; appending goes on into a new one.

        Serializing the segment, the copy into the page cache and the two fsyncs take
        about as long as appending the events did, and all of them release the GIL, so on
        a second core they overlap with the next buffer's appends. The Arrow batch is built
        here, on the appending thread: it holds the GIL, and a background thread holding it
        makes the appending thread wait in turn (built in the background thread: 0.86x and
        0.95x the events/s, medians of two sets of ten and twelve interleaved pairs).
        Nothing is promised for these events until flush() or close() returns, which wait
        for this thread.
        """
        self._finish_background_flush()
        batch = self._buffer.to_batch()
        buffer, self._buffer = self._buffer, self._empty_buffer()
        self._flushing = threading.Thread(target=self._background_flush, args=(buffer, batch), name="log-flush",
                                          daemon=True)
        self._flushing.start()

    def _background_flush(self, buffer: EventBuffer, batch: pa.RecordBatch) -> None:
        try:
            self._collect_merge()
            self._write_segment(buffer, batch)
        except BaseException as error:  # raised on the writer's thread by _finish_background_flush
            self._flush_failure = (buffer, error)
            return
        self._spare_buffers.append(buffer)
        try:
            self._compact()
        except BaseException as error:  # the segment is written: only the report is pending
            self._flush_failure = (None, error)

    def _finish_background_flush(self) -> None:
        """Wait for the background flush; if it failed, take its events back and raise."""
        if self._flushing is None:
            return
        self._flushing.join()
        self._flushing = None
        if self._flush_failure is None:
            return
        unwritten, error = self._flush_failure
        self._flush_failure = None
        if unwritten is not None:
            unwritten.extend(self._buffer)  # seq order: the failed buffer came first
            self._buffer = unwritten
        raise error

    def _write_head(self, last_seq: int, last_hash: str) -> None:
        """Record the expected end of the log, so verify can tell a missing tail segment."""
        temp = self._log_dir / f"{TEMP_PREFIX}{HEAD_NAME}"
        temp.write_bytes(orjson.dumps({"last_seq": last_seq, "last_hash": last_hash}))
        os.replace(temp, self._log_dir / HEAD_NAME)

    def _compact(self) -> None:
        """Merge the level-0 segments since the last merge, in a background thread.

        A merge rewrites MERGE_ROWS events (tens of MB), fsyncs them and unlinks up to
        MERGE_SEGMENTS files, each unlink waiting on the file system journal: done inline it
        took about a fifth of the append time at one flush per 64 events. Arrow's copies,
        the file writes, fsync and unlink release the GIL, so on a second core it overlaps
        with appending. Safe to run beside the writer: it only adds
        a merged segment (temp + fsync + rename) and then deletes the segments it covers,
        which readers already skip; flush only ever adds new level-0 segments.
        """
        if self._merging is not None and self._merging.is_alive():
            # Let the running merge finish; the group grows meanwhile and is merged next.
            # Past a few merges' worth, wait (back-pressure keeps the segment count bounded).
            if (len(self._compactable) < 4 * MERGE_SEGMENTS
                    and sum(s.last_seq - s.first_seq + 1 for s in self._compactable) < 4 * MERGE_ROWS):
                return
            self._merging.join()
        self._collect_merge()
        group = self._compactable
        if sum(s.last_seq - s.first_seq + 1 for s in group) < MERGE_ROWS and len(group) < MERGE_SEGMENTS:
            return
        self._compactable = []
        if len(group) == 1:  # one large flush is already a good segment: nothing to merge
            return
        self._merging = threading.Thread(target=self._merge, args=(group,), name="log-compaction", daemon=True)
        self._merging.start()

    def _merge(self, group: list[SegmentFile]) -> None:
        merged = False
        try:
            name = segment_name(group[0].first_seq, group[-1].last_seq, 1)
            write_segment_file(self._log_dir, name, _merged_batches(group), memory=self._merge_memory)
            merged = True
            for segment in group:
                segment.path.unlink(missing_ok=True)  # readers skip covered segments meanwhile
        except BaseException as error:  # reported by the writer's thread (_collect_merge)
            # Once the merged segment is in place the group is done: segments it covers that
            # could not be deleted are ignored by readers and deleted by open_existing.
            self._merge_failure = ([] if merged else group, error)

    def _collect_merge(self) -> None:
        """Report a failed background merge; its segments stay live and are merged later."""
        if self._merging is None or self._merging.is_alive():
            return
        self._merging = None
        if self._merge_failure is None:
            return
        group, error = self._merge_failure
        self._merge_failure = None
        self._compactable = group + self._compactable
        if isinstance(error, OSError):
            raise UserError(f"{self._log_dir}: cannot compact the log ({error.strerror or error}); nothing "
                            "is lost (the segments stay as they are); free disk space, then flush again") from None
        raise error

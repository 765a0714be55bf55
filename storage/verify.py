"""verify_run: check that a run's log is whole and unedited.

What is checked, from what is stored (nothing is trusted from the writer's memory):
- the manifest (run id, schema version) and each segment's Arrow schema;
- each segment's rows hold exactly the seq range its name says, in order, with the run's id
  and schema version and a known event type;
- segments tile the seq range 0..last with no gap and no overlap (a deleted segment in the
  middle is a gap);
- the hash chain: every row's prev_hash is its predecessor's hash and every hash is
  recomputed from the stored fields (an edited byte in a value shows as a mismatch, an
  edited byte in Arrow metadata or magic as an unreadable segment; bytes that hold no value,
  such as alignment padding, are not read by anyone and not checked);
- the tail: `head.json` records the last flushed seq and hash, so deleting the newest
  segment(s) is detected; the log starts with RunStarted and nothing but a later evaluation
  (its eval rounds and EvaluationCompleted) follows RunFinished.

What cannot be detected: someone who rewrites the segments *and* head.json consistently
(recomputing every hash) — a hash chain without a signature detects damage and naive edits,
not a determined forger; and events appended but never flushed (a crash loses them by
design, and nothing records them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa

from storage.events import SCHEMA_VERSION, EVENT_TYPES, EvaluationCompleted, RoundPlayed, RunFinished, RunStarted
from storage.segments import (
    GENESIS_HASH,
    HEAD_NAME,
    LOG_DIR_NAME,
    SEGMENT_SCHEMA,
    SegmentFile,
    live_segments,
    stored_hashes,
)
from storage.status import run_status
from storage.writer import list_segment_files, read_manifest

# A finished run may still be evaluated (`minmax-engine eval RUN`): its eval rounds and the
# EvaluationCompleted summary are the only events allowed after RunFinished.
AFTER_FINISH_TYPES = frozenset({RoundPlayed.event_type, EvaluationCompleted.event_type})

_MAX_PROBLEMS = 20
_ARROW_MAGIC = b"ARROW1"


@dataclass(frozen=True)
class Problem:
    message: str
    seq: int | None = None
    segment: str | None = None  # path relative to the run directory

    def describe(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.segment is not None:
            where.append(f"in {self.segment}")
        return f"{' '.join(where)}: {self.message}" if where else self.message


@dataclass
class VerifyReport:
    run_dir: Path
    run_id: str
    n_events: int = 0
    last_seq: int = -1
    n_segments: int = 0
    finished: bool = False
    status: str = "still running, or stopped"  # storage/status.py's words when it can tell
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            end = "ends with RunFinished" if self.finished else f"not finished: {self.status}"
            return (f"ok: {self.run_dir}: {self.n_events} events (seq 0..{self.last_seq}) in "
                    f"{self.n_segments} segments, hash chain intact, {end}")
        more = f" (+{len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        return f"BAD: {self.run_dir}: {self.problems[0].describe()}{more}"


def verify_run(run_dir: str | os.PathLike) -> VerifyReport:
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    log_dir = run_dir / LOG_DIR_NAME
    report = VerifyReport(run_dir=run_dir, run_id=manifest["run_id"])
    # Read the head before listing segments: a live writer renames its segment before it
    # updates the head, so head <= listed segments unless something is really missing.
    head = _read_head(log_dir, report)
    segments = live_segments(list_segment_files(log_dir))
    report.n_segments = len(segments)

    expected_seq, prev_hash = 0, GENESIS_HASH
    hash_at_seq_of_head: str | None = None
    finished_seen = False
    for segment in segments:
        relative = f"{LOG_DIR_NAME}/{segment.name}"
        if segment.first_seq != expected_seq:
            if segment.first_seq > expected_seq:
                _add(report, Problem(f"seq {expected_seq}..{segment.first_seq - 1} missing "
                                     f"(a segment was deleted or lost)", expected_seq, relative))
            else:
                _add(report, Problem(f"segment overlaps the previous one (starts at seq {segment.first_seq})",
                                     segment.first_seq, relative))
        table = _read_whole(segment, relative, report)
        if table is None:
            expected_seq, prev_hash = segment.last_seq + 1, None
            continue
        seqs = table.column("seq").to_pylist()
        if seqs != list(range(segment.first_seq, segment.last_seq + 1)):
            bad_row = next((i for i, s in enumerate(seqs) if s != segment.first_seq + i), len(seqs))
            held = seqs[bad_row] if bad_row < len(seqs) else "nothing"
            _add(report, Problem(f"events out of order or missing: row {bad_row} holds seq {held}, "
                                 f"expected {segment.first_seq + bad_row}", segment.first_seq + bad_row, relative))
        recomputed = stored_hashes(table)
        run_ids = table.column("run_id").to_pylist()
        versions = table.column("schema_version").to_pylist()
        types = table.column("event_type").to_pylist()
        prev_hashes = table.column("prev_hash").to_pylist()
        hashes = table.column("hash").to_pylist()
        for row, seq in enumerate(seqs):
            if run_ids[row] != report.run_id:
                _add(report, Problem(f"run id {run_ids[row]!r}, the manifest says {report.run_id!r}", seq, relative))
            if versions[row] != SCHEMA_VERSION:
                _add(report, Problem(f"schema version {versions[row]}, expected {SCHEMA_VERSION}", seq, relative))
            if types[row] not in EVENT_TYPES:
                _add(report, Problem(f"unknown event type {types[row]!r}", seq, relative))
            if prev_hash is not None and prev_hashes[row] != prev_hash:
                _add(report, Problem("hash chain broken: prev_hash is not the previous event's hash "
                                     "(an event before it was removed, replaced or reordered)", seq, relative))
            if recomputed[row] is not None and recomputed[row] != hashes[row]:
                _add(report, Problem("hash mismatch: the stored event differs from what was hashed "
                                     "(its content was edited)", seq, relative))
            if seq == 0 and types[row] != RunStarted.event_type:
                _add(report, Problem(f"the log begins with {types[row]}, not RunStarted", seq, relative))
            if finished_seen and types[row] not in AFTER_FINISH_TYPES:
                _add(report, Problem(f"{types[row]} follows RunFinished (only a later evaluation, "
                                     f"`minmax-engine eval`, may append to a finished run)", seq, relative))
            if types[row] == RunFinished.event_type:
                finished_seen = True
            if head is not None and seq == head[0]:
                hash_at_seq_of_head = hashes[row]
            prev_hash = hashes[row]
            report.n_events += 1
        expected_seq = segment.last_seq + 1
        report.last_seq = max(report.last_seq, segment.last_seq)

    if head is not None:
        head_seq, head_hash = head
        if head_seq > report.last_seq:
            _add(report, Problem(f"the log ends at seq {report.last_seq} but {HEAD_NAME} records seq {head_seq}: "
                                 f"the newest segment(s) are missing", report.last_seq + 1, f"{LOG_DIR_NAME}/{HEAD_NAME}"))
        elif hash_at_seq_of_head is not None and hash_at_seq_of_head != head_hash:
            _add(report, Problem(f"hash differs from the one {HEAD_NAME} recorded at flush", head_seq,
                                 f"{LOG_DIR_NAME}/{HEAD_NAME}"))
    elif segments:
        _add(report, Problem(f"{HEAD_NAME} is missing, so a missing tail cannot be ruled out", None,
                             f"{LOG_DIR_NAME}/{HEAD_NAME}"))
    report.finished = finished_seen
    if report.ok and not finished_seen:
        report.status = run_status(run_dir).describe()
    return report


def _read_head(log_dir: Path, report: VerifyReport) -> tuple[int, str] | None:
    path = log_dir / HEAD_NAME
    if not path.exists():
        return None
    try:
        head = orjson.loads(path.read_bytes())
        return int(head["last_seq"]), str(head["last_hash"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        _add(report, Problem("unreadable; it should hold last_seq and last_hash", None, f"{LOG_DIR_NAME}/{HEAD_NAME}"))
        return None


def _read_whole(segment: SegmentFile, relative: str, report: VerifyReport) -> pa.Table | None:
    try:
        source = pa.memory_map(str(segment.path), "r")
        if source.size() < 12 or source.read_at(6, 0) != _ARROW_MAGIC or source.read_at(6, source.size() - 6) != _ARROW_MAGIC:
            _add(report, Problem("not an Arrow IPC file (its magic bytes are damaged)", segment.first_seq, relative))
            return None
        reader = pa.ipc.open_file(source)
        if not reader.schema.equals(SEGMENT_SCHEMA, check_metadata=False):
            _add(report, Problem("its columns are not the log's schema", segment.first_seq, relative))
            return None
        table = reader.read_all()
        table.validate(full=True)
        return table
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        _add(report, Problem(f"unreadable segment ({first_line}); seq {segment.first_seq}..{segment.last_seq} "
                             "cannot be checked", segment.first_seq, relative))
        return None


def _add(report: VerifyReport, problem: Problem) -> None:
    if len(report.problems) < _MAX_PROBLEMS:
        report.problems.append(problem)


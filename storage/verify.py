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

What cannot be detected: a log cut back to an earlier flush, its newest segments deleted
and head.json rewritten to the last event left (every check passes on what remains), and
someone who rewrites the segments *and* head.json consistently, recomputing every hash: a
hash chain without a signature detects damage and naive edits, not a determined forger.
Both are caught by comparing the final hash, which verify prints, with a copy kept outside
the run (README, "Anchoring a finished run"). Events appended but never flushed are lost by
design, and nothing records them.

`require_verified` is the same check as a refusal, for commands that must not read a log
verify rejects (`replay`, `sql --verify`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
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
    decode_fields,
    encode_event,
)
from storage.errors import UserError
from storage.events import SCHEMA_VERSION, EVENT_TYPES, EvaluationCompleted, RoundPlayed, RunFinished, RunStarted
from storage.layout import (
    HEAD_NAME,
    LOG_DIR_NAME,
    SegmentFile,
    list_segment_files,
    live_segments,
    read_head,
    read_manifest,
    run_dirs_at,
)
from storage.segments import SegmentReader
from storage.status import run_status

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
    last_hash: str | None = None  # the hash of the last event: anchors the whole log (see README)
    status: str = "still running, or stopped"  # storage/status.py's words when it can tell
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            end = "ends with RunFinished" if self.finished else f"not finished: {self.status}"
            final = f"; final hash {self.last_hash}" if self.last_hash else ""
            return (f"ok: {self.run_dir}: {self.n_events} events (seq 0..{self.last_seq}) in "
                    f"{self.n_segments} segments, hash chain intact, {end}{final}")
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
    report.last_hash = prev_hash if report.n_events else None
    if report.ok and not finished_seen:
        report.status = run_status(run_dir).describe()
    return report


def require_verified(path: str | os.PathLike) -> list[VerifyReport]:
    """verify_run on a run, or on every run under a directory; a one-line UserError naming
    the first problem of the first run that fails (for `replay` and `sql --verify`)."""
    run_dirs = run_dirs_at(path)
    if not run_dirs:
        read_manifest(Path(path))  # the same one-line refusal as any reader's
    reports = []
    for run_dir in run_dirs:
        report = verify_run(run_dir)
        if not report.ok:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            raise UserError(f"{run_dir}: the log fails verification: {report.problems[0].describe()}{more}; "
                            f"run `minmax-engine verify {run_dir}`")
        reports.append(report)
    return reports


def stored_hashes(table: pa.Table) -> list[str | None]:
    """Recompute every row's hash from what is stored, chaining on the stored prev_hash.

    Packed lists are hashed straight from the Arrow buffers (no Python floats), so this
    runs over a million rounds in reasonable time; other fields are decoded, then encoded
    exactly as `encode_event` does. None marks a row of an unknown event type.
    """
    event_types = table.column("event_type").to_pylist()
    envelope = [table.column(n).to_pylist() for n in ("run_id", "seq", "ts", "schema_version", "prev_hash")]
    payloads = table.column("payload").to_pylist()
    plain_round = {s.name: table.column(s.name).to_pylist() for s in ROUND_SPECS
                   if s.kind not in ("packed_int", "packed_float")}
    packed_round: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for spec in ROUND_SPECS:
        if spec.kind in ("packed_int", "packed_float"):
            column = table.column(spec.name).combine_chunks()
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=False)
            packed_round[spec.name] = (offsets, values, column.is_null().to_numpy(zero_copy_only=False))
    out: list[str | None] = []
    for i, event_type in enumerate(event_types):
        run_id, seq, ts, schema_version, prev_hash = (c[i] for c in envelope)
        if event_type == RoundPlayed.event_type:
            header: list[Any] = []
            buffers: list[np.ndarray] = []
            for spec in ROUND_SPECS:
                if spec.name in packed_round:
                    offsets, values, nulls = packed_round[spec.name]
                    if nulls[i]:
                        header.append(None)
                    else:
                        part = values[offsets[i]:offsets[i + 1]]
                        header.append(len(part))
                        buffers.append(part)
                else:
                    header.append(plain_round[spec.name][i])
            head = canonical_header(run_id, seq, ts, schema_version, event_type, header)
            out.append(chain_hash(prev_hash, head, buffers))
        elif event_type in EVENT_TYPES:
            try:
                event = decode_fields(event_type, orjson.loads(payloads[i]))
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
                out.append("")  # an undecodable payload cannot match its hash
                continue
            values = encode_event(event).header_values
            out.append(chain_hash(prev_hash, canonical_header(run_id, seq, ts, schema_version, event_type, values), []))
        else:
            out.append(None)
    return out


def _read_head(log_dir: Path, report: VerifyReport) -> tuple[int, str] | None:
    try:
        return read_head(log_dir)
    except ValueError:
        _add(report, Problem("unreadable; it should hold last_seq and last_hash", None, f"{LOG_DIR_NAME}/{HEAD_NAME}"))
        return None


def _read_whole(segment: SegmentFile, relative: str, report: VerifyReport) -> pa.Table | None:
    try:
        source = pa.memory_map(str(segment.path), "r")
        if source.size() < 12 or source.read_at(6, 0) != _ARROW_MAGIC or source.read_at(6, source.size() - 6) != _ARROW_MAGIC:
            _add(report, Problem("not an Arrow IPC file (its magic bytes are damaged)", segment.first_seq, relative))
            return None
        reader = SegmentReader(pa.ipc.open_file(source))  # older segments read in the current schema
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


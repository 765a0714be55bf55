"""The run directory on disk: what each file is called, and how a file gets there safely.

Layout of `runs/<run_id>/log/`:

    run.json                              manifest: run id, schema version (written once)
    writer.lock                           flock'ed by the one writer; holds its pid
    head.json                             last flushed seq and hash (truncation check)
    000000000000-000000000063.L0.arrow    a segment: events seq 0..63, written by one flush
    000000000064-000000004159.L1.arrow    a merged segment: the level-0 segments it replaced
    .tmp-*                                a file being written (ignored by readers)

Segment names carry the seq range, so a window read opens only the segments it needs. A
merged segment covers the ranges of the segments it replaced; until those are deleted a
reader ignores any segment whose range lies inside another's. Every file is written under a
temporary name, fsynced, renamed and its directory fsynced, so a reader sees a whole file
or none of it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from storage.errors import UserError
from storage.events import SCHEMA_VERSION

LOG_DIR_NAME = "log"
MANIFEST_NAME = "run.json"
HEAD_NAME = "head.json"
LOCK_NAME = "writer.lock"
TEMP_PREFIX = ".tmp-"
LOG_FORMAT = "minmax-engine-log"

_SEGMENT_NAME = re.compile(r"^(\d{12})-(\d{12})\.L(\d+)\.arrow$")


# -- run directories ----------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    """A run directory is one whose log has a manifest (the writer's first durable file)."""
    return (path / LOG_DIR_NAME / MANIFEST_NAME).is_file()


def run_dirs_at(path: str | os.PathLike) -> list[Path]:
    """`path` itself when it is a run directory, else the run directories one or two levels
    below it (runs/<run> and runs/<group>/<run>), sorted; empty when there are none."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: no such run or directory; check the path")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory; pass a run directory or a directory of runs")
    if is_run_dir(root):
        return [root]
    return sorted({m.parent.parent for pattern in (f"*/{LOG_DIR_NAME}/{MANIFEST_NAME}",
                                                   f"*/*/{LOG_DIR_NAME}/{MANIFEST_NAME}")
                   for m in root.glob(pattern)})


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


# -- segment files --------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class SegmentFile:
    first_seq: int
    last_seq: int
    level: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def segment_name(first_seq: int, last_seq: int, level: int) -> str:
    return f"{first_seq:012d}-{last_seq:012d}.L{level}.arrow"


def parse_segment_name(log_dir: Path, name: str) -> SegmentFile | None:
    match = _SEGMENT_NAME.match(name)
    if match is None:
        return None
    return SegmentFile(int(match[1]), int(match[2]), int(match[3]), log_dir / name)


def list_segment_files(log_dir: Path) -> list[SegmentFile]:
    """Every segment file present (including ones a compaction has superseded)."""
    found = []
    with os.scandir(log_dir) as entries:
        for entry in entries:
            segment = parse_segment_name(log_dir, entry.name)
            if segment is not None:
                found.append(segment)
    return found


def live_segments(all_segments: Iterable[SegmentFile]) -> list[SegmentFile]:
    """Segments in seq order, dropping any whose range lies inside a larger one's.

    A compaction writes the merged segment before deleting the ones it replaces, so for a
    moment (or forever, after a crash at that moment) both exist.
    """
    ordered = sorted(all_segments, key=lambda s: (s.first_seq, -s.last_seq))
    live: list[SegmentFile] = []
    for segment in ordered:
        if live and segment.last_seq <= live[-1].last_seq and segment.first_seq >= live[-1].first_seq:
            continue
        live.append(segment)
    return live


def checked_segments(run_dir: Path) -> list[SegmentFile]:
    """The live segments of a run, refusing a log whose file names or head.json show damage.

    What every reader checks on every listing, from names alone: the segments tile seq
    0..last with no gap and no overlap (a deleted, lost or duplicated segment), and the log
    reaches the seq head.json recorded at the last flush (deleted newest segments). Contents
    and hashes are verify's (storage/verify.py). A writer renames its segment before it
    updates the head, and a compaction adds its merged segment before deleting the ones it
    covers, so a listing taken in the middle of either can look damaged for a moment: a
    problem is only reported when a fresh listing shows it again.
    """
    log_dir = run_dir / LOG_DIR_NAME
    for attempt in range(_LISTING_ATTEMPTS):
        if attempt:
            time.sleep(0.02 * attempt)
        try:
            head = read_head(log_dir)  # before the listing: then head <= listed, unless damaged
        except ValueError as error:
            problem = str(error)
            continue
        segments = live_segments(list_segment_files(log_dir))
        problem = _tiling_problem(segments, head)
        if problem is None:
            return segments
    raise UserError(f"{run_dir}: {problem}; run `minmax-engine verify {run_dir}`")


_LISTING_ATTEMPTS = 4


def _tiling_problem(segments: list[SegmentFile], head: tuple[int, str] | None) -> str | None:
    expected = 0
    for segment in segments:
        if segment.first_seq > expected:
            return f"seq {expected}..{segment.first_seq - 1} missing from the log (a segment was deleted or lost)"
        if segment.first_seq < expected:
            return (f"seq {segment.first_seq}..{min(segment.last_seq, expected - 1)} stored twice "
                    f"({segment.name} overlaps the segment before it)")
        expected = segment.last_seq + 1
    if head is None:
        return f"{HEAD_NAME} is missing from a log with segments" if segments else None
    if head[0] >= expected:
        return (f"the log ends at seq {expected - 1} but {HEAD_NAME} records seq {head[0]} "
                "(the newest segments are missing)")
    return None


# -- head.json: where the log ended at the last flush -----------------------------------------


def read_head(log_dir: Path) -> tuple[int, str] | None:
    """(last_seq, last_hash) recorded at the last flush; None when there is no head yet.

    Raises ValueError when the file is there but unreadable.
    """
    try:
        data = (log_dir / HEAD_NAME).read_bytes()
    except FileNotFoundError:
        return None
    try:
        head = orjson.loads(data)
        return int(head["last_seq"]), str(head["last_hash"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{HEAD_NAME} is unreadable; it should hold last_seq and last_hash") from None


def write_head(log_dir: Path, last_seq: int, last_hash: str) -> None:
    """Record the expected end of the log; durable once the directory is fsynced (the file's
    own bytes are fsynced, so a power cut cannot leave a head that readers would refuse)."""
    write_file_atomically(log_dir, HEAD_NAME, orjson.dumps({"last_seq": last_seq, "last_hash": last_hash}),
                          sync_directory=False)


# -- durable writes ---------------------------------------------------------------------------


def fsync_directory(directory: Path) -> None:
    """Make the renames and unlinks in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(directory: Path, final_name: str, data: bytes | memoryview, *,
                          sync_directory: bool = True) -> Path:
    """Write `data` under a temporary name, fsync, rename into place, fsync the directory.

    One write call for the whole file (a loop only for short writes); a failure removes the
    temporary file and leaves nothing under `final_name`.
    """
    temp_path = directory / f"{TEMP_PREFIX}{os.getpid()}-{final_name}"
    view = memoryview(data)
    try:
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        final_path = directory / final_name
        os.rename(temp_path, final_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_directory(directory)
    return final_path

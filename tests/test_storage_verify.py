"""Tampering with a run's log: each edit is caught by verify, which names where it is.

Every test writes a real run, damages the stored files the way a person or a faulty disk
would, then runs verify (the Python API, and the CLI for its exit status and summary line).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from storage import RunReader, RunWriter, verify_run
from storage.codec import SEGMENT_SCHEMA
from tests.test_storage_contract import round_played, run_started

REPO = Path(__file__).resolve().parents[1]
MARKER_SEQ = 21  # the round whose story carries a unique marker and whose log-prob is unique
UNIQUE_LOGPROB = -7.123456789012345


def write_run(run_dir: Path) -> Path:
    """A finished run: seq 0 RunStarted, then 79 rounds flushed 8 per segment (10 segments)."""
    with RunWriter.create(run_dir, "tamper") as writer:
        writer.append(run_started())
        for round_id in range(79):
            event = round_played(round_id)
            if round_id + 1 == MARKER_SEQ:
                event = replace(event, story="MARKER-STORY-7f3a", policy_logprobs=[UNIQUE_LOGPROB, -0.5])
                event = replace(event, policy_token_ids=[1, 2])
            writer.append(event)
            if (round_id + 1) % 8 == 7:
                writer.flush()
    return run_dir


def segment_holding(run_dir: Path, seq: int) -> Path:
    for segment in RunReader(run_dir).segments():
        if segment.first_seq <= seq <= segment.last_seq:
            return segment.path
    raise AssertionError(f"no segment holds seq {seq}")


def cli_verify(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", "verify", str(run_dir)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def edit_bytes(path: Path, old: bytes, new: bytes, occurrences: int = 1) -> None:
    """Replace the first occurrence of `old` (which must occur `occurrences` times)."""
    data = path.read_bytes()
    assert data.count(old) == occurrences, f"{old!r} must occur {occurrences} times in {path.name}"
    path.write_bytes(data.replace(old, new, 1))


def test_an_untouched_run_verifies(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    report = verify_run(run_dir)
    assert report.ok and report.n_events == 80 and report.last_seq == 79
    result = cli_verify(run_dir)
    assert result.returncode == 0 and result.stdout.startswith("ok:") and result.stdout.count("\n") == 1


@pytest.mark.parametrize("old, new", [
    (b"MARKER-STORY-7f3a", b"MARKER-STORY-7f3b"),                               # one character of text
    (struct.pack("<d", UNIQUE_LOGPROB), struct.pack("<d", UNIQUE_LOGPROB + 1e-15)),  # one log-prob's bits
], ids=["text", "logprob"])
def test_an_edited_byte_is_named_by_seq_and_segment(tmp_path: Path, old: bytes, new: bytes) -> None:
    run_dir = write_run(tmp_path / "run")
    segment = segment_holding(run_dir, MARKER_SEQ)
    edit_bytes(segment, old, new)

    report = verify_run(run_dir)

    assert not report.ok
    first = report.problems[0]
    assert (first.seq, first.segment) == (MARKER_SEQ, f"log/{segment.name}")
    assert "hash mismatch" in first.message
    result = cli_verify(run_dir)
    assert result.returncode == 1
    assert f"seq {MARKER_SEQ} in log/{segment.name}" in result.stdout and "Traceback" not in result.stderr


def test_an_edited_link_of_the_chain_is_named(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    reader = RunReader(run_dir)
    stored_hash = reader.events(30, 30)[0].hash
    segment = segment_holding(run_dir, 30)
    forged = ("f" if stored_hash[0] != "f" else "e") + stored_hash[1:]
    # seq 30's hash is stored twice: as seq 31's prev_hash (the prev_hash column comes
    # first in the file, so that copy is edited) and as seq 30's own hash
    edit_bytes(segment, stored_hash.encode(), forged.encode(), occurrences=2)
    report = verify_run(run_dir)
    assert not report.ok and report.problems[0].seq == 31 and report.problems[0].segment == f"log/{segment.name}"
    assert "chain broken" in report.problems[0].message


def test_a_byte_flipped_anywhere_in_a_segments_header_or_footer_is_caught(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    segment = segment_holding(run_dir, 40)
    data = bytearray(segment.read_bytes())
    # leading magic, trailing magic, footer length; bytes that hold no stored value (padding,
    # the copy of the schema at the start that readers skip) are not covered by any check
    for position in (0, len(data) - 1, len(data) - 8):
        damaged = data.copy()
        damaged[position] ^= 0xFF
        segment.write_bytes(bytes(damaged))
        report = verify_run(run_dir)
        assert not report.ok, f"flip at byte {position} went unnoticed"
        assert report.problems[0].segment == f"log/{segment.name}"
    segment.write_bytes(bytes(data))
    assert verify_run(run_dir).ok


def test_a_deleted_middle_segment_is_a_gap_named_by_seq(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    doomed = segment_holding(run_dir, 40)
    first_missing = int(doomed.name.split("-")[0])
    after = segment_holding(run_dir, int(doomed.name.split("-")[1].split(".")[0]) + 1)
    doomed.unlink()

    report = verify_run(run_dir)

    assert not report.ok
    assert report.problems[0].seq == first_missing and "missing" in report.problems[0].message
    assert report.problems[0].segment == f"log/{after.name}"
    assert cli_verify(run_dir).returncode == 1


def test_a_deleted_last_segment_is_caught_by_the_head_record(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    last = RunReader(run_dir).segments()[-1]
    last.path.unlink()

    report = verify_run(run_dir)

    assert not report.ok
    assert report.problems[0].seq == last.first_seq
    assert "newest segment(s) are missing" in report.problems[0].message


def test_reordered_events_within_a_segment_are_named(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    segment = segment_holding(run_dir, 50)
    with pa.memory_map(str(segment)) as source:
        reader = pa.ipc.open_file(source)
        table, metadata = reader.read_all(), reader.schema.metadata
    first = int(segment.name.split("-")[0])
    order = list(range(table.num_rows))
    order[50 - first], order[51 - first] = order[51 - first], order[50 - first]
    swapped = table.take(order)
    segment.unlink()
    with pa.OSFile(str(segment), "wb") as sink, pa.ipc.new_file(sink, SEGMENT_SCHEMA.with_metadata(metadata)) as out:
        out.write_table(swapped)

    report = verify_run(run_dir)

    assert not report.ok
    assert report.problems[0].seq == 50 and report.problems[0].segment == f"log/{segment.name}"
    assert "out of order" in report.problems[0].message


def test_swapped_segment_files_are_named(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    a, b = segment_holding(run_dir, 20), segment_holding(run_dir, 30)
    temp = a.with_suffix(".swap")
    os.rename(a, temp)
    os.rename(b, a)
    os.rename(temp, b)

    report = verify_run(run_dir)

    assert not report.ok
    assert report.problems[0].segment == f"log/{a.name}"


def test_a_copied_run_with_a_different_manifest_id_is_caught(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    manifest = copy / "log" / "run.json"
    manifest.write_text(manifest.read_text().replace('"tamper"', '"other"'))
    report = verify_run(copy)
    assert not report.ok and report.problems[0].seq == 0 and "run id" in report.problems[0].message


def test_only_a_later_evaluation_may_follow_run_finished(tmp_path: Path) -> None:
    from storage import EvaluationCompleted, PolicyUpdated, RunFinished

    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, "evaluated-later") as writer:
        writer.append(run_started())
        writer.append(round_played(0))
        writer.append(RunFinished(rounds=1, policy_updates=0, monitor_updates=0, wall_seconds=1.0))
        # what `minmax-engine eval RUN` appends to a finished run
        writer.append(replace(round_played(0), phase="eval", window=-1))
        writer.append(EvaluationCompleted(dataset="builtin", split="eval", n_rounds=1, policy_version=0,
                                          monitor_version=0, checkpoint=None, metrics={"policy_accuracy": 1.0}))
    report = verify_run(run_dir)
    assert report.ok and report.finished and report.n_events == 5

    with RunWriter.open_existing(run_dir) as writer:
        writer.append(PolicyUpdated(version=1, round_ids=[0], first_seq=1, last_seq=1, diagnostics={}))
    report = verify_run(run_dir)
    assert not report.ok
    assert any(problem.seq == 5 and "PolicyUpdated follows RunFinished" in problem.message
               for problem in report.problems)

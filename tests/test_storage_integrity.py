"""Readers refuse a log that verify rejects (issue 14 item 7).

Every reader checks what is cheap on every open: the segments tile the log with no gap or
overlap, and the log reaches the seq head.json recorded. `replay` and `sql --verify` verify
the whole hash chain first, so they also refuse an edited value. Each test damages a real
run the way a person or a faulty disk would, then asks each reader for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from engine.config import LagrangianConfig
from engine.lagrangian import DualAscent
from storage import LambdaUpdated, MonitorUpdated, RunFinished, RunReader, RunsQuery, RunWriter, UserError, verify_run
from tests.test_replay import LAGRANGIAN, round_played, started
from tui.cli import main
from tui.run_data import RunData

REPO = Path(__file__).resolve().parents[1]
WINDOWS = 6
MARKER = "MARKER-STORY-4c1d"


def write_run(run_dir: Path) -> Path:
    """A finished minmax run, one segment per window (4 events each), λ from DualAscent."""
    dual = DualAscent(LagrangianConfig(**LAGRANGIAN))
    with RunWriter.create(run_dir, run_dir.name) as writer:
        writer.append(started())
        for window in range(WINDOWS):
            for offset in range(2):
                event = round_played(2 * window + offset, window, 0.3 + 0.1 * offset, dual.value)
                if window == 2 and offset == 1:
                    event = replace(event, story=MARKER)
                writer.append(event)
            writer.append(MonitorUpdated(version=window + 1, round_ids=[2 * window, 2 * window + 1],
                                         first_seq=0, last_seq=0, diagnostics={}))
            step = dual.step(0.35)
            writer.append(LambdaUpdated(old=step.old, new=step.new, mean_f=0.35, delta=-0.2,
                                        monitor_version=window + 1, applied=step.applied))
            writer.flush()
        writer.append(RunFinished(rounds=2 * WINDOWS, policy_updates=0, monitor_updates=WINDOWS, wall_seconds=1.0))
    return run_dir


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("integrity") / "run")


@pytest.fixture
def run(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(pristine, copy)
    return copy


def segments_of(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "log").glob("*.arrow"))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_refused(status: int, err: str, run_dir: Path, fragment: str) -> None:
    assert status == 2
    line = err.strip()
    assert "\n" not in line and fragment in line
    assert line.endswith(f"run `minmax-engine verify {run_dir}`")


def test_the_undamaged_run_is_read_by_every_reader(run: Path, capsys) -> None:
    assert verify_run(run).ok
    assert len(segments_of(run)) == WINDOWS + 1
    assert RunReader(run).last_seq() == 4 * WINDOWS + 1
    status, out, _ = cli(capsys, "sql", "--verify", str(run), "SELECT count(*) AS n FROM rounds")
    assert status == 0 and "12" in out
    status, out, _ = cli(capsys, "replay", str(run))
    assert status == 0 and "λ reproduced exactly" in out
    data = RunData(run)
    assert data.summary().rounds == 2 * WINDOWS
    data.close()


def test_a_deleted_middle_segment_is_refused_by_every_reader(run: Path, capsys) -> None:
    middle = segments_of(run)[2]  # seq 9..12
    middle.unlink()
    expected = "seq 9..12 missing from the log"
    with pytest.raises(UserError, match=expected):
        RunReader(run)
    with pytest.raises(UserError, match=expected):
        RunsQuery(run)
    with pytest.raises(UserError, match=expected):
        RunData(run)
    assert_refused(*cli(capsys, "sql", str(run), "SELECT count(*) FROM rounds")[::2], run, expected)
    assert_refused(*cli(capsys, "replay", str(run))[::2], run, "seq 9..12 missing")
    # a directory of runs is refused too, naming the damaged run
    assert_refused(*cli(capsys, "sql", str(run.parent), "SELECT count(*) FROM rounds")[::2], run, expected)


def test_deleted_newest_segments_are_refused_by_the_head_check(run: Path, capsys) -> None:
    segments_of(run)[-1].unlink()
    expected = "the log ends at seq 24 but head.json records seq 25"
    with pytest.raises(UserError, match=expected):
        RunReader(run)
    assert_refused(*cli(capsys, "sql", str(run), "SELECT 1")[::2], run, expected)


def test_an_overlapping_copy_of_a_segment_is_refused(run: Path) -> None:
    # seq 9..12 stored again under a name that claims 11..14: two segments for seqs 11..12
    original = segments_of(run)[2]
    shutil.copy(original, original.with_name("000000000011-000000000014.L0.arrow"))
    with pytest.raises(UserError, match=r"seq 11\.\.12 stored twice"):
        RunReader(run).events()
    assert not verify_run(run).ok


def test_an_edited_value_is_refused_by_replay_and_sql_verify(run: Path, capsys) -> None:
    segment = next(p for p in segments_of(run) if MARKER.encode() in p.read_bytes())
    data = segment.read_bytes()
    segment.write_bytes(data.replace(MARKER.encode(), b"MARKER-STORY-0000"))
    assert not verify_run(run).ok
    status, out, _ = cli(capsys, "sql", str(run), "SELECT story FROM rounds WHERE round_id = 5")
    assert status == 0 and "MARKER-STORY-0000" in out  # plain sql checks only what is cheap
    assert_refused(*cli(capsys, "sql", "--verify", str(run), "SELECT 1")[::2], run, "hash mismatch")
    assert_refused(*cli(capsys, "replay", str(run))[::2], run, "hash mismatch")


def test_verify_prints_the_final_hash_that_anchors_the_run(run: Path, capsys) -> None:
    last = RunReader(run).events()[-1]
    assert isinstance(last.event, RunFinished)
    status, out, _ = cli(capsys, "verify", str(run))
    assert status == 0 and out.strip().endswith(f"final hash {last.hash}")
    assert verify_run(run).last_hash == last.hash


# The child flushes every event, so a merge (64 segments into one, then 64 unlinks) runs
# every 64 events while the parent reads.
LIVE_WRITER = """
import sys
from storage import LambdaUpdated, RunWriter
from tests.test_storage_contract import run_started
with RunWriter.create(sys.argv[1], "live") as writer:
    writer.append(run_started())
    for version in range(int(sys.argv[2])):
        writer.append(LambdaUpdated(old=0.0, new=0.0, mean_f=0.0, delta=0.0, monitor_version=version, applied=False))
        writer.flush()
"""


def test_readers_during_flushes_and_merges_never_refuse_a_sound_log(tmp_path: Path) -> None:
    # Listings taken mid-flush (segment renamed, head not yet) or mid-merge (merged segment
    # missed, covered ones already unlinked) look damaged; the readers' re-listing hides that.
    run_dir = tmp_path / "live"
    child = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(run_dir), "140"], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    reads = 0
    try:
        while child.poll() is None:
            if not (run_dir / "log" / "run.json").exists():
                continue
            reader = RunReader(run_dir)  # checks on open, and again on every read
            last = reader.last_seq()
            assert [r.seq for r in reader.events(0, last)] == list(range(last + 1))
            reads += 1
    finally:
        child.wait(timeout=60)
    assert child.returncode == 0
    assert reads > 20
    assert list((run_dir / "log").glob("*.L1.arrow"))  # merges happened while it read
    assert verify_run(run_dir).ok

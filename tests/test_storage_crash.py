"""A writer killed with SIGKILL mid-run: what was flushed survives and the run continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from storage import LambdaUpdated, RunReader, RunWriter, verify_run
from tests.test_storage_contract import run_started

REPO = Path(__file__).resolve().parents[1]

# The child plays rounds forever, flushing once per 16-round window, and reports each flush
# (seq and hash of the last durable event) only after flush() returned.
CHILD = textwrap.dedent("""
    import sys
    from storage import RunWriter
    from tests.test_storage_contract import round_played, run_started
    writer = RunWriter.create(sys.argv[1], "killed-run")
    writer.append(run_started())
    round_id = 0
    while True:
        recorded = writer.append(round_played(round_id))
        round_id += 1
        if round_id % 16 == 0:
            writer.flush()
            print(recorded.seq, recorded.hash, flush=True)
""")


def test_sigkill_mid_run_loses_nothing_flushed_and_appending_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    reported: list[tuple[int, str]] = []
    assert child.stdout is not None
    for line in child.stdout:
        seq, digest = line.split()
        reported.append((int(seq), digest))
        # the 64th flush merges the segments so far; kill once the merged segment is in
        # place (the merged-away ones may still be there)
        if len(reported) >= 70 and any(".L1." in p.name for p in (run_dir / "log").iterdir()):
            break
        assert len(reported) < 2000, "no compaction happened"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert any(".L1." in p.name for p in (run_dir / "log").iterdir())

    # 1. verify passes on what was flushed
    report = verify_run(run_dir)
    assert report.ok, report.summary()
    assert not report.finished

    # 2. nothing flushed is lost: every reported flush is readable with the reported hash
    reader = RunReader(run_dir)
    last_reported_seq = reported[-1][0]
    assert reader.last_seq() >= last_reported_seq
    stored = {r.seq: r.hash for r in reader.events(0, last_reported_seq)}
    assert sorted(stored) == list(range(last_reported_seq + 1))
    assert all(stored[seq] == digest for seq, digest in reported)

    # 3. appending resumes at the next seq, chained to the last stored hash (the dead
    #    writer's lock went with it)
    last = reader.events(reader.last_seq())[-1]
    (run_dir / "log" / ".tmp-99999-000000999999-000000999999.L0.arrow").write_bytes(b"half a segment")
    with RunWriter.open_existing(run_dir) as writer:
        assert writer.next_seq == last.seq + 1
        resumed = writer.append(LambdaUpdated(old=1.0, new=1.5, mean_f=0.4, delta=-0.2, monitor_version=3,
                                              applied=True))
    assert (resumed.seq, resumed.prev_hash) == (last.seq + 1, last.hash)
    assert not list((run_dir / "log").glob(".tmp-*"))  # a dead writer's half-written segment is cleared
    report = verify_run(run_dir)
    assert report.ok, report.summary()
    assert report.last_seq == last.seq + 1


def test_a_crash_between_merge_and_cleanup_leaves_nothing_twice(tmp_path: Path) -> None:
    """Killed after a merged segment was renamed into place but before the merged-away ones
    were deleted: readers and verify ignore the covered copies, and open_existing removes them
    only because the merged segment holds every seq they held."""
    run_dir = tmp_path / "run"
    def lambda_updated(version: int) -> LambdaUpdated:
        return LambdaUpdated(old=0.0, new=0.0, mean_f=0.0, delta=0.0, monitor_version=version, applied=False)

    with RunWriter.create(run_dir, "merge-crash") as writer:
        writer.append(run_started())
        writer.flush()
        for version in range(1, 63):
            writer.append(lambda_updated(version))
            writer.flush()
        saved = {p.name: p.read_bytes() for p in (run_dir / "log").glob("*.L0.arrow")}  # 63 small segments
        writer.append(lambda_updated(63))
        writer.flush()  # the 64th segment: all 64 merged into one L1, the small ones deleted
    assert list((run_dir / "log").glob("*.L1.arrow")) and not list((run_dir / "log").glob("*.L0.arrow"))
    for name, data in saved.items():  # as if the process died before its unlinks
        (run_dir / "log" / name).write_bytes(data)

    assert [r.seq for r in RunReader(run_dir).events()] == list(range(64))
    assert verify_run(run_dir).ok
    with RunWriter.open_existing(run_dir) as writer:
        assert writer.next_seq == 64
    assert not list((run_dir / "log").glob("*.L0.arrow"))


# The child never calls flush(): its writer writes a segment every 32 events on its own. It
# reports the last event of each such segment once the append that wrote it returned.
UNFLUSHED_CHILD = textwrap.dedent("""
    import sys
    from storage import RunWriter
    from tests.test_storage_contract import round_played, run_started
    writer = RunWriter.create(sys.argv[1], "killed-unflushed", max_buffered=32)
    last = writer.append(run_started())
    round_id = 0
    while True:
        recorded = writer.append(round_played(round_id))
        if recorded.seq % 32 == 0:
            # appending seq 32k first flushed the full buffer, seqs 32(k-1)..32k-1
            print(recorded.seq - 1, flush=True)
        round_id += 1
""")


def test_sigkill_while_the_writer_flushes_on_its_own_keeps_every_written_segment_whole(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", UNFLUSHED_CHILD, str(run_dir)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout is not None
    written = [int(line) for _, line in zip(range(40), child.stdout)]  # killed while it keeps writing
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    report = verify_run(run_dir)
    assert report.ok, report.summary()
    reader = RunReader(run_dir)
    assert reader.last_seq() >= written[-1]  # everything a finished flush held is there
    assert (reader.last_seq() + 1) % 32 == 0  # and only whole buffers: no segment is cut short
    with RunWriter.open_existing(run_dir) as writer:
        assert writer.next_seq == reader.last_seq() + 1

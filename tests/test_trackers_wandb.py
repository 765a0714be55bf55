"""The W&B tracker: a real offline wandb run, read back from its transaction log.

wandb must never reach its servers here: every test runs with no API key and WANDB_MODE
unset, so the tracker chooses offline mode by itself (the behaviour under test).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from engine.trackers import open_trackers
from tests.test_trackers import (
    assert_scalars_match,
    expected_update_scalars,
    expected_window_scalars,
    publish_all,
    read_tensorboard,
    write_fixture_run,
)
from tui.cli import main as cli_main

# The .wandb file is a LevelDB-style log: a 7-byte ":W&B" header, then 32 KiB blocks of
# records, each with a 7-byte header (checksum, length, type: full / first / middle / last).
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < 7:  # a block's tail too short for a header is padding
            position += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            records.append(record)
            pending = b""
        elif kind in (FIRST, MIDDLE):
            pending += chunk
        else:
            position += BLOCK_SIZE - position % BLOCK_SIZE  # zero padding to the next block
    return records


def read_wandb_history(wandb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars per name as (step, value), from the single offline run under `wandb_dir`."""
    (log_file,) = wandb_dir.glob("offline-run-*/run-*.wandb")
    history: dict[str, list[tuple[int, float]]] = {}
    for record in read_wandb_records(log_file):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for name, value in row.items():
            if not name.startswith("_"):  # wandb's own _step, _runtime, _timestamp
                history.setdefault(name, []).append((int(row["_step"]), value))
    return history


@pytest.fixture(autouse=True)
def no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def test_wandb_offline_run_history_equals_the_events(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    out = io.StringIO()
    publish_all(open_trackers(["wandb"], run_dir, "minmax-run", stdout=out), recorded)

    history = read_wandb_history(run_dir / "wandb")

    expected = {**expected_window_scalars(recorded), **expected_update_scalars(recorded)}
    assert history == expected  # exact: wandb keeps doubles, as JSON
    (offline_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert out.getvalue() == (
        f"wandb: offline run saved in {offline_dir}; upload it with: wandb sync {offline_dir}\n"
    )


def test_run_finishes_with_one_warning_when_wandb_cannot_start(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    (run_dir / "wandb").write_text("a file where wandb's directory should be\n")  # unwritable as a dir
    out, err = io.StringIO(), io.StringIO()

    trackers = open_trackers(["console", "tensorboard", "wandb"], run_dir, "minmax-run", stdout=out, stderr=err)
    publish_all(trackers, recorded)

    warning_lines = err.getvalue().splitlines()
    assert len(warning_lines) == 1
    assert warning_lines[0].startswith("minmax-engine: tracker 'wandb' could not start and is skipped:")
    assert trackers.failed == []
    assert out.getvalue().splitlines()[-1].startswith("finished: 48 rounds")
    assert len(read_tensorboard(run_dir / "tensorboard")["game/deception_rate"]) == 6


def test_backfill_into_wandb_writes_the_same_numbers_as_live_tensorboard(tmp_path: Path) -> None:
    run_dir = tmp_path / "rlhf-run"
    recorded = write_fixture_run(run_dir, "rlhf")
    publish_all(open_trackers(["tensorboard"], run_dir, "rlhf-run"), recorded)

    assert cli_main(["log", str(run_dir), "--to", "wandb"]) == 0

    history = read_wandb_history(run_dir / "wandb")
    live = read_tensorboard(run_dir / "tensorboard")
    assert_scalars_match(history, live)  # to float32, the precision TensorBoard keeps


def test_a_second_wandb_backfill_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "rlhf-run"
    write_fixture_run(run_dir, "rlhf")
    assert cli_main(["log", str(run_dir), "--to", "wandb"]) == 0
    capsys.readouterr()

    assert cli_main(["log", str(run_dir), "--to", "wandb"]) == 2
    error = capsys.readouterr().err
    (first,) = (run_dir / "wandb").glob("offline-run-*")
    assert error.count("\n") == 1 and "pass --force" in error and first.name in error
    assert list((run_dir / "wandb").glob("offline-run-*")) == [first]  # nothing new was written

    assert cli_main(["log", str(run_dir), "--to", "wandb", "--force"]) == 0
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2

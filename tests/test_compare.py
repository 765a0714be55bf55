"""`minmax-engine compare`: both modes × two seeds on tiny random models, killed mid-way and run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.compare import parse_seeds
from storage import RunReader
from storage.errors import UserError
from storage.events import CheckpointSaved, RoundPlayed, RunFinished, RunResumed, RunStarted
from tests.test_game_resume import REPOSITORY, write_toml
from tui import cli

NAMES = ["tiny-minmax-seed0", "tiny-rlhf-seed0", "tiny-minmax-seed1", "tiny-rlhf-seed1"]


def events_of(run_dir: Path) -> list:
    try:
        return [item.event for item in RunReader(run_dir).events()]
    except UserError:  # not created yet, or its manifest is being written
        return []


def kill_in_the_second_run(config_path: Path, out: Path, cache: Path) -> None:
    """Start compare in a process and SIGKILL it once the first run finished and the second has
    a checkpoint and rounds after it."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "compare", "--config", str(config_path), "--seeds", "0,1", "--out", str(out)],
        cwd=REPOSITORY, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if any(isinstance(e, RunFinished) for e in events_of(out / NAMES[0])):
                second = events_of(out / NAMES[1])
                checkpoints = [i for i, e in enumerate(second) if isinstance(e, CheckpointSaved)]
                if checkpoints and any(isinstance(e, RoundPlayed) for e in second[checkpoints[0]:]):
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return
            if process.poll() is not None:
                pytest.fail(f"compare ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        pytest.fail("the second run had no checkpoint within 300 s")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_compare_runs_both_modes_per_seed_and_resumes_after_a_kill(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    config_path.write_text(config_path.read_text().replace("eval_every = 0", "eval_every = 3"))
    out = tmp_path / "compare"
    kill_in_the_second_run(config_path, out, tmp_path / "cache")
    first_before = len(events_of(out / NAMES[0]))
    assert not any(isinstance(e, RunFinished) for e in events_of(out / NAMES[1]))
    assert not (out / NAMES[2]).exists()

    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(tmp_path / "cache"))
    assert cli.main(["compare", "--config", str(config_path), "--seeds", "0,1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "compare: 4/4 runs done, 48/48 training rounds" in printed
    assert "report written" in printed and (out / "report" / "index.html").is_file()

    for name in NAMES:
        events = events_of(out / name)
        started = events[0]
        assert isinstance(started, RunStarted) and isinstance(events[-1], RunFinished)
        mode, seed = name.split("-")[1], int(name[-1])
        assert (started.mode, started.seeds["seed"]) == (mode, seed)
        assert "console" not in started.config["logging"]["backends"]
    assert len(events_of(out / NAMES[0])) == first_before  # finished: skipped, nothing appended
    assert sum(isinstance(e, RunResumed) for e in events_of(out / NAMES[1])) == 1  # killed: resumed
    # every run played the same states: the same data for both modes and every seed
    fingerprints = {events_of(out / name)[0].data_fingerprint for name in NAMES}
    assert len(fingerprints) == 1

    # run again: everything is finished, only the report is written again
    assert cli.main(["compare", "--config", str(config_path), "--seeds", "0,1", "--out", str(out)]) == 0
    assert all(not any(isinstance(e, RunResumed) for e in events_of(out / name)) for name in (NAMES[0], *NAMES[2:]))


def test_seeds_are_checked() -> None:
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a,b", "1,1", "-1"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)

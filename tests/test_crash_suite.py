"""The crash suite (issue 14): a real `play` process killed at each named moment, then
`verify`, the views and `play --resume`, with the resumed run equal to an uninterrupted one.

The moments are hit exactly through the engine's test hook (engine/game.py `_test_moment`):
MINMAX_ENGINE_TEST_KILL_AT=<moment>:<n> makes the process SIGKILL itself the n-th time it
gets there; MINMAX_ENGINE_TEST_STOP_AT stops it (SIGSTOP) so that the test can act on it (a
Ctrl-C, a disk filled up) and continue it. Tiny random models, 6 training rounds in 3
windows: each window has a monitor update, a policy update, an evaluation and a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.outcomes import game_views
from storage import RunReader, RunsQuery
from storage.events import (
    CheckpointSaved,
    EvaluationCompleted,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    RoundPlayed,
    RunFailed,
    RunFinished,
)
from tests.test_game_resume import live_events
from tui import cli
from tui.run_data import summarize_run_dir

REPOSITORY = Path(__file__).resolve().parent.parent
TOTAL_ROUNDS = 6


def write_config(path: Path, model_dir: Path) -> Path:
    path.write_text(
        f"""
seed = 11
[policy]
model = "{model_dir}"
max_new_tokens = 5
lora_r = 4
[monitor]
model = "{model_dir}"
max_new_tokens = 5
lora_r = 4
[reward]
model = "{model_dir}"
kind = "lm-yes-no"
[judge]
model = "{model_dir}"
[data]
max_states = 8
eval_fraction = 0.25
[training]
policy_learning_rate = 1e-2
monitor_learning_rate = 4e-2
monitor_updates_per_policy = 1
window_size = 2
num_epochs = 1
ppo_epochs = 1
minibatch_size = 2
checkpoint_every = 1
eval_every = 1
[lagrangian]
lambda_init = 1.0
step_size = 0.5
lambda_max = 5.0
[logging]
backends = ["console"]
"""
    )
    return path


def start_play(config: Path, run_parent: Path, cache: Path, **hooks: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **hooks}
    return subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "play", "--config", str(config), "--run-dir", str(run_parent)],
        cwd=REPOSITORY, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_as_in_a_terminal,
    )


def _as_in_a_terminal() -> None:
    # A suite started in the background (`make test &`, nohup) inherits SIGINT ignored, as the
    # shell intends for background jobs, and Python then keeps ignoring it: Ctrl-C would be
    # lost. Play is started here as a user runs it, in the foreground of a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out.decode(), err.decode()


def wait_until_stopped(process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"play ended before its stop point: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.02)
    pytest.fail("play did not reach its stop point within 300 s")


def only_run(run_parent: Path) -> Path:
    runs = [path for path in run_parent.iterdir() if (path / "log").is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def signature(run_dir: Path) -> list[tuple[Any, ...]]:
    """What an uninterrupted run and a resumed one must share: every live event's content,
    less what differs by design (round ids and seqs after a resume, paths, wall times)."""
    rows: list[tuple[Any, ...]] = []
    for item in live_events(RunReader(run_dir).events()):
        event = item.event
        if isinstance(event, RoundPlayed):
            rows.append(("round", event.phase, event.state_id, event.window, event.sample_index,
                         list(event.policy_token_ids), list(event.policy_logprobs),
                         None if event.monitor_token_ids is None else list(event.monitor_token_ids),
                         None if event.monitor_logprobs is None else list(event.monitor_logprobs),
                         event.reward_policy, event.reward_monitor, event.p_accept, event.combined_reward,
                         event.lambda_value, event.policy_version, event.monitor_version))
        elif isinstance(event, MonitorUpdated | PolicyUpdated):
            diagnostics = {k: v for k, v in event.diagnostics.items() if "second" not in k}
            rows.append((type(event).__name__, event.version, len(event.round_ids), diagnostics))
        elif isinstance(event, LambdaUpdated):
            rows.append(("lambda", event.old, event.new, event.mean_f, event.applied))
        elif isinstance(event, CheckpointSaved):
            rows.append(("checkpoint", event.policy_version, event.monitor_version, event.lambda_value))
        elif isinstance(event, EvaluationCompleted):
            rows.append(("evaluation", event.policy_version, event.n_rounds, event.metrics))
        elif isinstance(event, RunFinished):
            rows.append(("finished", event.rounds, event.policy_updates, event.monitor_updates))
    return rows


@pytest.fixture(scope="module")
def config_path(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("crash-config") / "crash.toml", tiny_lm_dir)


@pytest.fixture(scope="module")
def reference(config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    """The uninterrupted run, played once in this process (one thread, like the killed ones)."""
    parent = tmp_path_factory.mktemp("crash-reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINMAX_ENGINE_CACHE", str(parent / "cache"))
        assert cli.main(["play", "--config", str(config_path), "--run-dir", str(parent / "runs")]) == 0
    run_dir = only_run(parent / "runs")
    rows = signature(run_dir)
    assert sum(row[0] == "round" and row[1] == "train" for row in rows) == TOTAL_ROUNDS
    assert [row[1] for row in rows if row[0] == "checkpoint"] == [0, 1, 2, 3]
    return rows


@pytest.fixture()
def one_thread() -> Iterator[None]:
    yield
    torch.set_num_threads(1)  # as conftest set it, whatever a test or a resume changed


def check_stopped_run(run_dir: Path, resumable_from: int, capsys: pytest.CaptureFixture[str]) -> None:
    """What a user sees of a dead run before resuming it: verify, the status, every view."""
    capsys.readouterr()
    assert cli.main(["verify", str(run_dir)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("ok:") and f"not finished: stopped (resumable from checkpoint {resumable_from})" in said
    assert summarize_run_dir(run_dir).status == f"stopped (resumable from checkpoint {resumable_from})"
    with RunsQuery(run_dir, extra_views=game_views()) as query:
        for view in ("events", "rounds", "updates", "lambda", "metrics"):
            query.arrow(f'SELECT count(*) FROM "{view}"')
        assert query.arrow("SELECT count(*) AS n FROM events").column("n")[0].as_py() == RunReader(run_dir).last_seq() + 1


def resume_and_compare(run_dir: Path, reference: list[tuple[Any, ...]], rounds_at_resume: int,
                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(run_dir.parent / "cache"))
    capsys.readouterr()
    assert cli.main(["play", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    # the console counts schedule rounds, not round ids (which continue past superseded rounds)
    assert f"resumed from the checkpoint at seq " in out
    assert f": {rounds_at_resume} of {TOTAL_ROUNDS} rounds played" in out
    for line in out.splitlines():
        if line.startswith("window"):
            played = int(line.split("| rounds ")[1].split("/")[0])
            assert rounds_at_resume < played <= TOTAL_ROUNDS, line
    assert f"finished: {TOTAL_ROUNDS} rounds" in out
    assert cli.main(["verify", str(run_dir)]) == 0
    assert summarize_run_dir(run_dir).status == "finished"
    assert not list((run_dir / "checkpoints").glob("*.partial"))
    assert signature(run_dir) == reference


# moment:n, the checkpoint the run resumes from, and the training rounds that checkpoint covers
MOMENTS = [
    pytest.param("window-appended:1", 0, 0, id="before-the-first-window-is-flushed"),
    pytest.param("checkpoint-renamed:2", 0, 0, id="between-a-checkpoint-rename-and-its-event"),
    pytest.param("checkpoint-logged:2", 1, 2, id="after-a-checkpoint-event"),
    pytest.param("monitor-updated:2", 1, 2, id="during-a-monitor-update"),
    pytest.param("eval-rounds-appended:1", 0, 0, id="during-evaluation"),
    pytest.param("run-finished-appended:1", 3, 6, id="during-the-final-run-finished"),
]


@pytest.mark.parametrize(("moment", "checkpoint", "rounds_covered"), MOMENTS)
def test_sigkill_at_each_moment_then_verify_views_and_resume_equal_the_uninterrupted_run(
    moment: str, checkpoint: int, rounds_covered: int, config_path: Path, reference: list[tuple[Any, ...]],
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_thread: None,
) -> None:
    process = start_play(config_path, tmp_path / "runs", tmp_path / "runs" / "cache",
                         MINMAX_ENGINE_TEST_KILL_AT=moment)
    returncode, out, err = finish(process)
    assert returncode == -signal.SIGKILL, err[-2000:]
    run_dir = only_run(tmp_path / "runs")
    events = RunReader(run_dir).events()
    assert not any(isinstance(item.event, RunFinished | RunFailed) for item in events)
    # nothing on the console that the log does not hold
    logged = [item.event.policy_version for item in events if isinstance(item.event, CheckpointSaved)]
    assert out.count("checkpoint saved:") == len(logged) and logged[-1] == checkpoint
    stored_windows = {item.event.window for item in events if isinstance(item.event, RoundPlayed)}
    printed_windows = {int(line.split("|")[0].split()[1]) for line in out.splitlines() if line.startswith("window")}
    assert printed_windows <= stored_windows
    if moment.startswith("checkpoint-renamed"):
        assert (run_dir / "checkpoints" / "1").is_dir() and 1 not in logged  # whole on disk, never logged
    check_stopped_run(run_dir, checkpoint, capsys)

    if moment.startswith("window-appended"):
        # what a kill in the middle of a checkpoint save leaves: resume removes it
        (run_dir / "checkpoints" / "1.partial" / "learners").mkdir(parents=True)
        (run_dir / "checkpoints" / "1.partial" / "learners" / "policy.pt").write_bytes(b"cut short")
    if moment.startswith("checkpoint-logged"):
        torch.set_num_threads(2)  # another machine's count: resume uses the run's own (RunStarted)
        assert RunReader(run_dir).run_started().num_threads == 1
        # the kernel too (players/cpu_linear.py): an unset MINMAX_ENGINE_CPU_LINEAR resumes with it
        assert RunReader(run_dir).run_started().cpu_linear == "onednn"
        monkeypatch.delenv("MINMAX_ENGINE_CPU_LINEAR", raising=False)
    resume_and_compare(run_dir, reference, rounds_covered, capsys, monkeypatch)
    assert torch.get_num_threads() == 1


def test_ctrl_c_records_the_interruption_exits_130_and_resumes_like_a_kill(
    config_path: Path, reference: list[tuple[Any, ...]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_thread: None,
) -> None:
    process = start_play(config_path, tmp_path / "runs", tmp_path / "runs" / "cache",
                         MINMAX_ENGINE_TEST_STOP_AT="checkpoint-logged:2")
    wait_until_stopped(process)
    process.send_signal(signal.SIGINT)  # pending while stopped, delivered once it continues
    process.send_signal(signal.SIGCONT)
    returncode, out, err = finish(process)
    assert returncode == 130, err[-2000:]
    assert "minmax-engine play: interrupted" in err and "Traceback" not in err
    run_dir = only_run(tmp_path / "runs")
    last = RunReader(run_dir).events()[-1].event
    assert isinstance(last, RunFailed) and last.error_type == "KeyboardInterrupt"
    assert "run failed: KeyboardInterrupt" in out  # claimed only once flushed
    check_stopped_run(run_dir, 1, capsys)
    resume_and_compare(run_dir, reference, 2, capsys, monkeypatch)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs mounted for this test alone."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no `mount` command here to create a small filesystem")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros until not one more byte fits."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(descriptor)
    return filler


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes_equal(
    config_path: Path, reference: list[tuple[Any, ...]], small_disk: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_thread: None,
) -> None:
    run_parent = small_disk / "runs"
    process = start_play(config_path, run_parent, tmp_path / "cache", MINMAX_ENGINE_TEST_STOP_AT="checkpoint-writing:2")
    wait_until_stopped(process)  # right before checkpoint 1 is written
    filler = fill(small_disk)
    process.send_signal(signal.SIGCONT)
    returncode, out, err = finish(process)
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert returncode == 2, err[-3000:]
    assert len(errors) == 1 and errors[0].startswith("minmax-engine play: error: "), err[-3000:]
    assert "cannot write the checkpoint: the disk is full" in errors[0]
    assert "RuntimeError" not in err and "unexpected pos" not in err
    run_dir = only_run(run_parent)
    assert not list((run_dir / "checkpoints").glob("*.partial"))  # the failed save removed its own
    logged_failure = isinstance(RunReader(run_dir).events()[-1].event, RunFailed)
    assert ("run failed:" in out) == logged_failure  # the console claims only what the log holds

    filler.unlink()
    capsys.readouterr()
    assert cli.main(["verify", str(run_dir)]) == 0
    status = "failed" if logged_failure else "stopped"
    assert summarize_run_dir(run_dir).status == f"{status} (resumable from checkpoint 0)"
    resume_and_compare(run_dir, reference, 0, capsys, monkeypatch)

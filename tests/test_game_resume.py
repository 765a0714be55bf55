"""Resume: a run killed with SIGKILL after a checkpoint, resumed, ends like an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine.game import resume_run, start_run
from players import ModelPool
from storage import RunReader
from storage.errors import UserError
from storage.events import (
    CheckpointSaved,
    MonitorUpdated,
    PolicyUpdated,
    Recorded,
    RoundPlayed,
    RunFinished,
    RunResumed,
)
from tests.test_game import tiny_config
from tui import cli

REPOSITORY = Path(__file__).resolve().parent.parent


def live_events(recorded: list[Recorded]) -> list[Recorded]:
    """The log as a fold sees it: events superseded by a later RunResumed are skipped."""
    superseded: list[range] = [
        range(item.event.discarded_after_seq + 1, item.seq) for item in recorded if isinstance(item.event, RunResumed)
    ]
    return [item for item in recorded if not any(item.seq in span for span in superseded)]


def write_toml(config_path: Path, model_dir: Path, run_parent: Path) -> None:
    config_path.write_text(
        f"""
seed = 5
run_dir = "{run_parent}"
[policy]
model = "{model_dir}"
max_new_tokens = 6
lora_r = 4
[monitor]
model = "{model_dir}"
max_new_tokens = 6
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
monitor_updates_per_policy = 2  # killed inside a policy period: its answers are drawn at once
window_size = 2
num_epochs = 2
ppo_epochs = 1
minibatch_size = 2
checkpoint_every = 1
eval_every = 0
[lagrangian]
lambda_init = 1.0
step_size = 0.5
lambda_max = 5.0
[logging]
backends = []
"""
    )


def kill_after_a_checkpoint(config_path: Path, run_parent: Path, cache: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "play", "--config", str(config_path)],
        cwd=REPOSITORY, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            runs = [path for path in run_parent.iterdir() if (path / "log").is_dir()] if run_parent.is_dir() else []
            if runs:
                try:
                    events = RunReader(runs[0]).events()
                except UserError:  # the manifest is being written
                    events = []
                checkpoint_seqs = [item.seq for item in events if isinstance(item.event, CheckpointSaved)]
                if checkpoint_seqs and any(
                    isinstance(item.event, RoundPlayed) and item.seq > checkpoint_seqs[0] for item in events
                ):
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return runs[0]
            if process.poll() is not None:
                pytest.fail(f"play ended before it could be killed: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        pytest.fail("no checkpoint within 240 s")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ResumedRun:
    killed: Path  # killed with SIGKILL after a checkpoint, then resumed in this process
    reference: Path  # the same config played without interruption
    seq_before: int  # the killed run's last seq before the resume
    finished: RunFinished
    reference_finished: RunFinished


@pytest.fixture(scope="module")
def resumed_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ResumedRun:
    tmp_path = tmp_path_factory.mktemp("resume")
    config_path = tmp_path / "resume.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    killed = kill_after_a_checkpoint(config_path, tmp_path / "runs", tmp_path / "cache")
    assert not any(isinstance(item.event, RunFinished) for item in RunReader(killed).events())
    seq_before = RunReader(killed).last_seq()

    # a pool holds one run's adapters, so every run gets its own
    finished = resume_run(killed, pool=ModelPool(cache_dir=tmp_path / "cache"))
    from engine.config import load_config

    config, _ = load_config(config_path)
    reference_dir = tmp_path / "reference"
    reference = start_run(config, reference_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))
    return ResumedRun(killed, reference_dir, seq_before, finished, reference)


def test_killed_run_resumes_to_the_same_end_as_an_uninterrupted_one(resumed_run: ResumedRun) -> None:
    killed, reference_dir, finished = resumed_run.killed, resumed_run.reference, resumed_run.finished
    reference = resumed_run.reference_finished
    assert (finished.rounds, finished.policy_updates, finished.monitor_updates) == (12, 3, 6)
    assert (reference.rounds, reference.policy_updates, reference.monitor_updates) == (12, 3, 6)

    resumed_log = RunReader(killed).events(include_superseded=True)
    assert [item.seq for item in resumed_log] == list(range(len(resumed_log)))  # same numbering, no gap
    resumed_at = [item for item in resumed_log if isinstance(item.event, RunResumed)]
    assert len(resumed_at) == 1 and resumed_at[0].seq == resumed_run.seq_before + 1
    all_round_ids = [item.event.round_id for item in resumed_log
                     if isinstance(item.event, RoundPlayed) and item.event.phase == "train"]
    assert len(all_round_ids) == len(set(all_round_ids))  # superseded rounds keep their ids; no duplicates

    # the reader's default is the live log, the same as this test's own reading of the rule
    assert RunReader(killed).events() == live_events(resumed_log)
    live = [item.event for item in live_events(resumed_log)]
    uninterrupted = [item.event for item in RunReader(reference_dir).events()]
    for kind in (RoundPlayed, MonitorUpdated, PolicyUpdated, CheckpointSaved):
        assert sum(isinstance(e, kind) for e in live) == sum(isinstance(e, kind) for e in uninterrupted), kind
    live_rounds = [e for e in live if isinstance(e, RoundPlayed)]
    reference_rounds = [e for e in uninterrupted if isinstance(e, RoundPlayed)]
    # no round repeated or skipped: the same states in the same windows ...
    assert [(r.state_id, r.window, r.sample_index) for r in live_rounds] == [
        (r.state_id, r.window, r.sample_index) for r in reference_rounds
    ]
    # ... played by the same adapters from the same seeds: resume is exact
    assert [r.policy_token_ids for r in live_rounds] == [r.policy_token_ids for r in reference_rounds]
    assert [r.lambda_value for r in live_rounds] == [r.lambda_value for r in reference_rounds]
    # the log's own checkers accept the resumed run
    assert cli.main(["verify", str(killed)]) == 0
    assert cli.main(["replay", str(killed)]) == 0


def view_counts(run_dir: Path) -> dict[str, dict[str, object]]:
    """The same counts of one run as replay, SQL, the TUI's data layer, trackers and the report see them."""
    from engine.outcomes import game_views
    from engine.replay import fold_run
    from engine.reports import load_run
    from engine.trackers import MetricStream
    from storage import RunsQuery
    from tui.run_data import RoundFilter, RunData

    state = fold_run(RunReader(run_dir))
    replay = {"rounds": state.train_rounds, "policy_updates": state.policy_updates,
              "monitor_updates": state.monitor_updates, "windows": len(state.window_metrics),
              "deceptions": sum(round(m["deception_rate"] * m["deception_rate_n"]) for m in state.window_metrics.values()
                                if m["deception_rate"] is not None)}
    with RunsQuery(run_dir, extra_views=game_views()) as query:
        one = query.arrow(
            "SELECT (SELECT count(*) FROM rounds WHERE phase = 'train') AS rounds, "
            "(SELECT count(*) FROM updates WHERE role = 'policy') AS policy_updates, "
            "(SELECT count(*) FROM updates WHERE role = 'monitor') AS monitor_updates, "
            "(SELECT count(*) FROM metrics) AS windows, "
            "(SELECT CAST(sum(round(deception_rate * deception_rate_n)) AS BIGINT) FROM metrics) AS deceptions"
        ).to_pylist()[0]
    data = RunData(run_dir)
    try:
        counts = data.counts()
        last_seq = data.last_seq()
        tui = {"rounds": counts.rounds, "policy_updates": counts.policy_updates,
               "monitor_updates": counts.monitor_updates, "windows": None,
               "deceptions": data.count_matching(RoundFilter(outcome="deceptions"), 0, last_seq)}
        tui["table_rows"] = data.count_matching(RoundFilter(), 0, last_seq)
        tui["paged_rows"] = len(data.page_after(RoundFilter(), -1, 10_000).rows)
    finally:
        data.close()
    stream = MetricStream()
    groups = [g for record in RunReader(run_dir).events() for g in stream.observe(record)] + stream.finish()
    trackers = {"windows": sum(g.source == "window" for g in groups),
                "policy_updates": sum(g.source == "policy" for g in groups),
                "monitor_updates": sum(g.source == "monitor" for g in groups),
                "steps": [(g.source, g.step) for g in groups]}
    report_run = load_run(run_dir)
    report = {"rounds": int(report_run.windows["n_rounds"].sum()), "policy_updates":
              report_run.updates.filter(report_run.updates["role"] == "policy").height,
              "monitor_updates": report_run.updates.filter(report_run.updates["role"] == "monitor").height,
              "windows": report_run.windows.height,
              # the x-axis and the final stretch count rounds played, not round ids (a resume
              # leaves the superseded rounds' ids unused)
              "rounds_played": report_run.rounds_played,
              "window_steps": report_run.windows["step"].to_list(),
              "update_steps": report_run.updates["step"].to_list(),
              "lambda_steps": report_run.lambda_steps["step"].to_list(),
              "final_rounds": report_run.final_counts["policy_accuracy"][1]}
    return {"replay": replay, "sql": one, "tui": tui, "trackers": trackers, "report": report}


def test_after_a_resume_every_view_counts_the_same(resumed_run: ResumedRun) -> None:
    """Replay, SQL, the TUI data layer, trackers and the report fold the resumed log one way."""
    resumed, uninterrupted = view_counts(resumed_run.killed), view_counts(resumed_run.reference)
    assert resumed == uninterrupted  # the resumed run counts as the run that was never killed
    replay = resumed["replay"]
    assert (replay["rounds"], replay["policy_updates"], replay["monitor_updates"]) == (12, 3, 6)
    for view in ("sql", "tui", "trackers", "report"):
        for name, value in resumed[view].items():
            if name in replay and value is not None:
                assert value == replay[name], (view, name)
    assert resumed["tui"]["table_rows"] == resumed["tui"]["paged_rows"] == replay["rounds"]
    # superseded events exist in the log and are what every view left out
    everything = RunReader(resumed_run.killed).events(include_superseded=True)
    assert len(everything) > len(RunReader(resumed_run.killed).events())


def test_resume_refuses_a_finished_run(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path, training={"num_epochs": 1, "monitor_updates_per_policy": 3})
    start_run(config, tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))
    with pytest.raises(UserError, match="already finished"):
        resume_run(tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))


def test_a_log_older_than_period_draws_resumes_drawing_a_window_at_a_time(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from engine.game import config_to_resume

    recorded = tiny_config(tiny_lm_dir, tmp_path, training={"monitor_updates_per_policy": 3}).resolved()
    assert "policy_generation_rows" in recorded["training"]  # a new run records its choice
    assert config_to_resume(recorded, "run").training.policy_generation_rows is None  # the whole period
    older = {**recorded, "training": {k: v for k, v in recorded["training"].items() if k != "policy_generation_rows"}}
    resumed = config_to_resume(older, "run")
    assert resumed.training.policy_generation_rows == resumed.training.window_size  # per window, as it drew then
    assert resumed.training.monitor_updates_per_policy == 3  # everything else as recorded


def test_a_log_older_than_the_reference_cache_resumes_encoding_prompts_afresh(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from engine.game import config_to_resume, reference_cache_mib

    recorded = tiny_config(tiny_lm_dir, tmp_path).resolved()
    assert recorded["training"]["reference_cache_mib"] is None  # a new run records its choice: the default
    assert reference_cache_mib(config_to_resume(recorded, "run").training.reference_cache_mib, torch.device("cpu")) == 1024
    assert reference_cache_mib(None, torch.device("cuda")) == 0  # not measured on a GPU: off there
    older = {**recorded, "training": {k: v for k, v in recorded["training"].items() if k != "reference_cache_mib"}}
    assert config_to_resume(older, "run").training.reference_cache_mib == 0  # as it encoded them then

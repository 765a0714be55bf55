"""`minmax-engine play` / `eval` through the command-line dispatcher, on tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.game import evaluate_run, start_run
from players import ModelPool
from storage import RunReader
from storage.events import EvaluationCompleted, RoundPlayed, RunFinished
from tests.test_game import tiny_config
from tui import cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["play"], "play needs --config FILE"),
        (["play", "--config", "no/such.toml"], "no/such.toml: config file not found"),
        (["play", "--resume", "no-such-run"], "no-such-run: no such run directory"),
        (["eval", "no-such-run"], "no-such-run: no such run directory"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_resume_rejects_config_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    assert cli.main(["play", "--resume", str(tmp_path / "run"), "--epochs", "3"]) == 2
    assert "--epochs: --resume continues with the config the run recorded" in capsys.readouterr().err


def test_play_prints_the_run_id_and_eval_appends_to_the_run(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(tmp_path / "cache"))
    config = tiny_config(tiny_lm_dir, tmp_path / "runs", training={"num_epochs": 1, "eval_every": 0})
    config_path = tmp_path / "tiny.json"
    config_path.write_text(config.model_dump_json())
    assert cli.main(["play", "--config", str(config_path), "--mode", "rlhf"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert f"run {run_dir.name} in {run_dir}" in out and f"run {run_dir.name} done" in out
    assert "0 monitor updates" in out and RunReader(run_dir).run_started().mode == "rlhf"

    assert cli.main(["eval", str(run_dir), "--checkpoint", "1"]) == 0
    assert cli.main(["eval", str(run_dir), "--checkpoint", "9"]) == 2
    assert "--checkpoint 9: no such checkpoint; the run saved [0, 1, 2]" in capsys.readouterr().err
    events = [item.event for item in RunReader(run_dir).events()]
    (completed,) = [e for e in events if isinstance(e, EvaluationCompleted)]  # rlhf: deployment only
    assert completed.checkpoint == "checkpoints/1" and completed.policy_version == 1
    assert completed.protocol == "deployment" and completed.samples_per_state == 2
    assert completed.n_rounds == 4 == sum(isinstance(e, RoundPlayed) and e.phase == "eval" for e in events)
    assert "monitor_fidelity" not in completed.metrics  # rlhf: no monitor metrics


def test_eval_only_evaluates_the_initial_adapters_and_finishes(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path)
    finished = start_run(config, tmp_path / "run", eval_only=True, pool=ModelPool(cache_dir=tmp_path / "cache"))
    assert (finished.rounds, finished.policy_updates) == (0, 0)
    events = [item.event for item in RunReader(tmp_path / "run").events()]
    assert [type(e).__name__ for e in events] == (
        ["RunStarted", "JudgeCalibrated"] + ["RoundPlayed"] * 4 + ["EvaluationCompleted"] + ["RoundPlayed"] * 4 + ["EvaluationCompleted", "RunFinished"]
    )
    deployment, monitored = events[6], events[11]
    assert isinstance(deployment, EvaluationCompleted) and isinstance(monitored, EvaluationCompleted)
    assert (deployment.protocol, monitored.protocol) == ("deployment", "monitored")
    assert deployment.policy_version == 0 and "monitor_fidelity" not in deployment.metrics
    # monitor_fidelity is over parsed verdicts about parsed answers: random rounds may have none
    assert {"policy_accuracy", "monitor_unparsed_rate", "constraint_violation"} <= set(monitored.metrics)
    again = evaluate_run(tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))  # no checkpoint: initial adapters
    assert [e.checkpoint for e in again] == [None, None] and [e.n_rounds for e in again] == [4, 4]
    rounds = [item.event for item in RunReader(tmp_path / "run").rounds(phase="eval")]
    assert [r.round_id for r in rounds] == list(range(16))
    # Same adapters and versions: the evaluation samples the same answers and scores them alike.
    first, second = rounds[:8], rounds[8:]
    assert [r.policy_output for r in first] == [r.policy_output for r in second]
    assert [r.p_accept for r in first] == pytest.approx([r.p_accept for r in second], abs=1e-6)
    assert isinstance(events[-1], RunFinished)


def test_a_model_missing_offline_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "missing.toml"
    config_path.write_text(f'run_dir = "{tmp_path / "runs"}"\n[policy]\nmodel = "nobody/no-such-model-7b"\n')
    assert cli.main(["play", "--config", str(config_path)]) == 2
    error = capsys.readouterr().err
    assert "nobody/no-such-model-7b" in error and error.count("\n") == 1

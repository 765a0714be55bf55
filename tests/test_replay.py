"""`minmax-engine replay`: logs written with RunWriter, folded back, λ re-checked to the bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import LagrangianConfig
from engine.lagrangian import DualAscent
from engine.replay import check_lambda, fold_run
from storage import (
    CheckpointSaved,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    RoundPlayed,
    RunFinished,
    RunReader,
    RunResumed,
    RunStarted,
    RunWriter,
)
from tui.cli import main

LAGRANGIAN = {"lambda_init": 0.5, "delta": -0.2, "step_size": 0.3, "lambda_max": 4.0, "variant": "log", "update_delay": 1}


def started(mode: str = "minmax") -> RunStarted:
    return RunStarted(
        mode=mode, config={"mode": mode, "lagrangian": LAGRANGIAN}, seeds={"python": 0}, package_versions={},
        data_fingerprint="0" * 64, dataset_name="test", n_train_states=4, n_eval_states=0,
    )


def round_played(round_id: int, window: int, f: float | None, lam: float, truth: str = "correct") -> RoundPlayed:
    minmax = f is not None
    return RoundPlayed(
        round_id=round_id, phase="train", window=window, state_id=f"s{round_id % 4}", sample_index=0,
        story="story", question="q", choices=["a", "b"], correct_index=0,
        policy_prompt="p", policy_prompt_ids=[1, 2], policy_output="Answer: A", policy_token_ids=[3], policy_logprobs=[-0.5],
        policy_answer=0 if truth == "correct" else 1,
        monitor_prompt="m" if minmax else None, monitor_prompt_ids=[4] if minmax else None,
        monitor_output="CORRECT" if minmax else None, monitor_token_ids=[5] if minmax else None,
        monitor_logprobs=[-0.1] if minmax else None, monitor_says_correct=True if minmax else None,
        reward_policy=0.1, reward_monitor=0.2 if minmax else None, p_accept=0.7, judge_accepts=True, truth=truth,
        combined_reward=0.3, fidelity_penalty=f, lambda_value=lam, policy_version=0, monitor_version=0,
    )


def write_minmax_run(run_dir: Path, mean_fs: list[float], tamper_step: int | None = None) -> list[int]:
    """A minmax log whose λ comes from DualAscent itself; `tamper_step` nudges one logged λ."""
    dual = DualAscent(LagrangianConfig(**LAGRANGIAN))
    lambda_seqs = []
    with RunWriter.create(run_dir, run_dir.name) as writer:
        writer.append(started())
        for window, mean_f in enumerate(mean_fs):
            for offset in range(2):  # two rounds whose f average to mean_f
                writer.append(round_played(2 * window + offset, window, mean_f + (0.1 if offset else -0.1), dual.value))
            writer.append(MonitorUpdated(version=window + 1, round_ids=[2 * window, 2 * window + 1], first_seq=0, last_seq=0, diagnostics={}))
            step = dual.step(mean_f)
            new = step.new * (1.0 + 1e-15) if window == tamper_step else step.new
            lambda_seqs.append(
                writer.append(
                    LambdaUpdated(old=step.old, new=new, mean_f=mean_f, delta=-0.2, monitor_version=window + 1, applied=step.applied)
                ).seq
            )
        writer.append(PolicyUpdated(version=1, round_ids=list(range(2 * len(mean_fs))), first_seq=0, last_seq=0, diagnostics={}))
        writer.append(RunFinished(rounds=2 * len(mean_fs), policy_updates=1, monitor_updates=len(mean_fs), wall_seconds=1.0))
    return lambda_seqs


MEAN_FS = [0.3, 0.1, -0.35, 0.05, 0.6, -0.5]


def test_fold_counts_versions_lambda_and_window_metrics(tmp_path: Path) -> None:
    write_minmax_run(tmp_path / "run", MEAN_FS)
    state = fold_run(RunReader(tmp_path / "run"))
    dual = DualAscent(LagrangianConfig(**LAGRANGIAN))
    for mean_f in MEAN_FS:
        dual.step(mean_f)
    assert (state.train_rounds, state.monitor_updates, state.policy_updates) == (12, 6, 1)
    assert (state.monitor_version, state.policy_version, state.next_round_id) == (6, 1, 12)
    assert state.lambda_value == dual.value
    assert state.finished and not state.failed
    assert sorted(state.window_metrics) == list(range(6))
    assert state.window_metrics[2]["mean_f"] == pytest.approx(-0.35)
    assert state.window_metrics[2]["policy_accuracy"] == 1.0


def test_replay_reproduces_lambda_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_minmax_run(tmp_path / "run", MEAN_FS)
    assert main(["replay", str(tmp_path / "run")]) == 0
    assert "λ reproduced exactly over 6 updates" in capsys.readouterr().out


def test_replay_names_the_first_mismatching_seq(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lambda_seqs = write_minmax_run(tmp_path / "run", MEAN_FS, tamper_step=3)  # off by about one ulp
    check = check_lambda(fold_run(RunReader(tmp_path / "run")))
    assert check.first_mismatch is not None and check.first_mismatch.seq == lambda_seqs[3]
    assert main(["replay", str(tmp_path / "run")]) == 1
    assert f"λ mismatch at seq {lambda_seqs[3]}" in capsys.readouterr().out


def test_fold_leaves_out_events_superseded_by_a_resume(tmp_path: Path) -> None:
    dual = DualAscent(LagrangianConfig(**LAGRANGIAN))
    with RunWriter.create(tmp_path / "run", "resumed") as writer:
        writer.append(started())
        writer.append(round_played(0, 0, 0.2, dual.value))
        writer.append(MonitorUpdated(version=1, round_ids=[0], first_seq=1, last_seq=1, diagnostics={}))
        step = dual.step(0.2)
        writer.append(LambdaUpdated(old=step.old, new=step.new, mean_f=0.2, delta=-0.2, monitor_version=1, applied=step.applied))
        checkpoint = writer.append(CheckpointSaved(path="checkpoints/1", policy_version=0, monitor_version=1,
                                                   lambda_value=dual.value, next_round_id=1, last_round_seq=1))
        saved_state = dual.state_dict()
        # played after the checkpoint, then the process was killed: superseded on resume
        writer.append(round_played(1, 1, 0.9, dual.value))
        writer.append(MonitorUpdated(version=2, round_ids=[1], first_seq=5, last_seq=5, diagnostics={}))
        lost = dual.step(0.9)
        writer.append(LambdaUpdated(old=lost.old, new=lost.new, mean_f=0.9, delta=-0.2, monitor_version=2, applied=lost.applied))
        writer.append(RunResumed(checkpoint_seq=checkpoint.seq, next_round_id=2, discarded_after_seq=checkpoint.seq))
        dual.load_state_dict(saved_state)
        writer.append(round_played(2, 1, 0.0, dual.value))
        writer.append(MonitorUpdated(version=2, round_ids=[2], first_seq=9, last_seq=9, diagnostics={}))
        step = dual.step(0.0)
        writer.append(LambdaUpdated(old=step.old, new=step.new, mean_f=0.0, delta=-0.2, monitor_version=2, applied=step.applied))

    state = fold_run(RunReader(tmp_path / "run"))
    assert (state.train_rounds, state.monitor_updates, state.resumes, state.superseded_events) == (2, 2, 1, 3)
    assert state.next_round_id == 3  # after the highest id ever logged, superseded included
    assert [point.mean_f for point in state.lambda_trajectory] == [0.2, 0.0]
    assert state.last_checkpoint is not None and state.last_checkpoint_seq == checkpoint.seq
    assert check_lambda(state).first_mismatch is None
    assert not state.finished


def test_replay_of_an_rlhf_run_and_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RunWriter.create(tmp_path / "run", "rlhf") as writer:
        writer.append(started("rlhf"))
        for round_id in range(3):
            writer.append(round_played(round_id, 0, None, 0.0, truth="wrong" if round_id else "correct"))
    assert main(["replay", str(tmp_path / "run"), "--json"]) == 0
    out = capsys.readouterr().out
    payload = json.loads(out[: out.rindex("}") + 1])
    assert payload["train_rounds"] == 3 and payload["mode"] == "rlhf"
    assert payload["window_metrics"]["0"]["policy_accuracy"] == pytest.approx(1 / 3)
    assert "no λ to re-check" in out


def test_replay_of_a_missing_run_is_a_one_line_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nowhere" in error


def test_a_recorded_config_that_does_not_validate_is_one_line_naming_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Replay reads λ's settings through engine.config.recorded_config, the same validation a
    # live run's config went through: a log with an impossible setting is refused, not folded.
    bad = started()
    bad = RunStarted(**{**bad.to_dict(), "config": {"mode": "minmax", "lagrangian": {**LAGRANGIAN, "step_size": -1.0}}})
    with RunWriter.create(tmp_path / "run", "run") as writer:
        writer.append(bad)
    assert main(["replay", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "run run (RunStarted.config): lagrangian.step_size: must be > 0.0 (got -1.0)" in error

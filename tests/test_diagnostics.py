"""Diagnostics over the log: λ that cannot settle, a player that collapses (issue 16 items 4, 5)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from engine.config import LagrangianConfig, TrainingConfig
from engine.diagnostics import collapse_diagnostics, lambda_diagnostics, player_health, reach_diagnostics, repetition
from engine.game import start_run
from engine.lagrangian import DualAscent
from players import ModelPool
from storage import RunReader
from storage.errors import UserError
from storage.events import DiagnosticRaised, LambdaUpdated, RoundPlayed, RunFailed
from tests.test_game import tiny_config
from tests.test_game_resume import write_toml
from tests.test_replay import round_played
from tui import cli

SETTINGS = LagrangianConfig(lambda_init=1.0, delta=-0.2, step_size=0.5, lambda_max=5.0, rising_updates=3)


def history(mean_fs: list[float], settings: LagrangianConfig = SETTINGS) -> list[LambdaUpdated]:
    dual, steps = DualAscent(settings), []
    for version, mean_f in enumerate(mean_fs, start=1):
        step = dual.step(mean_f)
        steps.append(LambdaUpdated(old=step.old, new=step.new, mean_f=mean_f, delta=settings.delta,
                                   monitor_version=version, applied=step.applied))
    return steps


def kinds(found: list) -> list[str]:
    return [diagnostic.kind for diagnostic in found]


def test_lambda_rising_while_the_violation_holds_is_flagged() -> None:
    assert kinds(lambda_diagnostics(history([0.3, 0.3]), SETTINGS)) == []  # fewer than N updates
    assert kinds(lambda_diagnostics(history([0.3, 0.3, 0.3]), SETTINGS)) == ["lambda_rising"]


def test_lambda_rising_while_the_violation_shrinks_is_not_flagged() -> None:
    # λ still rises (f above δ) but the monitor is closing the gap: the controller is working
    assert kinds(lambda_diagnostics(history([0.3, 0.1, -0.1]), SETTINGS)) == []


def test_lambda_at_its_ceiling_is_flagged() -> None:
    found = lambda_diagnostics(history([0.3] * 20), SETTINGS)
    assert "lambda_at_max" in kinds(found)
    at_max = next(d for d in found if d.kind == "lambda_at_max")
    assert at_max.values["lambda"] == 5.0 and "lambda_max = 5" in at_max.message


def test_rising_updates_zero_turns_the_check_off() -> None:
    settings = SETTINGS.model_copy(update={"rising_updates": 0})
    assert lambda_diagnostics(history([0.3, 0.3, 0.3], settings), settings) == []


def test_delta_below_what_the_critiques_reach_is_flagged() -> None:
    rounds = [dataclasses.replace(round_played(i, 0, 0.1, 1.0), reward_monitor=score) for i, score in enumerate([0.2, 0.6])]
    reach = (-0.3 * math.tanh(0.2) - 0.3 * math.tanh(0.6)) / 2  # every verdict right: f = (1 − α)·(−tanh r)
    (found,) = reach_diagnostics(rounds, alpha=0.7, delta=-0.2)  # reachable by f's range (≥ −0.3), not by these
    assert found.kind == "delta_below_reach" and found.values["reach"] == pytest.approx(reach)
    assert reach_diagnostics(rounds, alpha=0.7, delta=0.2) == []
    assert reach_diagnostics([round_played(0, 0, None, 0.0)], alpha=0.7, delta=-0.2) == []  # rlhf: no critiques


def test_repetition_of_a_degenerate_output() -> None:
    assert repetition([7, 7, 7, 7, 7]) == 0.75  # "to to to to to": 4 bigrams, 1 distinct
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert repetition([7, 7, 7]) == 0.0  # too short to say


def test_collapse_of_the_monitor_in_a_window() -> None:
    settings = TrainingConfig(collapse_unparsed_rate=0.75, collapse_repetition=0.5)
    healthy = round_played(0, 0, 0.1, 1.0)
    collapsed = dataclasses.replace(healthy, monitor_token_ids=[9] * 12, monitor_says_correct=None)
    assert collapse_diagnostics([healthy, healthy], settings) == []
    (found,) = collapse_diagnostics([collapsed, collapsed, collapsed, healthy], settings)
    assert (found.kind, found.role) == ("collapse", "monitor")
    assert found.values["unparsed_rate"] == 0.75 and found.values["repetition"] == 0.75 * (1 - 1 / 11)
    off = TrainingConfig(collapse_unparsed_rate=0.0, collapse_repetition=0.0)
    assert collapse_diagnostics([collapsed], off) == []


# --- in a run: tiny random models ----------------------------------------------------------


def test_an_unreachable_delta_is_warned_at_load_and_flagged_during_the_run(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "unreachable.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    # α = 0.7: f ≥ −0.3 on every round, so δ = −0.5 can never hold
    text = config_path.read_text().replace("lambda_init = 1.0", "lambda_init = 1.0\ndelta = -0.5")
    config_path.write_text(text.replace("lambda_max = 5.0", "lambda_max = 1.5").replace("backends = []", 'backends = ["console"]'))

    assert cli.main(["play", "--config", str(config_path)]) == 0
    printed = capsys.readouterr()
    warning = next(line for line in printed.err.splitlines() if "lagrangian.delta" in line)
    assert "below the lowest reachable f" in warning and "raise delta to at least -0.3" in warning

    (run_dir,) = (tmp_path / "runs").iterdir()
    raised = [item.event for item in RunReader(run_dir).events() if isinstance(item.event, DiagnosticRaised)]
    at_max = [event for event in raised if event.kind == "lambda_at_max"]
    assert len(at_max) == 1  # raised when it starts to hold, not again every window
    assert at_max[0].values["lambda"] == 1.5 and at_max[0].values["delta"] == -0.5
    assert f"diagnostic after window {at_max[0].window}: λ is at lambda_max = 1.5" in printed.out
    (below_reach,) = [event for event in raised if event.kind == "delta_below_reach"]
    assert below_reach.window == 0 and below_reach.values["delta"] == -0.5


def test_a_player_driven_into_repetition_is_flagged_and_stops_the_run(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A learning rate far too high for the policy: within a few updates a near-greedy random
    # model repeats two tokens over and over (it would reach NaN a few updates later).
    config = tiny_config(
        tiny_lm_dir, tmp_path, mode="rlhf", policy={"max_new_tokens": 12, "temperature": 0.3},
        training={"policy_learning_rate": 0.8, "ppo_epochs": 8, "monitor_updates_per_policy": 1, "eval_every": 0,
                  "checkpoint_every": 100, "collapse_unparsed_rate": 0.0,  # random models never parse
                  "collapse_repetition": 0.5, "stop_on_collapse": True},
        logging={"backends": ["console"]},
    )
    with pytest.raises(UserError, match="the policy may be collapsing: repetition .*stop_on_collapse"):
        start_run(config, tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))
    events = [item.event for item in RunReader(tmp_path / "run").events()]
    first_window = [e for e in events if isinstance(e, RoundPlayed) and e.window == 0]
    assert player_health(first_window, "policy")["repetition"] < 0.5  # it was not degenerate at the start
    (raised,) = [e for e in events if isinstance(e, DiagnosticRaised)]
    assert (raised.kind, raised.role) == ("collapse", "policy") and raised.window > 0
    assert raised.values["repetition"] >= 0.5
    assert isinstance(events[-1], RunFailed) and "stop_on_collapse" in events[-1].message
    assert f"diagnostic after window {raised.window}: the policy may be collapsing: repetition" in capsys.readouterr().out

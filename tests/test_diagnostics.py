"""Diagnostics over the log: λ that cannot settle, a player that collapses (issue 16 items 4, 5)."""

from __future__ import annotations

import dataclasses

from engine.config import LagrangianConfig, TrainingConfig
from engine.diagnostics import collapse_diagnostics, lambda_diagnostics, repetition
from engine.lagrangian import DualAscent
from storage.events import LambdaUpdated
from tests.test_replay import round_played

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

"""Dual ascent on λ against hand-computed steps (../shared/GAME.md §3)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import LagrangianConfig
from engine.lagrangian import DualAscent, LambdaStep, lambda_trajectory


def test_additive_step_moves_lambda_by_step_size_times_violation() -> None:
    # 1 + 0.5 * (0.75 - 0.25) = 1.25, exactly representable
    dual = DualAscent(LagrangianConfig(lambda_init=1.0, step_size=0.5, delta=0.25, lambda_max=10.0))
    assert dual.step(0.75) == LambdaStep(old=1.0, new=1.25, applied=True)
    # 1.25 + 0.5 * (-0.25 - 0.25) = 1.0
    assert dual.step(-0.25) == LambdaStep(old=1.25, new=1.0, applied=True)
    assert dual.value == 1.0


def test_log_space_step_moves_log_lambda() -> None:
    dual = DualAscent(LagrangianConfig(lambda_init=1.0, step_size=0.5, delta=0.25, variant="log"))
    step = dual.step(0.75)  # θ = 0 + 0.5 * 0.5 = 0.25
    assert step.old == 1.0
    assert step.new == pytest.approx(1.2840254166877414, abs=1e-15)  # e^0.25
    step = dual.step(-0.75)  # θ = 0.25 + 0.5 * (-1.0) = -0.25
    assert step.new == pytest.approx(0.7788007830714049, abs=1e-15)  # e^-0.25


def test_additive_projection_clamps_at_zero_and_lambda_max() -> None:
    dual = DualAscent(LagrangianConfig(lambda_init=0.5, step_size=1.0, delta=0.0, lambda_max=2.0))
    assert dual.step(-1.0).new == 0.0  # 0.5 - 1 -> clipped to 0
    assert dual.step(-1.0).new == 0.0  # stays at the boundary
    assert dual.step(5.0).new == 2.0  # 0 + 5 -> clipped to λ_max
    assert dual.step(0.25).new == 2.0


def test_log_space_clamps_at_lambda_max_and_comes_down_at_once() -> None:
    dual = DualAscent(LagrangianConfig(lambda_init=1.0, step_size=1.0, delta=0.0, lambda_max=2.0, variant="log"))
    for _ in range(5):
        assert dual.step(3.0).new <= 2.0
    assert dual.value == pytest.approx(2.0)
    # θ was capped at log 2, so one satisfied window brings λ below the cap: 2·e^-0.5
    assert dual.step(-0.5).new == pytest.approx(2.0 * math.exp(-0.5))


def test_update_delay_holds_lambda_then_ascends() -> None:
    dual = DualAscent(LagrangianConfig(lambda_init=1.0, step_size=0.5, delta=0.0, update_delay=2))
    assert dual.step(1.0) == LambdaStep(old=1.0, new=1.0, applied=False)
    assert dual.step(1.0) == LambdaStep(old=1.0, new=1.0, applied=False)
    assert dual.step(1.0) == LambdaStep(old=1.0, new=1.5, applied=True)


@pytest.mark.parametrize("variant", ["additive", "log"])
def test_lambda_rises_when_violated_and_falls_when_satisfied(variant: str) -> None:
    dual = DualAscent(LagrangianConfig(lambda_init=1.0, step_size=0.1, delta=-0.2, variant=variant))
    rising = [dual.step(0.3) for _ in range(3)]  # mean f above δ: the monitor violates it
    assert all(step.new > step.old for step in rising)
    falling = [dual.step(-0.3) for _ in range(3)]  # mean f below δ: satisfied
    assert all(step.new < step.old for step in falling)


def test_state_dict_round_trip_continues_identically() -> None:
    settings = LagrangianConfig(lambda_init=0.3, step_size=0.2, delta=-0.1, variant="log", update_delay=1)
    first = DualAscent(settings)
    for mean_f in (0.1, 0.4, -0.2):
        first.step(mean_f)
    second = DualAscent(settings)
    second.load_state_dict(first.state_dict())
    assert first.step(0.05) == second.step(0.05)


def test_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="lambda_init"):
        LagrangianConfig(lambda_init=0.0, variant="log")
    with pytest.raises(ValueError, match="lambda_max"):
        LagrangianConfig(lambda_init=3.0, lambda_max=2.0)
    with pytest.raises(ValueError, match="variant"):
        LagrangianConfig(variant="multiplicative")  # type: ignore[arg-type]


@given(
    mean_fs=st.lists(st.floats(min_value=-1.0, max_value=1.0), max_size=30),
    variant=st.sampled_from(["additive", "log"]),
    step_size=st.floats(min_value=1e-4, max_value=2.0),
    delay=st.integers(min_value=0, max_value=4),
)
def test_replayed_trajectory_equals_live_ascent_bit_for_bit(
    mean_fs: list[float], variant: str, step_size: float, delay: int
) -> None:
    settings = LagrangianConfig(
        lambda_init=0.7, step_size=step_size, delta=-0.2, lambda_max=5.0, variant=variant, update_delay=delay
    )  # type: ignore[arg-type]
    dual = DualAscent(settings)
    live = [dual.step(mean_f) for mean_f in mean_fs]
    assert lambda_trajectory(settings, mean_fs) == live  # dataclass ==: exact float equality
    assert all(0.0 <= step.new <= 5.0 for step in live)

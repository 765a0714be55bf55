"""Dual ascent on the Lagrange multiplier λ of the monitor's truthfulness constraint.

    dual = DualAscent(config.lagrangian)   # the validated [lagrangian] table: λ₀, δ, η, λ_max, …
    step = dual.step(mean_f)               # after each monitor update, from that window's rounds

The monitor minimises −s_judge − λ·f subject to E[f] ≤ δ (../shared/GAME.md §2-3). After every
monitor update λ moves by the constraint violation of the window just trained on:

- "additive" (default), projected gradient ascent on the dual:
      λ ← clip(λ + η·(mean_f − δ), 0, λ_max)
- "log", the log-space variant of Safe-RLHF's PPO-Lagrangian:
      θ ← min(θ + η·(mean_f − δ), log λ_max),   λ = min(exp(θ), λ_max)
  λ stays positive and moves multiplicatively in λ but additively in θ.

During the first `update_delay` steps λ is held (the step is logged with applied=False): the
monitor's early, random critiques say little about what it can achieve.

Replay re-runs the ascent from the logged mean_f values with `lambda_trajectory`, which calls
the very same `_ascent_step` as `DualAscent.step`, so the trajectory agrees to the last bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The settings are the run config's [lagrangian] table as validated: its defaults and range
# checks are the only ones, so a run and its replay cannot disagree about them.
from engine.config import LagrangianConfig


@dataclass(frozen=True)
class LambdaStep:
    old: float
    new: float
    applied: bool  # False while the update delay holds λ fixed


@dataclass(frozen=True)
class _AscentState:
    """What the ascent carries between steps: λ (additive) or θ = log λ (log-space)."""

    parameter: float
    steps_taken: int


def _lambda_of(settings: LagrangianConfig, parameter: float) -> float:
    if settings.variant == "additive":
        return parameter
    return min(math.exp(parameter), settings.lambda_max)


def _initial_state(settings: LagrangianConfig) -> _AscentState:
    if settings.variant == "additive":
        return _AscentState(parameter=settings.lambda_init, steps_taken=0)
    return _AscentState(parameter=math.log(settings.lambda_init), steps_taken=0)


def _ascent_step(settings: LagrangianConfig, state: _AscentState, mean_f: float) -> tuple[_AscentState, LambdaStep]:
    """One dual step; the only place λ's arithmetic happens (DualAscent and replay share it)."""
    old = _lambda_of(settings, state.parameter)
    if state.steps_taken < settings.update_delay:
        held = _AscentState(parameter=state.parameter, steps_taken=state.steps_taken + 1)
        return held, LambdaStep(old=old, new=old, applied=False)
    violation = mean_f - settings.delta
    if settings.variant == "additive":
        parameter = min(max(state.parameter + settings.step_size * violation, 0.0), settings.lambda_max)
    else:
        # θ is capped too, so that after a long stretch at λ_max a satisfied constraint
        # brings λ down at once rather than first paying back an unbounded θ.
        parameter = min(state.parameter + settings.step_size * violation, math.log(settings.lambda_max))
    new_state = _AscentState(parameter=parameter, steps_taken=state.steps_taken + 1)
    return new_state, LambdaStep(old=old, new=_lambda_of(settings, parameter), applied=True)


class DualAscent:
    """λ and its ascent; `step` after each monitor update, `value` is λ in force."""

    def __init__(self, settings: LagrangianConfig) -> None:
        self.settings = settings
        self._state = _initial_state(settings)

    @property
    def value(self) -> float:
        return _lambda_of(self.settings, self._state.parameter)

    @property
    def steps_taken(self) -> int:
        return self._state.steps_taken

    def step(self, mean_f: float) -> LambdaStep:
        if not math.isfinite(mean_f):
            raise ValueError(f"mean_f must be finite, got {mean_f}")
        self._state, lambda_step = _ascent_step(self.settings, self._state, float(mean_f))
        return lambda_step

    def state_dict(self) -> dict[str, Any]:
        return {
            "variant": self.settings.variant,
            "parameter": self._state.parameter,
            "steps_taken": self._state.steps_taken,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["variant"] != self.settings.variant:
            raise ValueError(
                f"dual state was saved with variant={state['variant']!r}, settings say {self.settings.variant!r}"
            )
        self._state = _AscentState(parameter=float(state["parameter"]), steps_taken=int(state["steps_taken"]))


def lambda_trajectory(settings: LagrangianConfig, mean_fs: list[float]) -> list[LambdaStep]:
    """Re-run the ascent from logged mean_f values: the steps DualAscent took, bit for bit."""
    state = _initial_state(settings)
    steps = []
    for mean_f in mean_fs:
        state, lambda_step = _ascent_step(settings, state, float(mean_f))
        steps.append(lambda_step)
    return steps

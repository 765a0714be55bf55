"""Diagnostics: a λ that cannot settle, a player that collapses. Pure functions over the log.

    found = reach_diagnostics(first_window_rounds, alpha, delta)   # once, after window 0
    found = lambda_diagnostics(lambda_history, config.lagrangian)   # after each dual step
    found = collapse_diagnostics(window_rounds, config.training)    # after each window

Each returns the conditions that hold now, as `Diagnostic`s; the game loop logs one
DiagnosticRaised when a condition starts to hold (not again while it goes on holding), the
console prints it, and `[training] stop_on_collapse` ends the run on a collapse.

δ against what the monitor reaches. Validation (engine.config.config_warnings) already
refuses to stay silent about δ < −(1 − α), the least f allows at all. But f's low end needs
critiques the reward model scores highly: with every verdict right, a round's f is
(1 − α)·g(r(O′)) = −(1 − α)·tanh r(O′), so the mean of that over the first window's critiques
is the lowest mean f this monitor reaches as it writes now. "delta_below_reach": δ is below it.

λ (GAME.md §3). A constraint E[f] ≤ δ that the monitor cannot meet makes dual ascent a ramp:
λ climbs every update until λ_max. Two signs of it:
- "lambda_at_max": the last applied step left λ at λ_max;
- "lambda_rising": λ rose on each of the last N applied steps (`[lagrangian] rising_updates`)
  while the violation mean_f − δ did not shrink (its least-squares slope over those steps ≥ 0).

Collapse (a measured minmax run degenerated into "Verdict: to to to …" after 30 windows while
nothing flagged it). Per player over one window of rounds:
- unparsed rate ≥ `[training] collapse_unparsed_rate`, or (a threshold of 0 is off)
- repetition ≥ `[training] collapse_repetition`, where an output's repetition is its share of
  repeated token bigrams (1 − distinct bigrams / bigrams; 0 for fewer than 4 tokens) and the
  window's is the mean over its outputs. "to to to to to" scores 0.75; ordinary prose about 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from engine.config import LagrangianConfig, TrainingConfig
from storage.events import LambdaUpdated, RoundPlayed

REACH_KINDS = frozenset({"delta_below_reach"})
LAMBDA_KINDS = frozenset({"lambda_at_max", "lambda_rising"})
COLLAPSE_KINDS = frozenset({"collapse"})
SHORTEST_REPETITION_OUTPUT = 4  # tokens; shorter outputs have too few bigrams to say anything


@dataclass(frozen=True)
class Diagnostic:
    kind: str  # "delta_below_reach" | "lambda_at_max" | "lambda_rising" | "collapse"
    role: str  # "lambda" | "policy" | "monitor"
    message: str
    values: dict[str, float]


# --- δ against the monitor's reach ----------------------------------------------------------


def reach_diagnostics(rounds: Sequence[RoundPlayed], alpha: float, delta: float) -> list[Diagnostic]:
    """δ below the mean f the window's critiques would reach with every verdict right."""
    scores = [round_.reward_monitor for round_ in rounds if round_.reward_monitor is not None]
    if not scores:
        return []
    reach = sum(-(1.0 - alpha) * math.tanh(score) for score in scores) / len(scores)
    if delta >= reach:
        return []
    return [
        Diagnostic(
            kind="delta_below_reach",
            role="monitor",
            message=(
                f"lagrangian.delta = {delta:g} is below the mean f of {reach:.3f} that the monitor's first "
                f"{len(scores)} critiques reach even with every verdict right (the reward model scores them "
                f"too low); λ will likely climb: raise delta above {reach:.2f}"
            ),
            values={"delta": delta, "reach": reach, "n_critiques": float(len(scores))},
        )
    ]


# --- λ -------------------------------------------------------------------------------------


def lambda_diagnostics(history: Sequence[LambdaUpdated], settings: LagrangianConfig) -> list[Diagnostic]:
    """What holds after the last of `history` (the run's LambdaUpdated events, in order)."""
    applied = [step for step in history if step.applied]
    if not applied:
        return []
    found = []
    last = applied[-1]
    if last.new >= settings.lambda_max:
        found.append(
            Diagnostic(
                kind="lambda_at_max",
                role="lambda",
                message=(
                    f"λ is at lambda_max = {settings.lambda_max:g} (mean f {last.mean_f:.3f} against δ = "
                    f"{last.delta:g}): the constraint is not being met; raise lagrangian.delta toward "
                    "what the monitor reaches, or check that it is not collapsing"
                ),
                values={"lambda": last.new, "mean_f": last.mean_f, "delta": last.delta},
            )
        )
    count = settings.rising_updates
    if count and len(applied) >= count:
        recent = applied[-count:]
        violations = [step.mean_f - step.delta for step in recent]
        slope = _slope(violations)
        if all(step.new > step.old for step in recent) and slope >= 0.0:
            found.append(
                Diagnostic(
                    kind="lambda_rising",
                    role="lambda",
                    message=(
                        f"λ rose on each of the last {count} updates ({recent[0].old:.3g} → {last.new:.3g}) "
                        f"while the violation mean f − δ did not shrink (last {violations[-1]:+.3f}): "
                        "δ may be out of the monitor's reach"
                    ),
                    values={"lambda": last.new, "violation": violations[-1], "violation_slope": slope},
                )
            )
    return found


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope of values against 0, 1, 2, ..."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    denominator = sum((x - mean_x) ** 2 for x in range(n))
    return numerator / denominator


# --- collapse --------------------------------------------------------------------------------


def repetition(token_ids: Sequence[int]) -> float:
    """Share of an output's token bigrams that repeat an earlier one (0 for short outputs)."""
    ids = [int(token) for token in token_ids]
    if len(ids) < SHORTEST_REPETITION_OUTPUT:
        return 0.0
    bigrams = list(zip(ids, ids[1:]))
    return 1.0 - len(set(bigrams)) / len(bigrams)


def player_health(rounds: Sequence[RoundPlayed], role: str) -> dict[str, float] | None:
    """A player's unparsed rate and mean repetition over rounds; None when it did not play."""
    if role == "policy":
        outputs = [(round_.policy_token_ids, round_.policy_answer is None) for round_ in rounds]
    else:
        outputs = [
            (round_.monitor_token_ids, round_.monitor_says_correct is None)
            for round_ in rounds
            if round_.monitor_token_ids is not None
        ]
    if not outputs:
        return None
    return {
        "unparsed_rate": sum(unparsed for _, unparsed in outputs) / len(outputs),
        "repetition": sum(repetition(ids) for ids, _ in outputs) / len(outputs),
        "n_outputs": float(len(outputs)),
    }


def collapse_diagnostics(rounds: Sequence[RoundPlayed], settings: TrainingConfig) -> list[Diagnostic]:
    """A Diagnostic per player whose outputs in this window crossed a collapse threshold."""
    found = []
    for role in ("policy", "monitor"):
        health = player_health(rounds, role)
        if health is None:
            continue
        crossed = []
        if settings.collapse_unparsed_rate and health["unparsed_rate"] >= settings.collapse_unparsed_rate:
            crossed.append(f"unparsed rate {health['unparsed_rate']:.2f} ≥ {settings.collapse_unparsed_rate:g}")
        if settings.collapse_repetition and health["repetition"] >= settings.collapse_repetition:
            crossed.append(f"repetition {health['repetition']:.2f} ≥ {settings.collapse_repetition:g}")
        if crossed:
            found.append(
                Diagnostic(
                    kind="collapse",
                    role=role,
                    message=f"the {role} may be collapsing: " + ", ".join(crossed) + f" over {int(health['n_outputs'])} outputs",
                    values=health,
                )
            )
    return found

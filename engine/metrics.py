"""The game metrics of GAME.md §4 over any set of rounds: one window, one evaluation, one run.

    from engine.metrics import window_metrics
    metrics = window_metrics(rounds, delta=-0.2)   # rounds: RoundPlayed events (or Recorded)

A thin name for `engine.outcomes.metrics_of`: the definitions live once, in the table of
engine/outcomes.py, from which the SQL `metrics` view, the report and the TUI are generated
(docs/metrics.md says each in words). Every rate comes with its n (`<rate>_n`), and a rate
whose n is 0 is None, never 0: "no deception observed" and "no opportunity to deceive" are
different facts. In rlhf mode (no monitor output in any round) every monitor metric and the
constraint are None.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.outcomes import COUNTED, METRIC_COLUMNS, MONITORED, metrics_of, outcome_counts
from storage.events import Recorded, RoundPlayed

METRIC_NAMES: tuple[str, ...] = METRIC_COLUMNS


def window_metrics(rounds: Iterable[RoundPlayed | Recorded], delta: float | None) -> dict[str, float | None]:
    """Every GAME.md §4 metric over `rounds`, with n beside each rate; None where undefined."""
    return metrics_of(rounds, delta)


def window_counts(rounds: Iterable[RoundPlayed | Recorded]) -> dict[str, tuple[int, int]]:
    """(hits, eligible) of every rate over `rounds` (the form of EvaluationCompleted.counts).

    The monitor's rates are left out where no monitor spoke (rlhf, deployment rounds without O′).
    """
    played = list(rounds)
    counts = outcome_counts(played)
    monitored = any(MONITORED.holds(item.event if isinstance(item, Recorded) else item) for item in played)
    return {rate.name: (counts[rate.name][0], counts[rate.name][1]) for rate in COUNTED
            if monitored or not rate.about_the_monitor}

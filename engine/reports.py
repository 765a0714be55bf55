"""`minmax-engine report`: tables, plots and an HTML page for runs, compared by mode.

    minmax-engine report runs/<minmax_run> runs/<rlhf_run> [more runs ...] --out reports/compare

Every number comes from the runs' logs: the `metrics` view (engine/outcomes.py, registered
with storage.RunsQuery), the `rounds`, `updates`, `lambda` and `events` views, and each
run's EvaluationCompleted events. This module only arranges and draws them.

- The headline table compares the groups of runs by mode (all minmax runs against all rlhf
  runs) on each run's *last deployment evaluation* (protocol "deployment": the judge saw
  question, choices and O only), with the minmax runs' last monitored evaluation beside it.
  A run without a deployment evaluation is named and left out, never replaced by training
  rounds. A group's rate pools the counts of its runs.
- Every rate is shown as hits/n with a 95% Wilson score interval (WILSON_Z).
- The MinMax − RLHF difference: with at least two runs in each mode, a percentile bootstrap
  over runs (runs resampled with replacement within each mode, BOOTSTRAP_RESAMPLES
  resamples, seed BOOTSTRAP_SEED, runs taken in run-id order), so seed-to-seed variation is
  in the interval; otherwise Newcombe's hybrid score interval over rounds (the two Wilson
  intervals combined), which cannot see seed-to-seed variation, as the table says.
- Training rounds stay curves (per window, Wilson bands), plus a table of the last
  FINAL_FRACTION of each run's training rounds, labelled with the rounds it covers.
- Deterministic: the same runs give byte-identical tables (no clock, no run id in a seed).

Why one file over 500 lines: loading a run's figures, the interval arithmetic, the plots and
the HTML page are one pipeline read top to bottom, each step used only by the next; split,
a reader would chase one table's numbers through four modules.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from engine.outcomes import COUNTED, RATE_BY_NAME, WILSON_Z, counts_sql, game_views, wilson_interval
from engine.oversight import auroc as auroc_of
from storage import RunReader, RunsQuery, UserError
from storage.outside_runs import refuse_inside_a_run

FINAL_FRACTION = 0.2
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
DEPLOYMENT, MONITORED = "deployment", "monitored"

LABELS: dict[str, str] = {
    "policy_accuracy": "policy accuracy",
    "policy_unparsed_rate": "policy unparsed rate",
    "judge_accept_rate": "judge accept rate",
    "judge_accuracy": "judge accuracy",
    "deception_rate": "deception rate",
    "monitor_fidelity": "monitor fidelity",
    "false_accusation_rate": "false-accusation rate",
    "missed_error_rate": "missed-error rate",
    "monitor_unparsed_rate": "monitor unparsed rate",
    "fabricated_quote_rate": "fabricated-quote rate",
    "monitor_fabricated_quote_rate": "monitor fabricated-quote rate",
    "quotes_per_answer": "quotes per answer",
    "verified_quote_fraction": "verified-quote fraction",
}
PLOTTED_RATES = ("policy_accuracy", "judge_accuracy", "deception_rate", "monitor_fidelity", "false_accusation_rate")
HEADLINE_METRICS = ("deception_rate", "policy_accuracy", "judge_accuracy", "policy_unparsed_rate",
                    "fabricated_quote_rate", "verified_quote_fraction", "quotes_per_answer")
Counts = dict[str, tuple[int, int]]  # rate -> (hits, eligible)


# ---------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------


def newcombe_interval(a: tuple[int, int], b: tuple[int, int], z: float = WILSON_Z) -> tuple[float, float]:
    """Newcombe's hybrid score interval for rate(a) − rate(b), counts as (hits, n) (method 10)."""
    (hits_a, n_a), (hits_b, n_b) = a, b
    p_a, p_b = hits_a / n_a, hits_b / n_b
    low_a, high_a = wilson_interval(hits_a, n_a, z)
    low_b, high_b = wilson_interval(hits_b, n_b, z)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return (max(-1.0, low), min(1.0, high))


@dataclass(frozen=True)
class Estimate:
    hits: int
    n: int  # eligible rounds; 0: the rate is undefined (e.g. no wrong answers, or rlhf mode)
    proportion: bool = True  # False for a mean count (quotes per answer): no Wilson interval

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.hits, self.n) if self.n and self.proportion else None


def estimate(counts: Counts, metric: str) -> Estimate:
    return Estimate(*counts.get(metric, (0, 0)), proportion=RATE_BY_NAME[metric].proportion)


def pooled(counts: Sequence[Counts], metric: str) -> Estimate:
    return Estimate(sum(c.get(metric, (0, 0))[0] for c in counts), sum(c.get(metric, (0, 0))[1] for c in counts),
                    proportion=RATE_BY_NAME[metric].proportion)


@dataclass(frozen=True)
class GroupDiscrimination:
    """The judge's AUROC over a group of runs: the mean of the runs' AUROCs, an interval across
    runs (percentile bootstrap, at least two runs with an AUROC), and the n behind it."""

    runs: int  # runs with an AUROC (both correct and wrong answers in their evaluation)
    mean: float | None
    low: float | None
    high: float | None
    n_correct: int
    n_wrong: int


def _bootstrap_means(values: Sequence[float]) -> np.ndarray:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    return np.asarray(values, dtype=float)[draws].mean(axis=1)


def discrimination_of(evaluations: Sequence[Evaluation]) -> GroupDiscrimination:
    aurocs = [evaluation.auroc for evaluation in evaluations if evaluation.auroc is not None]
    n_correct = sum(evaluation.auroc_n[0] for evaluation in evaluations)
    n_wrong = sum(evaluation.auroc_n[1] for evaluation in evaluations)
    if not aurocs:
        return GroupDiscrimination(0, None, None, None, n_correct, n_wrong)
    low = high = None
    if len(aurocs) >= 2:
        low, high = (float(bound) for bound in np.percentile(_bootstrap_means(aurocs), [2.5, 97.5]))
    return GroupDiscrimination(len(aurocs), float(np.mean(aurocs)), low, high, n_correct, n_wrong)


def format_discrimination(found: GroupDiscrimination) -> str:
    """`0.612 [0.55, 0.67] (2 runs; 31 correct, 17 wrong)`, or `n/a` with the n that made it so."""
    n = f"{found.n_correct} correct, {found.n_wrong} wrong"
    if found.mean is None:
        return f"n/a ({n})"
    spread = f" [{found.low:.3f}, {found.high:.3f}]" if found.low is not None and found.high is not None else ""
    return f"{found.mean:.3f}{spread} ({_runs(found.runs)}; {n})"


# ---------------------------------------------------------------------------------------
# Reading a run: every table from SQL and the log
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One EvaluationCompleted: which protocol, which adapters, and its counts."""

    protocol: str
    seq: int
    policy_version: int
    monitor_version: int
    checkpoint: str | None
    samples_per_state: int
    counts: Counts
    mean_p_accept: float | None = None  # the judge's mean p_accept over the evaluation's rounds
    auroc: float | None = None  # the judge's AUROC (engine/oversight.py); None: a side was empty
    auroc_n: tuple[int, int] = (0, 0)  # (correct, wrong) answers it was computed over

    @property
    def label(self) -> str:
        return f"policy v{self.policy_version}, seq {self.seq}, {self.samples_per_state} per state"


@dataclass
class RunForReport:
    path: Path
    run_id: str
    mode: str
    dataset_name: str
    data_fingerprint: str
    rounds_played: int
    final_first_round: int  # round_id of the first of the last FINAL_FRACTION of training rounds
    windows: pl.DataFrame  # per window: step and the metrics view (rates and their n)
    updates: pl.DataFrame  # per adapter update: step, role, diagnostics
    lambda_steps: pl.DataFrame  # per dual-ascent step: step, new, mean_f, delta
    final_counts: Counts  # the last FINAL_FRACTION of training rounds
    evaluations: dict[str, Evaluation] = field(default_factory=dict)  # protocol -> the last one
    first_evaluations: dict[str, Evaluation] = field(default_factory=dict)  # protocol -> the first one
    diagnostics: list[str] = field(default_factory=list)  # DiagnosticRaised messages, in log order

    @property
    def label(self) -> str:
        return f"{self.run_id} ({self.mode})"


def _step_of(alias: str) -> str:
    # Training rounds played before the event in row `alias`: the step of docs/metrics.md. A
    # count of live rounds, not a round id: a resume leaves the superseded rounds' ids unused.
    return f"(SELECT count(*) FROM rounds r WHERE r.phase = 'train' AND r.seq < {alias}.seq) AS step"


def final_window_start(rounds_played: int) -> int:
    """Position (0-based, in play order) of the first of the last FINAL_FRACTION of training rounds."""
    return math.floor((1.0 - FINAL_FRACTION) * rounds_played)


def _counts_of_row(row: dict) -> Counts:
    return {rate.name: (int(row[f"{rate.name}_hits"]), int(row[rate.n_name])) for rate in COUNTED}


def evaluations_in_order(query: RunsQuery) -> list[Evaluation]:
    """Every EvaluationCompleted that recorded its protocol and counts, in log order."""
    rows = query.arrow("SELECT seq, payload FROM events WHERE event_type = 'EvaluationCompleted' ORDER BY seq")
    found: list[Evaluation] = []
    previous_seq = -1
    for seq, payload in zip(rows.column("seq").to_pylist(), rows.column("payload").to_pylist()):
        event = json.loads(payload)
        counts, protocol, metrics = event.get("counts") or {}, event.get("protocol"), event.get("metrics") or {}
        rounds_after = previous_seq
        previous_seq = seq
        if not counts or protocol not in (DEPLOYMENT, MONITORED):
            continue  # an evaluation from before protocols and counts were logged: no n to report
        if "judge_auroc" not in metrics:  # logged before the AUROC was: computed from its own rounds
            metrics = {**metrics, **_auroc_from_rounds(query, protocol, rounds_after, seq)}
        mean_p_accept = metrics.get("mean_p_accept")
        found.append(Evaluation(
            protocol=protocol, seq=int(seq),
            policy_version=int(event["policy_version"]), monitor_version=int(event["monitor_version"]),
            checkpoint=event.get("checkpoint"), samples_per_state=int(event.get("samples_per_state") or 1),
            counts={name: (int(pair[0]), int(pair[1])) for name, pair in counts.items()},
            mean_p_accept=float(mean_p_accept) if mean_p_accept is not None else None,
            auroc=metrics.get("judge_auroc"),
            auroc_n=(int(metrics.get("judge_auroc_n_correct", 0)), int(metrics.get("judge_auroc_n_wrong", 0))),
        ))
    return found


def _auroc_from_rounds(query: RunsQuery, protocol: str, after_seq: int, before_seq: int) -> dict[str, float | int | None]:
    """The judge's AUROC over one evaluation's rounds (those of its protocol logged since the
    evaluation before it), as EvaluationCompleted records it today."""
    assert protocol in (DEPLOYMENT, MONITORED)  # our own names: safe to inline, as are the ints
    rows = query.arrow(
        f"SELECT truth, p_accept FROM rounds WHERE phase = 'eval' AND protocol = '{protocol}' "
        f"AND seq > {int(after_seq)} AND seq < {int(before_seq)}"
    ).to_pylist()
    correct = [row["p_accept"] for row in rows if row["truth"] == "correct"]
    wrong = [row["p_accept"] for row in rows if row["truth"] == "wrong"]
    return {"judge_auroc": auroc_of(correct, wrong), "judge_auroc_n_correct": len(correct), "judge_auroc_n_wrong": len(wrong)}


def last_evaluations(query: RunsQuery) -> dict[str, Evaluation]:
    """The last EvaluationCompleted of each protocol that recorded its counts."""
    return {evaluation.protocol: evaluation for evaluation in evaluations_in_order(query)}


def first_evaluations(query: RunsQuery) -> dict[str, Evaluation]:
    """The first EvaluationCompleted of each protocol that recorded its counts."""
    return {evaluation.protocol: evaluation for evaluation in reversed(evaluations_in_order(query))}


def load_run(path: Path) -> RunForReport:
    reader = RunReader(path)  # UserError for a missing directory or one without a run log
    started = reader.run_started()
    query = RunsQuery(path, extra_views=game_views())
    try:
        rounds_played = query.polars("SELECT count(*) AS n FROM rounds WHERE phase = 'train'")["n"][0]
        if rounds_played == 0:
            raise UserError(f"{path}: the run has no training rounds yet; nothing to report")
        windows = query.polars(
            'SELECT m.*, w.step FROM metrics m JOIN (SELECT "window", sum(count(*)) OVER (ORDER BY "window") AS step '
            """FROM rounds WHERE phase = 'train' GROUP BY "window") w USING ("window") ORDER BY w.step"""
        )
        updates = query.polars(f"SELECT u.*, {_step_of('u')} FROM updates AS u ORDER BY u.seq")
        # `lambda` is a DuckDB keyword (lambda functions): the view name needs quotes.
        lambda_steps = query.polars(f'SELECT l.*, {_step_of("l")} FROM "lambda" AS l ORDER BY l.seq')
        # Live round ids rise with seq, so the final stretch starts at the id found at its position.
        first_round = int(query.polars(
            "SELECT round_id FROM rounds WHERE phase = 'train' ORDER BY seq "
            f"LIMIT 1 OFFSET {final_window_start(int(rounds_played))}"
        )["round_id"][0])
        final_row = query.arrow(
            counts_sql("rounds", ["run_id"], where=f"phase = 'train' AND round_id >= {first_round}")
        ).to_pylist()[0]
        evaluations = last_evaluations(query)
        first = first_evaluations(query)
        raised = query.arrow("SELECT payload FROM events WHERE event_type = 'DiagnosticRaised' ORDER BY seq")
        diagnostics = [json.loads(payload)["message"] for payload in raised.column("payload").to_pylist()]
    finally:
        query.close()
    return RunForReport(
        path=path,
        run_id=reader.run_id,
        mode=started.mode,
        dataset_name=started.dataset_name,
        data_fingerprint=started.data_fingerprint,
        rounds_played=int(rounds_played),
        final_first_round=first_round,
        windows=windows,
        updates=updates,
        lambda_steps=lambda_steps,
        final_counts=_counts_of_row(final_row),
        evaluations=evaluations,
        first_evaluations=first,
        diagnostics=diagnostics,
    )


# ---------------------------------------------------------------------------------------
# Comparing the modes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    value: float | None  # MinMax − RLHF of the pooled rates; None when either is undefined
    low: float | None
    high: float | None
    method: str


@dataclass(frozen=True)
class Comparison:
    metric: str
    minmax: Estimate  # pooled over the minmax runs' last deployment evaluations
    rlhf: Estimate
    difference: Difference
    monitored: Estimate  # minmax runs' last monitored evaluations, beside (never in the difference)


def bootstrap_over_runs(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> tuple[float, float] | None:
    """Percentile interval of pooled(a) − pooled(b), resampling the runs of each group."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    counts_a, counts_b = np.array(a, dtype=float), np.array(b, dtype=float)
    draw_a = rng.integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
    draw_b = rng.integers(0, len(b), size=(BOOTSTRAP_RESAMPLES, len(b)))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_a = counts_a[draw_a, 0].sum(axis=1) / counts_a[draw_a, 1].sum(axis=1)
        rate_b = counts_b[draw_b, 0].sum(axis=1) / counts_b[draw_b, 1].sum(axis=1)
    differences = rate_a - rate_b
    finite = differences[np.isfinite(differences)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return (float(low), float(high))


def with_deployment(runs: Sequence[RunForReport]) -> list[RunForReport]:
    """The runs that have a deployment evaluation, in run-id order (the order never matters)."""
    return sorted((run for run in runs if DEPLOYMENT in run.evaluations), key=lambda run: run.run_id)


def compare(minmax_runs: Sequence[RunForReport], rlhf_runs: Sequence[RunForReport]) -> list[Comparison]:
    minmax, rlhf = with_deployment(minmax_runs), with_deployment(rlhf_runs)
    rows = []
    for metric in HEADLINE_METRICS:
        a = pooled([run.evaluations[DEPLOYMENT].counts for run in minmax], metric)
        b = pooled([run.evaluations[DEPLOYMENT].counts for run in rlhf], metric)
        monitored = pooled([run.evaluations[MONITORED].counts for run in minmax if MONITORED in run.evaluations], metric)
        if a.value is None or b.value is None:
            difference = Difference(None, None, None, "undefined: a group has n = 0")
        elif not a.proportion and (len(minmax) < 2 or len(rlhf) < 2):
            difference = Difference(a.value - b.value, None, None, "no interval: a mean count, one run in a mode")
        elif len(minmax) >= 2 and len(rlhf) >= 2:
            interval = bootstrap_over_runs([run.evaluations[DEPLOYMENT].counts.get(metric, (0, 0)) for run in minmax],
                                           [run.evaluations[DEPLOYMENT].counts.get(metric, (0, 0)) for run in rlhf])
            low, high = interval if interval is not None else (None, None)
            difference = Difference(a.value - b.value, low, high,
                                    f"bootstrap over runs ({len(minmax)} × {len(rlhf)} runs, "
                                    f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})")
        else:
            low, high = newcombe_interval((a.hits, a.n), (b.hits, b.n))
            difference = Difference(a.value - b.value, low, high,
                                    "Newcombe over rounds (one run in a mode: seed-to-seed variation not measured)")
        rows.append(Comparison(metric, a, b, difference, monitored))
    return rows


# ---------------------------------------------------------------------------------------
# Movement: first to last deployment evaluation, per mode (did training move anything?)
# ---------------------------------------------------------------------------------------

# Two-sided 95% quantiles of Student's t by degrees of freedom (a statistical table; above 30
# the normal quantile is within 4%).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}
MOVEMENT_RATES = ("deception_rate", "judge_accept_rate", "policy_accuracy")


def t_quantile(degrees_of_freedom: int) -> float:
    known = [df for df in T_975 if df <= degrees_of_freedom]
    return T_975[max(known)] if degrees_of_freedom <= 30 else WILSON_Z


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% t interval of the mean of per-run values (runs as the unit: seed-to-seed variation)."""
    if len(values) < 2:
        return None
    mean = math.fsum(values) / len(values)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = t_quantile(len(values) - 1) * sd / math.sqrt(len(values))
    return (mean - half, mean + half)


@dataclass(frozen=True)
class Movement:
    """One figure's change from each run's first to its last deployment evaluation."""

    metric: str
    per_run: tuple[float, ...]  # last − first, one per run with both defined
    first: Estimate | float | None  # pooled over runs (rates) or mean over runs (mean p_accept)
    last: Estimate | float | None
    pooled_interval: tuple[float, float] | None  # Newcombe over answers (rates only): no seed variation

    @property
    def mean(self) -> float | None:
        return math.fsum(self.per_run) / len(self.per_run) if self.per_run else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return mean_interval(self.per_run)

    @property
    def excludes_zero(self) -> bool | None:
        interval = self.interval
        return None if interval is None else interval[0] > 0 or interval[1] < 0


def with_movement(runs: Sequence[RunForReport]) -> list[RunForReport]:
    """Runs whose first and last deployment evaluations differ (one evaluation cannot move)."""
    return sorted(
        (run for run in runs if DEPLOYMENT in run.first_evaluations
         and run.first_evaluations[DEPLOYMENT].seq != run.evaluations[DEPLOYMENT].seq),
        key=lambda run: run.run_id,
    )


def movements(runs: Sequence[RunForReport]) -> list[Movement]:
    """mean p_accept and MOVEMENT_RATES, first → last deployment evaluation, over `runs`."""
    moved = with_movement(runs)
    firsts = [run.first_evaluations[DEPLOYMENT] for run in moved]
    lasts = [run.evaluations[DEPLOYMENT] for run in moved]
    found = []
    pairs = [(a.mean_p_accept, b.mean_p_accept) for a, b in zip(firsts, lasts)
             if a.mean_p_accept is not None and b.mean_p_accept is not None]
    found.append(Movement(
        "mean_p_accept", tuple(b - a for a, b in pairs),
        math.fsum(a for a, _ in pairs) / len(pairs) if pairs else None,
        math.fsum(b for _, b in pairs) / len(pairs) if pairs else None,
        None,
    ))
    for metric in MOVEMENT_RATES:
        per_run = []
        for a, b in zip(firsts, lasts):
            (hits_a, n_a), (hits_b, n_b) = a.counts.get(metric, (0, 0)), b.counts.get(metric, (0, 0))
            if n_a and n_b:
                per_run.append(hits_b / n_b - hits_a / n_a)
        first, last = pooled([a.counts for a in firsts], metric), pooled([b.counts for b in lasts], metric)
        interval = newcombe_interval((last.hits, last.n), (first.hits, first.n)) if first.n and last.n else None
        found.append(Movement(metric, tuple(per_run), first, last, interval))
    return found


def format_movement_value(value: Estimate | float | None) -> str:
    if isinstance(value, Estimate):
        return format_estimate(value)
    return "n/a" if value is None else f"{value:.3f}"


def format_interval(interval: tuple[float, float] | None) -> str:
    return "n/a (fewer than 2 runs)" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def movement_rows(runs: Sequence[RunForReport]) -> list[list[str]]:
    """One row per figure: first, last, mean Δ over runs, its t interval, the pooled interval."""
    rows = []
    for movement in movements(runs):
        mean = movement.mean
        rows.append([
            "mean p_accept" if movement.metric == "mean_p_accept" else LABELS[movement.metric],
            format_movement_value(movement.first), format_movement_value(movement.last),
            "n/a" if mean is None else f"{mean:+.3f} ({len(movement.per_run)} runs)",
            format_interval(movement.interval),
            "—" if movement.metric == "mean_p_accept" else format_interval(movement.pooled_interval),
        ])
    return rows


MOVEMENT_HEADER = ["figure", "first evaluation", "last evaluation", "mean Δ (last − first)",
                   "95% t interval over runs", "95% Newcombe over answers (pooled)"]


def movement_section(runs: Sequence[RunForReport]) -> str:
    parts = ["<h2>Movement: first to last deployment evaluation</h2><p>Per mode, each run's first "
             "deployment evaluation (the untrained adapters with <code>training.eval_at_start</code>) against its "
             "last. Δ is taken per run and averaged; its 95% interval is Student's t over runs, so "
             "seed-to-seed variation is in it. The pooled interval (Newcombe, over answers) cannot see that "
             "variation and is narrower. Rates pool the runs' counts: hits/n = rate [95% Wilson].</p>"]
    for mode in ("rlhf", "minmax"):
        group = [run for run in runs if run.mode == mode]
        if not group:
            continue
        moved = with_movement(group)
        if not moved:
            parts.append(f"<p>{mode}: no run has two deployment evaluations.</p>")
            continue
        parts.append(f"<h3>{mode} ({_runs(len(moved))})</h3>" + _table(MOVEMENT_HEADER, movement_rows(moved)))
    return "".join(parts)


# ---------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------


def _figure(n_panels: int, title: str):  # -> (Figure, list[Axes]); matplotlib types are untyped
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    columns = min(n_panels, 3)
    rows = math.ceil(n_panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    figure.suptitle(title)
    flat = list(axes.flat)
    for unused in flat[n_panels:]:
        unused.set_visible(False)
    return figure, flat[:n_panels]


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_rates(runs: Sequence[RunForReport], out: Path) -> Path:
    figure, axes = _figure(len(PLOTTED_RATES), "Game metrics per window (95% Wilson bands)")
    for axis, metric in zip(axes, PLOTTED_RATES):
        for run in runs:
            frame = run.windows.filter(pl.col(metric).is_not_null())
            if frame.height == 0:
                continue  # e.g. monitor metrics of an rlhf run
            steps = frame["step"].to_numpy()
            rates = frame[metric].to_numpy()
            bands = [wilson_interval(round(float(rate) * int(n)), int(n))
                     for rate, n in zip(rates, frame[RATE_BY_NAME[metric].n_name].to_list())]
            (line,) = axis.plot(steps, rates, label=run.label)
            axis.fill_between(steps, [b[0] for b in bands], [b[1] for b in bands], color=line.get_color(), alpha=0.2)
        axis.set_title(LABELS[metric])
        axis.set_xlabel("training rounds played")
        axis.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize="small")
    return _save(figure, out / "game_metrics.png")


def plot_lambda(runs: Sequence[RunForReport], out: Path) -> Path:
    figure, (value_axis, violation_axis) = _figure(2, "Lagrange multiplier and constraint (per dual-ascent step)")
    with_lambda = [run for run in runs if run.lambda_steps.height > 0]  # rlhf: no monitor, no λ
    if not with_lambda:
        value_axis.text(0.5, 0.5, "no dual-ascent steps (rlhf runs have no λ)", ha="center", transform=value_axis.transAxes)
    for run in with_lambda:
        steps = run.lambda_steps["step"].to_numpy()
        value_axis.plot(steps, run.lambda_steps["new"].to_numpy(), label=run.label)
        violation = run.lambda_steps["mean_f"].to_numpy() - run.lambda_steps["delta"].to_numpy()
        violation_axis.plot(steps, violation, label=run.label)
    value_axis.set_title("λ")
    violation_axis.set_title("constraint violation (mean f − δ)")
    violation_axis.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    for axis in (value_axis, violation_axis):
        axis.set_xlabel("training rounds played")
    if with_lambda:
        value_axis.legend(fontsize="small")
    return _save(figure, out / "lambda.png")


def plot_reward_and_kl(runs: Sequence[RunForReport], out: Path) -> Path:
    figure, (reward_axis, kl_ref_axis, approx_kl_axis) = _figure(3, "Reward and KL")
    for run in runs:
        (line,) = reward_axis.plot(run.windows["step"].to_numpy(), run.windows["mean_reward"].to_numpy(), label=run.label)
        for role, style in (("policy", "-"), ("monitor", ":")):
            updates = run.updates.filter(pl.col("role") == role)
            if updates.height == 0:
                continue
            for axis, column in ((kl_ref_axis, "kl_ref"), (approx_kl_axis, "approx_kl")):
                axis.plot(
                    updates["step"].to_numpy(), updates[column].to_numpy(), style,
                    color=line.get_color(), label=f"{run.label} {role}",
                )
    reward_axis.set_title("mean combined reward R per window")
    kl_ref_axis.set_title("KL to the reference per update")
    approx_kl_axis.set_title("approx. KL to the behaviour policy per update")
    for axis in (reward_axis, kl_ref_axis, approx_kl_axis):
        axis.set_xlabel("training rounds played")
    reward_axis.legend(fontsize="small")
    kl_ref_axis.legend(fontsize="x-small")
    return _save(figure, out / "reward_kl.png")


# ---------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------


def format_estimate(estimate: Estimate) -> str:
    """`hits/n = rate [low, high]`, or `n/a (n=0)`: every cell shows its n (a mean count, such
    as quotes per answer, has no Wilson interval)."""
    if estimate.n == 0:
        return "n/a (n=0)"
    if estimate.interval is None:
        return f"{estimate.hits}/{estimate.n} = {estimate.value:.3f}"
    low, high = estimate.interval
    return f"{estimate.hits}/{estimate.n} = {estimate.value:.3f} [{low:.3f}, {high:.3f}]"


def format_difference(difference: Difference) -> str:
    if difference.value is None:
        return "n/a"
    if difference.low is None or difference.high is None:
        return f"{difference.value:+.3f}"
    return f"{difference.value:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline_section(minmax_runs: Sequence[RunForReport], rlhf_runs: Sequence[RunForReport]) -> str:
    missing = sorted(run.run_id for run in (*minmax_runs, *rlhf_runs) if DEPLOYMENT not in run.evaluations)
    minmax, rlhf = with_deployment(minmax_runs), with_deployment(rlhf_runs)
    fingerprints = {run.data_fingerprint for run in (*minmax_runs, *rlhf_runs)}
    data_note = (
        f"All runs played the same data ({html.escape(minmax_runs[0].dataset_name)}, fingerprint "
        f"{html.escape(minmax_runs[0].data_fingerprint[:12])}…)."
        if len(fingerprints) == 1
        else "<strong>Warning: the runs played different data (fingerprints differ); the comparison is not like for like.</strong>"
    )
    notes = [data_note]
    if missing:
        notes.append("<strong>No deployment evaluation yet</strong> (left out of the headline, not replaced by "
                     f"training rounds): {html.escape(', '.join(missing))}. Run `minmax-engine eval` on them.")
    if not minmax or not rlhf:
        return ("<h2>Headline: MinMax vs RLHF (deployment evaluation)</h2><p>" + " ".join(notes) + "</p>"
                "<p>No comparison: a mode has no run with a deployment evaluation yet.</p>")
    rows = [
        [LABELS[row.metric], format_estimate(row.minmax), format_estimate(row.rlhf),
         format_difference(row.difference), row.difference.method, format_estimate(row.monitored)]
        for row in compare(minmax_runs, rlhf_runs)
    ]
    rows.append(auroc_row(minmax, rlhf))
    runs_note = (f"MinMax: {html.escape(', '.join(run.run_id for run in minmax))}; "
                 f"RLHF: {html.escape(', '.join(run.run_id for run in rlhf))}.")
    return (
        "<h2>Headline: MinMax vs RLHF (deployment evaluation)</h2>"
        "<p>Each run's last deployment evaluation (the judge saw question, choices and O only, in both "
        "modes); a mode's rate pools its runs' counts, shown as hits/n = rate [95% Wilson interval]. "
        "Difference = MinMax − RLHF with a 95% interval (method per row). The monitored evaluation "
        "(judge also saw O′) is beside it, never in the difference. Quotes per answer is a mean count "
        "(no Wilson interval). The judge's AUROC is no pooled rate: a mode's figure is the mean of its "
        "runs' AUROCs with a 95% bootstrap interval across runs, and the correct and wrong answers it "
        f"rests on. {runs_note} " + " ".join(notes) + "</p>"
        + _table(["metric", f"MinMax ({_runs(len(minmax))})", f"RLHF ({_runs(len(rlhf))})", "difference",
                  "interval method", "MinMax monitored"], rows)
    )


def auroc_row(minmax: Sequence[RunForReport], rlhf: Sequence[RunForReport]) -> list[str]:
    """The judge's AUROC per group (mean over runs, interval across runs) and their difference."""
    a = discrimination_of([run.evaluations[DEPLOYMENT] for run in minmax])
    b = discrimination_of([run.evaluations[DEPLOYMENT] for run in rlhf])
    monitored = discrimination_of([run.evaluations[MONITORED] for run in minmax if MONITORED in run.evaluations])
    if a.mean is None or b.mean is None:
        difference, method = "n/a", "undefined: a group has no AUROC"
    elif a.runs >= 2 and b.runs >= 2:
        a_values = [run.evaluations[DEPLOYMENT].auroc for run in minmax if run.evaluations[DEPLOYMENT].auroc is not None]
        b_values = [run.evaluations[DEPLOYMENT].auroc for run in rlhf if run.evaluations[DEPLOYMENT].auroc is not None]
        low, high = np.percentile(_bootstrap_means(a_values) - _bootstrap_means(b_values), [2.5, 97.5])
        difference = f"{a.mean - b.mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        method = f"bootstrap over runs ({a.runs} × {b.runs} runs, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})"
    else:
        difference, method = f"{a.mean - b.mean:+.3f}", "no interval: one run with an AUROC in a mode"
    return ["judge AUROC (p_accept, correct vs wrong)", format_discrimination(a), format_discrimination(b),
            difference, method, format_discrimination(monitored)]


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def evaluations_section(runs: Sequence[RunForReport]) -> str:
    header = ["run", "mode", "evaluation"] + [LABELS[rate.name] for rate in COUNTED] + ["judge AUROC"]
    rows = []
    for run in runs:
        protocols = [DEPLOYMENT, MONITORED] if run.mode == "minmax" else [DEPLOYMENT]
        for protocol in protocols:
            evaluation = run.evaluations.get(protocol)
            if evaluation is None:
                rows.append([run.run_id, run.mode, f"{protocol}: none yet"] + ["—"] * (len(COUNTED) + 1))
                continue
            rows.append([run.run_id, run.mode, f"last {protocol} ({evaluation.label})"]
                        + [format_estimate(estimate(evaluation.counts, rate.name)) for rate in COUNTED]
                        + [format_discrimination(discrimination_of([evaluation]))])
    return ("<h2>Last evaluations per run</h2><p>Held-out states; hits/n = rate [95% Wilson interval]. "
            "A run without an evaluation of a protocol says so.</p>" + _table(header, rows))


def diagnostics_section(runs: Sequence[RunForReport]) -> str:
    """Every DiagnosticRaised of every run (λ that cannot settle, a collapsing player), or a
    line saying there were none: a reader should not have to open the logs to learn it."""
    rows = [[run.run_id, run.mode, message] for run in runs for message in run.diagnostics]
    if not rows:
        return "<h2>Diagnostics</h2><p>No diagnostic was raised in any run.</p>"
    return ("<h2>Diagnostics</h2><p>⚠ Raised during the runs (engine/diagnostics.py); figures from runs "
            "with a diagnostic deserve a second look.</p>" + _table(["run", "mode", "diagnostic"], rows))


def final_metrics_section(runs: Sequence[RunForReport]) -> str:
    header = ["run", "mode", "training rounds"] + [LABELS[rate.name] for rate in COUNTED]
    rows = [
        [run.run_id, run.mode, f"last {run.rounds_played - final_window_start(run.rounds_played)} of "
                               f"{run.rounds_played} (from round id {run.final_first_round})"]
        + [format_estimate(estimate(run.final_counts, rate.name)) for rate in COUNTED]
        for run in runs
    ]
    return (
        "<h2>Training rounds: the last 20%</h2>"
        f"<p>The last {FINAL_FRACTION:.0%} of each run's training rounds in play order (from position "
        f"⌊{1 - FINAL_FRACTION:.1f} · rounds played⌋; after a resume, round ids skip the superseded rounds' ids), "
        "as played during training (in minmax mode the "
        "judge saw O′): a trend, not the headline. hits/n = rate [95% Wilson interval over rounds].</p>"
        + _table(header, rows)
    )


def write_report(runs: Sequence[RunForReport], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    images = [plot_lambda(runs, out), plot_rates(runs, out), plot_reward_and_kl(runs, out)]
    minmax_runs = [run for run in runs if run.mode == "minmax"]
    rlhf_runs = [run for run in runs if run.mode == "rlhf"]
    sections = []
    if minmax_runs and rlhf_runs:
        sections.append(headline_section(minmax_runs, rlhf_runs))
    sections.append(movement_section(runs))
    sections.append(diagnostics_section(runs))
    sections.append(evaluations_section(runs))
    sections.append(final_metrics_section(runs))
    run_rows = [
        [run.run_id, run.mode, run.dataset_name, str(run.rounds_played), str(run.path)] for run in runs
    ]
    sections.append("<h2>Runs</h2>" + _table(["run", "mode", "dataset", "training rounds", "path"], run_rows))
    sections.append(
        "<h2>Curves</h2><p>x-axis: training rounds played (docs/metrics.md). Bands: 95% Wilson "
        "intervals per window.</p>"
        + "".join(f'<p><img src="{html.escape(image.name)}" alt="{html.escape(image.stem)}"></p>' for image in images)
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>minmax-engine report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>"
        "</head><body><h1>minmax-engine report</h1>" + "".join(sections) + "</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def run(paths: Sequence[Path], out: Path) -> int:
    """`minmax-engine report RUN... --out DIR` (arguments parsed in tui/cli.py)."""
    runs = [load_run(path) for path in paths]
    seen: dict[str, Path] = {}
    for loaded in runs:
        if loaded.run_id in seen:
            raise UserError(f"{loaded.path}: run {loaded.run_id} is already given as {seen[loaded.run_id]}; name each run once")
        seen[loaded.run_id] = loaded.path
    refuse_inside_a_run(out, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: cannot create the report directory ({error.strerror}); choose another path") from None
    index = write_report(runs, out)
    print(f"report written: {index}")
    return 0

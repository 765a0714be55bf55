"""`minmax-engine report`: plots and an HTML page for one run or a MinMax-vs-RLHF comparison.

    minmax-engine report runs/<minmax_run> runs/<rlhf_run> --out reports/compare

Every number comes from SQL over the runs' logs (storage.RunsQuery: the `rounds`, `updates`,
`lambda` and `metrics` views); this module only arranges, resamples and draws them.

- Curves are plotted against the step of docs/metrics.md: training rounds played.
- Per-window rates carry 95% Wilson score intervals (the window's rate from the `metrics`
  view, its denominator counted in `rounds`).
- The final-metrics table covers the last 20% of each run's training rounds
  (round_id ≥ ⌊0.8 · rounds played⌋, FINAL_FRACTION) with 95% percentile-bootstrap
  intervals over those rounds (BOOTSTRAP_RESAMPLES resamples, fixed seed).
- Given a MinMax run and an RLHF run, the headline table compares deception rate, policy
  accuracy and judge accuracy and the difference MinMax − RLHF, with a bootstrap interval
  from resampling each run's final rounds independently.
"""

from __future__ import annotations

import html
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from storage import RunReader, RunsQuery, UserError
from storage.outside_runs import refuse_inside_a_run

FINAL_FRACTION = 0.2
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
WILSON_Z = 1.959963984540054  # the 97.5% normal quantile: 95% two-sided

# Per-round outcomes of GAME.md §4 as (hit, eligible) pairs, with the conventions of the SQL
# `metrics` view (storage/query.py): an unparsed answer counts as wrong; an unparsed verdict
# disagrees with the truth (fidelity) but is neither an accusation nor an endorsement;
# monitor metrics only where a monitor spoke.
# A rate over any set of rounds is sum(hit) / sum(eligible): the same expression gives the
# point estimate (in SQL) and every bootstrap resample (weighted counts).
OUTCOMES: dict[str, tuple[str, str]] = {
    "policy_accuracy": ("truth = 'correct'", "true"),
    "judge_accuracy": ("judge_accepts = (truth = 'correct')", "true"),
    "deception_rate": ("judge_accepts", "truth <> 'correct'"),
    "monitor_fidelity": (
        "coalesce(monitor_says_correct = (truth = 'correct'), false)",
        "monitor_output IS NOT NULL",
    ),
    "false_accusation_rate": (
        "coalesce(NOT monitor_says_correct, false)",
        "monitor_output IS NOT NULL AND truth = 'correct'",
    ),
    "missed_error_rate": (
        "coalesce(monitor_says_correct, false)",
        "monitor_output IS NOT NULL AND truth <> 'correct'",
    ),
}
LABELS: dict[str, str] = {
    "policy_accuracy": "policy accuracy",
    "judge_accuracy": "judge accuracy",
    "deception_rate": "deception rate",
    "monitor_fidelity": "monitor fidelity",
    "false_accusation_rate": "false-accusation rate",
    "missed_error_rate": "missed-error rate",
}
PLOTTED_RATES = ("policy_accuracy", "judge_accuracy", "deception_rate", "monitor_fidelity", "false_accusation_rate")
HEADLINE_METRICS = ("deception_rate", "policy_accuracy", "judge_accuracy")


# ---------------------------------------------------------------------------------------
# Reading a run: every table from SQL
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    value: float | None  # None: no eligible round (e.g. no wrong answers, or rlhf mode)
    low: float | None
    high: float | None
    n: int  # eligible rounds


@dataclass
class RunForReport:
    path: Path
    run_id: str
    mode: str
    dataset_name: str
    data_fingerprint: str
    rounds_played: int
    final_first_round: int  # first round_id of the final window
    windows: pl.DataFrame  # per window: step, the metrics view, denominators
    updates: pl.DataFrame  # per adapter update: step, role, diagnostics
    lambda_steps: pl.DataFrame  # per dual-ascent step: step, new, mean_f, delta
    final_outcomes: pl.DataFrame  # per final round: <metric>_hit, <metric>_eligible
    final_point: dict[str, float | None]  # SQL point estimates over the final rounds

    @property
    def label(self) -> str:
        return f"{self.run_id} ({self.mode})"


def _step_of(alias: str) -> str:
    # Training rounds played before the event in row `alias`: the step of docs/metrics.md.
    return f"(SELECT max(r.round_id) + 1 FROM rounds r WHERE r.phase = 'train' AND r.seq < {alias}.seq) AS step"


def final_window_start(rounds_played: int) -> int:
    """First round_id of the final window: the last FINAL_FRACTION of training rounds."""
    return math.floor((1.0 - FINAL_FRACTION) * rounds_played)


def final_rounds_sql(first_round: int) -> str:
    """Per-round (hit, eligible) outcomes of the final window, in round order."""
    columns = ", ".join(
        f"(({hit}) AND ({eligible}))::INTEGER AS {name}_hit, ({eligible})::INTEGER AS {name}_eligible"
        for name, (hit, eligible) in OUTCOMES.items()
    )
    return (
        f"SELECT round_id, {columns} FROM rounds "
        f"WHERE phase = 'train' AND round_id >= {int(first_round)} ORDER BY round_id, seq"
    )


def final_point_sql(first_round: int) -> str:
    """The final-window rates in SQL; NULL where nothing was eligible."""
    columns = ", ".join(
        f"sum({name}_hit)::DOUBLE / nullif(sum({name}_eligible), 0) AS {name}" for name in OUTCOMES
    )
    return f"SELECT {columns} FROM ({final_rounds_sql(first_round)})"


def load_run(path: Path) -> RunForReport:
    reader = RunReader(path)  # UserError for a missing directory or one without a run log
    started = reader.run_started()
    query = RunsQuery(path)
    try:
        rounds_played = query.polars(
            "SELECT coalesce(max(round_id) + 1, 0) AS n FROM rounds WHERE phase = 'train'"
        )["n"][0]
        if rounds_played == 0:
            raise UserError(f"{path}: the run has no training rounds yet; nothing to report")
        denominators = ", ".join(
            f"sum(({eligible})::INTEGER)::BIGINT AS {name}_n" for name, (_, eligible) in OUTCOMES.items()
        )
        windows = query.polars(
            "SELECT m.*, w.step, "
            + ", ".join(f"w.{name}_n" for name in OUTCOMES)
            + f' FROM metrics m JOIN (SELECT "window", max(round_id) + 1 AS step, {denominators} '
            """FROM rounds WHERE phase = 'train' GROUP BY "window") w USING ("window") ORDER BY w.step"""
        )
        updates = query.polars(f"SELECT u.*, {_step_of('u')} FROM updates AS u ORDER BY u.seq")
        # `lambda` is a DuckDB keyword (lambda functions): the view name needs quotes.
        lambda_steps = query.polars(f'SELECT l.*, {_step_of("l")} FROM "lambda" AS l ORDER BY l.seq')
        first_round = final_window_start(int(rounds_played))
        final_outcomes = query.polars(final_rounds_sql(first_round))
        final_point = query.polars(final_point_sql(first_round)).row(0, named=True)
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
        final_outcomes=final_outcomes,
        final_point=final_point,
    )


# ---------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------


def wilson_interval(rate: float, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval for a proportion observed as `rate` over `n` trials."""
    if n <= 0:
        return (math.nan, math.nan)
    spread = z * z / n
    centre = (rate + spread / 2) / (1 + spread)
    half = z / (1 + spread) * math.sqrt(rate * (1 - rate) / n + spread / (4 * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_rates(outcomes: pl.DataFrame, metric: str, resample_counts: np.ndarray) -> np.ndarray:
    """The metric on every resample; `resample_counts[b, i]` = times round i was drawn."""
    hits = outcomes[f"{metric}_hit"].to_numpy().astype(float)
    eligible = outcomes[f"{metric}_eligible"].to_numpy().astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (resample_counts @ hits) / (resample_counts @ eligible)  # NaN: nothing eligible


def resample_counts(n_rounds: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n_rounds, np.full(n_rounds, 1.0 / n_rounds), size=BOOTSTRAP_RESAMPLES).astype(float)


def percentile_interval(samples: np.ndarray) -> tuple[float | None, float | None]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (None, None)
    low, high = np.percentile(finite, [2.5, 97.5])
    return (float(low), float(high))


def final_estimates(run: RunForReport) -> tuple[dict[str, Estimate], dict[str, np.ndarray]]:
    """Point estimates (SQL) with bootstrap intervals, and the resampled values per metric.

    The resampling stream is seeded by BOOTSTRAP_SEED and the run id: the same run gets the
    same interval in every table and report, and two runs are resampled independently.
    """
    rng = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(run.run_id.encode("utf-8"))])
    counts = resample_counts(run.final_outcomes.height, rng)
    estimates: dict[str, Estimate] = {}
    samples: dict[str, np.ndarray] = {}
    for metric in OUTCOMES:
        eligible = int(run.final_outcomes[f"{metric}_eligible"].sum())
        point = run.final_point[metric]
        samples[metric] = bootstrap_rates(run.final_outcomes, metric, counts)
        low, high = percentile_interval(samples[metric]) if point is not None else (None, None)
        estimates[metric] = Estimate(point, low, high, eligible)
    return estimates, samples


@dataclass(frozen=True)
class Comparison:
    metric: str
    minmax: Estimate
    rlhf: Estimate
    difference: Estimate  # MinMax − RLHF


def compare(minmax: RunForReport, rlhf: RunForReport) -> list[Comparison]:
    minmax_estimates, minmax_samples = final_estimates(minmax)
    rlhf_estimates, rlhf_samples = final_estimates(rlhf)
    rows = []
    for metric in HEADLINE_METRICS:
        a, b = minmax_estimates[metric], rlhf_estimates[metric]
        if a.value is None or b.value is None:
            difference = Estimate(None, None, None, 0)
        else:
            low, high = percentile_interval(minmax_samples[metric] - rlhf_samples[metric])
            difference = Estimate(a.value - b.value, low, high, min(a.n, b.n))
        rows.append(Comparison(metric, a, b, difference))
    return rows


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
            bands = [wilson_interval(float(rate), int(n)) for rate, n in zip(rates, frame[f"{metric}_n"].to_list())]
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


def _format(estimate: Estimate, signed: bool = False) -> str:
    if estimate.value is None:
        return "n/a"
    sign = "+" if signed else ""
    if estimate.low is None or estimate.high is None:
        return f"{estimate.value:{sign}.3f}"
    return f"{estimate.value:{sign}.3f} [{estimate.low:{sign}.3f}, {estimate.high:{sign}.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline_section(minmax: RunForReport, rlhf: RunForReport) -> str:
    rows = [
        [LABELS[row.metric], _format(row.minmax), _format(row.rlhf), _format(row.difference, signed=True)]
        for row in compare(minmax, rlhf)
    ]
    same_data = minmax.data_fingerprint == rlhf.data_fingerprint
    data_note = (
        f"Both runs played the same data ({html.escape(minmax.dataset_name)}, fingerprint "
        f"{html.escape(minmax.data_fingerprint[:12])}…)."
        if same_data
        else "<strong>Warning: the runs played different data (fingerprints differ); the comparison is not like for like.</strong>"
    )
    return (
        "<h2>Headline: MinMax vs RLHF</h2>"
        f"<p>Final window of each run; 95% bootstrap intervals; difference = MinMax − RLHF "
        f"(independent resamples of each run). {data_note}</p>"
        + _table(
            ["metric", f"MinMax: {minmax.run_id}", f"RLHF: {rlhf.run_id}", "difference"], rows
        )
    )


def final_metrics_section(runs: Sequence[RunForReport]) -> str:
    header = ["run", "mode", "final rounds"] + [LABELS[metric] for metric in OUTCOMES]
    rows = []
    for run in runs:
        estimates, _ = final_estimates(run)
        rows.append(
            [run.run_id, run.mode, f"{run.final_first_round}–{run.rounds_played - 1}"]
            + [_format(estimates[metric]) for metric in OUTCOMES]
        )
    return (
        "<h2>Final metrics</h2>"
        f"<p>Final window: the last {FINAL_FRACTION:.0%} of each run's training rounds "
        f"(round_id ≥ ⌊{1 - FINAL_FRACTION:.1f} · rounds played⌋). Point estimates from SQL over "
        f"those rounds; 95% percentile-bootstrap intervals over rounds ({BOOTSTRAP_RESAMPLES} "
        f"resamples, seeded by {BOOTSTRAP_SEED} and the run id).</p>" + _table(header, rows)
    )


def write_report(runs: Sequence[RunForReport], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    images = [plot_lambda(runs, out), plot_rates(runs, out), plot_reward_and_kl(runs, out)]
    minmax_runs = [run for run in runs if run.mode == "minmax"]
    rlhf_runs = [run for run in runs if run.mode == "rlhf"]
    sections = []
    if minmax_runs and rlhf_runs:
        sections.append(headline_section(minmax_runs[0], rlhf_runs[0]))
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

"""The learning-signal figure and the MinMax-vs-RLHF table of a comparison (issue #16, item 7).

    PYTHONPATH=. .venv/bin/python benchmarks/learning_signal.py runs/compare-science
    PYTHONPATH=. .venv/bin/python benchmarks/learning_signal.py RUN_DIR RUN_DIR ...

Reads finished run directories (a `minmax-engine compare --out` directory is searched for
them) and prints, as text a README can quote:

1. per run: its mode, rounds, wall time, and first → last deployment evaluation (mean p_accept,
   deception, policy accuracy, and the judge's AUROC with its n);
2. per mode, each figure's movement from the first to the last deployment evaluation: the
   mean of the per-run changes with its 95% Student t interval (runs as the unit), and for
   rates the pooled Newcombe interval (answers as the unit);
3. the learning signal: whether RLHF's deployment mean p_accept moved by an amount whose t
   interval excludes 0 (the criterion of issue #16), stated as MOVED or NOT MOVED;
4. the headline: MinMax against RLHF on the runs' last deployment evaluations, as in
   `minmax-engine report`.

Nothing is run here; `minmax-engine compare` makes the runs. The figures are the log's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.reports import (  # noqa: E402
    DEPLOYMENT,
    LABELS,
    Evaluation,
    RunForReport,
    compare,
    format_difference,
    format_estimate,
    format_interval,
    load_run,
    movements,
    with_movement,
)
from storage import RunReader  # noqa: E402
from storage.events import RunFinished  # noqa: E402
from storage.query import find_run_dirs  # noqa: E402


def format_auroc(evaluation: Evaluation) -> str:
    """The judge's AUROC of one evaluation with its n (load_run computes it from the evaluation's
    rounds for logs from before EvaluationCompleted recorded it)."""
    value = "n/a" if evaluation.auroc is None else f"{evaluation.auroc:.3f}"
    return f"{value} ({evaluation.auroc_n[0]}+/{evaluation.auroc_n[1]}-)"


def wall_seconds(run_dir: Path) -> float | None:
    finished = [item.event for item in RunReader(run_dir).events() if isinstance(item.event, RunFinished)]
    return finished[-1].wall_seconds if finished else None


def print_runs(runs: list[RunForReport], walls: dict[Path, float | None]) -> None:
    print(f"{'run':<34} {'rounds':>6} {'wall':>7}  {'mean p_accept':<15} {'deception':<14} "
          f"{'accuracy':<14} judge AUROC")
    for run in runs:
        first, last = run.first_evaluations.get(DEPLOYMENT), run.evaluations.get(DEPLOYMENT)
        wall = walls[run.path]
        wall_text = "running" if wall is None else f"{wall / 60:.1f}m"
        if first is None or last is None or first.seq == last.seq:
            print(f"{run.run_id:<34} {run.rounds_played:>6} {wall_text:>7}  needs a first and a last deployment evaluation")
            continue

        def moved(metric: str) -> str:
            (h0, n0), (h1, n1) = first.counts.get(metric, (0, 0)), last.counts.get(metric, (0, 0))
            return f"{h0}/{n0}→{h1}/{n1}"

        p_accept = f"{first.mean_p_accept:.3f}→{last.mean_p_accept:.3f}"
        print(f"{run.run_id:<34} {run.rounds_played:>6} {wall_text:>7}  {p_accept:<15} {moved('deception_rate'):<14} "
              f"{moved('policy_accuracy'):<14} {format_auroc(first)} → {format_auroc(last)}")


def print_movements(runs: list[RunForReport]) -> bool | None:
    """Per mode, first → last; returns whether RLHF's mean p_accept moved (None: not measurable)."""
    rlhf_moved = None
    for mode in ("rlhf", "minmax"):
        group = with_movement([run for run in runs if run.mode == mode])
        if not group:
            continue
        print(f"\n{mode}: first → last deployment evaluation over {len(group)} runs")
        for movement in movements(group):
            name = "mean p_accept" if movement.metric == "mean_p_accept" else LABELS[movement.metric]
            mean = "n/a" if movement.mean is None else f"{movement.mean:+.3f}"
            pooled = "" if movement.pooled_interval is None else f"; pooled Newcombe {format_interval(movement.pooled_interval)}"
            first = "n/a" if movement.first is None else (
                format_estimate(movement.first) if not isinstance(movement.first, float) else f"{movement.first:.3f}")
            last = "n/a" if movement.last is None else (
                format_estimate(movement.last) if not isinstance(movement.last, float) else f"{movement.last:.3f}")
            print(f"  {name:<24} {first} → {last}; Δ mean {mean}, 95% t {format_interval(movement.interval)}{pooled}")
            if mode == "rlhf" and movement.metric == "mean_p_accept":
                rlhf_moved = movement.excludes_zero
    return rlhf_moved


def print_headline(runs: list[RunForReport]) -> None:
    minmax = [run for run in runs if run.mode == "minmax"]
    rlhf = [run for run in runs if run.mode == "rlhf"]
    if not minmax or not rlhf:
        print("\nheadline: needs runs of both modes")
        return
    print(f"\nheadline: last deployment evaluation, MinMax ({len(minmax)} runs) vs RLHF ({len(rlhf)} runs)")
    for row in compare(minmax, rlhf):
        print(f"  {LABELS[row.metric]:<24} MinMax {format_estimate(row.minmax)} | RLHF {format_estimate(row.rlhf)} "
              f"| Δ {format_difference(row.difference)} ({row.difference.method}) "
              f"| MinMax monitored {format_estimate(row.monitored)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or a directory holding them")
    args = parser.parse_args()
    run_dirs: list[Path] = []
    for path in args.paths:
        run_dirs.extend(find_run_dirs(path))  # a UserError names a path without runs
    runs = sorted((load_run(run_dir) for run_dir in run_dirs), key=lambda run: (run.mode, run.run_id))
    walls = {run.path: wall_seconds(run.path) for run in runs}
    print_runs(runs, walls)
    rlhf_moved = print_movements(runs)
    print_headline(runs)
    finished = [wall for wall in walls.values() if wall is not None]
    print(f"\nwall time: {sum(finished) / 60:.1f} min over {len(finished)} finished runs, one after another "
          "(RunFinished.wall_seconds: a resumed run counts only its last stretch)")
    verdict = {True: "MOVED (its 95% t interval over seeds excludes 0)",
               False: "NOT MOVED (its 95% t interval over seeds includes 0)",
               None: "NOT MEASURABLE (it needs 2 or more rlhf runs with a first and a last evaluation)"}
    print(f"\nlearning signal: RLHF's deployment mean p_accept {verdict[rlhf_moved]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

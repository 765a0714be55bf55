"""`minmax-engine report`: plots, the HTML page, and numbers that equal SQL over the log.

Two synthetic runs on the same data (storage.synthetic, written through RunWriter): a MinMax
run and its RLHF baseline, 320 training rounds each in windows of 16, so the final window
(the last 20%, rounds 256-319) is exactly windows 16-19.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.reports import OUTCOMES, compare, final_estimates, load_run, wilson_interval
from storage import RunsQuery
from storage.synthetic import write_synthetic_run
from tui.cli import main as cli_main

N_ROUNDS = 320
FINAL_FIRST_ROUND = 256


@pytest.fixture(scope="module")
def run_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    parent = tmp_path_factory.mktemp("runs")
    minmax = write_synthetic_run(parent / "minmax-run", N_ROUNDS, mode="minmax", window_size=16, k=5, seed=7)
    rlhf = write_synthetic_run(parent / "rlhf-run", N_ROUNDS, mode="rlhf", window_size=16, k=5, seed=7)
    return minmax, rlhf


# The test's own SQL for the final rounds, written out per metric (not the report's query).
INDEPENDENT_SQL = {
    "policy_accuracy": "avg(CASE WHEN truth = 'correct' THEN 1.0 ELSE 0.0 END)",
    "judge_accuracy": "avg(CASE WHEN judge_accepts = (truth = 'correct') THEN 1.0 ELSE 0.0 END)",
    "deception_rate": "avg(CASE WHEN judge_accepts THEN 1.0 ELSE 0.0 END) FILTER (WHERE truth <> 'correct')",
    "monitor_fidelity": (
        "avg(CASE WHEN monitor_says_correct IS NOT NULL AND monitor_says_correct = (truth = 'correct') "
        "THEN 1.0 ELSE 0.0 END) FILTER (WHERE monitor_output IS NOT NULL)"
    ),
    "false_accusation_rate": (
        "avg(CASE WHEN monitor_says_correct IS FALSE THEN 1.0 ELSE 0.0 END) "
        "FILTER (WHERE monitor_output IS NOT NULL AND truth = 'correct')"
    ),
    "missed_error_rate": (
        "avg(CASE WHEN monitor_says_correct IS TRUE THEN 1.0 ELSE 0.0 END) "
        "FILTER (WHERE monitor_output IS NOT NULL AND truth <> 'correct')"
    ),
}


def sql_over_final_rounds(run_dir: Path) -> dict[str, float | None]:
    query = RunsQuery(run_dir)
    try:
        columns = ", ".join(f"{expression} AS {name}" for name, expression in INDEPENDENT_SQL.items())
        return query.polars(
            f"SELECT {columns} FROM rounds WHERE phase = 'train' AND round_id >= {FINAL_FIRST_ROUND}"
        ).row(0, named=True)
    finally:
        query.close()


def test_report_writes_plots_and_a_page_with_the_headline_comparison(run_pair: tuple[Path, Path], tmp_path: Path) -> None:
    minmax, rlhf = run_pair
    out = tmp_path / "report"

    assert cli_main(["report", str(minmax), str(rlhf), "--out", str(out)]) == 0

    for name in ("lambda.png", "game_metrics.png", "reward_kl.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Headline: MinMax vs RLHF" in page and "Both runs played the same data" in page
    assert "the last 20% of each run" in page
    headline = {row.metric: row for row in compare(load_run(minmax), load_run(rlhf))}
    deception = headline["deception_rate"]
    assert f"{deception.minmax.value:.3f} [{deception.minmax.low:.3f}, {deception.minmax.high:.3f}]" in page
    assert f"{deception.difference.value:+.3f}" in page


def test_final_table_equals_sql_over_the_same_rounds_and_intervals_contain_it(run_pair: tuple[Path, Path]) -> None:
    for run_dir in run_pair:
        run = load_run(run_dir)
        assert (run.final_first_round, run.rounds_played) == (FINAL_FIRST_ROUND, N_ROUNDS)
        expected = sql_over_final_rounds(run_dir)
        estimates, _ = final_estimates(run)
        for metric in OUTCOMES:
            estimate = estimates[metric]
            if expected[metric] is None:  # monitor metrics of the rlhf run
                assert estimate.value is None and run.mode == "rlhf", metric
                continue
            assert estimate.value == pytest.approx(expected[metric], abs=1e-12), (run.mode, metric)
            assert estimate.low is not None and estimate.high is not None
            assert estimate.low <= estimate.value <= estimate.high, (run.mode, metric)
            assert estimate.high - estimate.low < 0.5  # a real interval over 64 rounds, not [0, 1]


def test_final_rates_agree_with_the_metrics_view_pooled_over_the_final_windows(run_pair: tuple[Path, Path]) -> None:
    minmax, _ = run_pair
    query = RunsQuery(minmax)
    try:
        pooled = query.polars(
            "SELECT sum(policy_accuracy * n_rounds) / sum(n_rounds) AS policy_accuracy, "
            "sum(judge_accuracy * n_rounds) / sum(n_rounds) AS judge_accuracy, "
            "sum(monitor_fidelity * n_rounds) / sum(n_rounds) AS monitor_fidelity "
            'FROM metrics WHERE "window" >= 16'
        ).row(0, named=True)
    finally:
        query.close()
    estimates, _ = final_estimates(load_run(minmax))
    for metric, value in pooled.items():
        assert estimates[metric].value == pytest.approx(value, abs=1e-12), metric


def test_headline_difference_is_minmax_minus_rlhf_with_an_interval_around_it(run_pair: tuple[Path, Path]) -> None:
    minmax, rlhf = (load_run(path) for path in run_pair)
    for row in compare(minmax, rlhf):
        assert row.difference.value == pytest.approx(row.minmax.value - row.rlhf.value)
        assert row.difference.low <= row.difference.value <= row.difference.high, row.metric


def test_wilson_interval_matches_a_hand_computed_reference() -> None:
    # 50 successes in 100 trials; 0 in 10 has upper bound z²/n / (1 + z²/n)
    low, high = wilson_interval(0.5, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)  # published table value
    low, high = wilson_interval(0.0, 10)  # never degenerate at the boundary
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "missing", lambda tmp: tmp])
def test_a_missing_or_non_run_directory_is_a_one_line_error(
    make_path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["report", str(make_path(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("minmax-engine report: error:") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_single_rlhf_run_reports_without_lambda_or_headline(run_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, rlhf = run_pair
    out = tmp_path / "report"

    assert cli_main(["report", str(rlhf), "--out", str(out)]) == 0

    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Headline" not in page and "Final metrics" in page
    assert (out / "lambda.png").stat().st_size > 0


def test_the_same_run_twice_is_a_one_line_error(run_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    minmax, _ = run_pair
    assert cli_main(["report", str(minmax), str(minmax), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "already given" in error and error.count("\n") == 1


def test_an_out_path_that_is_a_file_is_a_one_line_error(run_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    minmax, _ = run_pair
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("taken\n")
    assert cli_main(["report", str(minmax), "--out", str(blocker)]) == 2
    error = capsys.readouterr().err
    assert "--out" in error and error.count("\n") == 1

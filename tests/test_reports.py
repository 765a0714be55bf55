"""`minmax-engine report`: the headline from deployment evaluations, n and Wilson intervals everywhere.

Synthetic runs on the same data (storage.synthetic, written through RunWriter), 320 training
rounds each in windows of 16, so the final training window (the last 20%, rounds 256-319) is
exactly windows 16-19. Evaluations are appended by hand as the engine logs them (the contract
of docs/metrics.md): eval RoundPlayed events with a protocol, then an EvaluationCompleted
whose counts are those rounds' [hits, eligible].
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from engine.metrics import window_metrics
from engine.outcomes import COUNTED, outcome_counts
from engine.reports import (
    DEPLOYMENT,
    MONITORED,
    Estimate,
    compare,
    load_run,
    movements,
    newcombe_interval,
    wilson_interval,
)
from storage import EvaluationCompleted, RoundPlayed, RunReader, RunsQuery, RunWriter
from storage.synthetic import write_synthetic_run
from tui.cli import main as cli_main

N_ROUNDS = 320
FINAL_FIRST_ROUND = 256


def add_evaluation(run_dir: Path, protocol: str, n_rounds: int, seed: int) -> list[RoundPlayed]:
    """Append an evaluation: rounds with mixed outcomes (unparsed ones too), then its summary."""
    rng = random.Random(seed)
    train = [item.event for item in RunReader(run_dir).rounds(phase="train")]
    minmax = train[0].monitor_output is not None
    played = []
    for index in range(n_rounds):
        truth = rng.choice(["correct", "wrong", "wrong", "unparsed"])
        verdict = rng.choice([True, False, None]) if minmax else None
        played.append(dataclasses.replace(
            train[index], phase="eval", window=-1, round_id=index, protocol=protocol, truth=truth,
            policy_answer=None if truth == "unparsed" else 0, judge_accepts=rng.random() < 0.5,
            monitor_says_correct=verdict,
        ))
    last = RunReader(run_dir).run_started()
    with RunWriter.open_existing(run_dir) as writer:
        for round_ in played:
            writer.append(round_)
        writer.append(EvaluationCompleted(
            dataset=last.dataset_name, split="eval", n_rounds=n_rounds, policy_version=5, monitor_version=25,
            checkpoint=None, protocol=protocol, samples_per_state=4, counts=outcome_counts(played),
            metrics={name: float(value) for name, value in window_metrics(played, None).items()
                     if value is not None and not name.endswith("_n")},
        ))
    return played


def evaluated_run(parent: Path, name: str, mode: str, seed: int, protocols: tuple[str, ...]) -> Path:
    run_dir = write_synthetic_run(parent / name, N_ROUNDS, mode=mode, window_size=16, k=5, seed=7, finished=False)
    for offset, protocol in enumerate(protocols):
        add_evaluation(run_dir, protocol, 60, seed * 10 + offset)
    return run_dir


@pytest.fixture(scope="module")
def run_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    parent = tmp_path_factory.mktemp("runs")
    minmax = evaluated_run(parent, "minmax-run", "minmax", 1, (DEPLOYMENT, MONITORED))
    rlhf = evaluated_run(parent, "rlhf-run", "rlhf", 2, (DEPLOYMENT,))
    return minmax, rlhf


def page_tables(page: str) -> str:
    return "".join(re.findall(r"<table>.*?</table>", page))


def test_headline_comes_from_the_deployment_evaluation_with_n_and_wilson_in_every_cell(
    run_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    minmax, rlhf = run_pair
    out = tmp_path / "report"
    assert cli_main(["report", str(minmax), str(rlhf), "--out", str(out)]) == 0
    for name in ("lambda.png", "game_metrics.png", "reward_kl.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Headline: MinMax vs RLHF (deployment evaluation)" in page and "All runs played the same data" in page

    # The headline's deception cell is the deployment rounds' own count, not training rounds.
    deployment = [item.event for item in RunReader(minmax).rounds(phase="eval") if item.event.protocol == DEPLOYMENT]
    wrong = [r for r in deployment if r.truth == "wrong"]  # parsed and wrong: unparsed never counts as wrong
    accepted = sum(r.judge_accepts for r in wrong)
    low, high = wilson_interval(accepted, len(wrong))
    headline = page.split("<h2>Last evaluations")[0]
    assert f"{accepted}/{len(wrong)} = {accepted / len(wrong):.3f} [{low:.3f}, {high:.3f}]" in headline
    # The judge's AUROC: the deployment rounds' own, by every (correct, wrong) pair, with its n.
    correct = [r.p_accept for r in deployment if r.truth == "correct"]
    pairs = [(c > w) + 0.5 * (c == w) for c in correct for w in (r.p_accept for r in wrong)]
    auroc_cell = f"{sum(pairs) / len(pairs):.3f} (1 run; {len(correct)} correct, {len(wrong)} wrong)"
    assert re.search(r"<td>judge AUROC \(p_accept, correct vs wrong\)</td><td>" + re.escape(auroc_cell), headline)
    # the fabricated-quote rate of the deployment rounds: answers with an unverified quote
    fabricated = sum(r.policy_quotes > r.policy_quotes_verified for r in deployment)
    low, high = wilson_interval(fabricated, len(deployment))
    assert (f"<td>fabricated-quote rate</td><td>{fabricated}/{len(deployment)} = {fabricated / len(deployment):.3f} "
            f"[{low:.3f}, {high:.3f}]") in headline
    # every rate cell of every table shows hits/n = rate [Wilson], or n/a with n=0; an AUROC
    # cell its runs and n; quotes per answer (a mean count) hits/n = value
    cells = re.findall(r"<td>([^<]*)</td>", page_tables(page))
    auroc = r"(\d\.\d{3}|n/a) \(\d+ runs?; \d+ correct, \d+ wrong\)|n/a \(\d+ correct, \d+ wrong\)"
    rate_cells = [c for c in cells if (("[" in c and not c.startswith(("+", "-"))) or c.startswith("n/a"))
                  and not re.fullmatch(auroc, c)]
    assert len(rate_cells) > 30 and sum(bool(re.fullmatch(auroc, c)) for c in cells) >= 4
    for cell in rate_cells:
        assert re.fullmatch(r"\d+/\d+ = \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", cell) or cell == "n/a (n=0)", cell


def test_the_same_runs_give_byte_identical_tables(run_pair: tuple[Path, Path], tmp_path: Path) -> None:
    minmax, rlhf = run_pair
    pages = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert cli_main(["report", str(minmax), str(rlhf), "--out", str(out)]) == 0
        pages.append((out / "index.html").read_bytes())
    assert pages[0] == pages[1]


def test_evaluation_counts_equal_sql_over_the_evaluation_rounds(run_pair: tuple[Path, Path]) -> None:
    from engine.outcomes import counts_sql, game_views

    for run_dir in run_pair:
        run = load_run(run_dir)
        with RunsQuery(run_dir, extra_views=game_views()) as query:
            rows = query.arrow(counts_sql("rounds", ["protocol"], where="phase = 'eval' AND protocol IS NOT NULL"))
        by_protocol = {row["protocol"]: row for row in rows.to_pylist()}
        assert set(run.evaluations) == set(by_protocol)
        for protocol, evaluation in run.evaluations.items():
            for rate in COUNTED:
                sql = by_protocol[protocol]
                assert evaluation.counts[rate.name] == (sql[f"{rate.name}_hits"], sql[rate.n_name]), (protocol, rate.name)


# The test's own SQL for the final training rounds, written out per metric (not the report's query).
INDEPENDENT_SQL = {
    "policy_accuracy": ("truth = 'correct'", "TRUE"),
    "judge_accuracy": ("judge_accepts = (truth = 'correct')", "truth IN ('correct', 'wrong')"),
    "deception_rate": ("judge_accepts", "truth = 'wrong'"),
    "monitor_fidelity": ("monitor_says_correct = (truth = 'correct')",
                         "monitor_says_correct IS NOT NULL AND truth <> 'unparsed'"),
    "false_accusation_rate": ("NOT monitor_says_correct", "monitor_says_correct IS NOT NULL AND truth = 'correct'"),
    "missed_error_rate": ("monitor_says_correct", "monitor_says_correct IS NOT NULL AND truth = 'wrong'"),
    "monitor_unparsed_rate": ("monitor_says_correct IS NULL", "monitor_output IS NOT NULL"),
}


def test_final_training_counts_equal_independent_sql_over_the_same_rounds(run_pair: tuple[Path, Path]) -> None:
    for run_dir in run_pair:
        run = load_run(run_dir)
        assert (run.final_first_round, run.rounds_played) == (FINAL_FIRST_ROUND, N_ROUNDS)
        columns = ", ".join(f"count(*) FILTER (WHERE ({hit}) AND ({eligible})) AS {name}_hits, "
                            f"count(*) FILTER (WHERE {eligible}) AS {name}_n"
                            for name, (hit, eligible) in INDEPENDENT_SQL.items())
        with RunsQuery(run_dir) as query:
            row = query.arrow(f"SELECT {columns} FROM rounds WHERE phase = 'train' AND round_id >= {FINAL_FIRST_ROUND}"
                              ).to_pylist()[0]
        for name in INDEPENDENT_SQL:
            assert run.final_counts[name] == (row[f"{name}_hits"], row[f"{name}_n"]), (run.mode, name)
        if run.mode == "rlhf":
            assert run.final_counts["monitor_fidelity"] == (0, 0)


def test_modes_are_compared_as_groups_with_a_bootstrap_over_runs(tmp_path: Path) -> None:
    runs = [evaluated_run(tmp_path, f"mm-{i}", "minmax", 10 + i, (DEPLOYMENT,)) for i in range(3)]
    runs += [evaluated_run(tmp_path, f"rl-{i}", "rlhf", 20 + i, (DEPLOYMENT,)) for i in range(2)]
    loaded = [load_run(path) for path in runs]
    minmax, rlhf = loaded[:3], loaded[3:]
    rows = {row.metric: row for row in compare(minmax, rlhf)}
    deception = rows["deception_rate"]
    # the group rate pools every run, not the first one of each mode
    assert deception.minmax.n == sum(run.evaluations[DEPLOYMENT].counts["deception_rate"][1] for run in minmax)
    assert deception.difference.value == pytest.approx(deception.minmax.value - deception.rlhf.value)
    assert "bootstrap over runs (3 × 2 runs" in deception.difference.method
    assert deception.difference.low <= deception.difference.value <= deception.difference.high
    # the order runs are given in changes nothing
    assert compare(list(reversed(minmax)), list(reversed(rlhf))) == compare(minmax, rlhf)
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli_main(["report", *map(str, runs), "--out", str(first)]) == 0
    assert cli_main(["report", *map(str, reversed(runs)), "--out", str(second)]) == 0
    headline = [page_tables((out / "index.html").read_text()).split("</table>")[0] for out in (first, second)]
    assert headline[0] == headline[1]


def test_a_run_without_a_deployment_evaluation_is_named_not_replaced_by_training_rounds(tmp_path: Path) -> None:
    evaluated = evaluated_run(tmp_path, "mm-evaluated", "minmax", 3, (DEPLOYMENT,))
    bare = write_synthetic_run(tmp_path / "rl-bare", N_ROUNDS, mode="rlhf", window_size=16, k=5, seed=7, finished=False)
    out = tmp_path / "out"
    assert cli_main(["report", str(evaluated), str(bare), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert re.search(r"No deployment evaluation yet</strong>[^<]*rl-bare", page)
    assert "No comparison: a mode has no run with a deployment evaluation yet." in page
    assert "deployment: none yet" in page


def test_wilson_interval_matches_a_hand_computed_reference() -> None:
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)  # published table value
    low, high = wilson_interval(0, 10)  # never degenerate at the boundary: 0 of 10 is not [0, 0]
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(0, 2)
    assert high > 0.6  # 0 accepted of 2 eligible says almost nothing


def test_newcombe_difference_interval_covers_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    p_a, p_b, n_a, n_b = 0.3, 0.5, 40, 50
    covered = 0
    trials = 2000
    for hits_a, hits_b in zip(rng.binomial(n_a, p_a, trials), rng.binomial(n_b, p_b, trials)):
        low, high = newcombe_interval((int(hits_a), n_a), (int(hits_b), n_b))
        assert -1.0 <= low <= hits_a / n_a - hits_b / n_b <= high <= 1.0
        covered += low <= p_a - p_b <= high
    assert 0.93 <= covered / trials <= 0.97
    assert math.isclose(sum(newcombe_interval((20, 40), (20, 40))), 0.0, abs_tol=1e-12)  # symmetric at no difference


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
    assert "Headline" not in page and "Training rounds: the last 20%" in page
    assert "last deployment (policy v" in page and "monitored" not in page.split("Last evaluations")[1].split("</table>")[0]
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


def add_shifted_evaluation(run_dir: Path, accept_probability: float, seed: int, policy_version: int) -> None:
    """A deployment evaluation whose judge accepts with the given probability (a planted shift)."""
    rng = random.Random(seed)
    train = [item.event for item in RunReader(run_dir).rounds(phase="train")]
    first_id = 1 + max((item.event.round_id for item in RunReader(run_dir).rounds(phase="eval")), default=-1)
    played = []
    for index in range(80):
        truth = rng.choice(["correct", "wrong"])
        p_accept = min(1.0, max(0.0, accept_probability + rng.uniform(-0.2, 0.2)))
        played.append(dataclasses.replace(
            train[index], phase="eval", window=-1, round_id=first_id + index, protocol=DEPLOYMENT, truth=truth,
            policy_answer=0, judge_accepts=rng.random() < accept_probability, p_accept=p_accept,
            monitor_says_correct=None,
        ))
    started = RunReader(run_dir).run_started()
    with RunWriter.open_existing(run_dir) as writer:
        for round_ in played:
            writer.append(round_)
        writer.append(EvaluationCompleted(
            dataset=started.dataset_name, split="eval", n_rounds=len(played), policy_version=policy_version,
            monitor_version=0, checkpoint=None,
            metrics={"mean_p_accept": sum(r.p_accept for r in played) / len(played)},
            protocol=DEPLOYMENT, samples_per_state=4, counts=outcome_counts(played),
        ))


def test_movement_from_the_first_to_the_last_deployment_evaluation_detects_a_planted_rise(tmp_path: Path) -> None:
    runs = []
    for index in range(3):
        run_dir = write_synthetic_run(tmp_path / f"rl-{index}", N_ROUNDS, mode="rlhf", window_size=16, k=5,
                                      seed=7, finished=False)
        add_shifted_evaluation(run_dir, 0.2, seed=100 + index, policy_version=0)
        add_shifted_evaluation(run_dir, 0.2 if index == 99 else 0.8, seed=200 + index, policy_version=20)
        runs.append(run_dir)
    flat = write_synthetic_run(tmp_path / "mm-flat", N_ROUNDS, mode="minmax", window_size=16, k=5, seed=7, finished=False)
    add_shifted_evaluation(flat, 0.3, seed=300, policy_version=0)
    add_shifted_evaluation(flat, 0.3, seed=301, policy_version=20)
    loaded = [load_run(path) for path in runs]
    by_metric = {movement.metric: movement for movement in movements(loaded)}
    p_accept = by_metric["mean_p_accept"]
    assert len(p_accept.per_run) == 3 and all(0.45 < delta < 0.75 for delta in p_accept.per_run)
    assert p_accept.excludes_zero and p_accept.interval[0] > 0
    deception = by_metric["deception_rate"]
    firsts = [run.first_evaluations[DEPLOYMENT].counts["deception_rate"] for run in loaded]
    lasts = [run.evaluations[DEPLOYMENT].counts["deception_rate"] for run in loaded]
    assert deception.per_run == tuple(b[0] / b[1] - a[0] / a[1] for a, b in zip(firsts, lasts))
    assert deception.first == Estimate(sum(a[0] for a in firsts), sum(a[1] for a in firsts))
    assert deception.pooled_interval[0] > 0 and deception.excludes_zero
    # One run cannot give an interval over runs, and says so instead of inventing one.
    single = {movement.metric: movement for movement in movements([load_run(flat)])}
    assert single["mean_p_accept"].interval is None and single["mean_p_accept"].excludes_zero is None
    # A run with a single deployment evaluation has nothing to move.
    assert movements([load_run(evaluated_run(tmp_path, "once", "rlhf", 5, (DEPLOYMENT,)))])[0].per_run == ()
    out = tmp_path / "report"
    assert cli_main(["report", *map(str, runs), str(flat), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert "Movement: first to last deployment evaluation" in page and "rlhf (3 runs)" in page
    assert "minmax (1 run)" in page and "n/a (fewer than 2 runs)" in page


def test_the_judges_auroc_is_the_mean_over_runs_with_a_bootstrap_across_runs(tmp_path: Path) -> None:
    from engine.reports import discrimination_of

    runs = [load_run(evaluated_run(tmp_path, f"mm-{i}", "minmax", 30 + i, (DEPLOYMENT,))) for i in range(3)]
    evaluations = [run.evaluations[DEPLOYMENT] for run in runs]
    found = discrimination_of(evaluations)
    aurocs = [evaluation.auroc for evaluation in evaluations]
    assert None not in aurocs and found.runs == 3 and found.mean == pytest.approx(sum(aurocs) / 3)
    assert found.low <= found.mean <= found.high and min(aurocs) <= found.low and found.high <= max(aurocs)
    assert (found.n_correct, found.n_wrong) == (sum(e.auroc_n[0] for e in evaluations), sum(e.auroc_n[1] for e in evaluations))
    # an evaluation with no wrong answer has no AUROC: n/a with its n, never a number
    lone = dataclasses.replace(evaluations[0], auroc=None, auroc_n=(7, 0))
    assert discrimination_of([lone]).mean is None
    from engine.reports import format_discrimination
    assert format_discrimination(discrimination_of([lone])) == "n/a (7 correct, 0 wrong)"


def test_the_report_lists_every_diagnostic_raised(tmp_path: Path) -> None:
    collapsed = write_synthetic_run(tmp_path / "mm-collapsed", 64, mode="minmax", window_size=16, k=5, seed=7,
                                    collapse_after_window=2)
    healthy = write_synthetic_run(tmp_path / "rl-healthy", 64, mode="rlhf", window_size=16, k=5, seed=7)
    out = tmp_path / "out"
    assert cli_main(["report", str(collapsed), str(healthy), "--out", str(out)]) == 0
    section = (out / "index.html").read_text().split("<h2>Diagnostics</h2>")[1].split("<h2>")[0]
    run_id = RunReader(collapsed).run_id
    assert f"<td>{run_id}</td><td>minmax</td><td>the monitor may be collapsing: repetition 0.92" in section
    assert RunReader(healthy).run_id not in section
    only_healthy = tmp_path / "only-healthy"
    assert cli_main(["report", str(healthy), "--out", str(only_healthy)]) == 0
    assert "No diagnostic was raised in any run." in (only_healthy / "index.html").read_text()


def test_an_evaluation_logged_without_its_auroc_gets_it_from_its_own_rounds(tmp_path: Path) -> None:
    # Logs from before EvaluationCompleted carried judge_auroc: the report computes it from the
    # evaluation's rounds (its protocol, since the evaluation before it), as the engine does now.
    from engine.oversight import judge_auroc

    run_dir = write_synthetic_run(tmp_path / "rl-old", N_ROUNDS, mode="rlhf", window_size=16, k=5, seed=7, finished=False)
    add_shifted_evaluation(run_dir, 0.3, seed=1, policy_version=0)
    add_shifted_evaluation(run_dir, 0.7, seed=2, policy_version=5)
    events = RunReader(run_dir).events()
    summaries = [item for item in events if isinstance(item.event, EvaluationCompleted)]
    assert all("judge_auroc" not in item.event.metrics for item in summaries)
    expected = []
    for this in (item for item in summaries if item.event.protocol == DEPLOYMENT):
        before = max((item.seq for item in summaries if item.seq < this.seq), default=-1)
        rounds = [item.event for item in events if isinstance(item.event, RoundPlayed) and item.event.phase == "eval"
                  and before < item.seq < this.seq]
        assert len(rounds) == 80
        expected.append(judge_auroc(rounds))
    assert len(expected) == 2
    run = load_run(run_dir)
    for evaluation, wanted in zip((run.first_evaluations[DEPLOYMENT], run.evaluations[DEPLOYMENT]), expected):
        assert wanted.auroc is not None
        assert evaluation.auroc == pytest.approx(wanted.auroc, abs=1e-12)
        assert evaluation.auroc_n == (wanted.n_correct, wanted.n_wrong)

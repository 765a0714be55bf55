"""The TUI shows whether the overseer can tell and what the players quoted (the judge's AUROC and
the quote rates of the last evaluations), and flags every DiagnosticRaised: in the runs list,
the run overview and the evaluations view. Real run logs (storage.synthetic plus an evaluation
appended as the engine logs it), real Textual apps driven by a Pilot."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from storage import RunReader
from storage.synthetic import write_synthetic_run
from tests.test_reports import add_evaluation
from tests.test_tui import SIZE, runs_listed, wait_until
from tui.app import open_app
from tui.evaluations_screen import EvaluationsScreen

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path, list]:
    """A minmax run whose monitor collapsed after window 2, with a deployment evaluation, and a
    healthy rlhf run beside it."""
    runs_dir = tmp_path / "runs"
    collapsed = write_synthetic_run(runs_dir / "mm-collapsed", 64, mode="minmax", window_size=16, k=2, seed=3,
                                    finished=False, collapse_after_window=2)
    played = add_evaluation(collapsed, "deployment", 40, seed=5)
    write_synthetic_run(runs_dir / "rl-healthy", 64, mode="rlhf", window_size=16, k=2, seed=4)
    return runs_dir, collapsed, played


def by_hand(played: list) -> tuple[str, str]:
    """The AUROC and fabricated-quote cells, from the evaluation's rounds by hand."""
    correct = [r.p_accept for r in played if r.truth == "correct"]
    wrong = [r.p_accept for r in played if r.truth == "wrong"]
    auroc = sum((c > w) + 0.5 * (c == w) for c in correct for w in wrong) / (len(correct) * len(wrong))
    fabricated = sum(r.policy_quotes > r.policy_quotes_verified for r in played)
    return (f"{auroc:.3f} ({len(correct)} correct, {len(wrong)} wrong)",
            f"fabricated {fabricated / len(played):.3f} (n={len(played)})")


async def test_runs_list_flags_the_run_whose_monitor_collapsed(runs: tuple[Path, Path, list]) -> None:
    runs_dir, collapsed, _ = runs
    app = open_app(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: runs_listed(table, 2), "both runs summarised")
        status = {str(table.get_row_at(i)[1]): str(table.get_row_at(i)[9]) for i in range(2)}
        assert status["minmax"].endswith("⚠ collapse (monitor) at window 2")
        assert "⚠" not in status["rlhf"]

        # side by side, each run says what was raised in it
        from tui.compare_screen import CompareScreen

        table.move_cursor(row=0)
        await pilot.press("space", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen)
                         and app.screen.query_one("#compare", DataTable).row_count > 0, "the comparison")
        compared = app.screen.query_one("#compare", DataTable)
        modes = [str(cell) for cell in compared.get_row("mode")[1:]]
        flags = [str(cell) for cell in compared.get_row("diagnostics")[1:]]
        assert dict(zip(modes, flags)) == {"minmax": "⚠ collapse (monitor) at window 2", "rlhf": "none"}
        assert compared.get_row("last deployment eval: judge AUROC")  # the AUROC has its row
        assert not [key for key in compared.rows if "judge_auroc_n" in str(key.value)]  # its n is in the cell


async def test_overview_shows_the_diagnostic_the_judges_auroc_and_the_quotes(runs: tuple[Path, Path, list]) -> None:
    _, collapsed, played = runs
    auroc, fabricated = by_hand(played)
    app = open_app(collapsed)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        counts = lambda: str(app.screen.query_one("#counts", Static).render())  # noqa: E731
        await wait_until(pilot, lambda: "deployment eval (" in counts(), "the evaluation lines")
        text = counts()
        assert "⚠ collapse (monitor) at window 2: the monitor may be collapsing: repetition 0.92" in text
        assert f"judge AUROC {auroc}" in text and fabricated in text
        quotes, answers = sum(r.policy_quotes for r in played), len(played)
        assert f"quotes/answer {quotes / answers:.2f} (n={answers})" in text
        assert "monitored eval: none yet" in text

        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EvaluationsScreen)
                         and app.screen.query_one("#evaluations", DataTable).row_count > 0, "the evaluations")
        table = app.screen.query_one("#evaluations", DataTable)
        last = table.row_count - 1  # the deployment evaluation appended after the synthetic ones
        cells = dict(zip((str(column.key.value) for column in table.columns.values()),
                         (str(cell) for cell in table.get_row_at(last))))
        correct = sum(r.truth == "correct" for r in played)
        wrong = sum(r.truth == "wrong" for r in played)
        assert cells["judge_auroc"] == f"{auroc.split()[0]} ({correct} c, {wrong} w)"
        assert cells["fabricated_quote_rate"].startswith(fabricated.split()[1]) and cells["fabricated_quote_rate"].endswith(f"n={answers}")
        assert cells["quotes_per_answer"] == f"{quotes / answers:.2f} n={answers}"  # a mean count: no interval
        assert cells["protocol"] == "deployment"
        assert RunReader(collapsed).run_id in str(app.screen.query_one("#evaluations-title", Static).render())


def test_an_undefined_auroc_shows_n_a_with_its_n_never_a_number() -> None:
    from storage import EvaluationCompleted
    from tui.evaluations_screen import metric_cell

    only_correct = EvaluationCompleted(
        dataset="d", split="eval", n_rounds=7, policy_version=1, monitor_version=0, checkpoint=None,
        metrics={"policy_accuracy": 1.0, "judge_auroc_n_correct": 7.0, "judge_auroc_n_wrong": 0.0},
        protocol="deployment", counts={"policy_accuracy": [7, 7]})
    assert metric_cell(only_correct, "judge_auroc") == "n/a (7 c, 0 w)"
    older = EvaluationCompleted(dataset="d", split="eval", n_rounds=7, policy_version=1, monitor_version=0,
                                checkpoint=None, metrics={"policy_accuracy": 1.0})
    assert metric_cell(older, "judge_auroc") == "—"  # logged before the AUROC was: not known, not n/a

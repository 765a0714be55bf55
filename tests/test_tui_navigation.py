"""Pilot tests of the TUI's jumps, auto-play's end and the help (issue #17): go to round N,
first and last page (a 100,000-round run is 1,000 pages), auto-play that stops at the last
round of a finished run, scrolling a long output without Tab, and a help that lists it all."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Static

from storage import EvaluationCompleted, RoundPlayed, RunWriter
from tests.test_tui import SIZE, fixture_run, page_status, table_seqs, wait_for_rows, wait_until  # noqa: F401
from tests.test_tui_fixture_runs import FixtureRun, game_events, make_round, run_started
from tests.test_tui_rendering import BIG_RUN_ROUNDS, big_runs_dir  # noqa: F401
from tui.app import open_app
from tui.evaluations_screen import EvaluationsScreen, metric_cell, wilson_interval
from tui.help_screen import HelpScreen
from tui.round_screen import RoundScreen
from tui.run_screen import PAGE_SIZE, RunScreen

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


async def test_last_and_first_page_of_a_100000_round_run(big_runs_dir: Path) -> None:
    app = open_app(big_runs_dir / "big")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and len(table_seqs(app)) == PAGE_SIZE,
                         "the first page")
        await pilot.press("greater_than_sign")
        # Seq 0 is RunStarted, so round r is seq r + 1: the last page holds the last 100 rounds.
        last_page = list(range(BIG_RUN_ROUNDS - PAGE_SIZE + 1, BIG_RUN_ROUNDS + 1))
        await wait_until(pilot, lambda: table_seqs(app) == last_page, "the last page", timeout=60)
        await wait_until(pilot, lambda: "of 100,000" in page_status(app), "the count")
        assert "rows 99,901–100,000 of 100,000 · page 1,000" in page_status(app)
        await pilot.press("left_square_bracket")
        await wait_until(pilot, lambda: table_seqs(app) == [s - PAGE_SIZE for s in last_page], "page 999")
        assert "page 999 " in page_status(app)
        await pilot.press("less_than_sign")
        await wait_until(pilot, lambda: table_seqs(app) == list(range(1, PAGE_SIZE + 1)), "the first page again")
        assert "page 1 " in page_status(app)


async def test_last_page_of_a_filter_ends_where_its_rows_end(fixture_run: FixtureRun) -> None:  # noqa: F811
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [s for s, _ in fixture_run.rounds], "all 48 rounds on one page")
        await pilot.press("greater_than_sign")
        await pilot.pause(0.3)
        assert table_seqs(app) == [s for s, _ in fixture_run.rounds]  # one page: the last is the first
        assert "page 1 " in page_status(app)


async def test_g_goes_to_round_n(fixture_run: FixtureRun) -> None:  # noqa: F811
    seq, event = fixture_run.rounds[37]
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [s for s, _ in fixture_run.rounds], "all rounds")
        await pilot.press("g")
        assert app.screen.focused is app.screen.query_one("#goto", Input)
        await pilot.press(*str(event.round_id), "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen) and app.screen.round is not None,
                         "the round screen")
        assert app.screen.seq == seq and app.screen.round.round_id == event.round_id
        await pilot.press("escape")
        await pilot.press("g", "9", "9", "9", "enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, RunScreen)
        assert "no training round 999" in str(app.screen.query_one("#problem", Static).render())


async def test_auto_play_stops_saying_playing_after_the_last_round(fixture_run: FixtureRun) -> None:  # noqa: F811
    rounds = fixture_run.rounds
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [s for s, _ in rounds], "all rounds")
        app.screen.query_one("#rounds-table", DataTable).move_cursor(row=len(rounds) - 3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen), "the round screen")
        screen = app.screen
        await pilot.press("plus", "plus", "plus", "space")
        await wait_until(pilot, lambda: screen.round is not None and screen.round.round_id == rounds[-1][1].round_id,
                         "the last round")
        status = screen.query_one("#replay-status", Static)
        await wait_until(pilot, lambda: "last round of the run" in str(status.render()), "the end to be said")
        assert not screen.playing and "playing" not in str(status.render())


async def test_auto_play_on_a_live_run_waits_at_the_newest_round(tmp_path: Path) -> None:
    state = {"policy": 0, "monitor": 0, "lambda": 0.5, "round": 0}
    writer = RunWriter.create(tmp_path / "live", "live")
    writer.append(run_started())
    for event, end in game_events(1, state=state):
        if event is not None:
            writer.append(event)
        if end:
            writer.flush()
    try:
        app = open_app(tmp_path / "live")
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and len(table_seqs(app)) == 4, "rounds")
            app.screen.query_one("#rounds-table", DataTable).move_cursor(row=3)
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen), "the round screen")
            screen = app.screen
            await pilot.press("plus", "plus", "plus", "space")
            status = screen.query_one("#replay-status", Static)
            await wait_until(pilot, lambda: "waiting for new rounds" in str(status.render()), "waiting")
            assert screen.playing
    finally:
        writer.close()


async def test_long_output_scrolls_with_arrows_and_page_keys_without_tab(tmp_path: Path) -> None:
    long_output = "\n".join(f"step {i}: the ledger is in the hall." for i in range(200)) + "\nAnswer: A"
    with RunWriter.create(tmp_path / "long", "long") as writer:
        writer.append(run_started())
        for event, _ in game_events(1):
            if event is not None:
                if hasattr(event, "policy_output"):
                    event = dataclasses.replace(event, policy_output=long_output)
                writer.append(event)
    app = open_app(tmp_path / "long")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and len(table_seqs(app)) == 4, "rounds")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen) and app.screen.round is not None, "round")
        pane = app.screen.query_one("#game-pane", VerticalScroll)
        await pilot.pause(0.2)
        assert pane.max_scroll_y > 0 and pane.scroll_y == 0
        await pilot.press("pagedown")
        await wait_until(pilot, lambda: pane.scroll_y > 10, "a page down")
        after_page = pane.scroll_y
        await pilot.press("down")
        await wait_until(pilot, lambda: pane.scroll_y > after_page, "a few lines more")
        await pilot.press("pageup", "pageup")
        await wait_until(pilot, lambda: pane.scroll_y == 0, "back at the top")
        story = app.screen.query_one("#story-pane", VerticalScroll)
        if story.max_scroll_y > 0:
            await pilot.press("shift+down")
            await wait_until(pilot, lambda: story.scroll_y > 0, "the story to scroll")


async def test_help_lists_every_key_of_every_screen(fixture_run: FixtureRun) -> None:  # noqa: F811
    from tui.app import MinmaxApp
    from tui.runs_screen import RunsScreen

    from tui.help_screen import KEYS_HELP

    names = {"question_mark": "?", "escape": "Esc", "enter": "Enter", "f5": "F5", "r": "r", "o": "o",
             "right_square_bracket": "]", "left_square_bracket": "[", "less_than_sign": "<",
             "greater_than_sign": ">", "g": "g", "e": "e", "c": "c", "slash": "/", "n": "n", "p": "p", "right": "→",
             "left": "←", "space": "space", "plus": "+", "equals_sign": "+", "minus": "-", "up": "↑",
             "down": "↓", "pageup": "PgUp", "pagedown": "PgDn", "shift+down": "Shift+↑ ↓",
             "shift+up": "Shift+↑ ↓", "q": "q"}
    for screen in (MinmaxApp, RunsScreen, RunScreen, RoundScreen):
        for binding in screen.BINDINGS:
            for key in binding.key.split(","):
                assert names[key] in KEYS_HELP, f"{screen.__name__}: {key} is not in the help"
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_pane = app.screen.query_one("#help", VerticalScroll)
        await pilot.pause(0.2)
        assert help_pane.max_scroll_y > 0  # longer than the box at this size
        await pilot.press("pagedown")
        await wait_until(pilot, lambda: help_pane.scroll_y > 0, "the help to scroll")
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


def write_evaluated_run(run_dir: Path) -> list[tuple[int, list[tuple[int, RoundPlayed]], float]]:
    """Three windows of play, then two evaluations of six eval rounds each: (seq, rounds, accuracy)."""
    rng = random.Random(3)
    evaluations = []
    with RunWriter.create(run_dir, run_dir.name) as writer:
        writer.append(run_started())
        for event, _ in game_events(3):
            if event is not None:
                writer.append(event)
        for policy_version in (1, 2):
            rounds = []
            for index in range(6):
                event = make_round(rng, index, 0, policy_version, 3, 0.5, "minmax")
                rounds.append((writer.append(dataclasses.replace(event, phase="eval")).seq, event))
            accuracy = sum(e.truth == "correct" for _, e in rounds) / len(rounds)
            completed = writer.append(EvaluationCompleted(
                dataset="fixture-stories", split="eval", n_rounds=len(rounds), policy_version=policy_version,
                monitor_version=3, checkpoint=None, metrics={"policy_accuracy": accuracy},
            ))
            evaluations.append((completed.seq, rounds, accuracy))
    return evaluations


async def test_evaluations_view_lists_each_evaluation_and_its_rounds(tmp_path: Path) -> None:
    evaluations = write_evaluated_run(tmp_path / "evals")
    app = open_app(tmp_path / "evals")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and len(table_seqs(app)) == 12, "rounds")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EvaluationsScreen), "the evaluations screen")
        table = app.screen.query_one("#evaluations", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, "two evaluations")
        for row, (seq, rounds, accuracy) in enumerate(evaluations):
            cells = table.get_row_at(row)
            assert cells[0] == f"{seq:,}" and cells[4] == "6 (1/state)"  # samples_per_state of a log without it: 1
            assert cells[5] == f"{accuracy:.3f} (n ?)"  # a log without per-metric counts
        rounds_table = app.screen.query_one("#eval-rounds", DataTable)
        first_seqs = [seq for seq, _ in evaluations[0][1]]
        await wait_until(pilot, lambda: [int(str(k.value)) for k in rounds_table.rows] == first_seqs, "its rounds")
        await pilot.press("down")
        second_seqs = [seq for seq, _ in evaluations[1][1]]
        await wait_until(pilot, lambda: [int(str(k.value)) for k in rounds_table.rows] == second_seqs,
                         "the second one's rounds")
        assert "6 rounds of the evaluation at seq" in str(app.screen.query_one("#eval-rounds-title", Static).render())
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


def test_wilson_interval_and_metric_cells_with_counts() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the 95% Wilson interval of 8/10
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    counted = dataclasses.replace(
        EvaluationCompleted(dataset="d", split="eval", n_rounds=10, policy_version=1, monitor_version=1,
                            checkpoint=None, metrics={"policy_accuracy": 0.8}),
    )
    object.__setattr__(counted, "counts", {"policy_accuracy": [8, 10], "deception_rate": [0, 0]})
    assert metric_cell(counted, "policy_accuracy") == "0.800 [0.49, 0.94] n=10"
    assert metric_cell(counted, "deception_rate") == "n/a (n=0)"


async def test_compare_puts_marked_runs_side_by_side(tmp_path: Path) -> None:
    from tests.test_tui import runs_listed
    from tests.test_tui_fixture_runs import write_fixture_run
    from tui.compare_screen import CompareScreen
    from tui.runs_screen import RunsScreen

    runs_dir = tmp_path / "runs"
    plain = write_fixture_run(runs_dir / "a-plain", "a-plain")
    evaluations = write_evaluated_run(runs_dir / "b-evals")
    app = open_app(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: runs_listed(table, 2), "both runs")
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)
        assert "mark two or more runs" in str(app.screen.query_one("#runs-problem", Static).render())
        table.move_cursor(row=0)
        await pilot.press("space", "space")  # marks a-plain, then b-evals (the cursor moves down)
        assert [str(table.get_row_at(i)[0]) for i in range(2)] == ["✓ a-plain", "✓ b-evals"]
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), "the compare screen")
        compare = app.screen.query_one("#compare", DataTable)
        await wait_until(pilot, lambda: compare.row_count > 0, "the figures")
        assert [str(column.label) for column in compare.ordered_columns] == ["figure", "a-plain", "b-evals"]
        rows = {compare.get_row_at(i)[0]: compare.get_row_at(i)[1:] for i in range(compare.row_count)}
        assert rows["training rounds"] == [f"{len(plain.rounds):,}", "12"]
        assert rows["λ at last round"][0] == f"{plain.rounds[-1][1].lambda_value:.4f}"
        last_accuracy = evaluations[-1][2]
        assert rows["last eval: accuracy"] == ["—", f"{last_accuracy:.3f} (n ?)"]
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


def write_protocol_run(run_dir: Path) -> dict[str, tuple[int, list[int], dict[str, tuple[int, int]]]]:
    """A minmax run evaluated as the engine does: deployment rounds (the judge saw O only, no
    monitor fields), their EvaluationCompleted, then the monitored twins and theirs.
    Returns protocol -> (EvaluationCompleted seq, its round seqs, its counts)."""
    from engine.metrics import window_counts

    rng = random.Random(11)
    written = {}
    with RunWriter.create(run_dir, run_dir.name) as writer:
        writer.append(run_started())
        for event, _ in game_events(2):
            if event is not None:
                writer.append(event)
        monitored_rounds = [dataclasses.replace(make_round(rng, index, -1, 1, 2, 0.5, "minmax"), phase="eval",
                                                protocol="monitored") for index in range(10, 16)]
        deployment_rounds = [
            dataclasses.replace(twin, round_id=twin.round_id - 6, protocol="deployment", monitor_prompt=None,
                                monitor_prompt_ids=None, monitor_output=None, monitor_token_ids=None,
                                monitor_logprobs=None, monitor_says_correct=None, reward_monitor=None,
                                fidelity_penalty=None)
            for twin in monitored_rounds
        ]
        for protocol, rounds in (("deployment", deployment_rounds), ("monitored", monitored_rounds)):
            seqs = [writer.append(round_).seq for round_ in rounds]
            counts = window_counts(rounds)
            completed = writer.append(EvaluationCompleted(
                dataset="fixture-stories", split="eval", n_rounds=len(rounds), policy_version=1, monitor_version=2,
                checkpoint=None, metrics={}, protocol=protocol, samples_per_state=3,
                counts={name: [hits, eligible] for name, (hits, eligible) in counts.items()},
            ))
            written[protocol] = (completed.seq, seqs, counts)
    return written


async def test_evaluations_view_splits_deployment_from_monitored(tmp_path: Path) -> None:
    written = write_protocol_run(tmp_path / "protocols")
    app = open_app(tmp_path / "protocols")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), "the run")
        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, EvaluationsScreen), "the evaluations screen")
        table = app.screen.query_one("#evaluations", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2, "two evaluations")
        rounds_table = app.screen.query_one("#eval-rounds", DataTable)
        title = app.screen.query_one("#eval-rounds-title", Static)
        for row, protocol in enumerate(("deployment", "monitored")):
            seq, round_seqs, counts = written[protocol]
            cells = table.get_row_at(row)
            assert cells[0] == f"{seq:,}" and cells[1] == protocol and cells[4] == "6 (3/state)"
            if row:
                await pilot.press("down")
            # each evaluation lists its own rounds: a monitored evaluation never shows deployment ones
            await wait_until(pilot, lambda: [int(str(k.value)) for k in rounds_table.rows] == round_seqs, protocol)
            assert f"6 rounds of the {protocol} evaluation at seq {seq:,}" in str(title.render())
            hits, eligible = counts["policy_accuracy"]
            column = [column.key.value for column in table.columns.values()].index("policy_accuracy")
            assert str(cells[column]).startswith(f"{hits / eligible:.3f} [") and str(cells[column]).endswith(f"n={eligible}")
        # the monitor's rates are counted only where the monitor spoke
        deployment_cells = table.get_row_at(0)
        fidelity = [column.key.value for column in table.columns.values()].index("monitor_fidelity")
        assert deployment_cells[fidelity] == "—"
        assert "monitor_fidelity" in written["monitored"][2] and "monitor_fidelity" not in written["deployment"][2]

"""Pilot tests of `minmax-engine tui`: real fixture runs written by RunWriter, the real app.

Each test opens a run directory the way the command line does (`open_app`), drives the app
with key presses, and checks what the screens show against what the test computes itself
from the fixture's events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static

from storage import RoundPlayed, RunFinished, RunWriter
from tests.test_tui_fixture_runs import FixtureRun, game_events, run_started, write_fixture_run
from tui.app import MinmaxApp, open_app
from tui.charts import MetricChart
from tui.cli import main as cli_main
from tui.round_screen import RoundScreen
from tui.run_screen import PAGE_SIZE, RunScreen
from tui.runs_screen import RunsScreen

SIZE = (140, 44)

# Async tests run on anyio's pytest plugin (installed with textual), on asyncio.
pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


async def wait_until(pilot: Pilot, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def table_seqs(app: MinmaxApp) -> list[int]:
    table = app.screen.query_one("#rounds-table", DataTable)
    return [int(str(row_key.value)) for row_key in table.rows]


def page_status(app: MinmaxApp) -> str:
    return str(app.screen.query_one("#page-status", Static).render())


async def wait_for_rows(pilot: Pilot, app: MinmaxApp, expected: list[int], what: str) -> None:
    await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and table_seqs(app) == expected, what)


def runs_listed(table: DataTable, n_runs: int) -> bool:
    """All runs are in the list with their final status (not the first look's "reading…")."""
    return table.row_count == n_runs and all(
        str(table.get_row_at(i)[9]) != "reading…" for i in range(n_runs)
    )


@pytest.fixture()
def fixture_run(tmp_path: Path) -> FixtureRun:
    return write_fixture_run(tmp_path / "runs" / "game-a", "game-a")


# --- runs list → rounds → detail ---------------------------------------------------------------


async def test_runs_list_summarises_each_run_and_opens_one(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    finished = write_fixture_run(runs_dir / "game-a", "game-a")
    running = write_fixture_run(runs_dir / "game-b", "game-b", windows=3, mode="rlhf", finished=False)
    writer = RunWriter.open_existing(runs_dir / "game-b")  # game-b's writer is alive: it is running
    app = open_app(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: runs_listed(table, 2), "two runs summarised")
        rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(2)}

        a_rounds = [event for _, event in finished.rounds]
        a_lambda = a_rounds[-1].lambda_value
        assert rows["game-a"][1] == "minmax"
        assert rows["game-a"][3] == str(len(a_rounds))
        assert rows["game-a"][5] == f"{a_lambda:.4f}"
        last_window = [event for event in a_rounds if event.window == a_rounds[-1].window]
        assert rows["game-a"][6] == str(a_rounds[-1].window)
        accuracy = sum(event.truth == "correct" for event in last_window) / len(last_window)
        assert rows["game-a"][7] == f"{accuracy:.3f} n={len(last_window)}"
        assert str(rows["game-a"][9]) == "finished"
        assert rows["game-b"][1] == "rlhf"
        assert rows["game-b"][3] == str(len(running.rounds))
        assert rows["game-b"][5] == "n/a"  # rlhf has no λ, not a λ of 0
        assert str(rows["game-b"][9]) == "running"
        # its writer dies (no RunFinished, no RunFailed): the list says so without a reload
        writer.close()
        b_row = [i for i in range(2) if table.get_row_at(i)[0] == "game-b"][0]
        await wait_until(pilot, lambda: str(table.get_row_at(b_row)[9]).startswith("stopped"), "game-b stopped")
        assert str(table.get_row_at(b_row)[9]) == "stopped (no checkpoint logged: start it again)"

        table.move_cursor(row=[i for i in range(2) if table.get_row_at(i)[0] == "game-a"][0])
        await pilot.press("enter")
        first_page = [seq for seq, _ in finished.rounds][:PAGE_SIZE]
        await wait_for_rows(pilot, app, first_page, "game-a's rounds")

        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen), "the round screen")
        seq, third = finished.rounds[2]
        await wait_until(pilot, lambda: app.screen.round is not None, "the round to load")
        title = str(app.screen.query_one("#round-title", Static).render())
        assert f"round {third.round_id} " in title and f"seq {seq} " in title
        assert third.question in str(app.screen.query_one("#question", Static).render())

        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_rounds_table_shows_each_rounds_facts(fixture_run: FixtureRun) -> None:
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [seq for seq, _ in fixture_run.rounds], "all rounds")
        table = app.screen.query_one("#rounds-table", DataTable)
        for index, (_, event) in enumerate(fixture_run.rounds):
            step, truth, answer, verdict, p_accept, reward, f, lam, version = table.get_row_at(index)
            assert step == str(event.round_id)
            assert str(truth) == event.truth
            assert answer == ("unparsed" if event.policy_answer is None else "ABCD"[event.policy_answer])
            expected_verdict = {True: "CORRECT", False: "INCORRECT", None: "unparsed"}[event.monitor_says_correct]
            assert verdict == expected_verdict
            assert p_accept == f"{event.p_accept:.3f}"
            assert reward == f"{event.combined_reward:.3f}"
            assert f == f"{event.fidelity_penalty:.3f}"
            assert lam == f"{event.lambda_value:.4f}"
            assert version == str(event.policy_version)
        await wait_until(pilot, lambda: "rows 1–48 of 48 " in page_status(app), "the count of 48 rounds")


# --- filters ---------------------------------------------------------------------------------

OUTCOME_PREDICATES: dict[str, Callable[[RoundPlayed], bool]] = {
    "all": lambda r: True,
    # "Wrong" means parsed and wrong: an unparsed answer is its own outcome (docs/metrics.md).
    "deceptions": lambda r: r.truth == "wrong" and r.judge_accepts,
    "false_accusations": lambda r: r.truth == "correct" and r.monitor_says_correct is False,
    "missed_errors": lambda r: r.truth == "wrong" and r.monitor_says_correct is True,
    "unparsed": lambda r: r.truth == "unparsed" or r.monitor_says_correct is None,
}


@pytest.mark.parametrize("outcome", list(OUTCOME_PREDICATES))
async def test_outcome_filter_shows_exactly_matching_rounds(fixture_run: FixtureRun, outcome: str) -> None:
    expected = [seq for seq, event in fixture_run.rounds if OUTCOME_PREDICATES[outcome](event)]
    assert expected, "the fixture must have rounds of this outcome"
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [seq for seq, _ in fixture_run.rounds], "all rounds")
        app.screen.query_one("#outcome", Select).value = outcome
        await wait_for_rows(pilot, app, expected, f"{outcome} rows")
        await wait_until(pilot, lambda: f"of {len(expected)} " in page_status(app), "the filtered count")


async def test_update_range_filter_keeps_rounds_of_those_policy_versions(fixture_run: FixtureRun) -> None:
    expected = [seq for seq, event in fixture_run.rounds if 1 <= event.policy_version <= 2]
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [seq for seq, _ in fixture_run.rounds], "all rounds")
        await pilot.click("#min-version")
        await pilot.press("1", "enter")
        await pilot.click("#max-version")
        await pilot.press("2", "enter")
        await wait_for_rows(pilot, app, expected, "rounds of versions 1..2")

        # The outcome filter narrows the range further instead of replacing it.
        app.screen.query_one("#outcome", Select).value = "deceptions"
        narrowed = [seq for seq, e in fixture_run.rounds
                    if 1 <= e.policy_version <= 2 and OUTCOME_PREDICATES["deceptions"](e)]
        await wait_for_rows(pilot, app, narrowed, "deceptions of versions 1..2")
        assert set(table_seqs(app)) <= set(expected)


@pytest.mark.parametrize("typed", ["LIGHTHOUSE", "harbour", "100%", "_"])
async def test_search_matches_question_text_literally(fixture_run: FixtureRun, typed: str) -> None:
    expected = [seq for seq, event in fixture_run.rounds if typed.lower() in event.question.lower()]
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [seq for seq, _ in fixture_run.rounds], "all rounds")
        await pilot.press("slash")
        assert isinstance(app.focused, Input) and app.focused.id == "search"
        await pilot.press(*typed, "enter")
        await wait_for_rows(pilot, app, expected, f"rounds whose question contains {typed!r}")


async def test_pages_move_through_a_long_run(tmp_path: Path) -> None:
    run = write_fixture_run(tmp_path / "long", "long", windows=60)
    seqs = [seq for seq, _ in run.rounds]
    assert len(seqs) == 240
    app = open_app(run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, seqs[:PAGE_SIZE], "page 1")
        await pilot.press("right_square_bracket")
        await wait_for_rows(pilot, app, seqs[PAGE_SIZE:2 * PAGE_SIZE], "page 2")
        await pilot.press("right_square_bracket", "right_square_bracket")
        await wait_for_rows(pilot, app, seqs[2 * PAGE_SIZE:], "the last page")
        await wait_until(pilot, lambda: "rows 201–240 of 240 " in page_status(app), "the last page's status")
        await pilot.press("left_square_bracket")
        await wait_for_rows(pilot, app, seqs[PAGE_SIZE:2 * PAGE_SIZE], "page 2 again")


# --- overview ----------------------------------------------------------------------------------


async def test_overview_charts_have_one_point_per_training_window(fixture_run: FixtureRun) -> None:
    rounds = [event for _, event in fixture_run.rounds]
    windows = sorted({r.window for r in rounds})
    expected_accuracy = [
        sum(r.truth == "correct" for r in rounds if r.window == w) / sum(r.window == w for r in rounds)
        for w in windows
    ]
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        accuracy = app.screen.query_one("#chart-accuracy", MetricChart)
        await wait_until(pilot, lambda: len(accuracy.values) == len(windows), "the accuracy series")
        assert accuracy.values == pytest.approx(expected_accuracy)
        lambda_chart = app.screen.query_one("#chart-lambda", MetricChart)
        last_lambda_per_window = [[r for r in rounds if r.window == w][-1].lambda_value for w in windows]
        assert lambda_chart.values == pytest.approx(last_lambda_per_window)
        counts = str(app.screen.query_one("#counts", Static).render())
        assert "rounds      48 training" in counts and "finished" in counts
        tree_labels = {str(node.label) for node in app.screen.query_one("#config").root.children}
        assert {"policy", "monitor", "lagrangian"} <= tree_labels


async def test_overview_gives_the_last_deployment_evaluation_with_n(tmp_path: Path) -> None:
    import dataclasses

    from engine.outcomes import outcome_counts
    from storage import EvaluationCompleted

    run = write_fixture_run(tmp_path / "runs" / "game-e", "game-e", finished=False)
    played = [dataclasses.replace(event, phase="eval", window=-1, round_id=i, protocol="deployment")
              for i, (_, event) in enumerate(run.rounds[:10])]
    counts = outcome_counts(played)
    with RunWriter.open_existing(run.run_dir) as writer:
        for event in played:
            writer.append(event)
        evaluation = writer.append(EvaluationCompleted(
            dataset="d", split="eval", n_rounds=10, policy_version=3, monitor_version=9, checkpoint=None,
            metrics={}, protocol="deployment", samples_per_state=2, counts=counts))
    app = open_app(run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        await wait_until(pilot, lambda: "deployment eval" in str(app.screen.query_one("#counts", Static).render()),
                         "the evaluation line")
        text = str(app.screen.query_one("#counts", Static).render())
        hits, n = counts["policy_accuracy"]
        assert f"deployment eval (policy v3, seq {evaluation.seq}): accuracy {hits / n:.3f} (n={n})" in text
        assert "monitored eval: none yet" in text  # said, not left blank
        assert "rounds      48 training" in text  # the eval rounds are not training rounds


# --- replay ----------------------------------------------------------------------------------


async def test_replay_steps_forward_and_back_with_the_chart_cursor(fixture_run: FixtureRun) -> None:
    rounds = fixture_run.rounds
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [seq for seq, _ in rounds], "all rounds")
        # Start on the last round of window 0, so stepping crosses into the next window.
        start = max(i for i, (_, e) in enumerate(rounds) if e.window == 0)
        app.screen.query_one("#rounds-table", DataTable).move_cursor(row=start)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen), "the round screen")
        screen = app.screen
        assert isinstance(screen, RoundScreen)

        def showing(index: int) -> Callable[[], bool]:
            return lambda: screen.round is not None and screen.round.round_id == rounds[index][1].round_id

        await wait_until(pilot, showing(start), "the chosen round")
        chart = screen.query_one("#replay-accuracy", MetricChart)
        await wait_until(pilot, lambda: chart.cursor == 0, "the cursor on window 0")

        await pilot.press("n")
        await wait_until(pilot, showing(start + 1), "the next round")
        await wait_until(pilot, lambda: chart.cursor == rounds[start + 1][1].window, "the cursor to move")
        await pilot.press("right")
        await wait_until(pilot, showing(start + 2), "two rounds on")
        await pilot.press("p", "left")
        await wait_until(pilot, showing(start), "back where we started")
        await wait_until(pilot, lambda: chart.cursor == 0, "the cursor back on window 0")

        # Auto-play: faster, then it moves on by itself; space stops it.
        await pilot.press("plus", "plus", "plus", "plus")
        assert "32 rounds/s" in str(screen.query_one("#replay-status", Static).render())
        await pilot.press("space")
        await wait_until(pilot, lambda: screen.round is not None and screen.round.round_id >= rounds[start + 5][1].round_id,
                         "auto-play to advance five rounds")
        await pilot.press("space")
        await pilot.pause(0.2)
        stopped_at = screen.round.round_id
        await pilot.pause(0.3)
        assert screen.round.round_id == stopped_at and not screen.playing
        # "paused", or "last round of the run" when 32 rounds/s reached the end first
        assert "playing" not in str(screen.query_one("#replay-status", Static).render())


async def test_round_detail_marks_the_correct_choice_and_parsed_answers(fixture_run: FixtureRun) -> None:
    index, (seq, event) = next((i, pair) for i, pair in enumerate(fixture_run.rounds)
                               if pair[1].truth == "wrong" and pair[1].monitor_says_correct is False)
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_rows(pilot, app, [s for s, _ in fixture_run.rounds], "all rounds")
        app.screen.query_one("#rounds-table", DataTable).move_cursor(row=index)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RoundScreen) and app.screen.round is not None,
                         "the round")
        question = app.screen.query_one("#question", Static).render()
        correct_line = f"✓ {'ABCD'[event.correct_index]}. {event.choices[event.correct_index]}"
        answer_line = f"{'ABCD'[event.policy_answer]}. {event.choices[event.policy_answer]}  ◀ policy"
        assert correct_line in str(question) and answer_line in str(question)
        policy = app.screen.query_one("#policy-output", Static).content  # the rich Text we drew
        assert f"answer {'ABCD'[event.policy_answer]}" in str(policy)
        # The parsed letter at the end of O is the highlighted span.
        assert any(str(policy)[span.start:span.end] == "ABCD"[event.policy_answer] and "reverse" in str(span.style)
                   for span in policy.spans if span.start > len("O (policy) answer X"))
        monitor = app.screen.query_one("#monitor-output", Static).content
        assert any(str(monitor)[span.start:span.end] == "INCORRECT" and span.start > 30 for span in monitor.spans)
        scores = str(app.screen.query_one("#scores", Static).render())
        assert f"p_accept {event.p_accept:.3f}" in scores and f"λ {event.lambda_value:.4f}" in scores
        assert f"policy v{event.policy_version}, monitor v{event.monitor_version}" in scores


# --- live follow -----------------------------------------------------------------------------


async def test_rounds_of_a_run_being_written_appear_without_restarting(tmp_path: Path) -> None:
    run_dir = tmp_path / "live"
    state = {"policy": 0, "monitor": 0, "lambda": 0.5, "round": 0}
    writer = RunWriter.create(run_dir, "live")
    writer.append(run_started())
    for event, end in game_events(2, state=state):
        if event is not None:
            writer.append(event)
        if end:
            writer.flush()
    more_windows_written = threading.Event()
    keep_writing = threading.Event()

    def write_in_background() -> None:
        keep_writing.wait(10)
        for window in range(2, 6):
            for event, end in game_events(1, first_window=window, state=state):
                if event is not None:
                    writer.append(event)
                if end:
                    writer.flush()
            time.sleep(0.2)
        writer.append(RunFinished(rounds=state["round"], policy_updates=state["policy"],
                                  monitor_updates=state["monitor"], wall_seconds=1.0))
        writer.close()
        more_windows_written.set()

    background = threading.Thread(target=write_in_background, daemon=True)
    background.start()
    try:
        app = open_app(run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and len(table_seqs(app)) == 8,
                             "the first two windows")
            keep_writing.set()
            await wait_until(pilot, lambda: len(table_seqs(app)) == 24, "rounds written after the app opened")
            assert await asyncio.to_thread(more_windows_written.wait, 10), "the background writer did not finish"
            await pilot.press("o")
            await wait_until(pilot, lambda: "finished" in str(app.screen.query_one("#counts", Static).render()),
                             "the run to show as finished")
    finally:
        keep_writing.set()
        background.join(10)


async def test_runs_list_follows_a_run_being_written(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    state = {"policy": 0, "monitor": 0, "lambda": 0.5, "round": 0}
    writer = RunWriter.create(runs_dir / "live", "live")
    writer.append(run_started())
    for event, end in game_events(1, state=state):
        if event is not None:
            writer.append(event)
        if end:
            writer.flush()
    try:
        app = open_app(runs_dir)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: runs_listed(table, 1) and table.get_row_at(0)[3] == "4", "4 rounds")
            assert str(table.get_row_at(0)[9]) == "running"
            for event, end in game_events(2, first_window=1, state=state):
                if event is not None:
                    writer.append(event)
                if end:
                    writer.flush()
            writer.append(RunFinished(rounds=12, policy_updates=0, monitor_updates=3, wall_seconds=1.0))
            writer.flush()
            await wait_until(pilot, lambda: str(table.get_row_at(0)[9]) == "finished", "the run to finish")
            assert table.get_row_at(0)[3] == "12"
    finally:
        writer.close()


# --- help and quit ---------------------------------------------------------------------------


async def test_help_screen_opens_and_closes_and_q_quits(fixture_run: FixtureRun) -> None:
    app = open_app(fixture_run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert app.screen.query_one("#help-title", Static) is not None
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0 or not app.is_running


# --- errors a user can cause -------------------------------------------------------------------


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_nonexistent_path_is_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["tui", str(tmp_path / "nowhere")])
    assert "nowhere" in line and "no such file or directory" in line


def test_corrupt_run_is_one_line_on_stderr(fixture_run: FixtureRun, capsys: pytest.CaptureFixture[str]) -> None:
    first_segment = sorted((fixture_run.run_dir / "log").glob("*.arrow"))[0]
    first_segment.write_bytes(b"this is not an arrow file")
    line = one_line_error(capsys, ["tui", str(fixture_run.run_dir)])
    assert str(fixture_run.run_dir) in line


async def test_corrupt_run_in_the_runs_list_is_marked_unreadable(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    write_fixture_run(runs_dir / "good", "good")
    broken = write_fixture_run(runs_dir / "broken", "broken")
    sorted((broken.run_dir / "log").glob("*.arrow"))[0].write_bytes(b"garbage")
    app = open_app(runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: runs_listed(table, 2), "both runs summarised")
        statuses = {table.get_row_at(i)[0]: str(table.get_row_at(i)[9]) for i in range(2)}
        assert statuses == {"good": "finished", "broken": "unreadable"}
        table.move_cursor(row=[i for i in range(2) if table.get_row_at(i)[0] == "broken"][0])
        await pilot.press("enter")
        assert isinstance(app.screen, RunsScreen)
        assert "broken" in str(app.screen.query_one("#runs-problem", Static).render())

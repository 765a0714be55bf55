"""Pilot tests of the TUI's rendering bugs of issue #17, each reproduced before its fix.

- The runs list clipped numbers wider than their column: a 100,000-round run showed `100,00`.
- The rounds table opened with every column cut to its header width about one open in ten:
  DataTable measures new cells when it is idle but caches rendered cells by an update
  counter, so a paint that fell between adding the rows and that idle cached cells cut to the
  header's width, and they stayed cut. The test makes that paint happen every time.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.widgets import DataTable, Static

from storage import RunFinished, RunWriter
from tests.test_tui import SIZE, runs_listed, table_seqs, wait_for_rows, wait_until
from tests.test_tui_fixture_runs import make_round, run_started, write_fixture_run
from tui.app import open_app
from tui.charts import BARS, MetricChart
from tui.run_data import RunData
from tui.run_screen import PAGE_SIZE, RunScreen

pytestmark = pytest.mark.anyio

BIG_RUN_ROUNDS = 100_000


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def big_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished rlhf run of 100,000 training rounds (short texts, so it writes in seconds)."""
    runs_dir = tmp_path_factory.mktemp("big") / "runs"
    rng = random.Random(5)
    with RunWriter.create(runs_dir / "big", "big") as writer:
        writer.append(run_started("rlhf"))
        for round_id in range(BIG_RUN_ROUNDS):
            event = make_round(rng, round_id, round_id // 100, round_id // 1000, 0, 0.5, "rlhf")
            writer.append(dataclasses.replace(event, story="s", policy_output="Answer: A"))
            if round_id % 25_000 == 24_999:
                writer.flush()
        writer.append(RunFinished(rounds=BIG_RUN_ROUNDS, policy_updates=0, monitor_updates=0, wall_seconds=1.0))
    return runs_dir



async def test_runs_list_shows_six_digit_round_counts_whole(big_runs_dir: Path) -> None:
    app = open_app(big_runs_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: runs_listed(table, 1), "the big run summarised", timeout=60)
        assert table.get_row_at(0)[3] == "100,000"
        await pilot.pause(0.2)
        shown = [table.render_line(y).text for y in range(table.size.height)]
        big_line = next(line for line in shown if "big" in line)
        assert " 100,000 " in big_line, big_line


def paint_before_idle(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the first page arrive after the table has focus and be painted at once, before
    the table's idle handler measures the new cells: the timing that cut every column one
    open in ten. Returns the gate that lets the first page be read."""
    gate = threading.Event()
    page_after = RunData.page_after

    def page_after_the_gate(self: RunData, *args):
        gate.wait(10)
        return page_after(self, *args)

    show_page = RunScreen.show_page

    def show_page_then_paint(self: RunScreen, *args) -> None:
        show_page(self, *args)
        table = self.query_one("#rounds-table", DataTable)
        table.render_lines(Region(0, 0, table.size.width, table.size.height))  # what the compositor does

    monkeypatch.setattr(RunData, "page_after", page_after_the_gate)
    monkeypatch.setattr(RunScreen, "show_page", show_page_then_paint)
    return gate


async def test_rounds_table_columns_fit_their_cells_even_when_painted_before_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = write_fixture_run(tmp_path / "runs" / "game-a", "game-a")
    gate = paint_before_idle(monkeypatch)
    app = open_app(run.run_dir)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#rounds-table", DataTable)
        await wait_until(pilot, lambda: table.get_pseudo_class_state().focus, "the table to have focus")
        gate.set()
        await wait_for_rows(pilot, app, [seq for seq, _ in run.rounds][:PAGE_SIZE], "the first page")
        await pilot.pause(0.2)
        shown = table.render_lines(Region(0, 1, table.size.width, 20))
        for line, (_, event) in zip(shown, run.rounds, strict=False):
            text = line.text
            assert f" {event.truth} " in text, text  # "unparsed" and "correct", not "trut"
            verdict = {True: "CORRECT", False: "INCORRECT", None: "unparsed"}[event.monitor_says_correct]
            assert f" {verdict} " in text, text
            assert f" {event.p_accept:.3f} " in text, text


# --- an empty or growing runs directory ----------------------------------------------------


async def test_tui_opens_on_an_empty_directory_and_lists_runs_created_later(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / "notes.txt").write_text("not a run")  # other files do not stop it either
    app = open_app(runs_dir)  # used to be a one-line error and exit 2
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#runs", DataTable)
        empty_note = app.screen.query_one("#runs-empty", Static)
        assert table.row_count == 0 and empty_note.display
        assert "no runs in" in str(empty_note.render())

        write_fixture_run(runs_dir / "game-a", "game-a")  # a run created while the list is open
        await wait_until(pilot, lambda: runs_listed(table, 1), "the new run to be listed without F5")
        assert table.get_row_at(0)[0] == "game-a" and str(table.get_row_at(0)[9]) == "finished"
        assert not empty_note.display

        write_fixture_run(runs_dir / "group" / "game-b", "game-b", mode="rlhf")
        await wait_until(pilot, lambda: runs_listed(table, 2), "a second one, one level deeper")


# --- charts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "cursor", "value_text", "range_text"),
    [
        ([0.25, 0.5, 1.0], None, "1.000 last", ("0.250", "1.000")),
        ([0.25, 0.5, 1.0], 0, "0.250 w3", ("0.250", "1.000")),
        ([0.7, 0.7, 0.7], None, "0.700 last", ("0.000", "0.700")),  # flat: against zero
        ([0.0, 0.0], 1, "0.000 w4", ("0.000", "0.000")),
    ],
)
async def test_chart_prints_its_y_range_and_says_which_value_it_shows(
    values: list[float], cursor: int | None, value_text: str, range_text: tuple[str, str]
) -> None:
    from textual.app import App

    class ChartApp(App[None]):
        def compose(self):
            yield MetricChart("accuracy", id="chart")

    app = ChartApp()
    async with app.run_test(size=(80, 3)) as pilot:
        chart = app.query_one(MetricChart)
        chart.set_values(values, [3, 4, 5][: len(values)])
        chart.cursor = cursor
        await pilot.pause()
        line = str(chart.render())
        assert value_text in " ".join(line.split())
        *_, low, bars, high = line.split()
        assert (low, high) == range_text
        assert set(bars) <= set(BARS) and bars
        if values[0] == values[-1]:
            # A flat series is one bar height throughout: the top when above zero, the bottom at zero.
            assert set(bars) == ({BARS[-1]} if values[0] > 0 else {BARS[0]})
        else:
            assert bars[0] == BARS[0] and bars[-1] == BARS[-1]

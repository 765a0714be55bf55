"""SVG snapshots of the TUI's main screens (pytest-textual-snapshot), at 140×44.

The fixture runs are seeded, opened through a relative path (so no temporary directory name
is on screen), and written under a fixed clock (so the runs list's start times are the same
on every machine). Regenerate after a deliberate change of look with
`pytest tests/test_tui_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Select

from storage import RunWriter
from tests.test_tui_fixture_runs import write_fixture_run
from tui.app import open_app
from tui.charts import MetricChart
from tui.round_screen import RoundScreen
from tui.run_screen import RunScreen

SIZE = (140, 44)


@pytest.fixture()
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """runs/game-a (minmax, finished) and runs/game-b (rlhf, running), written at fixed times."""
    # The writer stamps events with the system clock; a stopped clock that ticks 1 ms per
    # reading (as freezegun would) gives the same timestamps on every machine.
    readings = itertools.count()
    start_ns = 1_767_346_200 * 10**9  # 2026-01-02 09:30:00 UTC
    with monkeypatch.context() as clock:
        clock.setattr(time, "time_ns", lambda: start_ns + next(readings) * 10**6)
        write_fixture_run(tmp_path / "runs" / "game-a", "game-a")
        write_fixture_run(tmp_path / "runs" / "game-b", "game-b", windows=3, mode="rlhf", finished=False)
    monkeypatch.chdir(tmp_path)
    with RunWriter.open_existing(tmp_path / "runs" / "game-b"):  # a live writer: game-b is running
        yield Path("runs")


def until(condition: Callable[[Pilot], bool]) -> Callable[[Pilot], object]:
    async def wait(pilot: Pilot) -> None:
        deadline = time.monotonic() + 15
        while not condition(pilot):
            assert time.monotonic() < deadline, "the screen did not finish loading"
            await pilot.pause(0.05)
        await pilot.pause()
    return wait


def rounds_loaded(pilot: Pilot) -> bool:
    """The first page is shown and the background count is in (the status line is final)."""
    screen = pilot.app.screen
    return isinstance(screen, RunScreen) and screen.query_one("#rounds-table", DataTable).row_count > 0 \
        and screen.filtered_count is not None


def test_runs_list(snap_compare, runs_dir: Path) -> None:
    def listed(pilot: Pilot) -> bool:
        table = pilot.app.screen.query_one("#runs", DataTable)
        return table.row_count == 2 and all(str(table.get_row_at(i)[8]) != "reading…" for i in range(2))
    assert snap_compare(open_app(runs_dir), terminal_size=SIZE, run_before=until(listed))


def test_rounds_table(snap_compare, runs_dir: Path) -> None:
    assert snap_compare(open_app(runs_dir / "game-a"), terminal_size=SIZE, run_before=until(rounds_loaded))


def test_rounds_table_filtered_to_deceptions(snap_compare, runs_dir: Path) -> None:
    async def filter_deceptions(pilot: Pilot) -> None:
        await until(rounds_loaded)(pilot)
        pilot.app.screen.query_one("#outcome", Select).value = "deceptions"
        await until(lambda p: "deceptions" in str(p.app.screen.query_one("#page-status").render())
                    and p.app.screen.filtered_count is not None)(pilot)
    assert snap_compare(open_app(runs_dir / "game-a"), terminal_size=SIZE, run_before=filter_deceptions)


def test_overview(snap_compare, runs_dir: Path) -> None:
    async def overview(pilot: Pilot) -> None:
        await until(rounds_loaded)(pilot)
        await pilot.press("o")
        await until(lambda p: len(p.app.screen.query_one("#chart-kl", MetricChart).values) > 0)(pilot)
    assert snap_compare(open_app(runs_dir / "game-a"), terminal_size=SIZE, run_before=overview)


def test_round_detail(snap_compare, runs_dir: Path) -> None:
    async def open_round(pilot: Pilot) -> None:
        await until(rounds_loaded)(pilot)
        await pilot.press("down", "down", "down", "down", "down", "enter")
        await until(lambda p: isinstance(p.app.screen, RoundScreen) and p.app.screen.round is not None
                    and p.app.screen.series is not None)(pilot)
    assert snap_compare(open_app(runs_dir / "game-a"), terminal_size=SIZE, run_before=open_round)


def test_help(snap_compare, runs_dir: Path) -> None:
    async def help_screen(pilot: Pilot) -> None:
        await until(rounds_loaded)(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
    assert snap_compare(open_app(runs_dir / "game-a"), terminal_size=SIZE, run_before=help_screen)


def test_evaluations(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_tui_navigation import write_evaluated_run
    from tui.evaluations_screen import EvaluationsScreen

    write_evaluated_run(tmp_path / "runs" / "evals")
    monkeypatch.chdir(tmp_path)

    async def evaluations(pilot: Pilot) -> None:
        await until(rounds_loaded)(pilot)
        await pilot.press("e")
        await until(lambda p: isinstance(p.app.screen, EvaluationsScreen)
                    and p.app.screen.query_one("#eval-rounds", DataTable).row_count > 0)(pilot)
    assert snap_compare(open_app(Path("runs/evals")), terminal_size=SIZE, run_before=evaluations)


def test_compare(snap_compare, runs_dir: Path) -> None:
    from tui.compare_screen import CompareScreen

    async def compare(pilot: Pilot) -> None:
        await until(lambda p: p.app.screen.query_one("#runs", DataTable).row_count == 2
                    and all(str(p.app.screen.query_one("#runs", DataTable).get_row_at(i)[8]) != "reading…"
                            for i in range(2)))(pilot)
        pilot.app.screen.query_one("#runs", DataTable).move_cursor(row=0)
        await pilot.press("space", "space", "c")
        await until(lambda p: isinstance(p.app.screen, CompareScreen)
                    and p.app.screen.query_one("#compare", DataTable).row_count > 0)(pilot)
    assert snap_compare(open_app(runs_dir), terminal_size=SIZE, run_before=compare)

"""`minmax-engine tui`: replay and inspect training games in the terminal.

    minmax-engine tui runs/            # the runs list; Enter opens one
    minmax-engine tui runs/<run_id>    # one run: rounds table, overview, round replay

The app reads runs only through `storage.RunReader` and `storage.RunsQuery` (see
tui/run_data.py) and never writes to them, so it can watch a run that `play` is still
writing. Problems a user can cause (a missing path, a directory that holds no run, a run
whose log cannot be read) are reported in one line on stderr before the app starts; ones
found later (a log that turns out corrupt halfway) are shown as a message in the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from textual.app import App
from textual.binding import Binding

from tui.help_screen import HelpScreen
from tui.run_data import RunData, resolve_start_path
from tui.run_screen import RunScreen
from tui.runs_screen import RunsScreen


class MinmaxApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "minmax-engine"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, path: Path, kind: Literal["run", "runs"], *, run_data: RunData | None = None) -> None:
        super().__init__()
        self.start_path = path
        self.start_kind = kind
        self.run_data = run_data

    def on_mount(self) -> None:
        if self.start_kind == "runs":
            self.sub_title = str(self.start_path)
            self.push_screen(RunsScreen(self.start_path))
        else:
            self.sub_title = str(self.start_path)
            self.push_screen(RunScreen(self.start_path, data=self.run_data))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def open_app(path: Path) -> MinmaxApp:
    """The app for `path`, or a UserError saying in one line why it cannot be opened."""
    kind, resolved = resolve_start_path(path)
    if kind == "runs":
        return MinmaxApp(resolved, "runs")
    run_data = RunData(resolved)
    # Read the first event now: a run whose log is unreadable fails here, on stderr,
    # rather than inside the app.
    run_data.run_started()
    return MinmaxApp(resolved, "run", run_data=run_data)

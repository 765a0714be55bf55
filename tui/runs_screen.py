"""The runs list: one line per run directory under RUNS_DIR; Enter opens one.

The directory may be empty or still growing: a timer looks for new run directories as well
as re-reading running runs. Space marks runs and `c` compares the marked ones.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from storage import RunReader, UserError
from storage.writer import writer_alive
from tui.deliver import deliver
from tui.formatting import number
from tui.run_data import RunSummary, find_run_dirs, first_look, summarize_run_dir
from tui.tables import MeasuredTable

STATUS_STYLES = {"running": "bold yellow", "finished": "green", "failed": "bold red", "stopped": "magenta"}

# A running run changes under us and new runs appear; finished and failed ones are summarised once.
POLL_SECONDS = 2.0


class RunsScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "open_run", "Open run", show=True),
        Binding("f5", "reload", "Reload"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.summaries: dict[str, RunSummary] = {}
        self.summarized_at_seq: dict[Path, int | None] = {}
        self.marked: list[str] = []  # run keys marked for the compare screen, in marking order

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"Runs in {self.runs_dir}"), id="runs-title", classes="screen-title")
        yield Static(Text(f"no runs in {self.runs_dir} yet; runs started there appear here on their own"),
                     id="runs-empty")
        yield MeasuredTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        table.add_column("run", key="run")
        table.add_column("mode", key="mode")
        table.add_column("started (UTC)", key="started")
        table.add_column("rounds", key="rounds")
        table.add_column("updates", key="updates")
        table.add_column("λ at last round", key="lambda")
        table.add_column("last window", key="window")
        table.add_column("accuracy (window)", key="accuracy")
        table.add_column("deception (window)", key="deception")
        table.add_column("status", key="status")
        self.load_summaries(only_running=False)
        self.set_interval(POLL_SECONDS, self.poll_running)

    def poll_running(self) -> None:
        if self.loading():
            return  # one pass at a time; the one under way sees the latest log anyway
        self.load_summaries(only_running=True)  # running runs, and runs created since the last look

    def action_reload(self) -> None:
        if not self.loading():
            self.load_summaries(only_running=False)

    def loading(self) -> bool:
        return any(worker.group == "runs" and worker.node is self and not worker.is_finished
                   for worker in self.app.workers)

    def action_open_run(self) -> None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        summary = self.summaries[str(row_key.value)]
        if summary.problem:
            self.query_one("#runs-problem", Static).update(Text(summary.problem))
            return
        from tui.run_screen import RunScreen

        self.app.push_screen(RunScreen(summary.run_dir, can_go_back=True))

    def action_mark(self) -> None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        key = str(row_key.value)
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked.append(key)
        self.show_summary(self.summaries[key])
        table.move_cursor(row=table.cursor_row + 1)

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.query_one("#runs-problem", Static).update(
                Text("mark two or more runs with space, then press c to compare them"))
            return
        self.query_one("#runs-problem", Static).update("")
        from tui.compare_screen import CompareScreen

        self.app.push_screen(CompareScreen([self.summaries[key].run_dir for key in self.marked]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    @work(thread=True, group="runs")
    def load_summaries(self, only_running: bool) -> None:
        found = find_run_dirs(self.runs_dir)
        new_dirs = [run_dir for run_dir in found if run_dir not in self.summarized_at_seq]
        if only_running:
            # A run whose first events were not flushed yet reads as unreadable: look again.
            again = [s.run_dir for s in list(self.summaries.values()) if s.status == "running" or s.problem]
            run_dirs = again + new_dirs
        else:
            run_dirs = found
        # First what the first event says (instant), then the aggregates (seconds on a
        # million rounds), so every run is listed at once.
        for run_dir in run_dirs if not only_running else new_dirs:
            self.summarized_at_seq.setdefault(run_dir, None)
            deliver(self, self.show_summary, first_look(run_dir))
        for run_dir in run_dirs:
            try:
                last_seq = RunReader(run_dir).last_seq()
            except UserError:
                last_seq = None  # summarize_run_dir turns the same problem into a line
            if only_running and last_seq == self.summarized_at_seq.get(run_dir) and writer_alive(run_dir):
                continue  # nothing flushed since the last summary: skip the SQL over the run
            summary = summarize_run_dir(run_dir)
            self.summarized_at_seq[run_dir] = last_seq
            deliver(self, self.show_summary, summary)

    def show_summary(self, summary: RunSummary) -> None:
        key = str(summary.run_dir)
        self.summaries[key] = summary
        table = self.query_one("#runs", DataTable)
        cells = [
            f"✓ {summary.run_id}" if key in self.marked else summary.run_id,
            summary.mode,
            summary.started_at[:19].replace("T", " "),
            "…" if summary.rounds is None else f"{summary.rounds:,}",
            "…" if summary.updates is None else f"{summary.updates:,}",
            lambda_text(summary),
            "…" if summary.rounds is None else "—" if summary.last_window is None else str(summary.last_window),
            rate_with_n(summary.last_accuracy, summary.last_accuracy_n),
            rate_with_n(summary.last_deception_rate, summary.last_deception_n),
            status_text(summary),
        ]
        if key in table.rows:
            for column_key, cell in zip(table.columns, cells, strict=True):
                table.update_cell(key, column_key, cell, update_width=True)  # "…" grows to 100,000
        else:
            table.add_row(*cells, key=key)
            self.query_one("#runs-empty", Static).display = False


def lambda_text(summary: RunSummary) -> str:
    if summary.mode == "rlhf":
        return "n/a"  # no monitor, no constraint, no λ
    return number(summary.last_lambda, 4)


def rate_with_n(rate: float | None, n: int | None) -> str:
    """A rate and the rounds it is over; "n/a" when none was eligible."""
    if n is None:
        return number(rate)
    return f"{number(rate) if rate is not None else 'n/a'} n={n}"


def status_text(summary: RunSummary) -> Text:
    if summary.problem:
        return Text("unreadable", style=STATUS_STYLES["failed"])
    if summary.status is None:
        return Text("reading…", style="dim")
    text = Text(summary.status, style=STATUS_STYLES[summary.status.split()[0]])  # "stopped (resumable …)"
    if summary.diagnostics:
        # the latest diagnostic, and how many came before it (the overview lists them all)
        more = len(summary.diagnostics) - 1
        text.append(f"  {summary.diagnostics[-1].flag}" + (f" (+{more} more)" if more else ""), style="bold yellow")
    return text

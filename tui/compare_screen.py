"""Two or more runs side by side: the TUI counterpart of `minmax-engine report`.

One column per run, one row per figure: how far it got, λ at its last round, the last
training window's accuracy and deception rate, the diagnostics raised, and its last evaluation
of each protocol (metrics with n and 95% intervals when the log has per-metric counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from storage import EvaluationCompleted, RunReader, UserError
from tui.deliver import deliver
from tui.evaluations_screen import AUROC_N, METRIC_ORDER, metric_cell
from tui.formatting import number
from tui.run_data import RunSummary, summarize_run_dir
from tui.tables import MeasuredTable


@dataclass(frozen=True)
class ComparedRun:
    summary: RunSummary
    last_evaluations: dict[str | None, EvaluationCompleted]  # protocol -> its last evaluation


def compare_runs(run_dirs: list[Path]) -> list[ComparedRun]:
    compared = []
    for run_dir in run_dirs:
        summary = summarize_run_dir(run_dir)
        last: dict[str | None, EvaluationCompleted] = {}
        if summary.problem is None:
            for record in RunReader(run_dir).events(types=["EvaluationCompleted"]):
                assert isinstance(record.event, EvaluationCompleted)
                last[getattr(record.event, "protocol", None)] = record.event
        compared.append(ComparedRun(summary, last))
    return compared


def figure_rows(runs: list[ComparedRun]) -> list[tuple[str, list[str]]]:
    """(figure, one cell per run) in display order."""
    def count(value: int | None) -> str:
        return "—" if value is None else f"{value:,}"

    rows = [
        ("mode", [run.summary.mode for run in runs]),
        ("status", [run.summary.problem and "unreadable" or str(run.summary.status) for run in runs]),
        ("training rounds", [count(run.summary.rounds) for run in runs]),
        ("updates", [count(run.summary.updates) for run in runs]),
        ("λ at last round", [number(run.summary.last_lambda, 4) for run in runs]),
        ("accuracy, last window", [number(run.summary.last_accuracy) for run in runs]),
        ("deception, last window", [number(run.summary.last_deception_rate) for run in runs]),
        ("diagnostics", ["; ".join(notice.flag for notice in run.summary.diagnostics) or "none" for run in runs]),
    ]
    protocols = sorted({p for run in runs for p in run.last_evaluations}, key=lambda p: (p != "deployment", str(p)))
    labels = dict(METRIC_ORDER)
    for protocol in protocols:
        names = {name for run in runs if protocol in run.last_evaluations
                 for name in ("judge_auroc" if name in AUROC_N else name
                              for name in run.last_evaluations[protocol].metrics)}
        ordered = [name for name, _ in METRIC_ORDER if name in names] + sorted(names - set(labels))
        title = f"last {protocol} eval" if protocol else "last eval"
        for name in ordered:
            rows.append((f"{title}: {labels.get(name, name)}", [
                metric_cell(run.last_evaluations[protocol], name) if protocol in run.last_evaluations else "—"
                for run in runs
            ]))
    return rows


class CompareScreen(Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = run_dirs

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"comparing {len(self.run_dirs)} runs"), id="compare-title", classes="screen-title")
        yield MeasuredTable(id="compare", cursor_type="row", zebra_stripes=True)
        yield Static("", id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#compare", DataTable).focus()
        self.load()

    def action_back(self) -> None:
        self.app.pop_screen()

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        try:
            runs = compare_runs(self.run_dirs)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_runs, runs)

    def show_runs(self, runs: list[ComparedRun]) -> None:
        table = self.query_one("#compare", DataTable)
        table.clear(columns=True)
        table.add_column("figure", key="figure")
        for index, run in enumerate(runs):
            table.add_column(run.summary.run_id, key=f"run-{index}")
        for figure, cells in figure_rows(runs):
            table.add_row(figure, *cells, key=figure)

    def show_problem(self, message: str) -> None:
        self.query_one("#problem", Static).update(Text(message))

"""One run's evaluations: each EvaluationCompleted with its metrics, their n and 95% intervals,
and the evaluation rounds behind the highlighted one.

Evaluations come in two protocols (GAME.md, #12): "deployment" (the judge sees the question,
the choices and O only; the headline) and "monitored" (the judge also sees O′; minmax only,
reported beside it). The table shows the protocol of every evaluation, so the two are never
read as one. Logs written before evaluations named their protocol show "—", and without
per-metric counts the interval column says "n ?".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from engine.outcomes import wilson_interval
from storage import EvaluationCompleted, RoundPlayed, UserError
from tui.deliver import deliver
from tui.formatting import choice_letter, number, truth_text, verdict_word
from tui.run_data import RunData
from tui.tables import MeasuredTable

# The metrics shown, first to last; any others an evaluation carries follow them.
METRIC_ORDER = [
    ("policy_accuracy", "accuracy"),
    ("deception_rate", "deception"),
    ("monitor_fidelity", "mon. fidelity"),
    ("judge_accuracy", "judge acc."),
    ("false_accusation_rate", "false acc."),
    ("missed_error_rate", "missed err."),
    ("judge_auroc", "judge AUROC"),
    ("fabricated_quote_rate", "fabricated q."),
    ("verified_quote_fraction", "verified q."),
    ("quotes_per_answer", "quotes/answer"),
]
# Carried to give the judge's AUROC its n; shown in its cell, not as columns of their own.
AUROC_N = ("judge_auroc_n_correct", "judge_auroc_n_wrong")
# Mean counts, not shares of rounds: no Wilson interval.
MEAN_COUNTS = ("quotes_per_answer",)


@dataclass(frozen=True)
class Evaluation:
    seq: int
    previous_seq: int  # the rounds of this evaluation lie after this seq
    event: EvaluationCompleted

    @property
    def protocol(self) -> str | None:
        return getattr(self.event, "protocol", None) or None  # "" in logs older than protocols


def metric_cell(evaluation: EvaluationCompleted, name: str) -> str:
    value = evaluation.metrics.get(name)
    if name == "judge_auroc":
        if AUROC_N[0] not in evaluation.metrics:
            return "—"  # logged before the AUROC was
        n_correct, n_wrong = (int(evaluation.metrics[key]) for key in AUROC_N)
        return f"{'n/a' if value is None else f'{value:.3f}'} ({n_correct} c, {n_wrong} w)"
    counts = (getattr(evaluation, "counts", None) or {}).get(name)
    if counts is not None:
        hits, eligible = int(counts[0]), int(counts[1])
        if eligible == 0:
            return "n/a (n=0)"
        if name in MEAN_COUNTS:
            return f"{hits / eligible:.2f} n={eligible}"
        low, high = wilson_interval(hits, eligible)
        return f"{hits / eligible:.3f} [{low:.2f}, {high:.2f}] n={eligible}"
    if value is None:
        return "—"
    return f"{value:.3f} (n ?)"


def read_evaluations(data: RunData) -> list[Evaluation]:
    records = data.reader.events(types=["EvaluationCompleted"])
    found: list[Evaluation] = []
    previous: dict[str | None, int] = {}  # per protocol: both protocols' rounds may interleave
    for record in records:
        assert isinstance(record.event, EvaluationCompleted)
        protocol = getattr(record.event, "protocol", None) or None  # "" in logs older than protocols
        found.append(Evaluation(seq=record.seq, previous_seq=previous.get(protocol, -1), event=record.event))
        previous[protocol] = record.seq
    return found


def evaluation_rounds(data: RunData, evaluation: Evaluation) -> list[tuple[int, RoundPlayed]]:
    """The eval rounds logged for `evaluation`: after the previous evaluation, of its protocol."""
    rounds = []
    for record in data.reader.rounds(evaluation.previous_seq + 1, evaluation.seq - 1, phase="eval"):
        event = record.event
        assert isinstance(event, RoundPlayed)
        if (event.protocol or None) == evaluation.protocol:
            rounds.append((record.seq, event))
    return rounds


class EvaluationsScreen(Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, data: RunData) -> None:
        super().__init__()
        self.data = data
        self.evaluations: list[Evaluation] = []
        self.metric_names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"evaluations of run {self.data.run_id}"), id="evaluations-title", classes="screen-title")
        yield MeasuredTable(id="evaluations", cursor_type="row", zebra_stripes=True)
        yield Static("", id="eval-rounds-title", classes="screen-title")
        yield MeasuredTable(id="eval-rounds", cursor_type="row", zebra_stripes=True)
        yield Static("", id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#evaluations", DataTable).focus()
        rounds = self.query_one("#eval-rounds", DataTable)
        for key, label in [("round", "round"), ("state", "state"), ("truth", "truth"), ("answer", "answer"),
                           ("verdict", "monitor"), ("p_accept", "p_accept"), ("judge", "judge"),
                           ("quotes", "quotes verified")]:
            rounds.add_column(label, key=key)
        self.load_evaluations()

    def action_back(self) -> None:
        self.app.pop_screen()

    @work(thread=True, exclusive=True, group="evaluations")
    def load_evaluations(self) -> None:
        try:
            evaluations = read_evaluations(self.data)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_evaluations, evaluations)

    def show_evaluations(self, evaluations: list[Evaluation]) -> None:
        self.evaluations = evaluations
        table = self.query_one("#evaluations", DataTable)
        table.clear(columns=True)
        if not evaluations:
            self.query_one("#eval-rounds-title", Static).update(Text("no evaluations in this run yet"))
            return
        # an AUROC left out as undefined still has its n: its column says "n/a" with them
        carried = {"judge_auroc" if name in AUROC_N else name for e in evaluations for name in e.event.metrics}
        carried |= {name for e in evaluations for name in (getattr(e.event, "counts", None) or {})}
        known = [name for name, _ in METRIC_ORDER if name in carried]
        self.metric_names = known + sorted(carried - set(known))
        labels = dict(METRIC_ORDER)
        for key, label in [("seq", "seq"), ("protocol", "protocol"), ("version", "policy v"),
                           ("split", "split"), ("n", "rounds")]:
            table.add_column(label, key=key)
        for name in self.metric_names:
            table.add_column(labels.get(name, name), key=name)
        for evaluation in evaluations:
            event = evaluation.event
            samples = getattr(event, "samples_per_state", None)
            table.add_row(
                f"{evaluation.seq:,}",
                evaluation.protocol or "—",
                str(event.policy_version),
                event.split,
                f"{event.n_rounds:,}" + (f" ({samples}/state)" if samples else ""),
                *[metric_cell(event, name) for name in self.metric_names],
                key=str(evaluation.seq),
            )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "evaluations" or event.row_key.value is None:
            return
        seq = int(str(event.row_key.value))
        evaluation = next((e for e in self.evaluations if e.seq == seq), None)
        if evaluation is not None:
            self.load_rounds(evaluation)

    @work(thread=True, exclusive=True, group="eval-rounds")
    def load_rounds(self, evaluation: Evaluation) -> None:
        try:
            rounds = evaluation_rounds(self.data, evaluation)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_rounds, evaluation, rounds)

    def show_rounds(self, evaluation: Evaluation, rounds: list[tuple[int, RoundPlayed]]) -> None:
        kind = f"{evaluation.protocol} evaluation" if evaluation.protocol else "evaluation"
        self.query_one("#eval-rounds-title", Static).update(Text(
            f"{len(rounds):,} rounds of the {kind} at seq {evaluation.seq:,}"
            f" (policy v{evaluation.event.policy_version})"
        ))
        table = self.query_one("#eval-rounds", DataTable)
        table.clear()
        for seq, r in rounds:
            monitor_played = r.monitor_output is not None
            table.add_row(*eval_round_cells(r, monitor_played), key=str(seq))

    def show_problem(self, message: str) -> None:
        self.query_one("#problem", Static).update(Text(message))


def eval_round_cells(r: RoundPlayed, monitor_played: bool) -> list[Any]:
    return [
        f"{r.round_id:,}",
        r.state_id,
        truth_text(r.truth),
        choice_letter(r.policy_answer),
        verdict_word(r.monitor_says_correct, monitor_played),
        number(r.p_accept),
        "accepts" if r.judge_accepts else "rejects",
        "—" if r.policy_quotes is None else f"{r.policy_quotes_verified}/{r.policy_quotes}",  # None: an older log
    ]

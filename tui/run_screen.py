"""One run: the rounds table (paged, filtered, searchable) and the overview with its charts.

The rounds table holds one page at a time; `[` and `]` move between pages, `<` and `>` jump
to the first and last (tui/navigation.py finds every page start for that), `g` opens a round
by its number and `e` the run's evaluations. A page is "the
next PAGE_SIZE rounds the filter keeps after seq s" (see tui/run_data.py), and the screen
keeps the start of every page it has passed, so a 1,000,000-round run opens as fast as a
small one. How many rounds the filter keeps is counted separately, in the background, and
the status line says so until the count is in. All reading runs in thread workers; the UI
thread only fills widgets.

While the run is still being written, a timer asks the reader for its last seq and, when it
grew, reloads the current page, counts only the new seqs, and reloads the overview.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.worker import get_current_worker
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    Select,
    Static,
    TabbedContent,
    TabPane,
    Tree,
)

from storage import UserError
from tui.charts import MetricChart
from tui.deliver import deliver
from tui.formatting import choice_letter, number, truth_text, verdict_word
from tui.navigation import page_starts, seq_of_round
from tui.run_data import (
    OUTCOME_LABELS,
    DiagnosticNotice,
    Outcome,
    EvaluationFigures,
    Page,
    RoundFilter,
    RoundRow,
    RunCounts,
    RunData,
    UpdateSeries,
)
from tui.tables import MeasuredTable

PAGE_SIZE = 100
POLL_SECONDS = 1.0

# (widget id, label, UpdateSeries attribute), in the order the overview shows them.
CHARTS: list[tuple[str, str, str]] = [
    ("chart-lambda", "λ (last round)", "lambda_value"),
    ("chart-accuracy", "accuracy", "policy_accuracy"),
    ("chart-deception", "deception", "deception_rate"),
    ("chart-fidelity", "mon. fidelity", "monitor_fidelity"),
    ("chart-reward", "mean R", "mean_reward"),
    ("chart-reward-policy", "mean r(O)", "mean_reward_policy"),
    ("chart-reward-monitor", "mean r(O′)", "mean_reward_monitor"),
    ("chart-kl", "KL(π‖ref)", "kl_ref"),
]


def config_tree(config: dict[str, Any]) -> Tree[None]:
    tree: Tree[None] = Tree("resolved config", id="config")

    def add(node: Any, mapping: dict[str, Any]) -> None:
        for key, value in mapping.items():
            if isinstance(value, dict):
                add(node.add(f"[b]{key}[/b]", expand=True), value)
            else:
                node.add_leaf(Text(f"{key} = {value!r}"))

    add(tree.root, config)
    tree.root.expand()
    return tree


def parse_version_bound(text: str) -> int | None:
    """An update-range bound typed by the user: blank means open; a bad number is an error."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise UserError(f"update range: {text!r} is not a policy version; type a whole number or leave it blank")
    return int(text)


class RunScreen(Screen[None]):
    BINDINGS = [
        Binding("r", "show_tab('rounds')", "Rounds"),
        Binding("o", "show_tab('overview')", "Overview"),
        Binding("right_square_bracket", "page(1)", "Next page"),
        Binding("left_square_bracket", "page(-1)", "Prev page"),
        Binding("less_than_sign", "first_page", "First page", show=False),
        Binding("greater_than_sign", "last_page", "Last page"),
        Binding("g", "focus_goto", "Go to round"),
        Binding("e", "evaluations", "Evaluations"),
        Binding("slash", "focus_search", "Search"),
        Binding("escape", "back", "Back"),
    ]

    round_filter: reactive[RoundFilter] = reactive(RoundFilter, init=False)

    def __init__(self, run_dir: Path, *, can_go_back: bool = False, data: RunData | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.can_go_back = can_go_back
        self.data = data if data is not None else RunData(run_dir)
        # Keyset paging: page i shows the rounds after seq page_starts[i].
        self.page_starts: list[int] = [-1]
        self.page: Page | None = None
        # The count of rounds the filter keeps, up to and including seq counted_through.
        self.filtered_count: int | None = None
        self.counted_through = -1
        self.count_started = False
        self.series: UpdateSeries | None = None
        self.counts: RunCounts | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"run {self.data.run_id} · {self.run_dir}"), id="run-title", classes="screen-title")
        with TabbedContent(initial="rounds"):
            with TabPane("Rounds", id="rounds"):
                with Horizontal(id="filters"):
                    yield Select(
                        [(label, outcome) for outcome, label in OUTCOME_LABELS.items()],
                        value="all",
                        allow_blank=False,
                        id="outcome",
                    )
                    yield Input(placeholder="from upd.", id="min-version", type="integer")
                    yield Input(placeholder="to upd.", id="max-version", type="integer")
                    yield Input(placeholder="search question text  (Enter)", id="search")
                    yield Input(placeholder="go to round (g)", id="goto", type="integer")
                yield MeasuredTable(id="rounds-table", cursor_type="row", zebra_stripes=True)
                yield Static("loading…", id="page-status")
            with TabPane("Overview", id="overview"):
                with Horizontal():
                    with VerticalScroll(id="overview-left"):
                        yield Static("", id="counts")
                        yield config_tree(self.data.run_started().config)
                    with Vertical(id="charts"):
                        yield Static("per training window (cursor and value: the highlighted round's window, else the last)",
                                     classes="chart-caption")
                        for chart_id, label, _ in CHARTS:
                            yield MetricChart(label, id=chart_id)
        yield Static("", id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#rounds-table", DataTable)
        for key, label in [
            ("step", "step"),
            ("truth", "truth"),
            ("answer", "answer"),
            ("verdict", "monitor"),
            ("p_accept", "p_accept"),
            ("R", "R"),
            ("f", "f"),
            ("lambda", "λ"),
            ("version", "upd"),
        ]:
            table.add_column(label, key=key)
        table.focus()
        # Only the first page now: the count and the overview scan the whole run, and on a
        # million rounds they would compete with the first paint for two cores.
        self.load_page(self.round_filter, -1, keep_cursor=False)
        self.set_interval(POLL_SECONDS, self.poll_log)

    # --- reacting to the user --------------------------------------------------------------

    def watch_round_filter(self, round_filter: RoundFilter) -> None:
        self.page_starts = [-1]
        self.filtered_count, self.counted_through, self.count_started = None, -1, False
        self.load_page(round_filter, -1, keep_cursor=False)

    @on(Select.Changed, "#outcome")
    def outcome_changed(self, event: Select.Changed) -> None:
        outcome: Outcome = event.value  # type: ignore[assignment]
        self.set_filter(outcome=outcome)

    @on(Input.Submitted, "#min-version, #max-version, #search")
    def filter_text_submitted(self) -> None:
        self.set_filter()

    def set_filter(self, outcome: Outcome | None = None) -> None:
        try:
            low = parse_version_bound(self.query_one("#min-version", Input).value)
            high = parse_version_bound(self.query_one("#max-version", Input).value)
        except UserError as error:
            self.show_problem(str(error))
            return
        self.show_problem("")
        self.round_filter = RoundFilter(
            outcome=outcome if outcome is not None else self.round_filter.outcome,
            min_policy_version=low,
            max_policy_version=high,
            question_contains=self.query_one("#search", Input).value.strip(),
        )
        self.query_one("#rounds-table", DataTable).focus()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "rounds":
            self.query_one("#rounds-table", DataTable).focus()

    def action_page(self, step: int) -> None:
        if self.page is None:
            return  # the current page is still loading
        if step > 0 and not self.page.reached_end:
            self.page_starts.append(self.page.scanned_through)
        elif step < 0 and len(self.page_starts) > 1:
            self.page_starts.pop()
        else:
            return
        self.page = None
        self.load_page(self.round_filter, self.page_starts[-1], keep_cursor=False)

    def action_first_page(self) -> None:
        if len(self.page_starts) > 1:
            self.page_starts, self.page = [-1], None
            self.load_page(self.round_filter, -1, keep_cursor=False)

    def action_last_page(self) -> None:
        self.action_show_tab("rounds")
        self.query_one("#page-status", Static).update(Text("finding the last page…"))
        self.find_last_page(self.round_filter)

    def action_evaluations(self) -> None:
        from tui.evaluations_screen import EvaluationsScreen

        self.app.push_screen(EvaluationsScreen(self.data))

    def action_focus_goto(self) -> None:
        self.action_show_tab("rounds")
        self.query_one("#goto", Input).focus()

    @on(Input.Submitted, "#goto")
    def goto_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text.isdigit():
            self.show_problem(f"go to round: {text!r} is not a round number; type a whole number")
            return
        self.show_problem("")
        self.find_round(int(text))

    def action_focus_search(self) -> None:
        self.action_show_tab("rounds")
        self.query_one("#search", Input).focus()

    def action_back(self) -> None:
        if self.focused is not None and isinstance(self.focused, Input):
            self.query_one("#rounds-table", DataTable).focus()
        elif self.can_go_back:
            self.app.pop_screen()

    @on(TabbedContent.TabActivated)
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # The overview aggregates the whole run (seconds on a million rounds): load it the
        # first time it is shown, not when the run opens.
        if event.pane.id == "overview" and self.counts is None:
            self.load_overview()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        from tui.round_screen import RoundScreen

        self.app.push_screen(RoundScreen(self.data, int(str(event.row_key.value)), series=self.series))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.series is None or event.row_key.value is None or self.page is None:
            return
        window = next((row.window for row in self.page.rows if str(row.seq) == event.row_key.value), None)
        cursor = self.series.index_of_window(window) if window is not None else None
        for chart in self.query(MetricChart):
            chart.cursor = cursor

    def poll_log(self) -> None:
        self.follow_log()

    def on_unmount(self) -> None:
        self.data.close()

    # --- workers: queries off the UI thread ------------------------------------------------

    @work(thread=True, exclusive=True, group="follow")
    def follow_log(self) -> None:
        try:
            grew = self.data.refresh()
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        if grew:
            deliver(self, self.reload_after_growth)

    def reload_after_growth(self) -> None:
        self.load_page(self.round_filter, self.page_starts[-1], keep_cursor=True)
        if self.filtered_count is not None:
            self.count_rounds(self.round_filter, self.counted_through + 1)
        if self.counts is not None:
            self.load_overview()  # only once someone has looked at it

    @work(thread=True, exclusive=True, group="jump")
    def find_last_page(self, round_filter: RoundFilter) -> None:
        worker = get_current_worker()
        try:
            starts = page_starts(self.data, round_filter, PAGE_SIZE, stop=lambda: worker.is_cancelled)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        if starts is not None:
            deliver(self, self.show_last_page, round_filter, starts)

    def show_last_page(self, round_filter: RoundFilter, starts: list[int]) -> None:
        if round_filter != self.round_filter:
            return  # the filter changed while the pages were being found
        self.page_starts, self.page = starts, None
        self.load_page(round_filter, starts[-1], keep_cursor=False)

    @work(thread=True, exclusive=True, group="jump")
    def find_round(self, round_id: int) -> None:
        try:
            seq = seq_of_round(self.data, round_id)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.open_found_round, round_id, seq)

    def open_found_round(self, round_id: int, seq: int | None) -> None:
        if seq is None:
            self.show_problem(f"go to round: this run has no training round {round_id:,} (yet)")
            return
        self.query_one("#rounds-table", DataTable).focus()
        from tui.round_screen import RoundScreen

        self.app.push_screen(RoundScreen(self.data, seq, series=self.series))

    @work(thread=True, exclusive=True, group="page")
    def load_page(self, round_filter: RoundFilter, after_seq: int, keep_cursor: bool) -> None:
        try:
            page = self.data.page_after(round_filter, after_seq, PAGE_SIZE)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_page, round_filter, after_seq, page, keep_cursor)

    def show_page(self, round_filter: RoundFilter, after_seq: int, page: Page, keep_cursor: bool) -> None:
        if round_filter != self.round_filter or after_seq != self.page_starts[-1]:
            return  # the user moved on while this page was loading
        self.page = page
        table = self.query_one("#rounds-table", DataTable)
        cursor_row = table.cursor_row
        table.clear()
        for row in page.rows:
            table.add_row(*round_cells(row), key=str(row.seq))
        if keep_cursor and page.rows:
            table.move_cursor(row=min(cursor_row, len(page.rows) - 1))
        self.show_page_status()
        if not self.count_started:
            # The first page of this filter is on screen: now count in the background.
            self.count_started = True
            self.call_after_refresh(self.count_rounds, round_filter, 0)

    @work(thread=True, exclusive=True, group="count")
    def count_rounds(self, round_filter: RoundFilter, first_seq: int) -> None:
        """Count the rounds the filter keeps from first_seq on, and add them to the total."""
        worker = get_current_worker()
        try:
            last_seq = self.data.last_seq()
            found = self.data.count_matching(round_filter, first_seq, last_seq, stop=lambda: worker.is_cancelled)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        if found is None:
            return  # a newer filter or a newer count took over
        deliver(self, self.add_to_count, round_filter, first_seq, last_seq, found)

    def add_to_count(self, round_filter: RoundFilter, first_seq: int, last_seq: int, found: int) -> None:
        expected_first = 0 if self.filtered_count is None else self.counted_through + 1
        if round_filter != self.round_filter or first_seq != expected_first:
            return  # a count for another filter, or one that a newer count already covers
        self.filtered_count = (self.filtered_count or 0) + found
        self.counted_through = last_seq
        self.show_page_status()

    def show_page_status(self) -> None:
        page_number = len(self.page_starts)
        first = (page_number - 1) * PAGE_SIZE + 1
        total = "…" if self.filtered_count is None else f"{self.filtered_count:,}"
        rows = self.page.rows if self.page is not None else []
        shown = f"rows {first:,}–{first + len(rows) - 1:,} of {total}" if rows else f"no rows of {total}"
        self.query_one("#page-status", Static).update(
            Text(
                f"{shown} · page {page_number:,} · {OUTCOME_LABELS[self.round_filter.outcome]}"
                "   [ ] change page, < > first/last, g go to round, Enter opens a round"
            )
        )

    @work(thread=True, exclusive=True, group="overview")
    def load_overview(self) -> None:
        try:
            counts = self.data.counts()
            series = self.data.update_series()
            evaluations = self.data.last_evaluations()
            diagnostics = self.data.diagnostics()
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_overview, counts, series, evaluations, diagnostics)

    def show_overview(self, counts: RunCounts, series: UpdateSeries,
                      evaluations: dict[str, EvaluationFigures] | None = None,
                      diagnostics: list[DiagnosticNotice] | None = None) -> None:
        self.counts, self.series = counts, series
        started = self.data.run_started()
        lines = [
            f"mode        {started.mode}",
            f"dataset     {started.dataset_name} ({started.n_train_states:,} train / {started.n_eval_states:,} eval)",
            f"status      {counts.status}" + (f" — {counts.failure}" if counts.failure else ""),
            f"rounds      {counts.rounds:,} training (live)",
            f"policy upd. {counts.policy_updates:,}   monitor upd. {counts.monitor_updates:,}",
            f"λ updates   {counts.lambda_updates:,}   evaluations {counts.evaluations:,}",
            f"checkpoints {counts.checkpoints:,}",
            *evaluation_lines(started.mode, evaluations or {}),
        ]
        text = Text("\n".join(lines))
        for notice in diagnostics or []:
            text.append(f"\n{notice.flag}: {notice.message}", style="bold yellow")
        self.query_one("#counts", Static).update(text)
        for chart_id, _, attribute in CHARTS:
            self.query_one(f"#{chart_id}", MetricChart).set_values(getattr(series, attribute), series.windows)

    def show_problem(self, message: str) -> None:
        self.query_one("#problem", Static).update(Text(message))


def evaluation_lines(mode: str, evaluations: dict[str, EvaluationFigures]) -> list[str]:
    """The last deployment evaluation (the headline), and the monitored one beside it."""
    protocols = ["deployment", "monitored"] if mode == "minmax" else ["deployment"]
    lines = []
    for protocol in protocols:
        figures = evaluations.get(protocol)
        if figures is None:
            lines.append(f"{protocol} eval: none yet")
            continue
        lines.append(
            f"{protocol} eval (policy v{figures.policy_version}, seq {figures.seq}): "
            + figures.describe("policy_accuracy", "accuracy") + ", "
            + figures.describe("deception_rate", "deception")
        )
        lines.append("  " + figures.describe_auroc() + ", " + quote_figures(figures))
    return lines


def quote_figures(figures: EvaluationFigures) -> str:
    """Quotes in O: per answer (a mean count), the verified share, the fabricated-quote rate."""
    quotes, answers = figures.counts.get("quotes_per_answer", (0, 0))
    per_answer = f"quotes/answer {quotes / answers:.2f} (n={answers})" if answers else "quotes/answer n/a (n=0)"
    return (per_answer + ", " + figures.describe("verified_quote_fraction", "verified") + ", "
            + figures.describe("fabricated_quote_rate", "fabricated"))


def round_cells(row: RoundRow) -> list[Any]:
    monitor_played = row.fidelity_penalty is not None
    return [
        f"{row.round_id:,}",
        truth_text(row.truth),
        choice_letter(row.policy_answer),
        verdict_word(row.monitor_says_correct, monitor_played),
        number(row.p_accept),
        number(row.combined_reward),
        number(row.fidelity_penalty),
        number(row.lambda_value, 4) if monitor_played else "n/a",  # rlhf: no λ
        str(row.policy_version),
    ]

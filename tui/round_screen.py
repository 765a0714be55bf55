"""One round in full, and the replay: step through the game in the order it was played.

`n`/`→` and `p`/`←` step one training round forward and back (by seq, so in the order the
rounds were played and logged); space starts and stops auto-play, `+`/`-` change its speed.
The charts under the round put their cursor on the training window the round was played in,
so λ, accuracy and deception move along as the game unfolds. On a run still being written,
auto-play waits at the newest round and goes on when more arrive.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Static

from storage import Recorded, RoundPlayed, RunFailed, RunFinished, UserError
from tui.charts import MetricChart
from tui.deliver import deliver
from tui.formatting import CHOICE_LETTERS, choice_letter, number, truth_text, verdict_word
from tui.run_data import RunData, UpdateSeries

# Auto-play speeds in rounds per second; + and - move along this list.
SPEEDS = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]

REPLAY_CHARTS: list[tuple[str, str, str]] = [
    ("replay-lambda", "λ (last round)", "lambda_value"),
    ("replay-accuracy", "accuracy", "policy_accuracy"),
    ("replay-deception", "deception", "deception_rate"),
    ("replay-fidelity", "mon. fidelity", "monitor_fidelity"),
]


def highlight_last(text: str, pattern: re.Pattern[str], style: str) -> Text:
    """`text` with the last match of `pattern` (where a parser finds the answer) styled."""
    rich_text = Text(text)
    matches = list(pattern.finditer(text))
    if matches:
        rich_text.stylize(style, matches[-1].start(), matches[-1].end())
    return rich_text


def answer_pattern(index: int | None) -> re.Pattern[str]:
    letter = CHOICE_LETTERS[index] if index is not None else "(?!)"
    return re.compile(rf"\b{letter}\b")


def verdict_pattern(says_correct: bool | None) -> re.Pattern[str]:
    # \b keeps CORRECT from matching inside INCORRECT.
    word = {True: "CORRECT", False: "INCORRECT", None: "(?!)"}[says_correct]
    return re.compile(rf"\b{word}\b", re.IGNORECASE)


class RoundScreen(Screen[None]):
    BINDINGS = [
        Binding("n,right", "step(1)", "Next round"),
        Binding("p,left", "step(-1)", "Prev round"),
        Binding("space", "toggle_play", "Play/pause"),
        Binding("plus,equals_sign", "speed(1)", "Faster"),
        Binding("minus", "speed(-1)", "Slower"),
        Binding("down", "scroll_game(1)", "Scroll", show=False),
        Binding("up", "scroll_game(-1)", "Scroll up", show=False),
        Binding("pagedown", "scroll_game_page(1)", "Page down", show=False),
        Binding("pageup", "scroll_game_page(-1)", "Page up", show=False),
        Binding("shift+down", "scroll_story(1)", "Story down", show=False),
        Binding("shift+up", "scroll_story(-1)", "Story up", show=False),
        Binding("escape", "back", "Back"),
    ]

    # Nothing takes focus on its own, so ↑ ↓ PgUp PgDn reach this screen's bindings and scroll
    # the outputs without a Tab first (a pane focused by click or Tab scrolls itself).
    AUTO_FOCUS = None

    seq: reactive[int] = reactive(-1, init=False)
    playing: reactive[bool] = reactive(False)
    speed_index: reactive[int] = reactive(2)

    def __init__(self, data: RunData, seq: int, *, series: UpdateSeries | None = None) -> None:
        super().__init__()
        self.data = data
        self.start_seq = seq
        self.series = series
        self.round: RoundPlayed | None = None
        self.play_timer: Timer | None = None
        # Where a forward step found no next round: "end" (the run is over) or "waiting"
        # (a live run: more rounds may come). None while there are rounds ahead.
        self.at_last: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="round-title", classes="screen-title")
        with Horizontal(id="round-body"):
            with VerticalScroll(id="story-pane"):
                yield Static("", id="story")
            with VerticalScroll(id="game-pane"):
                yield Static("", id="question")
                yield Static("", id="policy-output", classes="output")
                yield Static("", id="monitor-output", classes="output")
                yield Static("", id="scores")
        with Vertical(id="replay-charts"):
            for chart_id, label, _ in REPLAY_CHARTS:
                yield MetricChart(label, id=chart_id)
        yield Static("", id="replay-status")
        yield Static("", id="problem", classes="problem")
        yield Footer()

    def on_mount(self) -> None:
        self.seq = self.start_seq
        if self.series is None:
            self.load_series()
        else:
            self.show_series(self.series)

    # --- replay ----------------------------------------------------------------------------

    def watch_seq(self, seq: int) -> None:
        self.at_last = None
        self.load_round(seq)

    def watch_playing(self) -> None:
        self.restart_timer()
        self.show_replay_status()

    def watch_speed_index(self) -> None:
        self.restart_timer()
        self.show_replay_status()

    def restart_timer(self) -> None:
        if self.play_timer is not None:
            self.play_timer.stop()
            self.play_timer = None
        if self.playing:
            self.play_timer = self.set_interval(1.0 / SPEEDS[self.speed_index], self.play_tick)

    def play_tick(self) -> None:
        self.step_from(self.seq, 1)

    def action_step(self, step: int) -> None:
        self.step_from(self.seq, 1 if step > 0 else -1)

    def action_toggle_play(self) -> None:
        self.playing = not self.playing

    def action_scroll_game(self, lines: int) -> None:
        self.query_one("#game-pane", VerticalScroll).scroll_relative(y=lines * 3, animate=False)

    def action_scroll_game_page(self, pages: int) -> None:
        pane = self.query_one("#game-pane", VerticalScroll)
        pane.scroll_relative(y=pages * max(1, pane.size.height - 2), animate=False)

    def action_scroll_story(self, lines: int) -> None:
        self.query_one("#story-pane", VerticalScroll).scroll_relative(y=lines * 3, animate=False)

    def action_speed(self, step: int) -> None:
        self.speed_index = min(len(SPEEDS) - 1, max(0, self.speed_index + step))

    def action_back(self) -> None:
        self.playing = False
        self.app.pop_screen()

    # --- workers -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="step")
    def step_from(self, seq: int, step: int) -> None:
        try:
            # Each query sees every segment flushed so far, so a live run's new rounds count.
            neighbour = self.data.neighbour_round_seq(seq, 1 if step > 0 else -1)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        if neighbour is not None:
            deliver(self, setattr, self, "seq", neighbour)
        elif step > 0:
            deliver(self, self.reached_last_round, self.data.reader.events(self.data.last_seq()))

    def reached_last_round(self, tail: list[Recorded]) -> None:
        """No round after this one: stop auto-play if the run is over; on a live run, wait."""
        ended = bool(tail) and isinstance(tail[-1].event, RunFinished | RunFailed)
        self.at_last = "end" if ended else "waiting"
        if ended:
            self.playing = False
        self.show_replay_status()

    @work(thread=True, exclusive=True, group="round")
    def load_round(self, seq: int) -> None:
        try:
            round_played = self.data.round_at(seq)
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_round, seq, round_played)

    @work(thread=True, exclusive=True, group="series")
    def load_series(self) -> None:
        try:
            series = self.data.update_series()
        except UserError as error:
            deliver(self, self.show_problem, str(error))
            return
        deliver(self, self.show_series, series)

    # --- drawing ---------------------------------------------------------------------------

    def show_series(self, series: UpdateSeries) -> None:
        self.series = series
        for chart_id, _, attribute in REPLAY_CHARTS:
            self.query_one(f"#{chart_id}", MetricChart).set_values(getattr(series, attribute), series.windows)
        self.move_chart_cursor()

    def move_chart_cursor(self) -> None:
        if self.series is None or self.round is None:
            return
        cursor = self.series.index_of_window(self.round.window)
        if cursor is None and self.round.window > max(self.series.windows, default=-1):
            self.load_series()  # a live run reached a window the charts lack
            return
        for chart in self.query(MetricChart):
            chart.cursor = cursor

    def show_round(self, seq: int, round_played: RoundPlayed) -> None:
        if seq != self.seq:
            return  # replay moved on while this round was loading
        self.round = round_played
        r = round_played
        monitor_played = r.monitor_output is not None
        lambda_text = number(r.lambda_value, 4) if monitor_played else "n/a"  # rlhf: no λ
        self.query_one("#round-title", Static).update(Text(
            f"round {r.round_id:,} · seq {seq:,} · window {r.window} · state {r.state_id}"
            f" · policy v{r.policy_version} · monitor v{r.monitor_version} · λ in force {lambda_text}"
        ))
        self.query_one("#story", Static).update(Text(r.story))

        question = Text()
        question.append("Question  ", style="bold")
        question.append(r.question + "\n")
        for index, choice in enumerate(r.choices):
            is_correct = index == r.correct_index
            is_answer = index == r.policy_answer
            marker = "✓" if is_correct else " "
            arrow = "◀ policy" if is_answer else ""
            style = "bold green" if is_correct else ("bold red" if is_answer else "")
            question.append(f" {marker} {CHOICE_LETTERS[index]}. {choice}", style=style)
            question.append(f"  {arrow}\n", style="bold")
        self.query_one("#question", Static).update(question)

        policy = Text()
        policy.append("O (policy) ", style="bold")
        policy.append(f"answer {choice_letter(r.policy_answer)}", style="reverse")
        policy.append("  truth ")
        policy.append_text(truth_text(r.truth))
        policy.append(f"  r(O) {number(r.reward_policy)}\n")
        policy.append_text(highlight_last(r.policy_output, answer_pattern(r.policy_answer), "reverse bold"))
        self.query_one("#policy-output", Static).update(policy)

        monitor = Text()
        monitor.append("O′ (monitor) ", style="bold")
        if monitor_played:
            monitor.append(f"verdict {verdict_word(r.monitor_says_correct, True)}", style="reverse")
            monitor.append(f"  r(O′) {number(r.reward_monitor)}\n")
            monitor.append_text(
                highlight_last(r.monitor_output or "", verdict_pattern(r.monitor_says_correct), "reverse bold")
            )
        else:
            monitor.append("none (rlhf run)", style="dim")
        self.query_one("#monitor-output", Static).update(monitor)

        accepted = "accepts" if r.judge_accepts else "rejects"
        self.query_one("#scores", Static).update(Text(
            f"judge p_accept {number(r.p_accept)} ({accepted})   R {number(r.combined_reward)}"
            f"   f {number(r.fidelity_penalty)}   λ {lambda_text}\n"
            f"adapters: policy v{r.policy_version}, monitor v{r.monitor_version}"
        ))
        self.show_replay_status()
        self.move_chart_cursor()

    def show_replay_status(self) -> None:
        if self.at_last == "end":
            state = "⏹ last round of the run"
        elif self.playing:
            state = "▶ playing, waiting for new rounds" if self.at_last == "waiting" else "▶ playing"
        else:
            state = "⏸ paused"
        step = f"round {self.round.round_id:,}" if self.round is not None else "loading…"
        self.query_one("#replay-status", Static).update(Text(
            f"{state} · {SPEEDS[self.speed_index]:g} rounds/s · {step}"
            "   n/p step · space play · +/- speed · ↑↓ PgUp PgDn scroll · Esc back"
        ))

    def show_problem(self, message: str) -> None:
        self.query_one("#problem", Static).update(Text(message))

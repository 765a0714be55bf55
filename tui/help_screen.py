"""The `?` screen: every key of every screen, in one place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS_HELP = """\
[b]Everywhere[/b]
  ?            this help (↑ ↓ PgUp PgDn scroll it; Esc, ? or q close it)
  q / Ctrl+Q   quit                  Ctrl+P   command palette
  Esc          back to the previous screen (from a text box: back to the table)
  Tab          next widget            Shift+Tab  previous widget

[b]Runs list[/b]
  ↑ ↓ PgUp PgDn Home End   choose a run      Enter    open it
  F5           summarise every run again (running and new runs refresh on their own)
  space        mark / unmark the run  c        compare the marked runs side by side

[b]Run[/b]
  r / o        rounds table / overview (config, counts, charts per window)
  ↑ ↓ PgUp PgDn Home End   move in the page; Enter opens the highlighted round
  [ / ]        previous / next page of rounds
  < / >        first / last page
  g            go to round N: type its number, Enter opens it
  e            evaluations: each one's metrics with n and 95% intervals, its protocol
               (deployment / monitored) and, below, the rounds of the highlighted one
  outcome      all rounds
               deceptions: policy wrong (or unparsed) and the judge accepts
               false accusations: policy correct, monitor says INCORRECT
               missed errors: policy wrong (or unparsed), monitor says CORRECT
               unparsed: no parsable policy answer or monitor verdict
  from / to    policy-version (update) range; type a number, Enter applies
  /            search question text; Enter applies, Esc leaves the box

[b]Round (replay)[/b]
  n or →       next round, in the order played
  p or ←       previous round
  space        auto-play on / off (it stops at the last round of a finished run)
  + / -        faster / slower
  ↑ ↓          scroll the question and outputs    PgUp PgDn  by a page
  Shift+↑ ↓    scroll the story
  The charts' cursor marks the window the round was played in; the value beside each
  chart is the cursor's.

[b]Charts[/b]
  One point per training window; the low and high ends of the y-range are printed
  at each end of the bars. Beside each chart: on the overview, the value of the
  highlighted round's window, else the last window's; in a round, that round's window.

A run still being written updates on its own: new rounds appear as they are logged.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static("minmax-engine tui — keys", id="help-title")
            yield Static(KEYS_HELP)

    def action_close(self) -> None:
        self.dismiss(None)

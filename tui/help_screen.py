"""The `?` screen: every key of every screen, in one place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS_HELP = """\
[b]Everywhere[/b]
  ?            this help            q        quit
  Esc          back to the previous screen

[b]Runs list[/b]
  ↑ ↓          choose a run         Enter    open it
  F5           summarise the runs again (running runs refresh on their own)

[b]Run[/b]
  r / o        rounds table / overview (config, counts, charts per update)
  [ / ]        previous / next page of rounds
  Enter        open the highlighted round
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
  space        auto-play on / off    + / -   faster / slower
  The charts' cursor marks the policy update the round was played with.

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

"""How the TUI writes a round's facts: letters for choices, verdict words, coloured truth."""

from __future__ import annotations

import math

from rich.text import Text

CHOICE_LETTERS = "ABCDEFGH"

TRUTH_STYLES = {"correct": "green", "wrong": "bold red", "unparsed": "yellow"}


def choice_letter(index: int | None) -> str:
    return "unparsed" if index is None else CHOICE_LETTERS[index]


def verdict_word(says_correct: bool | None, monitor_played: bool) -> str:
    if not monitor_played:
        return "—"  # rlhf mode: there is no monitor
    if says_correct is None:
        return "unparsed"
    return "CORRECT" if says_correct else "INCORRECT"


def truth_text(truth: str) -> Text:
    return Text(truth, style=TRUTH_STYLES.get(truth, ""))


def number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"

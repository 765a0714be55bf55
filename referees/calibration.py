"""Contextual calibration of the judge (Zhao et al. 2021), label-free, once per run.

    calibration = contextual_calibration(judge, stories, questions, choices, state_ids)
    judge.calibration_offset = calibration.offset

A small judge leans toward one verdict whatever it reads (on the embedded model p_accept sat
around 0.37 for every answer). Zhao et al. remove that prior by scoring content-free inputs
in the same prompt: an answer that says nothing ("N/A", "", "[MASK]") should get p = 0.5.
For a yes/no reader their correction diag(p_cf)^-1 is, in log-odds,

    calibrated = log P(Yes)/P(No) − log P_cf(Yes)/P_cf(No)

so the offset is the mean raw log-odds over the content-free answers, each put to the judge
with the question and choices of a few train states (the judge reads no critique there: the
same offset then applies in both modes and in every evaluation protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from referees.judge import Judge

CONTENT_FREE_ANSWERS = ("N/A", "", "[MASK]")
CALIBRATION_STATES = 4  # questions the content-free answers are put with


@dataclass(frozen=True)
class Calibration:
    method: str  # "contextual" | "none"
    content_free_answers: list[str]
    state_ids: list[str]
    log_odds: list[float]  # raw log-odds per (state, content-free answer), states outer
    offset: float  # subtracted from every raw log-odds


NO_CALIBRATION = Calibration(method="none", content_free_answers=[], state_ids=[], log_odds=[], offset=0.0)


def contextual_calibration(
    judge: Judge,
    stories: Sequence[str],
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    state_ids: Sequence[str],
) -> Calibration:
    """The offset from the first CALIBRATION_STATES states given (train states, not eval)."""
    count = min(len(questions), CALIBRATION_STATES)
    if count == 0:
        raise ValueError("contextual calibration needs at least one state")
    rows = [(i, answer) for i in range(count) for answer in CONTENT_FREE_ANSWERS]
    log_odds = judge.raw_log_odds(
        [stories[i] for i, _ in rows],
        [questions[i] for i, _ in rows],
        [choices[i] for i, _ in rows],
        [answer for _, answer in rows],
        None,
    )
    return Calibration(
        method="contextual",
        content_free_answers=list(CONTENT_FREE_ANSWERS),
        state_ids=list(state_ids[:count]),
        log_odds=[float(value) for value in log_odds],
        offset=float(sum(log_odds) / len(log_odds)),
    )

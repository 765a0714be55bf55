"""The judge's discrimination (AUROC) and the quote metrics over rounds (issue 16 items 1, 2)."""

from __future__ import annotations

import dataclasses

from engine.oversight import auroc, judge_auroc, quote_counts, quote_metrics, round_quotes
from tests.test_replay import round_played

STORY = "The baker baked bread at dawn. The farmer sold apples at the market."


def test_auroc_against_hand_counted_pairs() -> None:
    # pairs (positive, negative): 0.9>0.2, 0.9>0.5, 0.5=0.5 (half), 0.5>0.2 -> 3.5 of 4
    assert auroc([0.9, 0.5], [0.2, 0.5]) == 3.5 / 4
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.4, 0.4], [0.4]) == 0.5  # all tied: cannot tell
    assert auroc([], [0.3]) is None


def test_judge_auroc_counts_parsed_answers_only() -> None:
    rounds = [
        dataclasses.replace(round_played(0, 0, None, 0.0, truth="correct"), p_accept=0.8),
        dataclasses.replace(round_played(1, 0, None, 0.0, truth="correct"), p_accept=0.6),
        dataclasses.replace(round_played(2, 0, None, 0.0, truth="wrong"), p_accept=0.7),
        dataclasses.replace(round_played(3, 0, None, 0.0, truth="wrong"), p_accept=0.1, truth="unparsed"),
    ]
    found = judge_auroc(rounds)
    assert (found.n_correct, found.n_wrong) == (2, 1)
    assert found.auroc == 0.5  # 0.8 > 0.7, 0.6 < 0.7


def test_quotes_of_a_round_and_their_rates() -> None:
    answer = "It says <quote>the baker baked bread</quote> and <quote>the baker flew</quote>. Answer: A"
    critique = "Indeed <quote>The farmer sold apples</quote>. Verdict: CORRECT"
    first = dataclasses.replace(round_played(0, 0, 0.1, 1.0), story=STORY, policy_output=answer, monitor_output=critique)
    second = dataclasses.replace(round_played(1, 0, 0.1, 1.0), story=STORY)  # no quotes at all
    assert [(q.player, q.text, q.verified) for q in round_quotes(first)] == [
        ("policy", "the baker baked bread", True),
        ("policy", "the baker flew", False),
        ("monitor", "The farmer sold apples", True),
    ]
    counts = quote_counts([first, second])
    assert counts["quotes_per_answer"] == (2, 2)
    assert counts["fabricated_quote_rate"] == (1, 3)
    assert counts["verified_quote_fraction"] == (2, 3)
    assert counts["policy_fabricated_quote_rate"] == (1, 2)
    assert counts["monitor_fabricated_quote_rate"] == (0, 1)
    assert quote_metrics([second])["fabricated_quote_rate"] is None  # no quotes: undefined, not 0

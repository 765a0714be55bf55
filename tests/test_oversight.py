"""The judge's discrimination (AUROC, Python and SQL) and the quote rates over rounds (issue 16 items 1, 2)."""

from __future__ import annotations

import dataclasses

from engine.oversight import auroc, judge_auroc
from tests.test_replay import round_played

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


def test_quote_rates_by_hand() -> None:
    from engine.metrics import window_metrics

    def quoted(policy: tuple[int, int] | None, monitor: tuple[int, int] | None):
        return dataclasses.replace(
            round_played(0, 0, 0.1, 1.0),
            policy_quotes=policy[0] if policy else None, policy_quotes_verified=policy[1] if policy else None,
            monitor_quotes=monitor[0] if monitor else None, monitor_quotes_verified=monitor[1] if monitor else None,
        )

    # three answers counted (2 quotes, 1 verified; none; 3 quotes, all verified), one from an
    # older log (not counted); critiques: one fabricates, one does not, one was not counted
    rounds = [quoted((2, 1), (1, 0)), quoted((0, 0), (2, 2)), quoted((3, 3), None), quoted(None, None)]
    metrics = window_metrics(rounds, None)
    assert (metrics["quotes_per_answer"], metrics["quotes_per_answer_n"]) == (5 / 3, 3)
    assert (metrics["verified_quote_fraction"], metrics["verified_quote_fraction_n"]) == (4 / 5, 5)
    assert (metrics["fabricated_quote_rate"], metrics["fabricated_quote_rate_n"]) == (1 / 3, 3)
    assert (metrics["monitor_fabricated_quote_rate"], metrics["monitor_fabricated_quote_rate_n"]) == (1 / 2, 2)
    unquoted = window_metrics([quoted((0, 0), None)], None)
    assert unquoted["verified_quote_fraction"] is None and unquoted["verified_quote_fraction_n"] == 0  # no quotes: n/a
    assert unquoted["fabricated_quote_rate"] == 0.0  # an answer without quotes fabricates none


def test_judge_auroc_sql_equals_python_with_ties_and_empty_sides(tmp_path) -> None:
    from engine.oversight import judge_auroc_sql
    from storage import RunsQuery
    from tests.test_outcomes import write_run

    groups = {
        "tied": [("correct", 0.5), ("wrong", 0.5), ("correct", 0.7), ("wrong", 0.5), ("unparsed", 0.9)],
        "perfect": [("correct", 0.9), ("correct", 0.8), ("wrong", 0.1)],
        "no-wrong": [("correct", 0.4), ("unparsed", 0.1)],
    }
    rounds = {group: [dataclasses.replace(round_played(i, 0, None, 0.0), state_id=group, truth=truth, p_accept=p)
                      for i, (truth, p) in enumerate(pairs)] for group, pairs in groups.items()}
    write_run(tmp_path / "run", [r for group in rounds.values() for r in group], minmax=False)
    with RunsQuery(tmp_path / "run") as query:
        found = {row["state_id"]: row for row in query.arrow(judge_auroc_sql("rounds", ["state_id"])).to_pylist()}
    for group, played in rounds.items():
        python = judge_auroc(played)
        row = found[group]
        assert (row["judge_auroc_n_correct"], row["judge_auroc_n_wrong"]) == (python.n_correct, python.n_wrong)
        assert row["judge_auroc"] == python.auroc if python.auroc is None else abs(row["judge_auroc"] - python.auroc) < 1e-12
    assert found["tied"]["judge_auroc"] == (1 + 1 + 0.5 + 0.5) / 4  # 0.7 beats both 0.5s; 0.5 ties both
    assert found["perfect"]["judge_auroc"] == 1.0 and found["no-wrong"]["judge_auroc"] is None

"""window_metrics against counts done by hand (GAME.md §4, docs/metrics.md): rates with their n."""

from __future__ import annotations

import pytest

from engine.metrics import METRIC_NAMES, window_metrics
from storage.events import RoundPlayed


def _round(
    truth: str,
    accepts: bool,
    verdict: bool | None,
    *,
    f: float = 0.0,
    monitor: bool = True,
    reward: float = 0.0,
    p_accept: float | None = None,
    lam: float = 1.0,
) -> RoundPlayed:
    answer = {"correct": 0, "wrong": 1, "unparsed": None}[truth]
    return RoundPlayed(
        round_id=0, phase="train", window=0, state_id="s", sample_index=0, story="", question="q",
        choices=["a", "b"], correct_index=0, policy_prompt="", policy_prompt_ids=[1], policy_output="",
        policy_token_ids=[2], policy_logprobs=[-1.0], policy_answer=answer,
        monitor_prompt="" if monitor else None, monitor_prompt_ids=[1] if monitor else None,
        monitor_output="v" if monitor else None, monitor_token_ids=[2] if monitor else None,
        monitor_logprobs=[-1.0] if monitor else None, monitor_says_correct=verdict if monitor else None,
        reward_policy=0.0, reward_monitor=0.0 if monitor else None,
        p_accept=p_accept if p_accept is not None else (0.9 if accepts else 0.1), judge_accepts=accepts,
        truth=truth, combined_reward=reward, fidelity_penalty=f if monitor else None,  # type: ignore[arg-type]
        lambda_value=lam, policy_version=0, monitor_version=0,
    )


def test_minmax_window_by_hand() -> None:
    rounds = [
        _round("correct", accepts=True, verdict=True, f=-0.3, reward=1.0),  # all agree
        _round("correct", accepts=False, verdict=False, f=0.7, reward=-1.0),  # false accusation
        _round("correct", accepts=True, verdict=None, f=1.0, reward=1.0),  # unparsed verdict
        _round("wrong", accepts=True, verdict=True, f=0.7, reward=1.0),  # deception + missed error
        _round("wrong", accepts=False, verdict=False, f=-0.3, reward=-1.0),  # caught
        _round("unparsed", accepts=True, verdict=False, f=0.0, reward=0.0, lam=2.5),  # on its own, not wrong
    ]
    m = window_metrics(rounds, delta=-0.2)
    assert set(m) == set(METRIC_NAMES)
    assert m["n_rounds"] == 6
    assert (m["policy_accuracy"], m["policy_accuracy_n"]) == (pytest.approx(3 / 6), 6)
    assert m["judge_accept_rate"] == pytest.approx(4 / 6)
    # parsed answers 1-5; the judge agrees in 1, 3 (accept correct) and 5 (reject wrong)
    assert (m["judge_accuracy"], m["judge_accuracy_n"]) == (pytest.approx(3 / 5), 5)
    # parsed and wrong: rounds 4, 5; accepted 4 (the unparsed round 6 is not "wrong")
    assert (m["deception_rate"], m["deception_rate_n"]) == (pytest.approx(1 / 2), 2)
    # parsed verdict about a parsed answer: 1, 2, 4, 5; matches the truth in 1 and 5
    assert (m["monitor_fidelity"], m["monitor_fidelity_n"]) == (pytest.approx(2 / 4), 4)
    # correct answers with a parsed verdict: 1, 2; INCORRECT in 2 (round 3's verdict is unparsed)
    assert (m["false_accusation_rate"], m["false_accusation_rate_n"]) == (pytest.approx(1 / 2), 2)
    # wrong answers with a parsed verdict: 4, 5; CORRECT in 4
    assert (m["missed_error_rate"], m["missed_error_rate_n"]) == (pytest.approx(1 / 2), 2)
    mean_f = (-0.3 + 0.7 + 1.0 + 0.7 - 0.3 + 0.0) / 6
    assert m["mean_f"] == pytest.approx(mean_f)
    assert m["constraint_violation"] == pytest.approx(mean_f + 0.2)
    assert (m["policy_unparsed_rate"], m["policy_unparsed_rate_n"]) == (pytest.approx(1 / 6), 6)
    assert (m["monitor_unparsed_rate"], m["monitor_unparsed_rate_n"]) == (pytest.approx(1 / 6), 6)
    assert m["mean_reward"] == pytest.approx(1 / 6)
    assert m["mean_p_accept"] == pytest.approx((0.9 * 4 + 0.1 * 2) / 6)
    assert m["last_lambda"] == 2.5


def test_conditional_rates_are_none_when_their_condition_never_happened() -> None:
    m = window_metrics([_round("correct", accepts=True, verdict=True)], delta=0.0)
    assert m["deception_rate"] is None and m["deception_rate_n"] == 0
    assert m["missed_error_rate"] is None
    assert m["false_accusation_rate"] == 0.0
    m = window_metrics([_round("wrong", accepts=True, verdict=True)], delta=0.0)
    assert m["deception_rate"] == 1.0
    assert m["false_accusation_rate"] is None


def test_rlhf_rounds_have_no_monitor_metrics() -> None:
    m = window_metrics([_round("correct", accepts=True, verdict=None, monitor=False)] * 2, delta=-0.2)
    for name in ("monitor_fidelity", "false_accusation_rate", "missed_error_rate", "mean_f",
                 "constraint_violation", "monitor_unparsed_rate"):
        assert m[name] is None, name
    assert m["policy_accuracy"] == 1.0


def test_empty_window() -> None:
    m = window_metrics([], delta=-0.2)
    assert m["n_rounds"] == 0
    assert m["policy_accuracy"] is None and m["last_lambda"] is None


def test_unparsed_answers_never_enter_the_deception_rate() -> None:
    """7 unparsed and 7 wrong answers, the judge accepting only unparsed ones: no deception."""
    rounds = [_round("unparsed", accepts=True, verdict=None)] * 7 + [_round("wrong", accepts=False, verdict=False)] * 7
    m = window_metrics(rounds, delta=-0.2)
    assert (m["deception_rate"], m["deception_rate_n"]) == (0.0, 7)
    assert m["policy_unparsed_rate"] == 0.5

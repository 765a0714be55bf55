"""Payoffs of GAME.md §2 against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from engine.payoffs import (
    combined_reward,
    fidelity_penalty,
    judge_score,
    lowest_reachable_penalty,
    monitor_reward,
    monitor_rollouts,
    policy_rollouts,
    truth_of,
    verdict_disagreement,
)
from storage.events import RoundPlayed


def test_judge_score_maps_probability_onto_minus_one_to_one() -> None:
    assert judge_score(0.0) == -1.0
    assert judge_score(0.5) == 0.0
    assert judge_score(0.75) == pytest.approx(0.5)


def test_combined_reward_by_hand() -> None:
    # tanh(0.5) = 0.46211715726, s_judge(0.8) = 0.6 -> 2·0.4621 + 1·0.6
    value = combined_reward(
        reward_policy=0.5, p_accept=0.8, answer_parsed=True, w_reward=2.0, w_judge=1.0,
        reward_norm="tanh", unparsed_penalty=1.0,
    )
    assert value == pytest.approx(2 * 0.46211715726 + 0.6, abs=1e-9)


def test_combined_reward_without_squashing_and_with_unparsed_penalty() -> None:
    value = combined_reward(
        reward_policy=3.0, p_accept=0.25, answer_parsed=False, w_reward=1.0, w_judge=1.0,
        reward_norm="none", unparsed_penalty=0.5,
    )
    assert value == pytest.approx(3.0 - 0.5 - 0.5)


def test_truth_of() -> None:
    assert truth_of(1, 1) == "correct"
    assert truth_of(0, 1) == "wrong"
    assert truth_of(None, 1) == "unparsed"


@pytest.mark.parametrize(
    ("says_correct", "truth", "expected"),
    [
        (True, "correct", 0.0),
        (False, "correct", 1.0),
        (True, "wrong", 1.0),
        (False, "wrong", 0.0),
        (False, "unparsed", 0.0),  # an unparsed answer is not correct: INCORRECT is truthful
        (True, "unparsed", 1.0),
        (None, "correct", 1.0),  # an unparsed verdict always disagrees
        (None, "wrong", 1.0),
    ],
)
def test_verdict_disagreement(says_correct: bool | None, truth: str, expected: float) -> None:
    assert verdict_disagreement(says_correct, truth) == expected  # type: ignore[arg-type]


def test_fidelity_penalty_by_hand() -> None:
    # truthful verdict, r(O′) = 1: f = 0.7·0 + 0.3·(−tanh 1) = −0.3·0.76159415595
    assert fidelity_penalty(monitor_says_correct=False, truth="wrong", reward_monitor=1.0, alpha=0.7) == pytest.approx(
        -0.3 * 0.76159415595, abs=1e-9
    )
    # false accusation, r(O′) = −2: f = 0.7 + 0.3·tanh 2
    assert fidelity_penalty(monitor_says_correct=False, truth="correct", reward_monitor=-2.0, alpha=0.7) == pytest.approx(
        0.7 + 0.3 * 0.96402758008, abs=1e-9
    )


def test_fidelity_penalty_stays_in_its_range_and_reaches_its_floor() -> None:
    floor = lowest_reachable_penalty(0.7)
    assert floor == pytest.approx(-0.3)
    assert fidelity_penalty(monitor_says_correct=True, truth="correct", reward_monitor=50.0, alpha=0.7) == pytest.approx(floor)
    assert fidelity_penalty(monitor_says_correct=None, truth="correct", reward_monitor=-50.0, alpha=0.7) == pytest.approx(1.0)


def test_monitor_reward_by_hand() -> None:
    # −s_judge − λ·f = −(2·0.9 − 1) − 2·0.25 = −0.8 − 0.5
    assert monitor_reward(p_accept=0.9, penalty=0.25, lambda_value=2.0, verdict_parsed=True, unparsed_penalty=1.0) == (
        pytest.approx(-1.3)
    )
    assert monitor_reward(p_accept=0.9, penalty=0.25, lambda_value=2.0, verdict_parsed=False, unparsed_penalty=1.0) == (
        pytest.approx(-2.3)
    )


def _round(round_id: int, *, sample_index: int = 0, monitor: bool = True, says_correct: bool | None = True) -> RoundPlayed:
    return RoundPlayed(
        round_id=round_id, phase="train", window=0, state_id=f"s{round_id - sample_index}", sample_index=sample_index,
        story="A fox.", question="Who?", choices=["fox", "hen"], correct_index=0,
        policy_prompt="p", policy_prompt_ids=[1, 2], policy_output="Answer: A", policy_token_ids=[3, 4],
        policy_logprobs=[-0.5, -0.25], policy_answer=0,
        monitor_prompt="m" if monitor else None, monitor_prompt_ids=[5] if monitor else None,
        monitor_output="Verdict: CORRECT" if monitor else None, monitor_token_ids=[6, 7, 8] if monitor else None,
        monitor_logprobs=[-1.0, -2.0, -3.0] if monitor else None, monitor_says_correct=says_correct if monitor else None,
        reward_policy=0.1, reward_monitor=0.2 if monitor else None, p_accept=0.75, judge_accepts=True,
        truth="correct", combined_reward=1.25, fidelity_penalty=0.4 if monitor else None, lambda_value=3.0,
        policy_version=0, monitor_version=0,
    )


def test_policy_rollouts_carry_the_recorded_reward_and_tokens() -> None:
    rollouts = policy_rollouts([_round(0), _round(1, sample_index=1)])
    assert [r.reward for r in rollouts] == [1.25, 1.25]
    assert list(rollouts[0].prompt_ids) == [1, 2] and list(rollouts[0].response_ids) == [3, 4]
    assert list(rollouts[0].behaviour_logprobs) == [-0.5, -0.25]
    # both samples of state s0 played together form one group
    assert rollouts[0].group == rollouts[1].group


def test_monitor_rollouts_use_the_lambda_in_force_and_penalise_unparsed_verdicts() -> None:
    parsed, unparsed = monitor_rollouts([_round(0), _round(1, says_correct=None)], unparsed_penalty=0.5)
    # −(2·0.75 − 1) − 3·0.4 = −0.5 − 1.2
    assert parsed.reward == pytest.approx(-1.7)
    assert unparsed.reward == pytest.approx(-2.2)
    assert list(parsed.response_ids) == [6, 7, 8] and list(parsed.behaviour_logprobs) == [-1.0, -2.0, -3.0]


def test_monitor_rollouts_refuse_rlhf_rounds() -> None:
    with pytest.raises(ValueError, match="no monitor output"):
        monitor_rollouts([_round(0, monitor=False)], unparsed_penalty=1.0)


def test_tanh_reference_values() -> None:
    # the constants used above, so a typo there cannot pass silently
    assert math.tanh(0.5) == pytest.approx(0.46211715726)
    assert math.tanh(1.0) == pytest.approx(0.76159415595)
    assert math.tanh(2.0) == pytest.approx(0.96402758008)

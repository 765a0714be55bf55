"""Payoffs of one round (GAME.md §2) and the rollouts each learner trains on.

    s_judge  = 2 · p_accept − 1                                   ∈ [−1, 1]
    R        = w_reward · norm(r(O)) + w_judge · s_judge  (− unparsed_penalty if O unparsed)
    f        = α · d(verdict, truth) + (1 − α) · g(r(O′)),  g = −tanh
    reward_M = −s_judge − λ · f                           (− unparsed_penalty if O′ unparsed)

The KL terms −β · KL of GAME.md §2 belong to the learner (engine.ppo), which sees the
tokens; everything here is a plain function of numbers a RoundPlayed event records, so a
learner reading the log in another process computes the same rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from storage.events import RoundPlayed, Truth

RewardNorm = Literal["tanh", "none"]


def judge_score(p_accept: float) -> float:
    """s_judge: the judge's acceptance probability mapped onto [−1, 1]."""
    return 2.0 * p_accept - 1.0


def normalize_reward(reward: float, norm: RewardNorm) -> float:
    """Squash a reward model's unbounded score so it cannot drown the judge's term."""
    return math.tanh(reward) if norm == "tanh" else reward


def truth_of(answer: int | None, correct_index: int) -> Truth:
    if answer is None:
        return "unparsed"
    return "correct" if answer == correct_index else "wrong"


def combined_reward(
    *,
    reward_policy: float,
    p_accept: float,
    answer_parsed: bool,
    w_reward: float,
    w_judge: float,
    reward_norm: RewardNorm,
    unparsed_penalty: float,
) -> float:
    """R(O, O′): what the policy maximises (before the learner's KL term)."""
    value = w_reward * normalize_reward(reward_policy, reward_norm) + w_judge * judge_score(p_accept)
    return value - unparsed_penalty if not answer_parsed else value


def verdict_disagreement(monitor_says_correct: bool | None, truth: Truth) -> float:
    """d: 1 when the monitor's verdict contradicts the truth; an unparsed verdict always does.

    An unparsed policy answer is not correct, so INCORRECT is the truthful verdict for it.
    """
    if monitor_says_correct is None:
        return 1.0
    return 0.0 if monitor_says_correct == (truth == "correct") else 1.0


def fidelity_penalty(*, monitor_says_correct: bool | None, truth: Truth, reward_monitor: float, alpha: float) -> float:
    """f of one round: ∈ [−(1 − α), 1]; low for truthful, well-scored critiques."""
    critique_quality_penalty = -math.tanh(reward_monitor)
    return alpha * verdict_disagreement(monitor_says_correct, truth) + (1.0 - alpha) * critique_quality_penalty


def lowest_reachable_penalty(alpha: float) -> float:
    """min f: a truthful verdict (d = 0) on a critique the reward model scores +∞."""
    return -(1.0 - alpha)


def monitor_reward(
    *, p_accept: float, penalty: float, lambda_value: float, verdict_parsed: bool, unparsed_penalty: float
) -> float:
    """reward_M = −s_judge − λ · f: push the judge to reject, but truthfully (before KL)."""
    value = -judge_score(p_accept) - lambda_value * penalty
    return value - unparsed_penalty if not verdict_parsed else value


# --- rollouts: RoundPlayed events read back from the log -> what each PPO learner trains on ---


@dataclass(frozen=True)
class Rollout:
    """One generated response and its scalar reward, as the log recorded them."""

    prompt_ids: Sequence[int]
    response_ids: Sequence[int]  # includes the EOS that ended it, if one did
    behaviour_logprobs: Sequence[float]  # per response token, at generation (logits / T)
    reward: float  # the player's payoff for this round
    group: str  # rollouts of the same state share a group (group-relative advantages)


def _plain(values: Sequence[Any] | np.ndarray) -> list[Any]:
    """A round's ids or log-probs as a list of Python numbers (a round fresh from play holds
    numpy arrays, one read back from the log holds lists)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _group_of(round_: RoundPlayed) -> str:
    # The n samples of one state played together share a group (group-relative advantages);
    # the same state met again in a later epoch is a different group.
    return f"{round_.state_id}@{round_.round_id - round_.sample_index}"


def policy_rollouts(rounds: Sequence[RoundPlayed]) -> list[Rollout]:
    """The policy's rollouts: reward R as recorded (unparsed penalty already applied)."""
    return [
        Rollout(
            prompt_ids=_plain(r.policy_prompt_ids),
            response_ids=_plain(r.policy_token_ids),
            behaviour_logprobs=_plain(r.policy_logprobs),
            reward=float(r.combined_reward),
            group=_group_of(r),
        )
        for r in rounds
    ]


def monitor_rollouts(rounds: Sequence[RoundPlayed], *, unparsed_penalty: float) -> list[Rollout]:
    """The monitor's rollouts: reward −s_judge − λ·f with the λ in force when each round was played."""
    rollouts = []
    for r in rounds:
        if r.monitor_token_ids is None or r.monitor_prompt_ids is None or r.monitor_logprobs is None:
            raise ValueError(f"round {r.round_id} has no monitor output (rlhf mode?): cannot train the monitor")
        assert r.fidelity_penalty is not None  # recorded whenever the monitor played
        reward = monitor_reward(
            p_accept=r.p_accept,
            penalty=r.fidelity_penalty,
            lambda_value=r.lambda_value,
            verdict_parsed=r.monitor_says_correct is not None,
            unparsed_penalty=unparsed_penalty,
        )
        rollouts.append(
            Rollout(
                prompt_ids=_plain(r.monitor_prompt_ids),
                response_ids=_plain(r.monitor_token_ids),
                behaviour_logprobs=_plain(r.monitor_logprobs),
                reward=reward,
                group=_group_of(r),
            )
        )
    return rollouts

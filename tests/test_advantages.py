"""Each advantage estimator against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from engine.advantages import (
    generalized_advantages,
    group_relative_advantages,
    reward_on_last_token,
    whiten_over_tokens,
    whitened_advantages,
)


def test_whitened_advantages_by_hand() -> None:
    # mean 2, population std sqrt(2/3)
    advantages = whitened_advantages(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    expected = [-1.0 / math.sqrt(2 / 3), 0.0, 1.0 / math.sqrt(2 / 3)]
    assert advantages.tolist() == pytest.approx(expected, abs=1e-7)


def test_whitened_single_rollout_is_zero_not_nan() -> None:
    assert whitened_advantages(torch.tensor([0.7])).tolist() == [0.0]


def test_group_relative_advantages_by_hand() -> None:
    rewards = torch.tensor([1.0, 3.0, 10.0, 10.0, 5.0, 0.0, 4.0], dtype=torch.float64)
    groups = ["a", "a", "b", "b", "c", "d", "d"]
    advantages = group_relative_advantages(rewards, groups)
    # a: mean 2, std 1; b: identical rewards -> 0; c: alone -> 0; d: mean 2, std 2
    assert advantages.tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 1.0], abs=1e-7)


def test_group_labels_must_match_rewards() -> None:
    with pytest.raises(ValueError, match="group labels"):
        group_relative_advantages(torch.tensor([1.0, 2.0]), ["a"])


def test_reward_on_last_real_token() -> None:
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    token_rewards = reward_on_last_token(torch.tensor([2.0, -1.0]), mask)
    assert token_rewards.tolist() == [[0.0, 0.0, 2.0], [-1.0, 0.0, 0.0]]


def test_gae_matches_hand_unrolled_recursion() -> None:
    gamma, lam = 0.9, 0.8
    rewards = [0.0, 0.5, 2.0]
    values = [0.3, -0.2, 0.6]
    # Unrolled by hand, V after the last token = 0:
    d2 = rewards[2] + gamma * 0.0 - values[2]
    d1 = rewards[1] + gamma * values[2] - values[1]
    d0 = rewards[0] + gamma * values[1] - values[0]
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    advantages, returns = generalized_advantages(
        torch.tensor([rewards], dtype=torch.float64),
        torch.tensor([values], dtype=torch.float64),
        torch.ones(1, 3, dtype=torch.float64),
        gamma,
        lam,
    )
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2], abs=1e-12)
    assert returns[0].tolist() == pytest.approx([a0 + values[0], a1 + values[1], a2 + values[2]], abs=1e-12)


def test_gae_ignores_padding_after_the_last_token() -> None:
    # The second row has two real tokens; whatever sits in its padded slot must not matter.
    token_rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 99.0]], dtype=torch.float64)
    values = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.4, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    advantages, returns = generalized_advantages(token_rewards, values, mask, gamma=1.0, gae_lambda=1.0)
    # γ = λ = 1: A_t = (sum of rewards from t) − V_t
    assert advantages[1].tolist() == pytest.approx([1.0 - 0.5, 1.0 - 0.4, 0.0], abs=1e-12)
    assert returns[1].tolist() == pytest.approx([1.0, 1.0, 0.0], abs=1e-12)
    assert advantages[0].tolist() == pytest.approx([0.9, 0.8, 0.7], abs=1e-12)


def test_whiten_over_tokens_uses_real_tokens_only() -> None:
    values = torch.tensor([[1.0, 3.0], [5.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # real values 1, 3, 5: mean 3, population std sqrt(8/3)
    std = math.sqrt(8 / 3)
    whitened = whiten_over_tokens(values, mask).flatten().tolist()
    assert whitened == pytest.approx([-2 / std, 0.0, 2 / std, 0.0], abs=1e-7)

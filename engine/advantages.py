"""Advantage estimators for the PPO learner (../shared/GAME.md §3), selectable by name.

    "whiten"  batch-whitened sequence reward: A_i = (R_i − mean R) / (std R + ε), one value
              per rollout, broadcast to every response token.
    "group"   group-relative (GRPO): A_i = (R_i − mean_g R) / (std_g R + ε) over the n samples
              of the same state (Rollout.group); a group of one sample gets A = 0, since it
              has nothing to be compared with.
    "gae"     generalised advantage estimation over per-token rewards (the sequence reward
              on the last response token, 0 elsewhere) with a learnt value head:
                  δ_t = r_t + γ·V_{t+1} − V_t   (V after the last token = 0: the episode ends)
                  A_t = δ_t + γ·λ·A_{t+1}
              returns = A + V are the value head's targets; the advantages are then whitened
              over every response token of the batch.

The KL penalty is not part of any reward here: the learner puts β·KL in the loss (see
engine/ppo.py), so the three estimators see the same reward R.

Standard deviations are population ones (divide by n), so one rollout never gives NaN.
Tensors: `rewards` is (N,); per-token tensors are (N, T) with responses right-padded and
`mask` 1.0 on real response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

EPSILON = 1e-8


def whitened_advantages(rewards: torch.Tensor) -> torch.Tensor:
    mean = rewards.mean()
    std = rewards.std(correction=0)
    return (rewards - mean) / (std + EPSILON)


def group_relative_advantages(rewards: torch.Tensor, groups: Sequence[str]) -> torch.Tensor:
    if len(groups) != rewards.shape[0]:
        raise ValueError(f"{len(groups)} group labels for {rewards.shape[0]} rewards")
    advantages = torch.zeros_like(rewards)
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    for indices in members.values():
        index_tensor = torch.tensor(indices, device=rewards.device)
        group_rewards = rewards[index_tensor]
        centred = group_rewards - group_rewards.mean()
        advantages[index_tensor] = centred / (group_rewards.std(correction=0) + EPSILON)
    return advantages


def reward_on_last_token(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards: each sequence's reward on its last real token, 0 elsewhere."""
    token_rewards = torch.zeros_like(mask, dtype=rewards.dtype)
    last = mask.sum(dim=1).long() - 1
    if (last < 0).any():
        raise ValueError("every response needs at least one token")
    token_rewards[torch.arange(mask.shape[0], device=mask.device), last] = rewards
    return token_rewards


def generalized_advantages(
    token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by the reverse recursion; padded positions come out 0."""
    n_tokens = token_rewards.shape[1]
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(n_tokens)):
        # Right padding: a padded position (mask 0) must not leak into the real last token,
        # so past the end both the next value and the next advantage are 0.
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * gae_lambda * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        next_value, next_advantage = values[:, t], advantage
    returns = (advantages + values) * mask
    return advantages, returns


def whiten_over_tokens(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Whiten over real tokens only (padding neither counts nor changes)."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    mean = (values * mask).sum() / count
    variance = (((values - mean) * mask) ** 2).sum() / count
    return (values - mean) / (variance.sqrt() + EPSILON) * mask

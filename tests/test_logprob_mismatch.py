"""Behaviour log-probs from another engine (engine/ppo.py details 16, 17): the learner measures
how far the generator's log-probs are from its own, ~0 for the in-process backend, and
truncated importance sampling corrects the loss for the gap."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from engine.ppo import PPOLearner, Rollout, clipped_surrogate, truncated_importance_weights
from tests.learner_settings import learner_settings
from tests.test_learner import make_players, perturb_adapters, sample_rollouts

TEXTS = ["Who ran to the mill?", "Name the colour of the sky at dawn, please."]
REWARDS = [1.0, 0.0, -1.0, 0.5]


def fresh_rollouts(tiny_lm_dir: Path, cache_dir: Path) -> tuple[PPOLearner, list[Rollout]]:
    """A player with nonzero adapters, its learner (one minibatch, one epoch) and 4 rollouts it sampled."""
    policy, _ = make_players(tiny_lm_dir, cache_dir, temperature=0.7, max_new_tokens=6)
    perturb_adapters(policy, seed=5)
    rollouts = sample_rollouts(policy, TEXTS, samples=2, seed=3, rewards=REWARDS)
    return PPOLearner(policy, learner_settings(minibatch_size=4, ppo_epochs=1, learning_rate=1e-3, temperature=0.7)), rollouts


def shifted(rollout: Rollout, by: float) -> Rollout:
    """The rollout as another engine might have logged it: every behaviour log-prob off by `by`."""
    return dataclasses.replace(rollout, behaviour_logprobs=[value + by for value in rollout.behaviour_logprobs])


def test_the_in_process_backend_matches_the_learner_and_a_perturbed_log_does_not(tiny_lm_dir: Path, tmp_path: Path) -> None:
    learner, rollouts = fresh_rollouts(tiny_lm_dir, tmp_path)
    learner.update(rollouts)
    assert learner.mismatch is not None
    assert learner.mismatch.max < 1e-4 and learner.mismatch.mean < 1e-5
    assert len(learner.mismatch.per_rollout) == len(rollouts)

    learner, rollouts = fresh_rollouts(tiny_lm_dir, tmp_path)  # the same player, not yet updated
    perturbed = [shifted(rollout, 0.05) if index == 1 else rollout for index, rollout in enumerate(rollouts)]
    learner.update(perturbed)
    mismatch = learner.mismatch
    assert mismatch is not None
    assert mismatch.per_rollout[1] == pytest.approx(0.05, abs=1e-4)
    assert max(mismatch.per_rollout[0], *mismatch.per_rollout[2:]) < 1e-4
    assert mismatch.max == pytest.approx(0.05, abs=1e-4)
    tokens = [len(rollout.response_ids) for rollout in rollouts]
    assert mismatch.mean == pytest.approx(0.05 * tokens[1] / sum(tokens), abs=1e-4)


def test_truncated_importance_sampling_on_a_hand_computed_token() -> None:
    """One token the generator gave p = 0.5 and the learner gives 0.8, at the learner's own
    adapters (new = old), advantage +1, ε = 0.2. Against the generator's log-prob the ratio is
    1.6, clipped to 1.2: loss −1.2 and no gradient, the token stops teaching. With TIS the ratio
    is against the learner (1.0) and the token weighs π_learner/π_gen = 1.6, or the cap."""
    behaviour = torch.tensor([math.log(0.5)])
    old = torch.tensor([math.log(0.8)])
    advantage = torch.tensor([1.0])

    new = old.clone().requires_grad_(True)
    plain, _ = clipped_surrogate(new, behaviour, advantage, clip_range=0.2)
    assert plain.item() == pytest.approx(-1.2)
    plain.sum().backward()
    assert new.grad is not None and new.grad.item() == 0.0

    for cap, weight in ((2.0, 1.6), (1.25, 1.25)):
        new = old.clone().requires_grad_(True)
        surrogate, ratio = clipped_surrogate(new, old, advantage, clip_range=0.2)
        weights = truncated_importance_weights(old, behaviour, cap)
        loss = surrogate * weights
        assert ratio.item() == pytest.approx(1.0)
        assert weights.item() == pytest.approx(weight)
        assert loss.item() == pytest.approx(-weight)
        loss.sum().backward()
        assert new.grad is not None and new.grad.item() == pytest.approx(-weight)  # pushes log π up, by the weight

    # A token the generator over-weighted (0.8 vs the learner's 0.4) counts half, whatever the cap.
    assert truncated_importance_weights(torch.tensor([math.log(0.4)]), torch.tensor([math.log(0.8)]), 2.0).item() == pytest.approx(0.5)


def test_with_a_cap_the_learner_weighs_every_token_by_the_capped_ratio(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """A generator that gave every token e^-0.5 of the learner's probability: each token's
    weight exp(0.5) = 1.65 is capped at 1.2, and on the first (only) step new = old, so the
    policy loss is −1.2 × the token mean of the advantages."""
    learner, rollouts = fresh_rollouts(tiny_lm_dir, tmp_path)
    learner.settings = dataclasses.replace(learner.settings, tis_cap=1.2, kl_coef=0.0)
    diagnostics = learner.update([shifted(rollout, -0.5) for rollout in rollouts])
    assert learner.mismatch is not None and learner.mismatch.mean == pytest.approx(0.5, abs=1e-4)
    assert diagnostics["policy_loss"] == pytest.approx(-1.2 * diagnostics["mean_advantage"], abs=1e-5)
    assert diagnostics["clipfrac"] == 0.0  # ratios against the learner's own log-probs: 1 at the first step

"""Checkpoints round-trip: a run continued from a checkpoint does exactly what it would have done."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoints import load_checkpoint, save_checkpoint
from engine.config import LagrangianConfig
from engine.lagrangian import DualAscent
from engine.ppo import PPOLearner
from storage.errors import UserError
from tests.learner_settings import learner_settings
from tests.test_learner import make_players, sample_rollouts

DUAL = LagrangianConfig(lambda_init=0.5, step_size=0.1, delta=-0.2, variant="log")


def build(model_dir: Path, cache_dir: Path):
    policy, monitor = make_players(model_dir, cache_dir)
    players = {"policy": policy, "monitor": monitor}
    learners = {
        "policy": PPOLearner(policy, learner_settings(learning_rate=1e-2, minibatch_size=2, seed=1)),
        "monitor": PPOLearner(monitor, learner_settings(learning_rate=2e-2, minibatch_size=3, advantage="gae", seed=2)),
    }
    return players, learners, DualAscent(DUAL)


def continue_run(players, learners, dual) -> dict:
    """What a run does after a checkpoint: draws randomness, updates both players, steps λ."""
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(())))
    for role, learner in learners.items():
        learner.update(sample_rollouts(players[role], ["Who went to the market?"], samples=4, seed=int(torch.randint(0, 1000, ()))))
    return {
        "drawn": drawn,
        "adapters": {role: player.adapter_state() for role, player in players.items()},
        "lambda": dual.step(0.1),
    }


def test_round_trip_restores_parameters_optimisers_lambda_and_rng(tiny_lm_dir: Path, tmp_path: Path) -> None:
    players, learners, dual = build(tiny_lm_dir, tmp_path / "cache-a")
    continue_run(players, learners, dual)  # optimiser moments, value head and λ are now non-trivial
    saved_at = save_checkpoint(tmp_path / "checkpoints" / "1", players, learners, dual, extra={"next_round_id": 8})
    uninterrupted = continue_run(players, learners, dual)

    # A fresh process-like start: new pool, new players, new learners, RNGs elsewhere.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    players_b, learners_b, dual_b = build(tiny_lm_dir, tmp_path / "cache-b")
    extra = load_checkpoint(saved_at, players_b, learners_b, dual_b)
    resumed = continue_run(players_b, learners_b, dual_b)

    assert extra == {"next_round_id": 8}
    assert resumed["drawn"] == uninterrupted["drawn"]
    assert resumed["lambda"] == uninterrupted["lambda"]
    for role in players:
        for name, tensor in uninterrupted["adapters"][role].items():
            assert torch.allclose(resumed["adapters"][role][name], tensor, atol=1e-6, rtol=0.0), name
    moments = learners["monitor"].optimizer.state_dict()["state"]
    moments_b = learners_b["monitor"].optimizer.state_dict()["state"]
    assert all(torch.allclose(moments[k]["exp_avg"], moments_b[k]["exp_avg"], atol=1e-6) for k in moments)


def test_a_failed_save_leaves_no_checkpoint_and_the_next_save_succeeds(tiny_lm_dir: Path, tmp_path: Path) -> None:
    players, learners, dual = build(tiny_lm_dir, tmp_path / "cache")
    target = tmp_path / "checkpoints" / "1"
    with pytest.raises(TypeError):  # extra must be JSON: the save dies after the weights are written
        save_checkpoint(target, players, learners, dual, extra={"not json": object()})
    assert not target.exists()
    with pytest.raises(UserError, match="not a complete checkpoint"):
        load_checkpoint(target.with_name("1.partial"), players, learners, dual)
    save_checkpoint(target, players, learners, dual, extra={})
    assert not target.with_name("1.partial").exists()
    assert load_checkpoint(target, players, learners, dual) == {}


def test_a_checkpoint_is_never_overwritten(tiny_lm_dir: Path, tmp_path: Path) -> None:
    players, learners, dual = build(tiny_lm_dir, tmp_path / "cache")
    save_checkpoint(tmp_path / "1", players, learners, dual, extra={})
    with pytest.raises(UserError, match="already exists"):
        save_checkpoint(tmp_path / "1", players, learners, dual, extra={})


def test_loading_into_a_run_of_another_mode_is_refused(tiny_lm_dir: Path, tmp_path: Path) -> None:
    players, learners, dual = build(tiny_lm_dir, tmp_path / "cache")
    save_checkpoint(tmp_path / "1", players, learners, dual, extra={})
    with pytest.raises(UserError, match="players"):
        load_checkpoint(tmp_path / "1", {"policy": players["policy"]}, {"policy": learners["policy"]}, None)

"""Two players on one base: shared weights, separate adapters, and gradients that stay home."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from players import ModelPool, Player, PlayerConfig
from storage.errors import UserError

PROMPT_IDS = torch.tensor([[3, 40, 41, 42, 43, 44, 45]])


def two_players(model_dir: Path, pool: ModelPool) -> tuple[Player, Player]:
    config = PlayerConfig(model=str(model_dir), lora_r=4, max_new_tokens=4)
    policy = Player.create(pool, role="policy", config=config)
    monitor = Player.create(pool, role="monitor", config=config)
    return policy, monitor


def logits_of(player: Player, reference: bool = False) -> torch.Tensor:
    with torch.inference_mode():
        if reference:
            with player.reference():
                return player.model(input_ids=PROMPT_IDS).logits.clone()
        with player._selected():
            return player.model(input_ids=PROMPT_IDS).logits.clone()


def base_weights(player: Player) -> dict[str, torch.Tensor]:
    return {
        name: parameter.detach().clone()
        for name, parameter in player.model.named_parameters()
        if "lora_" not in name
    }


def train_one_step(player: Player) -> None:
    """One SGD step on this player's adapter, as a learner would take it."""
    optimiser = torch.optim.SGD(player.trainable_parameters(), lr=0.5)
    with player.active():
        loss = player.model(input_ids=PROMPT_IDS).logits.pow(2).mean()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)


def test_players_on_one_base_share_it(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    policy, monitor = two_players(tiny_lm_dir, pool)
    assert policy.model is monitor.model
    assert pool.causal_lm(str(tiny_lm_dir), "cpu", torch.float32) is policy.base
    assert set(policy.model.peft_config) == {"policy", "monitor"}
    assert policy.adapter_name == "policy" and monitor.adapter_name == "monitor"
    # Disjoint parameter sets, each holding only LoRA weights of its own adapter.
    policy_ids = {id(p) for p in policy.trainable_parameters()}
    monitor_ids = {id(p) for p in monitor.trainable_parameters()}
    assert policy_ids and monitor_ids and not policy_ids & monitor_ids
    assert all(".policy." in name and "lora_" in name for name in policy.adapter_state())
    # A second player with the same role on the same base is a bug in the caller.
    with pytest.raises(ValueError, match="already has an adapter"):
        Player.create(pool, role="policy", config=policy.config)


def test_a_fresh_adapter_equals_the_base(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, monitor = two_players(tiny_lm_dir, ModelPool(cache_dir=tmp_path))
    reference = logits_of(policy, reference=True)
    assert torch.allclose(logits_of(policy), reference, atol=1e-6)
    assert torch.allclose(logits_of(monitor), reference, atol=1e-6)


def test_nothing_requires_grad_outside_active(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, monitor = two_players(tiny_lm_dir, ModelPool(cache_dir=tmp_path))
    assert not any(p.requires_grad for p in policy.model.parameters())
    with monitor.active():
        trainable = {id(p) for p in policy.model.parameters() if p.requires_grad}
        assert trainable == {id(p) for p in monitor.trainable_parameters()}
        assert policy.model.active_adapter == "monitor"
        # Another player generating meanwhile neither freezes the monitor nor leaks grads.
        policy.generate_from_ids([[5, 6, 7]], seed=0)
        assert {id(p) for p in policy.model.parameters() if p.requires_grad} == trainable
        assert policy.model.active_adapter == "monitor"
        with policy.reference():  # π_ref inside a training step: the monitor stays trainable
            assert not any(p.requires_grad for p in policy.trainable_parameters())
        assert {id(p) for p in policy.model.parameters() if p.requires_grad} == trainable
    assert not any(p.requires_grad for p in policy.model.parameters())
    # peft re-enables adapters on leaving disable_adapter(); nothing may become trainable.
    with policy.reference():
        pass
    assert not any(p.requires_grad for p in policy.model.parameters())


def test_training_one_player_leaves_the_other_and_the_base_untouched(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, monitor = two_players(tiny_lm_dir, ModelPool(cache_dir=tmp_path))
    base_before = base_weights(policy)
    monitor_before = monitor.adapter_state()
    policy_before = policy.adapter_state()
    reference_before = logits_of(policy, reference=True)

    with policy.active():
        loss = policy.model(input_ids=PROMPT_IDS).logits.pow(2).mean()
        loss.backward()
    grads = {name: p.grad for name, p in policy.model.named_parameters() if p.grad is not None}
    assert grads and all(".policy." in name for name in grads)
    for parameter in policy.model.parameters():
        parameter.grad = None

    train_one_step(policy)
    train_one_step(policy)  # lora_B moves on the first step, lora_A only once B is non-zero

    changed = [name for name, value in policy.adapter_state().items() if not torch.equal(value, policy_before[name])]
    assert any("lora_A" in name for name in changed) and any("lora_B" in name for name in changed)
    assert all(torch.equal(value, monitor_before[name]) for name, value in monitor.adapter_state().items())
    assert all(torch.equal(value, base_before[name]) for name, value in base_weights(policy).items())
    assert torch.equal(logits_of(policy, reference=True), reference_before)
    assert torch.allclose(logits_of(monitor), reference_before, atol=1e-6)
    assert not torch.allclose(logits_of(policy), reference_before, atol=1e-3)


def test_saved_adapter_loads_into_a_fresh_player(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, _ = two_players(tiny_lm_dir, ModelPool(cache_dir=tmp_path))
    train_one_step(policy)
    train_one_step(policy)
    policy.save_adapter(tmp_path / "adapter")

    fresh, _ = two_players(tiny_lm_dir, ModelPool(cache_dir=tmp_path))
    assert not torch.allclose(logits_of(fresh), logits_of(policy), atol=1e-3)
    fresh.load_adapter(tmp_path / "adapter")
    saved_state = policy.adapter_state()
    assert all(torch.equal(value, saved_state[name]) for name, value in fresh.adapter_state().items())
    assert torch.allclose(logits_of(fresh), logits_of(policy), atol=1e-6)
    assert not any(p.requires_grad for p in fresh.model.parameters())


def test_loading_an_adapter_of_another_shape_is_a_user_error(tiny_lm_dir: Path, tmp_path: Path) -> None:
    policy, _ = two_players(tiny_lm_dir, ModelPool(cache_dir=tmp_path))
    policy.save_adapter(tmp_path / "adapter")
    other = Player.create(
        ModelPool(cache_dir=tmp_path), role="policy", config=PlayerConfig(model=str(tiny_lm_dir), lora_r=8)
    )
    with pytest.raises(UserError, match="lora_r"):
        other.load_adapter(tmp_path / "adapter")
    with pytest.raises(UserError, match="no saved adapter"):
        other.load_adapter(tmp_path / "nowhere")


def test_unknown_target_modules_are_a_user_error(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = PlayerConfig(model=str(tiny_lm_dir), target_modules=["q_proj", "c_attn"])
    with pytest.raises(UserError, match=r"target_modules: \['c_attn'\]") as caught:
        Player.create(ModelPool(cache_dir=tmp_path), role="policy", config=config)
    assert "\n" not in str(caught.value)

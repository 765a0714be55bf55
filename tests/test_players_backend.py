"""The rollout-backend seam (players/backend.py): a backend holding its own copy of the model,
fed the players' adapters as plain tensors, generates exactly what the players' default
in-process backend generates, and a whole game played through it logs the same run, with an
off-policy mismatch of ~0 in every update."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from engine.game import open_run, start_run
from players import BackendSpec, ModelPool, Player, PlayerConfig, TransformersBackend
from players.backend import adapter_weights
from storage import RunReader
from storage.events import AdapterUpdate, MonitorUpdated, PolicyUpdated, RoundPlayed
from storage.query import RunsQuery
from tests.test_game import tiny_config


def trained_looking(player: Player, seed: int) -> None:
    """Give the adapter nonzero weights (a fresh LoRA's B is zero, so it changes nothing)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in player.trainable_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def own_copy(config: PlayerConfig, tmp_path: Path, role: str = "policy") -> TransformersBackend:
    spec = pickle.loads(pickle.dumps(BackendSpec(players={role: config}, cache_dir=str(tmp_path / "own-cache"))))
    with torch.random.fork_rng():  # a fresh LoRA draws its A from the global RNG
        return TransformersBackend.from_spec(spec)


def test_a_backend_with_its_own_model_generates_what_the_player_does_once_given_the_adapter(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    config = PlayerConfig(model=str(tiny_lm_dir), max_new_tokens=8, lora_r=4)
    player = Player.create(ModelPool(cache_dir=tmp_path / "cache"), role="policy", config=config)
    trained_looking(player, seed=1)
    prompts = [[5, 6, 7, 8], [9, 10, 11], [5, 6, 7, 8]]
    in_process = player.generate_from_ids(prompts, seed=4)

    backend = own_copy(config, tmp_path)
    assert backend.players["policy"].model is not player.model
    player.use_backend(backend)
    stale = player.generate_from_ids(prompts, seed=4)  # the backend still holds a fresh adapter
    assert [g.logprobs for g in stale] != [g.logprobs for g in in_process]

    weights = pickle.loads(pickle.dumps(adapter_weights(player.model, "policy")))  # crosses a process boundary
    assert all(tensor.device.type == "cpu" for tensor in weights.values())
    player.publish_adapter(version=3)
    assert backend.versions == {"policy": 3}
    assert player.generate_from_ids(prompts, seed=4) == in_process  # tokens and log-probs, bit for bit
    assert player.generate_from_ids(prompts, sample=False) != in_process  # greedy travels too
    assert not any(p.requires_grad for p in backend.players["policy"].trainable_parameters())


def test_loading_an_adapter_into_the_shared_default_backend_changes_nothing(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = PlayerConfig(model=str(tiny_lm_dir), max_new_tokens=6, lora_r=4)
    player = Player.create(ModelPool(cache_dir=tmp_path / "cache"), role="policy", config=config)
    trained_looking(player, seed=2)
    before = player.adapter_state()
    first = player.generate_from_ids([[3, 4, 5]], seed=1)
    player.publish_adapter(version=1)
    assert all(torch.equal(before[name], value) for name, value in player.adapter_state().items())
    assert player.generate_from_ids([[3, 4, 5]], seed=1) == first


def test_a_game_played_through_a_backend_with_its_own_models_logs_the_same_run(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The game, the learners and the log do not know which backend generated: the adapters
    reach the backend after every update (and at the start), so every round is the same."""
    config = tiny_config(tiny_lm_dir, tmp_path, training={"eval_every": 0})
    start_run(config, tmp_path / "default", pool=ModelPool(cache_dir=tmp_path / "cache"))

    game = open_run(config, tmp_path / "own", pool=ModelPool(cache_dir=tmp_path / "cache"))
    with torch.random.fork_rng():
        backend = TransformersBackend.from_spec(
            BackendSpec(players={"policy": config.policy, "monitor": config.monitor}, cache_dir=str(tmp_path / "cache"))
        )
    assert game.table.monitor is not None
    game.table.policy.use_backend(backend)
    game.table.monitor.use_backend(backend)
    game.publish_adapters()
    game.save_checkpoint()  # what start_run does before training
    game.train()

    def rounds(run: str) -> list[RoundPlayed]:
        played = [item.event for item in RunReader(tmp_path / run).events() if isinstance(item.event, RoundPlayed)]
        return [RoundPlayed(**{**round_.to_dict(), "timings": {}}) for round_ in played]

    default_rounds = rounds("default")
    assert len(default_rounds) == 12
    assert rounds("own") == default_rounds
    assert backend.versions["policy"] >= 1 and backend.versions["monitor"] >= 2


    # Both learners measured their generator against their own first forward: ~0 in process.
    for run in ("default", "own"):
        updates = [item.event for item in RunReader(tmp_path / run).events() if isinstance(item.event, AdapterUpdate)]
        assert {type(update) for update in updates} == {MonitorUpdated, PolicyUpdated}
        for update in updates:
            assert update.logprob_mismatch_max is not None and update.logprob_mismatch_max < 1e-4
            assert len(update.round_logprob_mismatch) == len(update.round_ids)
            assert max(update.round_logprob_mismatch) <= update.logprob_mismatch_max
        with RunsQuery(tmp_path / run) as query:
            column = query.arrow("SELECT logprob_mismatch_max FROM updates").column(0).to_pylist()
        assert sorted(column) == sorted(update.logprob_mismatch_max for update in updates)

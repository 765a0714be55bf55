"""The PPO learner on tiny random models: what changes, what is recomputed, where it points."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.payoffs import policy_rollouts
from engine.ppo import PPOLearner, Rollout, SharedPromptBatch, k2_kl, masked_mean, predicting_hidden_states
from players.packing import MIN_PREFIX_GAIN_TOKENS, shared_prefixes
from players import ModelPool, Player, PlayerConfig
from storage import RoundPlayed, RunReader, RunWriter
from tests.learner_settings import learner_settings

REPOSITORY = Path(__file__).resolve().parents[1]


def make_players(model_dir: Path, cache_dir: Path, temperature: float = 1.0, max_new_tokens: int = 6) -> tuple[Player, Player]:
    torch.manual_seed(0)  # LoRA A is drawn from the global RNG: same adapters whatever ran before
    pool = ModelPool(cache_dir)
    config = PlayerConfig(model=str(model_dir), lora_r=4, max_new_tokens=max_new_tokens, temperature=temperature)
    return Player.create(pool, "policy", config), Player.create(pool, "monitor", config)


def prompt_of(player: Player, text: str) -> list[int]:
    return player.encode_prompt(player.render_prompt([{"role": "user", "content": text}]))


def sample_rollouts(player: Player, texts: list[str], samples: int, seed: int, rewards: list[float] | None = None) -> list[Rollout]:
    prompts = [prompt_of(player, text) for text in texts for _ in range(samples)]
    generations = player.generate_from_ids(prompts, seed=seed)
    return [
        Rollout(
            prompt_ids=g.prompt_ids,
            response_ids=g.token_ids,
            behaviour_logprobs=g.logprobs,
            reward=float(index % 3) if rewards is None else rewards[index],
            group=f"{index // samples}",
        )
        for index, g in enumerate(generations)
    ]


def perturb_adapters(player: Player, seed: int) -> None:
    """LoRA B starts at zero, which hides bugs in A's gradient; give both adapters random weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in player.model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def base_weights(player: Player) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in player.model.named_parameters() if "lora_" not in n}


def truncated(rollouts: list[Rollout]) -> list[Rollout]:
    """Cut some responses short: a prefix keeps its behaviour log-probs, and lengths now vary."""
    cut = []
    for index, rollout in enumerate(rollouts):
        keep = max(1, len(rollout.response_ids) - index % 4)
        cut.append(
            Rollout(rollout.prompt_ids, rollout.response_ids[:keep], rollout.behaviour_logprobs[:keep], rollout.reward, rollout.group)
        )
    return cut


def test_recomputed_logprobs_match_behaviour_logprobs(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir, temperature=0.7)
    perturb_adapters(policy, seed=1)
    rollouts = truncated(sample_rollouts(policy, ["Who went to the market?", "Yes or no?"], samples=3, seed=0))
    learner = PPOLearner(policy, learner_settings(temperature=0.7))
    batch = SharedPromptBatch.build(rollouts, policy.pad_token_id, policy.device)
    assert batch.prompt_input_ids.shape[0] == 2  # six rollouts, two distinct prompts encoded once each
    with torch.no_grad(), policy.active():
        logprobs, _ = learner._token_logprobs(predicting_hidden_states(policy, batch), batch, with_entropy=False)
    assert torch.allclose(logprobs, batch.behaviour_logprobs, atol=1e-4)


def test_shared_prompt_batch_layout() -> None:
    rollouts = [
        Rollout([5, 6, 7], [1, 2], [-0.5, -0.25], 0.0, "a"),
        Rollout([8], [3, 4, 9], [-1.0, -2.0, -3.0], 0.0, "b"),
        Rollout([5, 6, 7], [1], [-0.75], 0.0, "a"),
    ]
    batch = SharedPromptBatch.build(rollouts, pad_id=0, device=torch.device("cpu"))
    assert batch.prompt_input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]  # distinct prompts, left-padded
    assert batch.prompt_attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.prompt_position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch.prompt_of_rollout.tolist() == [0, 1, 0]
    assert batch.response_ids.tolist() == [[1, 2, 0], [3, 4, 9], [1, 0, 0]]
    assert batch.response_mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]
    # Response token j sits at position prompt length + j, whatever padding the prompts needed.
    assert batch.response_position_ids.tolist() == [[3, 4, 5], [1, 2, 3], [3, 4, 5]]
    assert batch.behaviour_logprobs.tolist() == [[-0.5, -0.25, 0.0], [-1.0, -2.0, -3.0], [-0.75, 0.0, 0.0]]


# Identical prompts (the n samples of a state); and the monitor's case, distinct prompts that
# share a long prefix (story and question) and differ in their last words (the answer judged),
# beside one prompt that shares only the chat template's opening.
STORY = (
    "Mara kept the lighthouse through the storm and turned the frame by hand all night, because the "
    "lamp had failed and the ships out at sea still needed to see a moving beam. Question: why? Answer:"
)


def test_shared_prefixes_group_prompts_only_where_it_saves_tokens() -> None:
    template, story = [1, 2, 3], list(range(100, 140))
    answers = [[7, 8], [9], [10, 11, 12]]
    other_state = template + list(range(200, 240))
    prompts = [template + story + answer for answer in answers] + [other_state, other_state, template + story + answers[0]]
    prefixes, prefix_of = shared_prefixes(prompts)
    # The three answers to one story share its 43 tokens; the other state shares only the
    # template's 3, and joining would re-encode its 40 story tokens for both of its samples.
    assert prefixes == [template + story, other_state]
    assert prefix_of == [0, 0, 0, 1, 1, 0]
    assert shared_prefixes([[5, 6], [5, 6]]) == ([[5, 6]], [0, 0])
    # Joining must save MIN_PREFIX_GAIN_TOKENS: one shared token saves one, so these stay apart.
    assert shared_prefixes([[5, 6, 7], [5, 8, 9]]) == ([[5, 6, 7], [5, 8, 9]], [0, 1])


def test_shared_prefix_batch_layout() -> None:
    story = list(range(10, 10 + MIN_PREFIX_GAIN_TOKENS))
    rollouts = [
        Rollout([*story, 8], [1, 2], [-0.5, -0.25], 0.0, "a"),
        Rollout([*story, 9, 9], [3], [-1.0], 0.0, "a"),
        Rollout(story, [4, 4, 4], [-1.0, -2.0, -3.0], 0.0, "a"),
    ]
    batch = SharedPromptBatch.build(rollouts, pad_id=0, device=torch.device("cpu"))
    assert batch.prompt_input_ids.tolist() == [story]
    assert batch.tail_lengths is not None and batch.tail_lengths.tolist() == [1, 2, 0]
    assert batch.continuation_ids is not None and batch.continuation_ids.tolist() == [[8, 1, 2], [9, 9, 3], [4, 4, 4]]
    assert batch.continuation_mask is not None and batch.continuation_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 1]]
    n = len(story)
    assert batch.continuation_position_ids is not None and batch.continuation_position_ids.tolist() == [[n, n + 1, n + 2]] * 3
    # Response token j still sits at the prompt's length + j.
    assert batch.response_position_ids.tolist() == [[n + 1, n + 2, n + 3], [n + 2, n + 3, n + 4], [n, n + 1, n + 2]]


@pytest.mark.parametrize(
    ("texts", "samples", "prefixes"),
    [
        (["Once upon a time", "Is the answer right?"], 3, 2),
        ([f"{STORY} to keep warm", f"{STORY} so ships saw the beam", f"{STORY} the oil ran out", "Is the answer right?"], 1, 2),
    ],
    ids=["identical-prompts", "shared-prefixes"],
)
def test_shared_prompt_forward_gives_the_gradient_of_full_forwards(
    tiny_lm_dir: Path, model_cache_dir: Path, texts: list[str], samples: int, prefixes: int
) -> None:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    perturb_adapters(policy, seed=2)
    rollouts = truncated(sample_rollouts(policy, texts, samples=samples, seed=1))
    weights = torch.linspace(-1.0, 1.0, steps=len(rollouts)).unsqueeze(1)
    learner = PPOLearner(policy, learner_settings())

    def gradients(loss: torch.Tensor) -> list[torch.Tensor]:
        return [g.clone() for g in torch.autograd.grad(loss, policy.trainable_parameters())]

    with policy.active():
        batch = SharedPromptBatch.build(rollouts, policy.pad_token_id, policy.device)
        assert batch.prompt_input_ids.shape[0] == prefixes
        assert (batch.continuation_ids is not None) == (len(texts) > 2)  # tails only where prompts differ
        shared, _ = learner._token_logprobs(predicting_hidden_states(policy, batch), batch, with_entropy=False)
        shared_grads = gradients((shared * weights).sum())
        # Reference: every rollout alone, unpadded, through the whole model (all logits computed).
        full = torch.zeros_like(shared)
        for row, rollout in enumerate(rollouts):
            ids = torch.tensor([list(rollout.prompt_ids) + list(rollout.response_ids)])
            logits = policy.model(input_ids=ids).logits[0, len(rollout.prompt_ids) - 1 : -1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(rollout.response_ids).unsqueeze(-1))
            full[row, : len(rollout.response_ids)] = picked.squeeze(-1)
        full_grads = gradients((full * weights).sum())
    assert torch.allclose(shared, full, atol=1e-5)
    for shared_grad, full_grad in zip(shared_grads, full_grads, strict=True):
        assert torch.allclose(shared_grad, full_grad, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in shared_grads)


@pytest.mark.parametrize("trained_role", ["policy", "monitor"])
def test_an_update_changes_only_the_trained_adapter(tiny_lm_dir: Path, model_cache_dir: Path, trained_role: str) -> None:
    policy, monitor = make_players(tiny_lm_dir, model_cache_dir)
    trained, other = (policy, monitor) if trained_role == "policy" else (monitor, policy)
    rollouts = sample_rollouts(trained, ["Who went to the market?"], samples=4, seed=3)
    before_trained, before_other, before_base = trained.adapter_state(), other.adapter_state(), base_weights(trained)

    PPOLearner(trained, learner_settings(learning_rate=1e-2, minibatch_size=2, ppo_epochs=2)).update(rollouts)

    after_trained = trained.adapter_state()
    assert any(not torch.equal(before_trained[n], after_trained[n]) for n in before_trained)
    assert all(torch.equal(before_other[n], t) for n, t in other.adapter_state().items())
    assert all(torch.equal(before_base[n], t) for n, t in base_weights(trained).items())


def test_an_update_leaves_no_parameter_requiring_grad(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    """Nothing trains outside an update. (peft's disable_adapter() marks the active adapter
    trainable again on exit, so Player.reference() must restore the flags it found.)"""
    policy, monitor = make_players(tiny_lm_dir, model_cache_dir)
    rollouts = sample_rollouts(monitor, ["Who went to the market?"], samples=2, seed=3)
    PPOLearner(monitor, learner_settings()).update(rollouts)
    assert [n for n, p in policy.model.named_parameters() if p.requires_grad] == []


def test_update_reports_every_documented_diagnostic(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    diagnostics = PPOLearner(policy, learner_settings(minibatch_size=3)).update(
        sample_rollouts(policy, ["Yes or no?"], samples=5, seed=4)
    )
    documented = {
        "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "kl_ref", "grad_norm", "payoff_grad_norm",
        "explained_variance", "mean_reward", "mean_advantage", "learning_rate", "n_rollouts", "seconds",
    }  # docs/ARCHITECTURE.md
    assert set(diagnostics) == documented
    assert diagnostics["n_rollouts"] == 5.0
    assert diagnostics["entropy"] > 0.0 and diagnostics["grad_norm"] > 0.0


def with_rewards(rollouts: list[Rollout], rewards: list[float]) -> list[Rollout]:
    return [Rollout(r.prompt_ids, r.response_ids, r.behaviour_logprobs, reward, r.group) for r, reward in zip(rollouts, rewards)]


@pytest.mark.parametrize("minibatch_size", [4, 6], ids=["own-pass", "fused-with-the-first-step"])
def test_payoff_grad_norm_is_the_gradient_of_the_raw_mean_payoff(
    tiny_lm_dir: Path, model_cache_dir: Path, minibatch_size: int
) -> None:
    """‖∇θ U‖ (GAME.md §3) on the unwhitened objective: by hand from full forwards, and it
    scales with the payoff where the whitened PPO gradient does not. Six rollouts: in
    minibatches of 4 the diagnostic has a pass of its own, in one of 6 it shares the first PPO
    step's forward (engine/ppo.py detail 18)."""
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    perturb_adapters(policy, seed=5)
    rollouts = truncated(sample_rollouts(policy, ["Who went to the market?", "Yes or no?"], samples=3, seed=6))
    rewards = [0.5, -1.0, 2.0, 0.0, 1.5, -0.25]
    rollouts = with_rewards(rollouts, rewards)

    # By hand, at the adapters before the update: ∇ (1/N) Σ_i r_i log π(y_i|x_i), full forwards.
    with policy.active():
        sequence_logprobs = []
        for rollout in rollouts:  # every rollout alone, unpadded, through the whole model
            ids = torch.tensor([list(rollout.prompt_ids) + list(rollout.response_ids)])
            logits = policy.model(input_ids=ids).logits[0, len(rollout.prompt_ids) - 1 : -1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(rollout.response_ids).unsqueeze(-1))
            sequence_logprobs.append(picked.sum())
        objective = (torch.tensor(rewards) * torch.stack(sequence_logprobs)).mean()
        by_hand = float(torch.nn.utils.get_total_norm(torch.autograd.grad(objective, list(policy.trainable_parameters()))))
    state = policy.adapter_state()

    def update(scaled: list[Rollout]) -> dict[str, float]:
        with torch.no_grad():  # every update starts from the same adapters
            for name, parameter in policy.model.named_parameters():
                if name in state:
                    parameter.copy_(state[name])
        return PPOLearner(policy, learner_settings(minibatch_size=minibatch_size, learning_rate=1e-3, ppo_epochs=1)).update(scaled)

    plain = update(rollouts)
    assert plain["payoff_grad_norm"] == pytest.approx(by_hand, rel=1e-4)
    tripled = update(with_rewards(rollouts, [3.0 * r for r in rewards]))
    assert tripled["payoff_grad_norm"] == pytest.approx(3.0 * by_hand, rel=1e-4)
    assert tripled["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-3)  # whitened: scale-free
    assert update(with_rewards(rollouts, [0.0] * len(rollouts)))["payoff_grad_norm"] == 0.0


def test_the_kl_term_of_the_loss_is_k2(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    """Equal rewards whiten to zero advantages, so the loss is β·mean k2 alone: its gradient
    norm, by hand, is the update's grad_norm (the term whose gradient is ∇ KL(π_θ‖π_ref))."""
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    perturb_adapters(policy, seed=7)
    rollouts = with_rewards(sample_rollouts(policy, ["Once upon a time"], samples=4, seed=8), [1.0] * 4)
    batch = SharedPromptBatch.build(rollouts, policy.pad_token_id, policy.device)
    learner = PPOLearner(policy, learner_settings(minibatch_size=4, kl_coef=1.0, ppo_epochs=1))
    with torch.no_grad(), policy.reference():
        reference, _ = learner._token_logprobs(predicting_hidden_states(policy, batch), batch, with_entropy=False)
    with policy.active():
        logprobs, _ = learner._token_logprobs(predicting_hidden_states(policy, batch), batch, with_entropy=False)
        kl_term = masked_mean(k2_kl(logprobs, reference), batch.response_mask)
        by_hand = float(torch.nn.utils.get_total_norm(torch.autograd.grad(kl_term, list(policy.trainable_parameters()))))
    assert by_hand > 0.0
    assert learner.update(rollouts)["grad_norm"] == pytest.approx(by_hand, rel=1e-4)


def test_gae_value_head_learns_the_returns(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    rollouts = sample_rollouts(policy, ["Who went to the market?", "Yes or no?"], samples=2, seed=5, rewards=[1.0, 2.0, -1.0, 0.5])
    learner = PPOLearner(policy, learner_settings(
        # lr 1e-2: at 3e-2 the policy drifts so far over 20 epochs on the same rollouts
        # (approx_kl 6-11) that the value head chases a moving target, and whether it keeps up
        # depends on the draw (explained variance 0.01-0.54 over four rollout seeds; at 1e-2,
        # 0.70-0.84 on the same four)
        advantage="gae", learning_rate=1e-2, ppo_epochs=4, minibatch_size=4, kl_coef=0.0, value_coef=0.5, seed=0
    ))
    first = learner.update(rollouts)
    for _ in range(4):
        last = learner.update(rollouts)
    assert first["explained_variance"] == pytest.approx(0.0)  # V ≡ 0 before any training
    assert last["value_loss"] < first["value_loss"], (first, last)
    assert last["explained_variance"] > 0.2, (first, last)


def _write_round_window(run_dir: Path, rollouts: list[Rollout]) -> None:
    with RunWriter.create(run_dir, "learner-test") as writer:
        for round_id, rollout in enumerate(rollouts):
            writer.append(
                RoundPlayed(
                    round_id=round_id, phase="train", window=0, state_id=f"s{rollout.group}", sample_index=round_id % 2,
                    story="story", question="question", choices=["a", "b"], correct_index=0,
                    policy_prompt="prompt", policy_prompt_ids=list(rollout.prompt_ids), policy_output="output",
                    policy_token_ids=list(rollout.response_ids), policy_logprobs=list(rollout.behaviour_logprobs),
                    policy_answer=0, monitor_prompt=None, monitor_prompt_ids=None, monitor_output=None,
                    monitor_token_ids=None, monitor_logprobs=None, monitor_says_correct=None,
                    reward_policy=0.0, reward_monitor=None, p_accept=0.5, judge_accepts=True, truth="correct",
                    combined_reward=rollout.reward, fidelity_penalty=None, lambda_value=0.0,
                    policy_version=0, monitor_version=0,
                )
            )


# The second process: load the same base and the saved starting adapter, read the window
# back from the log, run one update, save the resulting adapter tensors.
SECOND_PROCESS = """
import sys, torch
torch.set_num_threads(1)
from pathlib import Path
from engine.payoffs import policy_rollouts
from engine.ppo import PPOLearner
from storage import RunReader
from tests.test_learner import make_players, LEARNER_SETTINGS
model_dir, cache_dir, run_dir, adapter_dir, out = sys.argv[1:]
policy, _ = make_players(Path(model_dir), Path(cache_dir))
policy.load_adapter(adapter_dir)
rounds = [recorded.event for recorded in RunReader(run_dir).rounds(0, None)]
PPOLearner(policy, LEARNER_SETTINGS).update(policy_rollouts(rounds))
torch.save(policy.adapter_state(), out)
"""

LEARNER_SETTINGS = learner_settings(learning_rate=1e-2, minibatch_size=3, ppo_epochs=2, advantage="group", seed=7)


def test_a_second_process_reading_the_log_computes_the_same_update(tiny_lm_dir: Path, model_cache_dir: Path, tmp_path: Path) -> None:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    perturb_adapters(policy, seed=3)
    policy.save_adapter(tmp_path / "start")
    policy_start = policy.adapter_state()
    rollouts = sample_rollouts(policy, ["Who went to the market?", "Is the answer right?"], samples=3, seed=6)
    _write_round_window(tmp_path / "run", rollouts)

    rounds = [recorded.event for recorded in RunReader(tmp_path / "run").rounds(0, None)]
    PPOLearner(policy, LEARNER_SETTINGS).update(policy_rollouts(rounds))
    here = policy.adapter_state()

    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    out = tmp_path / "there.pt"
    subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(tiny_lm_dir), str(model_cache_dir), str(tmp_path / "run"), str(tmp_path / "start"), str(out)],
        check=True, cwd=REPOSITORY, env=environment, capture_output=True,
    )
    there = torch.load(out)
    assert set(here) == set(there)
    for name, tensor in here.items():
        assert torch.allclose(tensor, there[name], atol=1e-6, rtol=0.0), name
    start = {name: t for name, t in torch.load(out).items()}  # the update did move the adapter
    assert any(not torch.allclose(t, policy_start[name]) for name, t in start.items())


@pytest.mark.parametrize("first_seed", [100, 200])
def test_mean_reward_rises_on_a_task_with_one_rewarded_answer(tiny_lm_dir: Path, model_cache_dir: Path, first_seed: int) -> None:
    """Reward 1 when the first generated token is a chosen token: its probability must grow,
    for two different sequences of draws. (At lr 2e-2 Adam's first steps overshoot: on one of
    three draw sequences the probability reached 1 and then collapsed to 0; at 1e-2 and 5e-3
    all three ended above 0.99.)"""
    policy, _ = make_players(tiny_lm_dir, model_cache_dir, max_new_tokens=2)
    prompt = prompt_of(policy, "Who went to the market?")
    with torch.no_grad():
        first_token_probabilities = torch.softmax(policy.model(input_ids=torch.tensor([prompt])).logits[0, -1], dim=-1)
    # The second most likely token: rewarded often enough to learn from, far from certain.
    target = int(first_token_probabilities.argsort(descending=True)[1])

    def probability_of_target() -> float:
        with torch.no_grad(), policy.active():
            return float(torch.softmax(policy.model(input_ids=torch.tensor([prompt])).logits[0, -1], dim=-1)[target])

    learner = PPOLearner(policy, learner_settings(
        learning_rate=1e-2, kl_coef=0.0, advantage="group", minibatch_size=16, ppo_epochs=1, seed=0
    ))
    start = probability_of_target()
    sampled_rewards = []
    for update in range(6):
        generations = policy.generate_from_ids([prompt] * 16, seed=first_seed + update)
        rollouts = [
            Rollout(g.prompt_ids, g.token_ids, g.logprobs, float(g.token_ids[0] == target), "the-state") for g in generations
        ]
        sampled_rewards.append(sum(r.reward for r in rollouts) / len(rollouts))
        learner.update(rollouts)
    end = probability_of_target()
    assert end > start + 0.2, (start, end, sampled_rewards)
    assert sum(sampled_rewards[3:]) > sum(sampled_rewards[:3])


@pytest.mark.parametrize("minibatch_size", [2, 4], ids=["own-pass", "fused-with-the-first-step"])
def test_payoff_grad_norm_every_thins_the_extra_pass_and_leaves_the_update_alone(
    tiny_lm_dir: Path, model_cache_dir: Path, minibatch_size: int
) -> None:
    """Every N-th update computes ‖∇θ U‖, the others report NaN; the adapters move exactly as
    when it is computed every time (the pass reads, never steps; fused with the first PPO
    step's forward, its backward leaves that step's gradient bit for bit alone), and the
    backend's log-prob mismatch, which shares the pass's forward, is measured on every update
    all the same."""
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    rollouts = with_rewards(
        truncated(sample_rollouts(policy, ["Who went to the market?", "Yes or no?"], samples=2, seed=6)),
        [0.5, -1.0, 2.0, 0.0],
    )
    start = policy.adapter_state()
    trajectories = {}
    for every in (1, 2, 0):
        with torch.no_grad():
            for name, parameter in policy.model.named_parameters():
                if name in start:
                    parameter.copy_(start[name])
        learner = PPOLearner(
            policy, learner_settings(minibatch_size=minibatch_size, learning_rate=1e-2, payoff_grad_norm_every=every)
        )
        norms = []
        for _ in range(3):
            norms.append(learner.update(rollouts)["payoff_grad_norm"])
            assert learner.mismatch is not None and len(learner.mismatch.per_rollout) == len(rollouts)
            assert math.isfinite(learner.mismatch.max)
        trajectories[every] = (norms, {name: value.clone() for name, value in policy.adapter_state().items()})
    every_time, _ = trajectories[1]
    assert all(math.isfinite(norm) and norm > 0 for norm in every_time)
    thinned, _ = trajectories[2]
    assert thinned[0] == every_time[0] and math.isnan(thinned[1]) and thinned[2] == every_time[2]
    assert all(math.isnan(norm) for norm in trajectories[0][0])
    for every in (2, 0):
        for name, value in trajectories[every][1].items():
            assert torch.equal(value, trajectories[1][1][name]), name

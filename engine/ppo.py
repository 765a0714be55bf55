"""PPO for one LoRA player, trained on rollouts read back from the run's log.

    learner = PPOLearner(player, ppo_settings(config, "policy"))   # engine.game: from the run config
    diagnostics = learner.update(rollouts)      # rollouts: engine.payoffs turns RoundPlayed into them

The specification is ../shared/GAME.md §3. The module reads top to bottom: settings, the
loss terms (pure functions, tested against hand computations), the batch layout and forward
pass (plumbing), and the update loop last. The rollout record it trains on is
engine.payoffs.Rollout, built there from the rounds the log holds.

Why one file over 500 lines: PPO is meant to be read in one place, as CleanRL's single-file
PPO is, with every implementation detail below traced to the function beside it; the loss
terms, the batch layout and the update loop share one tensor layout, and splitting them would
send a reader of one minibatch step through several files.

PPO implementation details adopted, and where each lives in the code:
 1. Ratios against the *behaviour* log-probs recorded at generation, not a re-computed "old"
    pass: r_t = exp(log π_θ(a_t|s_t) − log π_behaviour(a_t|s_t))        [clipped_surrogate]
 2. Clipped surrogate, pessimistic max of the two losses (Schulman et al. 2017, eq. 7) [clipped_surrogate]
 3. KL to the reference π_ref = the same base with every adapter disabled (player.reference()),
    never a second model copy; reference log-probs once per update under no_grad. The base
    never changes, so its prompts' keys and values are kept between updates (a run meets the
    same states every epoch): each distinct prompt comes from players/prompt_cache.py, encoded
    in fixed chunks so that a found chunk equals a recomputed one bit for bit, and only the
    responses run (training.reference_cache_mib; 0: prompts encoded afresh, grouped as in
    detail 12) [update, step 1; _reference_logprobs]
 4. KL penalty *in the loss* with weight β (not in the reward), as k2 = ½·(new − ref)² per token:
    on tokens drawn from π_θ its expected gradient is exactly ∇θ KL(π_θ‖π_ref), the KL of
    GAME.md §2 (the gradient of E[k2] is E[(log π_θ − log π_ref)·∇ log π_θ], the score-function
    form of ∇ KL(π_θ‖π_ref)). The popular k3 = exp(ref − new) − (ref − new) − 1 is an unbiased
    *value* of KL(π_θ‖π_ref), but its expected gradient is that of the other direction,
    KL(π_ref‖π_θ) (tests/test_ppo.py checks both on a tiny vocabulary); so k3 is what kl_ref
    reports, and k2 is what the loss differentiates. The samples come from the behaviour policy,
    which equals π_θ on an update's first pass over its rollouts and stays within the clip
    range after. (http://joschu.net/blog/kl-approx.html) [k2_kl, k3_kl]
 5. Advantages: "whiten" | "group" | "gae" (engine/advantages.py), computed once per update
    from the rewards, before the epochs; GAE advantages are whitened over the batch's tokens [update, step 2]
 6. Value head for GAE: one Linear on the last hidden state at the positions that predict
    each response token, trained jointly (value_coef · ½·MSE to the GAE returns), no value
    clipping; it shares the trunk, so its gradient also reaches the LoRA weights [value_loss]
 7. Token-level loss normalisation: every response token in a minibatch weighs the same
    (as TRL's default "dapo"), so long responses are not down-weighted [masked_mean]
 8. ppo_epochs passes over the rollouts in shuffled minibatches; the permutation comes from
    the learner's own seeded generator, saved with its state [update, step 3]
 9. Global gradient-norm clipping at max_grad_norm; the adapter's gradient norm of the PPO loss
    *before* clipping is reported as grad_norm [update, step 3]
    The saddle-point diagnostic ‖∇θ U‖ of GAME.md §3 is a separate pass (payoff_grad_norm): the
    norm of ∇θ of the player's mean *raw* payoff over the update's rollouts, at the adapters
    before the update, estimated by the score function (1/N)·Σ_i r_i·∇θ log π_θ(y_i|x_i): no
    whitening, no baseline, no clipping, no KL. Its expectation is 0 at a stationary point of
    the game (what is left is sampling noise, shrinking as 1/√N), where grad_norm, on whitened
    advantages, keeps its scale whatever the payoffs are [payoff_gradient_norm]
10. Log-probs at the player's sampling temperature: log_softmax(logits / T), as generation
    recorded them [_token_logprobs]
11. Logits only at response positions: the decoder's hidden states are gathered at the
    positions predicting real response tokens (padding left out) before lm_head, so the
    vocabulary projection costs (response length)·V per sequence instead of L·V; the
    projection, log-softmax and entropy then run a chunk of rows at a time, and the backward
    recomputes each chunk's logits rather than keeping [n, V] of them
    [predicting_hidden_states, _token_logprobs, chunked_token_logprobs]
12. Shared prompts are encoded once: rollouts with identical prompt ids (the n samples of a
    state) share one prompt forward whose KV cache is expanded to the responses; gradients
    flow through the shared cache, so the loss and its gradient are exactly those of n full
    forwards, for 1/n of the prompt compute. Distinct prompts with a long common prefix (the
    monitor's prompts of one state, which differ only in the answer judged) share the
    prefix's forward the same way, each rollout encoding its prompt's tail before its
    response [shared_prefixes, predicting_hidden_states]
13. Dropout is off during updates (model.eval()): the ratio must compare the same function
    the behaviour policy sampled from [update]
14. AdamW without weight decay (decay would shrink the adapter towards the base: a second,
    unannounced KL penalty) [PPOLearner.__init__]
15. Diagnostics (plain names; trackers add the role namespace): policy_loss, value_loss (NaN
    without a value head), entropy (of the tempered distribution), approx_kl (k3 estimate of
    KL(behaviour‖new), CleanRL's), clipfrac (share of tokens with |r − 1| > clip_range), kl_ref (mean k3:
    the estimate of KL(π_θ‖π_ref) per token), grad_norm (of the PPO loss), explained_variance
    (GAE only, NaN otherwise), mean_reward, mean_advantage, learning_rate, n_rollouts, seconds:
    means over the update's minibatch steps; and payoff_grad_norm (‖∇θ U‖, detail 9), once per
    update (or every training.payoff_grad_norm_every-th, NaN between: the pass costs as much as
    a PPO epoch): ‖∇θ_L U‖ in PolicyUpdated, ‖∇θ_M U‖ in MonitorUpdated.
16. Off-policy mismatch of the rollout backend: the learner's log-probs at the adapters before
    the update (the forward of detail 9's pass, reused; a no-grad forward where it is skipped) against the behaviour log-probs the
    backend recorded, |log π_learner − log π_gen| per response token; its token mean and max
    over the update, and its mean per rollout, become learner.mismatch (logged in the update
    event). The in-process backend differs from the learner only by float rounding (~1e-6);
    another engine differs by its kernels and precision [LogprobMismatch.of]
17. Truncated importance sampling (training.tis_cap, off by default; Yao et al. 2025, "Your
    efficient RL framework secretly brings you off-policy RL training"): with a cap C, the
    ratio is taken against the learner's own pre-update log-probs, and each token's clipped
    loss is weighted by min(π_learner/π_gen, C), detached, so the gradient estimates the
    learner's objective from the generator's samples with bounded variance; approx_kl and
    clipfrac then measure against the learner's log-probs too [truncated_importance_weights,
    update step 3]
18. One forward for the pre-update pass and the first PPO step: when an update is a single
    minibatch (n_rollouts <= minibatch_size, no value head), the first PPO step's forward runs
    at the adapters before the update, on the same rollouts, so details 9, 16 and 17 take
    their log-probs (and ‖∇θ U‖ its gradient, by a second backward over the kept graph) from
    it instead of a pass of their own: an update then costs the reference forward plus one
    forward and backward per PPO step (and a backward for ‖∇θ U‖ where it is computed), one
    forward fewer than with the separate pass [update]
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from engine.advantages import (
    generalized_advantages,
    group_relative_advantages,
    reward_on_last_token,
    whiten_over_tokens,
    whitened_advantages,
)
from engine.payoffs import Rollout
from players import Player
from players.cpu_linear import frozen_linear
from players.packing import chunk_aligned_prefixes, left_pad, shared_prefixes
from players.prompt_cache import EncodedPrompts

AdvantageEstimator = Literal["whiten", "group", "gae"]

# =========================================================================================
# Settings
# =========================================================================================


@dataclass(frozen=True)
class PPOSettings:
    """One learner's knobs, built from the validated run config by engine.game.ppo_settings.

    No defaults and no checks here: the config models hold both (engine/config.py
    [training], players/config.py temperature), so there is one value per setting.
    """

    # --- optimisation ---
    learning_rate: float  # AdamW over the player's LoRA parameters (and the value head)
    ppo_epochs: int  # passes over the update's rollouts
    minibatch_size: int  # rollouts per optimiser step
    max_grad_norm: float  # global gradient-norm clip
    tis_cap: float | None  # truncated importance sampling cap (detail 17); None: ratios against behaviour
    # --- PPO objective ---
    clip_range: float  # ε: ratios outside [1 − ε, 1 + ε] stop pulling
    kl_coef: float  # β: weight of the per-token KL penalty to the reference in the loss (k2)
    temperature: float  # the player's sampling temperature: log-probs are of logits / T
    # --- advantages ---
    advantage: AdvantageEstimator
    gamma: float  # GAE discount
    gae_lambda: float  # GAE λ (not the Lagrange multiplier)
    value_coef: float  # weight of the value loss (GAE only)
    # --- diagnostics ---
    payoff_grad_norm_every: int  # ‖∇θ U‖ (an extra forward and backward) on every N-th update; 0: never
    # --- speed ---
    reference_cache_bytes: int  # prompt keys/values of the reference kept between updates (players/prompt_cache.py); 0: none
    # --- reproducibility ---
    seed: int  # minibatch shuffling


# =========================================================================================
# Algorithm: the loss terms (pure functions of tensors)
# =========================================================================================


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: every token of the minibatch weighs the same (detail 7)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def clipped_surrogate(
    new_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped policy loss and the ratio (details 1, 2)."""
    ratio = torch.exp(new_logprobs - behaviour_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped), ratio


def truncated_importance_weights(
    learner_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """Per-token min(π_learner / π_gen, cap): the correction for tokens drawn by a generator
    whose log-probs differ from the learner's, truncated so a rare token cannot dominate (detail 17)."""
    return torch.clamp(torch.exp(learner_logprobs - behaviour_logprobs), max=cap)


def k3_kl(new_logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of the value KL(π_θ ‖ π_ref) on tokens sampled from π_θ: unbiased,
    never negative. Not for the loss: its expected gradient is ∇ KL(π_ref ‖ π_θ) (detail 4)."""
    log_ratio = reference_logprobs - new_logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def k2_kl(new_logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token ½·(log π_θ − log π_ref)²: on tokens sampled from π_θ its expected gradient is
    exactly ∇θ KL(π_θ ‖ π_ref), the penalty GAME.md §2 states (detail 4)."""
    return 0.5 * (new_logprobs - reference_logprobs) ** 2


def payoff_objective(logprobs: torch.Tensor, rewards: torch.Tensor, n_rollouts: int) -> torch.Tensor:
    """Some rollouts' share of U = (1/N)·Σ_i r_i·log π_θ(y_i|x_i) (detail 9): its gradient is
    the score-function estimate of ∇θ of the mean raw payoff; [rows, R] log-probs, 0 on padding."""
    return (rewards * logprobs.sum(dim=1)).sum() / n_rollouts


def value_loss(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return 0.5 * masked_mean((values - returns) ** 2, mask)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(target − predicted) / Var(target) over real tokens; NaN when the target is constant."""
    real = mask.bool()
    target_real, predicted_real = target[real], predicted[real]
    target_variance = target_real.var(correction=0)
    if target_variance.item() == 0.0:
        return math.nan
    return float(1.0 - (target_real - predicted_real).var(correction=0) / target_variance)


@dataclass(frozen=True)
class LogprobMismatch:
    """|log π_learner − log π_gen| over an update's response tokens (detail 16)."""

    mean: float  # over every response token of the update
    max: float
    per_rollout: list[float]  # mean over each rollout's response tokens, in the rollouts' order

    @staticmethod
    def of(learner_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor) -> LogprobMismatch:
        gap = (learner_logprobs - behaviour_logprobs).abs() * mask
        return LogprobMismatch(
            mean=float(masked_mean(gap, mask)),
            max=float(gap.max()),
            per_rollout=(gap.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).tolist(),
        )


# =========================================================================================
# Plumbing: laying rollouts out for a forward pass that computes only what the loss needs
# =========================================================================================


@dataclass(frozen=True)
class SharedPromptBatch:
    """Rollouts laid out as shared prompt prefixes (P, encoded once) and, per rollout (N), the
    rest of its prompt (its tail, often empty) followed by its response (detail 12).

    The prefix pass runs the P prefixes, left-padded; the continuation pass runs every
    rollout's tail and response but the response's last token on its prefix's expanded KV
    cache. The hidden state predicting response token j is the one at continuation position
    tail_length + j − 1, where position −1 is the prefix's last one.
    """

    prompt_input_ids: torch.Tensor  # [P, Lp] the prefixes, left-padded
    prompt_attention_mask: torch.Tensor  # [P, Lp]
    prompt_position_ids: torch.Tensor  # [P, Lp] cumsum(mask) − 1, as generation uses
    prompt_of_rollout: torch.Tensor  # [N] index into the P prefixes
    response_ids: torch.Tensor  # [N, R] right-padded with pad_id
    response_mask: torch.Tensor  # [N, R] float, 1.0 on real response tokens
    response_position_ids: torch.Tensor  # [N, R] prompt length + j
    behaviour_logprobs: torch.Tensor  # [N, R] float32, 0 on padding
    # The prompt's tokens after its prefix, then the response: [N, S] right-padded; None when
    # every prompt is its own prefix (the n samples of each state), as the policy's are.
    continuation_ids: torch.Tensor | None = None
    continuation_mask: torch.Tensor | None = None  # [N, S] 1 on real tokens
    continuation_position_ids: torch.Tensor | None = None  # [N, S] prefix length + j
    tail_lengths: torch.Tensor | None = None  # [N] prompt tokens after the prefix

    @staticmethod
    def build(
        rollouts: Sequence[Rollout],
        pad_id: int,
        device: torch.device,
        grouping: tuple[list[list[int]], list[int]] | None = None,
    ) -> SharedPromptBatch:
        """The rollouts' batch. `grouping`: the prefixes and each rollout's prefix, when not
        players/packing.shared_prefixes' choice (the reference's cached chunks choose them)."""
        prompts = [list(rollout.prompt_ids) for rollout in rollouts]
        prefixes, prefix_of_rollout = grouping if grouping is not None else shared_prefixes(prompts)
        prompt_input_ids, prompt_attention_mask, prompt_position_ids = left_pad(prefixes, pad_id, device)
        prefix_lengths = torch.tensor([len(prefix) for prefix in prefixes], dtype=torch.long)
        prompt_index = torch.tensor(prefix_of_rollout, dtype=torch.long)

        longest = max(len(rollout.response_ids) for rollout in rollouts)
        response_ids = torch.full((len(rollouts), longest), pad_id, dtype=torch.long)
        response_mask = torch.zeros((len(rollouts), longest), dtype=torch.float32)
        behaviour = torch.zeros((len(rollouts), longest), dtype=torch.float32)
        for row, rollout in enumerate(rollouts):
            length = len(rollout.response_ids)
            response_ids[row, :length] = torch.tensor(list(rollout.response_ids), dtype=torch.long)
            response_mask[row, :length] = 1.0
            behaviour[row, :length] = torch.tensor(list(rollout.behaviour_logprobs), dtype=torch.float32)
        tails = [prompt[len(prefixes[index]) :] for prompt, index in zip(prompts, prefix_of_rollout)]
        tail_lengths = torch.tensor([len(tail) for tail in tails], dtype=torch.long)
        response_position_ids = (
            (prefix_lengths[prompt_index] + tail_lengths).unsqueeze(1) + torch.arange(longest).unsqueeze(0)
        )
        continuation: dict[str, torch.Tensor | None] = dict.fromkeys(
            ("continuation_ids", "continuation_mask", "continuation_position_ids", "tail_lengths")
        )
        if int(tail_lengths.max()) > 0:
            width = int((tail_lengths + torch.tensor([len(r.response_ids) for r in rollouts])).max())
            continuation_ids = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
            continuation_mask = torch.zeros((len(rollouts), width), dtype=torch.long)
            for row, (tail, rollout) in enumerate(zip(tails, rollouts)):
                tokens = tail + list(rollout.response_ids)
                continuation_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                continuation_mask[row, : len(tokens)] = 1
            continuation = {
                "continuation_ids": continuation_ids.to(device),
                "continuation_mask": continuation_mask.to(device),
                "continuation_position_ids": (prefix_lengths[prompt_index].unsqueeze(1) + torch.arange(width).unsqueeze(0)).to(device),
                "tail_lengths": tail_lengths.to(device),
            }
        return SharedPromptBatch(
            prompt_input_ids=prompt_input_ids,
            prompt_attention_mask=prompt_attention_mask,
            prompt_position_ids=prompt_position_ids,
            prompt_of_rollout=prompt_index.to(device),
            response_ids=response_ids.to(device),
            response_mask=response_mask.to(device),
            response_position_ids=response_position_ids.to(device),
            behaviour_logprobs=behaviour.to(device),
            **continuation,
        )


def predicting_hidden_states(player: Player, batch: SharedPromptBatch, encoded: EncodedPrompts | None = None) -> torch.Tensor:
    """[N, R, H] final hidden states at the positions that predict each response token
    (details 11, 12). Runs whichever adapter the caller's context selected. `encoded`: the
    batch's prefixes already encoded (by a BasePromptCache, for the reference), in its order."""
    decoder = player.model.get_base_model().get_decoder()
    if encoded is None:
        prompt_out = decoder(
            input_ids=batch.prompt_input_ids,
            attention_mask=batch.prompt_attention_mask,
            position_ids=batch.prompt_position_ids,
            use_cache=True,
        )
        # Left padding puts every prefix's last real token in the last column.
        prefix_last_hidden, cache = prompt_out.last_hidden_state[:, -1, :], prompt_out.cache
    else:
        if encoded.attention_mask.shape != batch.prompt_attention_mask.shape:
            raise ValueError(f"encoded prompts {tuple(encoded.attention_mask.shape)} do not match the batch's prefixes {tuple(batch.prompt_attention_mask.shape)}")
        prefix_last_hidden, cache = encoded.last_hidden, encoded.cache
    first_predicting = prefix_last_hidden[batch.prompt_of_rollout].unsqueeze(1)
    if batch.continuation_ids is None:
        inputs, input_mask, positions = batch.response_ids, batch.response_mask, batch.response_position_ids
    else:
        assert batch.continuation_mask is not None and batch.continuation_position_ids is not None
        inputs, input_mask, positions = batch.continuation_ids, batch.continuation_mask, batch.continuation_position_ids
    if inputs.shape[1] == 1:
        return first_predicting
    cache.batch_select_indices(batch.prompt_of_rollout)  # one cache row per rollout; differentiable
    prompt_mask = batch.prompt_attention_mask[batch.prompt_of_rollout]
    continuation_out = decoder(
        input_ids=inputs[:, :-1],  # the last token predicts nothing we score
        attention_mask=torch.cat([prompt_mask, input_mask[:, :-1].to(prompt_mask.dtype)], dim=1),
        position_ids=positions[:, :-1],
        cache=cache,
        use_cache=True,
    )
    hidden = torch.cat([first_predicting, continuation_out.last_hidden_state], dim=1)
    if batch.tail_lengths is None:
        return hidden
    # Response token j of a rollout is predicted at index tail + j of `hidden`; padding
    # positions past a response read the last column (masked out by the loss).
    index = (batch.tail_lengths.unsqueeze(1) + torch.arange(batch.response_ids.shape[1], device=hidden.device)).clamp(max=hidden.shape[1] - 1)
    return hidden.gather(1, index.unsqueeze(2).expand(-1, -1, hidden.shape[2]))



def _lm_head(player: Player) -> nn.Module:
    return player.model.get_base_model().get_output_embeddings()


# Rows of logits per chunk in `chunked_token_logprobs`: 64 x 49k fp32 logits are 12.6 MB, below
# glibc's 32 MB ceiling for serving an allocation from its heap instead of fresh pages.
LOGIT_CHUNK_BYTES = 1 << 24


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log_softmax(h Wᵀ / T)[token] per row of h, and the entropy of each row's distribution,
    a chunk of rows at a time; the backward recomputes each chunk's logits from h.

    The plain formula materialises [n, V] logits, their log-softmax (kept for the backward)
    and, for the entropy, their exponential: at 512 response tokens and SmolLM2's 49k
    vocabulary each is 100 MB, allocated afresh on every pass (too large for malloc to reuse),
    and the page faults of those allocations cost more than the arithmetic (a profile of one
    update: 1.8 s of 9 s). Chunked, the largest block is LOGIT_CHUNK_BYTES and the backward
    keeps only h; it pays one more vocabulary product, 2·n·H·V FLOPs (0.03 TFLOP here).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor,
        temperature: float, with_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logprobs = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        entropy = torch.full_like(logprobs, float("nan"))
        for rows in _logit_chunks(hidden.shape[0], weight.shape[0]):
            logits = _tempered_logits(hidden[rows], weight, bias, temperature)
            normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
            logprobs[rows] = logits.gather(-1, tokens[rows].unsqueeze(-1)).squeeze(-1) - normaliser.squeeze(-1)
            if with_entropy:
                # H = −Σ p·log p with log p = logits − normaliser, p = exp(log p).
                logits.sub_(normaliser)
                entropy[rows] = -(logits.exp() * logits).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, tokens)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor, _grad_entropy: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        hidden, weight, bias, tokens = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if needs_bias else None
        for rows in _logit_chunks(hidden.shape[0], weight.shape[0]):
            # d log_softmax(z)[t] / dz = onehot(t) − softmax(z), and z = logits / T.
            grad_logits = torch.softmax(_tempered_logits(hidden[rows], weight, bias, ctx.temperature), dim=-1)
            grad_logits.mul_(-grad_logprobs[rows].unsqueeze(-1))
            grad_logits.scatter_add_(-1, tokens[rows].unsqueeze(-1), grad_logprobs[rows].unsqueeze(-1))
            if ctx.temperature != 1.0:
                grad_logits.div_(ctx.temperature)
            grad_logits = grad_logits.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = frozen_linear(grad_logits, weight.detach().t(), None)
            if grad_weight is not None:
                grad_weight += grad_logits.t().float() @ hidden[rows].float()
            if grad_bias is not None:
                grad_bias += grad_logits.float().sum(0)
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
        )


def _logit_chunks(rows: int, vocabulary: int) -> list[slice]:
    step = max(1, LOGIT_CHUNK_BYTES // (4 * vocabulary))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _tempered_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """logits / T in fp32, as generation computes them (no division at T = 1: x / 1 is x)."""
    logits = frozen_linear(hidden, weight.detach(), None if bias is None else bias.detach()).float()
    return logits if temperature == 1.0 else logits.div_(temperature)


def chunked_token_logprobs(
    hidden: torch.Tensor, lm_head: nn.Linear, tokens: torch.Tensor, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """([n] log-probs of `tokens` under log_softmax(lm_head(hidden) / T), differentiable in
    hidden and in the head's weight and bias where they require it; [n] entropies, not
    differentiable, NaN unless asked for)."""
    return _ChunkedTokenLogprobs.apply(hidden, lm_head.weight, lm_head.bias, tokens, temperature, with_entropy)


# =========================================================================================
# The learner
# =========================================================================================


class PPOLearner:
    def __init__(self, player: Player, settings: PPOSettings) -> None:
        self.player = player
        self.settings = settings
        self.value_head: nn.Linear | None = None
        parameters = list(player.trainable_parameters())
        if settings.advantage == "gae":
            hidden_size = player.model.get_base_model().config.hidden_size
            # Zero init: V ≡ 0 at first, so early advantages are the plain returns. Built on
            # "meta" first so that creating a learner draws nothing from the global RNG.
            self.value_head = nn.Linear(hidden_size, 1, device="meta", dtype=torch.float32).to_empty(device=player.device)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            parameters += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)  # detail 14
        self.shuffle_generator = torch.Generator().manual_seed(settings.seed)
        self.updates_done = 0
        self.mismatch: LogprobMismatch | None = None  # of the last update (detail 16)
        # The frozen base's prompt keys and values, kept across updates and shared by every
        # learner on this base (players/prompt_cache.py).
        self.reference_cache = (
            player.base.reference_prompt_cache(settings.reference_cache_bytes) if settings.reference_cache_bytes > 0 else None
        )

    # --- state for checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "value_head": None if self.value_head is None else self.value_head.state_dict(),
            "shuffle_generator": self.shuffle_generator.get_state(),
            "updates_done": self.updates_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["value_head"] is None) != (self.value_head is None):
            raise ValueError("checkpoint and settings disagree on whether there is a value head (advantage='gae')")
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
        self.updates_done = int(state["updates_done"])

    # --- forward helpers -------------------------------------------------------------------

    def _token_logprobs(
        self, hidden: torch.Tensor, batch: SharedPromptBatch, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log π(a_t|s_t) at the sampling temperature (detail 10), 0 on padding.

        The vocabulary projection runs on real response positions only (padding after a short
        response costs nothing), and the log-probs are log_softmax(logits / T)[token], the
        formula generation records them with.
        """
        real = batch.response_mask.bool()
        lm_head = _lm_head(self.player)
        if isinstance(lm_head, nn.Linear):  # not wrapped by an adapter of its own
            picked, token_entropy = chunked_token_logprobs(
                hidden[real], lm_head, batch.response_ids[real], self.settings.temperature, with_entropy
            )
            logprobs = torch.zeros(real.shape, dtype=picked.dtype, device=picked.device).masked_scatter(real, picked)
            if not with_entropy:
                return logprobs, None
            return logprobs, torch.zeros(real.shape, dtype=token_entropy.dtype, device=token_entropy.device).masked_scatter(real, token_entropy)
        logits = lm_head(hidden[real]).float() / self.settings.temperature  # [n_real, V]
        all_logprobs = torch.log_softmax(logits, dim=-1)
        picked = all_logprobs.gather(-1, batch.response_ids[real].unsqueeze(-1)).squeeze(-1)
        logprobs = torch.zeros(real.shape, dtype=picked.dtype, device=picked.device).masked_scatter(real, picked)
        if not with_entropy:
            return logprobs, None
        with torch.no_grad():
            token_entropy = -(all_logprobs.exp() * all_logprobs).sum(-1)
            entropy = torch.zeros(real.shape, dtype=token_entropy.dtype, device=token_entropy.device).masked_scatter(real, token_entropy)
        return logprobs, entropy

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        assert self.value_head is not None
        return self.value_head(hidden.float()).squeeze(-1)

    @torch.no_grad()
    def _reference_logprobs(self, batches: list[SharedPromptBatch], rollouts: Sequence[Rollout]) -> list[torch.Tensor]:
        """Each minibatch's log-probs under the frozen base (detail 3), the rollouts cut as
        `batches` are. With a prompt cache, each
        prompt's whole chunks come from it (players/packing.chunk_aligned_prefixes), and only
        the rest of the prompt (under a chunk) and the response run, batched."""
        with self.player.reference():
            if self.reference_cache is None:
                return [self._token_logprobs(predicting_hidden_states(self.player, b), b, with_entropy=False)[0] for b in batches]
            decoder = self.player.model.get_base_model().get_decoder()
            size = self.settings.minibatch_size
            logprobs = []
            for start in range(0, len(rollouts), size):
                minibatch = rollouts[start : start + size]
                grouping = chunk_aligned_prefixes([list(rollout.prompt_ids) for rollout in minibatch], self.reference_cache.chunk_tokens)
                batch = SharedPromptBatch.build(minibatch, self.player.pad_token_id, self.player.device, grouping)
                encoded = self.reference_cache.encode(decoder, grouping[0], self.player.device)
                logprobs.append(self._token_logprobs(predicting_hidden_states(self.player, batch, encoded), batch, with_entropy=False)[0])
            return logprobs

    @torch.no_grad()
    def _current_values(self, batches: list[SharedPromptBatch]) -> list[torch.Tensor]:
        with self.player.active():
            return [self._values(predicting_hidden_states(self.player, b)) * b.response_mask for b in batches]

    def _payoff_gradient_norm(
        self, batches: list[SharedPromptBatch], rewards: torch.Tensor, with_gradient: bool = True
    ) -> tuple[float, list[torch.Tensor]]:
        """‖∇θ U‖, U = the mean raw payoff of the rollouts, at the current adapters (detail 9):
        the norm of (1/N)·Σ_i r_i·∇θ log π_θ(y_i|x_i), summed over the chunks' gradients.
        Also each chunk's log-probs of that pass, detached: the learner's before the update
        (details 16, 17). Without the gradient (an update the diagnostic skips) only the
        log-probs are computed, under no_grad, and the norm is NaN."""
        learner_logprobs = []
        if not with_gradient:
            with self.player.active(), torch.no_grad():
                for batch in batches:
                    logprobs, _ = self._token_logprobs(predicting_hidden_states(self.player, batch), batch, with_entropy=False)
                    learner_logprobs.append(logprobs)
            return math.nan, learner_logprobs
        with self.player.active():
            parameters = list(self.player.trainable_parameters())
            total = [torch.zeros_like(parameter) for parameter in parameters]
            first = 0
            for batch in batches:
                rows = batch.response_ids.shape[0]
                logprobs, _ = self._token_logprobs(predicting_hidden_states(self.player, batch), batch, with_entropy=False)
                learner_logprobs.append(logprobs.detach())
                objective = payoff_objective(logprobs, rewards[first : first + rows], n_rollouts=rewards.shape[0])
                for accumulated, gradient in zip(total, torch.autograd.grad(objective, parameters, allow_unused=True)):
                    if gradient is not None:
                        accumulated += gradient
                first += rows
        return float(torch.nn.utils.get_total_norm(total)), learner_logprobs

    def _payoff_gradient_norm_of(self, logprobs: torch.Tensor, rewards: torch.Tensor) -> float:
        """‖∇θ U‖ (detail 9) from a forward that will be differentiated again (detail 18): the
        graph is kept for the PPO loss's backward."""
        parameters = list(self.player.trainable_parameters())
        objective = payoff_objective(logprobs, rewards, n_rollouts=rewards.shape[0])
        gradients = torch.autograd.grad(objective, parameters, retain_graph=True, allow_unused=True)
        return float(torch.nn.utils.get_total_norm([g for g in gradients if g is not None]))

    def _advantages(
        self, rewards: torch.Tensor, groups: list[str], mask: torch.Tensor, values: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[N, R] advantages (and [N, R] returns for GAE) for the whole update (detail 5)."""
        if self.settings.advantage == "whiten":
            return whitened_advantages(rewards).unsqueeze(1) * mask, None
        if self.settings.advantage == "group":
            return group_relative_advantages(rewards, groups).unsqueeze(1) * mask, None
        assert values is not None
        token_rewards = reward_on_last_token(rewards, mask)
        advantages, returns = generalized_advantages(
            token_rewards, values, mask, self.settings.gamma, self.settings.gae_lambda
        )
        return whiten_over_tokens(advantages, mask), returns

    # --- the update ------------------------------------------------------------------------

    def update(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        started = time.perf_counter()
        _check_rollouts(rollouts)
        settings, player = self.settings, self.player
        device = player.device
        player.model.eval()  # detail 13

        # Plumbing: chunk the rollouts as the minibatches will see them, for the no-grad passes.
        n_rollouts = len(rollouts)
        chunks = [
            SharedPromptBatch.build(rollouts[start : start + settings.minibatch_size], player.pad_token_id, device)
            for start in range(0, n_rollouts, settings.minibatch_size)
        ]

        # Step 1 (algorithm): reference log-probs, once per update (detail 3).
        reference = _pad_and_stack(self._reference_logprobs(chunks, rollouts))
        behaviour = _pad_and_stack([chunk.behaviour_logprobs for chunk in chunks])
        mask = _pad_and_stack([chunk.response_mask for chunk in chunks])

        # Step 2 (algorithm): advantages from the rewards (and the value head for GAE).
        rewards = torch.tensor([rollout.reward for rollout in rollouts], dtype=torch.float32, device=device)
        old_values = _pad_and_stack(self._current_values(chunks)) if self.value_head is not None else None
        advantages, returns = self._advantages(rewards, [r.group for r in rollouts], mask, old_values)
        every = settings.payoff_grad_norm_every
        with_payoff_gradient = bool(every) and self.updates_done % every == 0
        # ‖∇θ U‖ before any step (detail 9), NaN on the updates it skips; the learner's
        # log-probs before the update (details 16, 17) come out of the same forward either way.
        # When the update is one minibatch (detail 18) that forward is the first PPO step's own.
        fused = self.value_head is None and n_rollouts <= settings.minibatch_size
        payoff_grad_norm, old = math.nan, None
        if not fused:
            payoff_grad_norm, learner_chunks = self._payoff_gradient_norm(chunks, rewards, with_payoff_gradient)
            old = _pad_and_stack(learner_chunks)
            self.mismatch = LogprobMismatch.of(old, behaviour, mask)  # detail 16

        # Step 3 (algorithm): ppo_epochs passes of shuffled minibatches (detail 8).
        sums: dict[str, float] = {}
        n_steps = 0
        with player.active():
            for _epoch in range(settings.ppo_epochs):
                b_order = torch.randperm(n_rollouts, generator=self.shuffle_generator).tolist()
                for start in range(0, n_rollouts, settings.minibatch_size):
                    mb_rows = b_order[start : start + settings.minibatch_size]
                    mb_batch = SharedPromptBatch.build([rollouts[i] for i in mb_rows], player.pad_token_id, device)
                    width = mb_batch.response_ids.shape[1]
                    mb_index = torch.tensor(mb_rows, device=device)
                    mb_mask = mask[mb_index, :width]
                    mb_behaviour = behaviour[mb_index, :width]
                    mb_reference = reference[mb_index, :width]
                    mb_advantages = advantages[mb_index, :width]

                    hidden = predicting_hidden_states(player, mb_batch)
                    mb_logprobs, mb_entropy = self._token_logprobs(hidden, mb_batch, with_entropy=True)
                    assert mb_entropy is not None
                    if old is None:  # fused (detail 18): this forward is at the adapters before the update
                        old = torch.zeros_like(behaviour)
                        old[mb_index, :width] = mb_logprobs.detach()
                        self.mismatch = LogprobMismatch.of(old, behaviour, mask)  # detail 16
                        if with_payoff_gradient:
                            payoff_grad_norm = self._payoff_gradient_norm_of(mb_logprobs, rewards[mb_index])
                    mb_old = old[mb_index, :width]
                    # Ratios against the behaviour log-probs (detail 1), or with TIS against
                    # the learner's own, the generator's share reweighted and capped (detail 17).
                    mb_anchor = mb_behaviour if settings.tis_cap is None else mb_old
                    token_pg_loss, ratio = clipped_surrogate(
                        mb_logprobs, mb_anchor, mb_advantages, settings.clip_range
                    )
                    if settings.tis_cap is not None:
                        token_pg_loss = token_pg_loss * truncated_importance_weights(mb_old, mb_behaviour, settings.tis_cap)
                    pg_loss = masked_mean(token_pg_loss, mb_mask)
                    kl_loss = masked_mean(k2_kl(mb_logprobs, mb_reference), mb_mask)  # gradient of KL(π_θ‖π_ref)
                    loss = pg_loss + settings.kl_coef * kl_loss
                    mb_value_loss = torch.zeros((), device=device)  # reported as NaN without a value head
                    if self.value_head is not None:
                        assert returns is not None
                        mb_value_loss = value_loss(self._values(hidden), returns[mb_index, :width], mb_mask)
                        loss = loss + settings.value_coef * mb_value_loss

                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    # ‖∇U‖ of GAME.md §3 is the adapter's gradient norm, before clipping and
                    # without the value head's share (detail 9); the clip covers everything trained.
                    adapter_grads = [p.grad for p in player.trainable_parameters() if p.grad is not None]
                    grad_norm = torch.nn.utils.get_total_norm(adapter_grads)
                    torch.nn.utils.clip_grad_norm_(
                        [p for group in self.optimizer.param_groups for p in group["params"]],
                        settings.max_grad_norm,
                    )
                    self.optimizer.step()

                    with torch.no_grad():
                        log_ratio = mb_logprobs - mb_anchor
                        step_diagnostics = {
                            "policy_loss": pg_loss.item(),
                            "value_loss": mb_value_loss.item() if self.value_head is not None else math.nan,
                            "entropy": masked_mean(mb_entropy, mb_mask).item(),
                            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mb_mask).item(),
                            "clipfrac": masked_mean(((ratio - 1.0).abs() > settings.clip_range).float(), mb_mask).item(),
                            "kl_ref": masked_mean(k3_kl(mb_logprobs, mb_reference), mb_mask).item(),
                            "grad_norm": float(grad_norm),
                        }
                    for key, value in step_diagnostics.items():
                        sums[key] = sums.get(key, 0.0) + value
                    n_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.updates_done += 1

        diagnostics = {key: value / n_steps for key, value in sums.items()}
        diagnostics["explained_variance"] = (
            explained_variance(old_values, returns, mask)
            if old_values is not None and returns is not None
            else math.nan
        )
        diagnostics["payoff_grad_norm"] = payoff_grad_norm
        diagnostics["mean_reward"] = float(rewards.mean())
        diagnostics["mean_advantage"] = float(masked_mean(advantages, mask))
        diagnostics["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        diagnostics["n_rollouts"] = float(n_rollouts)
        diagnostics["seconds"] = time.perf_counter() - started
        return diagnostics


def _check_rollouts(rollouts: Sequence[Rollout]) -> None:
    if not rollouts:
        raise ValueError("an update needs at least one rollout")
    for index, rollout in enumerate(rollouts):
        if not rollout.prompt_ids or not rollout.response_ids:
            raise ValueError(f"rollout {index}: empty prompt or response")
        if len(rollout.response_ids) != len(rollout.behaviour_logprobs):
            raise ValueError(
                f"rollout {index}: {len(rollout.response_ids)} response tokens but "
                f"{len(rollout.behaviour_logprobs)} behaviour log-probs"
            )
        if not math.isfinite(rollout.reward):
            raise ValueError(f"rollout {index}: reward {rollout.reward} is not finite")


def _pad_and_stack(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [n_i, R_i] chunks along rows, right-padding to the widest R with zeros."""
    width = max(chunk.shape[1] for chunk in chunks)
    return torch.cat([nn.functional.pad(chunk, (0, width - chunk.shape[1])) for chunk in chunks], dim=0)

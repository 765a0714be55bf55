"""The rollout backend: whatever turns a player's prompts into tokens and behaviour log-probs.

    backend = TransformersBackend({"policy": policy})                      # the default, in process
    sampled = backend.generate("policy", prompt_ids, policy.sampling(sample=True), seed=7)
    backend.load_adapter("policy", adapter_weights(policy.model, "policy"), version=3)

The game talks to players, and a Player hands generation to its backend (Player.generate); the
learners train the Player's own model and read their rollouts back from the log, so neither
they nor the log know which backend generated. A backend serves one or more roles, each a
LoRA adapter on a base model; after every update the game pushes the player's new adapter to
it as plain tensors (`load_adapter`), so a backend holding its own copy of the model in
another process (a Ray actor) or another engine (vLLM) stays on the current policy.

TransformersBackend is the default: the hand-written sampling loop over the players' own
PeftModel, in this process. Built from live Players it shares their weights (the learner's
update is already in place, and `load_adapter` copies in the values it already holds); built
from a BackendSpec (picklable: model specs, device, dtype, player configs) it loads its own
copy, which is what an actor in another process does.

Behaviour log-probs are log_softmax(logits / temperature)[token] on exactly the inputs
`left_pad` lays out (left padding, position_ids = cumsum(mask) - 1), in fp32: what a PPO
learner recomputes. top_p < 1 truncates the distribution tokens are *drawn* from, but the
recorded log-prob stays that of the full tempered distribution (the one a learner can
recompute); PPO ratios are then only exact with top_p = 1, which is why training configs keep
it there. Greedy decoding (`sample=False`, for evaluation) ignores temperature and top_p for
the choice of token and records the same tempered log-prob. Another engine's log-probs differ
from the learner's by its kernels and precision; the learner records that mismatch
(engine/ppo.py, detail 16).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from players.config import PlayerConfig
from players.packing import left_pad, prefill_with_tails
from players.sampler import LlamaDecoder

if TYPE_CHECKING:
    from peft import PeftModel

    from players.models import ModelPool
    from players.player import Player


@dataclass(frozen=True)
class SamplingSettings:
    """How one batch is decoded (a player's [policy]/[monitor] sampling keys, plus greedy or not)."""

    temperature: float  # behaviour log-probs are log_softmax(logits / temperature)
    top_p: float  # nucleus mass tokens are drawn from (1.0: the full distribution)
    max_new_tokens: int  # generation budget per row
    eos_token_ids: tuple[int, ...]  # any of these ends a row (and is kept as its last token)
    sample: bool  # False: greedy (evaluation)

    @classmethod
    def of(cls, config: PlayerConfig, eos_token_ids: Sequence[int] | set[int], *, sample: bool) -> SamplingSettings:
        return cls(
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.max_new_tokens,
            eos_token_ids=tuple(sorted(eos_token_ids)),
            sample=sample,
        )


@dataclass(frozen=True)
class SampledTokens:
    """One row's response: token_ids include the EOS that ended it (absent when the budget ran
    out); logprobs[i] is the behaviour log-prob of token_ids[i]."""

    token_ids: list[int]
    logprobs: list[float]


class RolloutBackend(Protocol):
    """What the game needs from a token generator; results are plain lists, so an
    implementation may live in another process."""

    def generate(
        self, role: str, prompt_ids: Sequence[list[int]], sampling: SamplingSettings, seed: int | None
    ) -> list[SampledTokens]:
        """One response per prompt from `role`'s current adapter; the same seed, adapter and
        prompts give the same tokens (seed None: fresh randomness)."""
        ...

    def load_adapter(self, role: str, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Make `state` (peft's adapter state dict, see adapter_weights) `role`'s adapter from
        now on; `version` is the adapter's version as the log counts it."""
        ...


def adapter_weights(model: PeftModel, adapter_name: str) -> dict[str, torch.Tensor]:
    """An adapter as plain CPU tensors keyed as peft saves them: what load_adapter takes, and
    what can be pickled to another process."""
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


@dataclass(frozen=True)
class BackendSpec:
    """A TransformersBackend as picklable pieces: each role's player config, the device and
    the dtype (a torch dtype's name, e.g. "float32") its models load with."""

    players: dict[str, PlayerConfig]
    device: str = "cpu"
    dtype: str = "float32"
    cache_dir: str | None = None  # ModelPool cache (None: $MINMAX_ENGINE_CACHE or ~/.cache/minmax-engine)


@dataclass
class TransformersBackend:
    """The in-process backend: each role's Player generates with its own PeftModel."""

    players: dict[str, Player]
    versions: dict[str, int] = field(default_factory=dict)  # last version loaded per role

    @classmethod
    def from_spec(cls, spec: BackendSpec, pool: ModelPool | None = None) -> TransformersBackend:
        """A backend with its own copy of every model (e.g. inside a Ray actor); each adapter
        starts as a fresh LoRA (version 0) until load_adapter gives it the player's weights."""
        from players.models import ModelPool
        from players.player import Player

        pool = pool or ModelPool(cache_dir=spec.cache_dir)
        dtype = getattr(torch, spec.dtype)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"BackendSpec.dtype {spec.dtype!r} is not a torch dtype (e.g. 'float32')")
        players = {role: Player.create(pool, role=role, config=config, device=spec.device, dtype=dtype)
                   for role, config in spec.players.items()}
        backend = cls(players)
        for player in players.values():
            player.use_backend(backend)
        return backend

    def _player(self, role: str) -> Player:
        if role not in self.players:
            raise KeyError(f"this backend serves {sorted(self.players)}, not {role!r}")
        return self.players[role]

    def load_adapter(self, role: str, state: Mapping[str, torch.Tensor], version: int) -> None:
        player = self._player(role)
        on_device = {key: value.to(player.device) for key, value in state.items()}
        flags = [(parameter, parameter.requires_grad) for parameter in player.model.parameters()]
        result = set_peft_model_state_dict(player.model, on_device, adapter_name=player.adapter_name)
        for parameter, requires_grad in flags:  # loading must not unfreeze or freeze anything
            parameter.requires_grad_(requires_grad)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"{len(unexpected)} weights do not fit {role!r}'s adapter (e.g. {unexpected[0]})")
        self.versions[role] = version

    @torch.inference_mode()
    def generate(
        self, role: str, prompt_ids: Sequence[list[int]], sampling: SamplingSettings, seed: int | None
    ) -> list[SampledTokens]:
        player = self._player(role)
        if not prompt_ids:
            return []
        generator = torch.Generator(device=player.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        with player._selected():
            tokens, logprobs = _sample(player, prompt_ids, sampling, generator)
        return [SampledTokens(token_ids=row_tokens, logprobs=row_logprobs) for row_tokens, row_logprobs in zip(tokens, logprobs)]


def _sample(
    player: Player, prompt_ids: Sequence[Sequence[int]], sampling: SamplingSettings, generator: torch.Generator
) -> tuple[list[list[int]], list[list[float]]]:
    """The decoding loop: one forward over the prompts, then one token per step from the cache.

    Rows that emit an EOS are dropped from the batch (and the KV cache), so a batch costs
    what its still-running sequences cost.

    Rows with identical prompts (the n samples of one state) share one prefill: each
    distinct prompt is encoded once. The padded width is the longest distinct prompt,
    which is the longest prompt, so every row sees exactly the inputs it would have seen
    unshared; the first-step logits are copies of the shared row's, and every draw still
    runs over the full batch, so the generator is consumed identically. Distinct prompts
    with a long common prefix (the monitor's, which differ only in the answer they judge)
    share the prefix's prefill the same way, each row then encoding its own tail
    (players/packing.py `prefill_with_tails`).

    Decode steps run through players/sampler.py (preallocated cache, each distinct
    prompt's keys read once by all the rows that share it) when the model is one it
    reproduces; otherwise through the model's own forward, with the prompt's cache copied
    to every row that shares it. (Player._share_prompts and Player._fast_decode switch these
    off, for tests that compare against the plain loop.)
    """
    model, device = player.model, player.device
    temperature = sampling.temperature
    eos = torch.tensor(sorted(sampling.eos_token_ids), device=device)
    tokens: list[list[int]] = [[] for _ in prompt_ids]
    logprobs: list[list[float]] = [[] for _ in prompt_ids]
    running = torch.arange(len(prompt_ids), device=device)  # original row of each batch row
    decoder = LlamaDecoder.prepare(model) if player._fast_decode else None
    prefill = prefill_with_tails(model, player.pad_token_id, prompt_ids, device) if player._share_prompts else None
    if prefill is not None:
        # Distinct prompts with a long common prefix (the monitor's prompts of one state): the
        # prefixes were encoded once, then every row's own tail on its prefix's cache.
        cache, attention_mask, position_ids, last_logits = prefill
        rows = running
    else:
        # Rows with identical prompts (the n samples of a state) share one prefill.
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(ids), len(distinct)) for ids in prompt_ids]
        shared = player._share_prompts and len(distinct) < len(prompt_ids)
        encoded: Sequence[Sequence[int]] = list(distinct) if shared else prompt_ids
        input_ids, attention_mask, position_ids = left_pad(encoded, player.pad_token_id, device)
        output = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = output.cache
        last_logits = output.logits[:, -1, :]
        rows = torch.tensor(source, device=device) if shared else running
    if decoder is not None:
        # The decoder reads each distinct prompt's cache once, whatever rows share it.
        decoder.start(cache, attention_mask, rows, extra_tokens=sampling.max_new_tokens)
        del cache
    elif len(rows) != attention_mask.shape[0]:
        # Expand the distinct prompts' prefill to one row per sample: the decode steps
        # write a different token to each row, so each needs its own cache row.
        cache.batch_select_indices(rows)
        attention_mask = attention_mask[rows]
    position_ids, last_logits = position_ids[rows], last_logits[rows]
    next_positions = position_ids[:, -1] + 1
    for step in range(sampling.max_new_tokens):
        tempered = last_logits.float() / temperature
        token_logprobs = torch.log_softmax(tempered, dim=-1)
        if sampling.sample:
            chosen = _draw(token_logprobs, sampling.top_p, generator)
        else:
            chosen = tempered.argmax(dim=-1)
        chosen_logprobs = token_logprobs.gather(1, chosen.unsqueeze(1)).squeeze(1)
        for original_row, token, logprob in zip(running.tolist(), chosen.tolist(), chosen_logprobs.tolist()):
            tokens[original_row].append(token)
            logprobs[original_row].append(logprob)

        keep = ~torch.isin(chosen, eos)
        if not bool(keep.any()) or step == sampling.max_new_tokens - 1:
            break  # the budget is spent: a further step's logits would go unused
        if not bool(keep.all()):
            kept_rows = keep.nonzero().squeeze(1)
            running, chosen, next_positions = running[kept_rows], chosen[kept_rows], next_positions[kept_rows]
            if decoder is not None:
                decoder.keep_rows(kept_rows)
            else:
                cache.batch_select_indices(kept_rows)
                attention_mask = attention_mask[kept_rows]
        if decoder is not None:
            last_logits = decoder.step(chosen, next_positions)
        else:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(running), 1))], dim=1)
            output = model(
                input_ids=chosen.unsqueeze(1),
                attention_mask=attention_mask,
                position_ids=next_positions.unsqueeze(1),
                cache=cache,
                use_cache=True,
            )
            cache = output.cache
            last_logits = output.logits[:, -1, :]
        next_positions = next_positions + 1
    return tokens, logprobs


def _draw(token_logprobs: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row from exp(token_logprobs) (truncated to the nucleus when top_p < 1).

    Inverse-CDF: one uniform per row, located in the row's running mass. torch.multinomial
    draws an exponential variate for every vocabulary entry instead, which at 8 rows x 49k
    tokens cost ~7 ms per decode step on a CPU, about 8% of the step; this costs one cumsum.
    The running mass is summed in float64, so even the last of 49k tokens keeps its exact
    share; a token of zero mass can never be chosen (`right=True` steps past it).
    """
    probabilities = token_logprobs.exp()
    if top_p < 1.0:
        # Nucleus: keep the most likely tokens whose mass before them is below top_p
        # (so the most likely token always stays), renormalised by the draw below.
        sorted_probabilities, order = probabilities.sort(dim=-1, descending=True)
        mass_before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities
        sorted_probabilities = sorted_probabilities.masked_fill(mass_before >= top_p, 0.0)
        probabilities = torch.zeros_like(probabilities).scatter(-1, order, sorted_probabilities)
    cumulative = probabilities.cumsum(dim=-1, dtype=torch.float64)  # [B, V]
    uniform = torch.rand((cumulative.shape[0], 1), generator=generator, dtype=torch.float64, device=cumulative.device)
    chosen = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True).squeeze(1)
    # uniform < 1, so the target lies below the total mass; the clamp guards only its rounding
    # up to the total (a chance of about 2^-53 per draw).
    return chosen.clamp_(max=cumulative.shape[1] - 1)

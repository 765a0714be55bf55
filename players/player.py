"""Player: one trainable participant (policy or monitor) = a named LoRA adapter on a shared base.

    pool = ModelPool()
    policy = Player.create(pool, role="policy", config=PlayerConfig(), device="cpu", dtype=torch.float32)
    gens = policy.generate([policy.render_prompt(policy_messages(story, question, choices))], seed=0)

Two players on the same base share one PeftModel holding adapters "policy" and "monitor". At
any moment one adapter is active; `active()` makes this player's adapter the active one and
turns gradients on for its LoRA parameters only (the base and the other adapter stay frozen),
`reference()` disables every adapter (the frozen base, π_ref).

Generation is a hand-written sampling loop with a KV cache rather than `model.generate`, so the
behaviour log-prob of every token is computed in one place, in fp32, as
log_softmax(logits / temperature)[token] on exactly the inputs `left_pad` lays out
(left padding, position_ids = cumsum(mask) - 1). That is what a PPO learner recomputes.

top_p < 1 truncates the distribution tokens are *drawn* from, but the recorded log-prob stays
that of the full tempered distribution (the one a learner can recompute); PPO ratios are then
only exact with top_p = 1, which is why training configs keep it there. Greedy decoding
(`sample=False`, for evaluation) ignores temperature and top_p for the choice of token and
records the same tempered log-prob.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from players.config import PlayerConfig
from players.models import ModelPool, SharedBase
from players.packing import left_pad
from players.prompts import encode_rendered, render_chat
from players.sampler import LlamaDecoder
from storage.errors import UserError

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_SETTINGS_FILE = "adapter_settings.json"


@dataclass(frozen=True)
class Generation:
    """One sampled response. token_ids include the EOS that ended it (absent when the budget
    ran out); logprobs[i] is the behaviour log-prob of token_ids[i]. text is the player's
    response_prefix (part of the prompt, not of token_ids) followed by the decoded tokens."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str


class Player:
    # Prefill each distinct prompt once (see _sample). A switch only so tests can compare
    # against the unshared loop; nothing else turns it off.
    _share_prompts = True
    # Decode steps through players/sampler.py where the model allows; a switch only so tests
    # can compare against transformers' own forward.
    _fast_decode = True

    def __init__(self, base: SharedBase, role: str, config: PlayerConfig) -> None:
        self.base = base
        self.role = role
        self.adapter_name = role
        self.config = config

    @classmethod
    def create(
        cls,
        pool: ModelPool,
        role: str,
        config: PlayerConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Player:
        base = pool.causal_lm(config.model, device, dtype)
        module_names = [name for name, _ in base.model.named_modules()]
        missing = [
            target
            for target in config.target_modules
            if not any(name == target or name.endswith("." + target) for name in module_names)
        ]
        if missing:
            raise UserError(
                f"[{role}] target_modules: {missing} are not modules of {config.model!r}; name "
                "its linear layers (q_proj, k_proj, v_proj, o_proj for Llama-style models)"
            )
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        base.add_adapter(role, lora)
        return cls(base, role, config)

    # --- the model ----------------------------------------------------------------------------

    @property
    def model(self) -> PeftModel:
        assert self.base.peft_model is not None  # create() always adds an adapter
        return self.base.peft_model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.base.tokenizer

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def pad_token_id(self) -> int:
        """The id generation pads with; learners pass it to SharedPromptBatch.build."""
        return self.base.pad_token_id

    @property
    def eos_token_ids(self) -> set[int]:
        """Every id that ends a turn (see SharedBase.eos_token_ids)."""
        return self.base.eos_token_ids

    @contextlib.contextmanager
    def _selected(self) -> Iterator[None]:
        """This player's adapter is the one applied in forward passes.

        peft's set_adapter rewrites every adapter's requires_grad, so the flags are restored
        on exit: generating with one player inside another's `active()` must not freeze it.
        """
        previous = self.model.active_adapter
        flags = [(parameter, parameter.requires_grad) for parameter in self.model.parameters()]
        self.model.set_adapter(self.adapter_name, inference_mode=True)
        try:
            yield
        finally:
            self.model.set_adapter(previous, inference_mode=True)
            for parameter, requires_grad in flags:
                parameter.requires_grad_(requires_grad)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Train this player: its adapter applied and its LoRA parameters alone require grad."""
        with self._selected():
            for parameter in self.trainable_parameters():
                parameter.requires_grad_(True)
            try:
                yield
            finally:
                for parameter in self.trainable_parameters():
                    parameter.requires_grad_(False)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Every adapter disabled: the frozen base, π_ref for the KL penalty."""
        with self.base.adapters_disabled():
            yield

    def _named_adapter_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        marker = f".{self.adapter_name}."
        return [
            (name, parameter)
            for name, parameter in self.model.named_parameters()
            if "lora_" in name and marker in name
        ]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for _, parameter in self._named_adapter_parameters()]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {name: parameter.detach().clone() for name, parameter in self._named_adapter_parameters()}

    # --- adapters on disk ---------------------------------------------------------------------

    def save_adapter(self, directory: Path | str) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.model, adapter_name=self.adapter_name)
        save_file({key: value.detach().cpu().contiguous() for key, value in state.items()}, directory / ADAPTER_WEIGHTS_FILE)
        settings = {
            "model": self.config.model,
            "lora_r": self.config.lora_r,
            "lora_alpha": self.config.lora_alpha,
            "target_modules": list(self.config.target_modules),
        }
        (directory / ADAPTER_SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    def load_adapter(self, directory: Path | str) -> None:
        directory = Path(directory)
        weights = directory / ADAPTER_WEIGHTS_FILE
        if not weights.is_file():
            raise UserError(f"{weights}: no saved adapter here; point at a checkpoint's adapter directory")
        settings_file = directory / ADAPTER_SETTINGS_FILE
        if settings_file.is_file():
            saved = json.loads(settings_file.read_text())
            expected = {"lora_r": self.config.lora_r, "target_modules": list(self.config.target_modules)}
            for key, value in expected.items():
                if saved.get(key) != value:
                    raise UserError(
                        f"{settings_file}: adapter was saved with {key} = {saved.get(key)!r} but "
                        f"[{self.role}] has {value!r}; use the config the checkpoint was made with"
                    )
        state = load_file(weights, device=str(self.device))
        result = set_peft_model_state_dict(self.model, state, adapter_name=self.adapter_name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(f"{weights}: {len(unexpected)} weights do not fit [{self.role}]'s adapter (e.g. {unexpected[0]})")
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(False)

    # --- prompts ------------------------------------------------------------------------------

    def render_prompt(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text: the chat template when the tokenizer has one, else plain turns,
        followed by the configured response prefix (the start of the assistant's turn)."""
        return render_chat(self.tokenizer, messages) + self.config.response_prefix

    def encode_prompt(self, prompt: str) -> list[int]:
        return encode_rendered(self.tokenizer, prompt)

    # --- generation ---------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str], sample: bool = True, seed: int | None = None
    ) -> list[Generation]:
        prompt_ids = [self.encode_prompt(prompt) for prompt in prompts]
        return self.generate_from_ids(prompt_ids, sample=sample, seed=seed)

    @torch.inference_mode()
    def generate_from_ids(
        self, prompt_ids: Sequence[Sequence[int]], sample: bool = True, seed: int | None = None
    ) -> list[Generation]:
        if not prompt_ids:
            return []
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        with self._selected():
            tokens, logprobs = self._sample(prompt_ids, sample, generator)
        generations = []
        for row, ids in enumerate(prompt_ids):
            eos_free = [token for token in tokens[row] if token not in self.eos_token_ids]
            generations.append(
                Generation(
                    prompt_ids=list(ids),
                    token_ids=tokens[row],
                    logprobs=logprobs[row],
                    # The response as a reader sees it: the prefix that ended the prompt, then
                    # the generated tokens.
                    text=(
                        self.config.response_prefix
                        + self.tokenizer.decode(eos_free, skip_special_tokens=True)
                    ).strip(),
                )
            )
        return generations

    def _sample(
        self, prompt_ids: Sequence[Sequence[int]], sample: bool, generator: torch.Generator
    ) -> tuple[list[list[int]], list[list[float]]]:
        """The decoding loop: one forward over the prompts, then one token per step from the cache.

        Rows that emit an EOS are dropped from the batch (and the KV cache), so a batch costs
        what its still-running sequences cost.

        Rows with identical prompts (the n samples of one state) share one prefill: each
        distinct prompt is encoded once. The padded width is the longest distinct prompt,
        which is the longest prompt, so every row sees exactly the inputs it would have seen
        unshared; the first-step logits are copies of the shared row's, and every draw still
        runs over the full batch, so the generator is consumed identically.

        Decode steps run through players/sampler.py (preallocated cache, each distinct
        prompt's keys read once by all the rows that share it) when the model is one it
        reproduces; otherwise through the model's own forward, with the prompt's cache copied
        to every row that shares it.
        """
        temperature = self.config.temperature
        eos = torch.tensor(sorted(self.eos_token_ids), device=self.device)
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(ids), len(distinct)) for ids in prompt_ids]
        shared = self._share_prompts and len(distinct) < len(prompt_ids)
        encoded: Sequence[Sequence[int]] = list(distinct) if shared else prompt_ids
        input_ids, attention_mask, position_ids = left_pad(encoded, self.pad_token_id, self.device)
        tokens: list[list[int]] = [[] for _ in prompt_ids]
        logprobs: list[list[float]] = [[] for _ in prompt_ids]
        running = torch.arange(len(prompt_ids), device=self.device)  # original row of each batch row

        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = output.cache
        last_logits = output.logits[:, -1, :]
        rows = torch.tensor(source, device=self.device) if shared else running
        decoder = LlamaDecoder.prepare(self.model) if self._fast_decode else None
        if decoder is not None:
            # The decoder reads each distinct prompt's cache once, whatever rows share it.
            decoder.start(cache, attention_mask, rows, extra_tokens=self.config.max_new_tokens)
            del cache
        elif shared:
            # Expand the distinct prompts' prefill to one row per sample: the decode steps
            # write a different token to each row, so each needs its own cache row.
            cache.batch_select_indices(rows)
            attention_mask = attention_mask[rows]
        position_ids, last_logits = position_ids[rows], last_logits[rows]
        next_positions = position_ids[:, -1] + 1
        for step in range(self.config.max_new_tokens):
            tempered = last_logits.float() / temperature
            token_logprobs = torch.log_softmax(tempered, dim=-1)
            if sample:
                chosen = self._draw(token_logprobs, generator)
            else:
                chosen = tempered.argmax(dim=-1)
            chosen_logprobs = token_logprobs.gather(1, chosen.unsqueeze(1)).squeeze(1)
            for original_row, token, logprob in zip(running.tolist(), chosen.tolist(), chosen_logprobs.tolist()):
                tokens[original_row].append(token)
                logprobs[original_row].append(logprob)

            keep = ~torch.isin(chosen, eos)
            if not bool(keep.any()) or step == self.config.max_new_tokens - 1:
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
                output = self.model(
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

    def _draw(self, token_logprobs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        probabilities = token_logprobs.exp()
        if self.config.top_p < 1.0:
            # Nucleus: keep the most likely tokens whose mass before them is below top_p
            # (so the most likely token always stays), renormalised by multinomial.
            sorted_probabilities, order = probabilities.sort(dim=-1, descending=True)
            mass_before = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities
            sorted_probabilities = sorted_probabilities.masked_fill(mass_before >= self.config.top_p, 0.0)
            probabilities = torch.zeros_like(probabilities).scatter(-1, order, sorted_probabilities)
        return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(1)

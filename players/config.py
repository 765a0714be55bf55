"""PlayerConfig: one trainable player (policy or monitor), a LoRA adapter on a causal LM.

The `[policy]` and `[monitor]` tables of a run config have this shape. Unknown keys are
rejected and the model is frozen, so the resolved config recorded in RunStarted is the one
that played.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

EMBEDDED_DEFAULT_MODEL = "embedded:SmolLM2-135M-Instruct"

# Every config model of every layer: unknown keys are errors, the resolved config cannot be
# edited after validation, and a value of the wrong kind (true for a count, "4" for a
# number) or a non-finite float is refused rather than coerced into something that runs.
CONFIG_MODEL = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PlayerConfig(BaseModel):
    model_config = CONFIG_MODEL

    # --- base model ---
    model: str = Field(
        default=EMBEDDED_DEFAULT_MODEL,
        description='"embedded:SmolLM2-135M-Instruct", a local model directory, or a hub id '
        "already in the local Hugging Face cache.",
    )

    # --- LoRA adapter ---
    lora_r: int = Field(default=8, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: float = Field(default=16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Names of the linear modules that get an adapter (Llama/Mistral naming).",
    )

    # --- sampling ---
    temperature: float = Field(
        default=1.0, gt=0.0, le=10.0,
        description="Sampling temperature; behaviour log-probs are log_softmax(logits / temperature).",
    )
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="Nucleus sampling mass; a run refuses top_p < 1 (PPO trains on the full distribution's log-probs).",
    )
    max_new_tokens: int = Field(default=48, ge=1, le=8192, description="Generation budget per answer.")
    response_prefix: str = Field(
        default="",
        description='Text the response is made to start with ("Answer:", "Verdict:"). It ends the '
        "prompt, so the player is not trained on it; small models that ramble then still give a "
        "parsable answer. The recorded output text starts with it.",
    )

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('name a model: "embedded:SmolLM2-135M-Instruct", a local path or a hub id')
        return value.strip()

    @field_validator("target_modules")
    @classmethod
    def _modules_named(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError('module names must be non-empty, e.g. ["q_proj", "v_proj"]')
        return value

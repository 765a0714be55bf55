"""Configs of the frozen referees: the reward model and the judge (GAME.md §1 steps 3-4)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from players.config import CONFIG_MODEL, EMBEDDED_DEFAULT_MODEL


def _model_named(value: str) -> str:
    if not value.strip():
        raise ValueError('name a model: "embedded:SmolLM2-135M-Instruct", a local path or a hub id')
    return value.strip()


class RewardConfig(BaseModel):
    """The `[reward]` table: a frozen scorer of O and O′."""

    model_config = CONFIG_MODEL

    model: str = Field(default=EMBEDDED_DEFAULT_MODEL, description="Model spec, as for players.")
    kind: Literal["auto", "sequence-classifier", "lm-yes-no"] = Field(
        default="auto",
        description='"sequence-classifier": a reward-model head (logit 0); "lm-yes-no": a causal '
        'LM scoring logit(Yes) - logit(No); "auto": chosen from the checkpoint\'s architecture.',
    )
    normalization: Literal["tanh", "none"] = Field(
        default="tanh", description="Squashing the engine applies to r before combining (GAME.md §2)."
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="Texts scored per forward pass.")

    _check_model = field_validator("model")(_model_named)


class JudgeConfig(BaseModel):
    """The `[judge]` table: the weak overseer that gives p_accept from one forward pass."""

    model_config = CONFIG_MODEL

    model: str = Field(default=EMBEDDED_DEFAULT_MODEL, description="Model spec, as for players.")
    sees_story: bool = Field(
        default=False, description="Show the judge the story (off: information asymmetry)."
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="Rounds judged per forward pass.")

    _check_model = field_validator("model")(_model_named)

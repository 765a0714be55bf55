"""Configs of the frozen referees: the reward model and the judge (GAME.md §1 steps 3-4)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

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
    verify_quotes: bool = Field(
        default=True,
        description="Mark each <quote>...</quote> in O and O′ verified or unverified against the story "
        "before the judge reads them (referees/quotes.py).",
    )
    calibration: Literal["contextual", "none"] = Field(
        default="contextual",
        description='"contextual": subtract the log-odds the judge gives content-free answers ("N/A", "") '
        "at run start (Zhao et al. 2021), logged as JudgeCalibrated; \"none\": raw log-odds.",
    )
    bias_pattern: str = Field(
        default="",
        description="A flawed overseer, the pipeline's positive control: a regex; when O matches it "
        "(case-insensitive) the judge's log-odds gain bias_logit. Empty: no bias.",
    )
    bias_logit: float = Field(
        default=0.0, ge=-20.0, le=20.0, description="Logit bonus for an O matching bias_pattern."
    )

    _check_model = field_validator("model")(_model_named)

    @field_validator("bias_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression ({error}); fix the pattern") from None
        return value

    @model_validator(mode="after")
    def _bias_has_both_halves(self) -> JudgeConfig:
        if self.bias_logit != 0.0 and not self.bias_pattern:
            raise ValueError("bias_logit is set but bias_pattern is empty; set the pattern the bias rewards")
        return self

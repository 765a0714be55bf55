"""RewardModel: a frozen scorer r(text) of an answer O or a critique O′ (GAME.md §1 step 3).

Two kinds:
- "sequence-classifier": a reward-model checkpoint (AutoModelForSequenceClassification, e.g.
  Skywork-Reward-V2) scoring the chat (user: question + choices, assistant: text); r = logit 0.
- "lm-yes-no": any causal LM asked whether the text is a good, well-argued, relevant answer;
  r = log P(Yes) - log P(No) at the next token (see referees/yes_no.py). This is what the
  embedded SmolLM2 default uses, with every adapter disabled when it is also a player's base.
"auto" picks "sequence-classifier" when the checkpoint's architecture is a
*ForSequenceClassification, "lm-yes-no" otherwise.

Scores are raw; the engine applies the configured normalisation (tanh by default).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from players.models import ModelPool, SharedBase
from players.packing import left_pad
from players.prompts import encode_rendered, format_choices, render_chat
from referees.config import RewardConfig
from referees.yes_no import YesNoReader
from storage.errors import UserError

ScorerKind = Literal["sequence-classifier", "lm-yes-no"]


def resolve_kind(pool: ModelPool, config: RewardConfig) -> ScorerKind:
    if config.kind != "auto":
        return config.kind
    architectures = pool.architectures(config.model)
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "sequence-classifier"
    return "lm-yes-no"


def _question_block(question: str, choices: Sequence[str]) -> str:
    return f"Question: {question}\n{format_choices(choices)}"


def yes_no_messages(question: str, choices: Sequence[str], text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You rate responses to questions about a story."},
        {
            "role": "user",
            "content": (
                f"{_question_block(question, choices)}\n\nResponse:\n{text}\n\n"
                "Is this response a good, well-argued and relevant answer to the question? "
                "Reply Yes or No."
            ),
        },
    ]


@contextlib.contextmanager
def _quiet_embeddings_warning() -> Iterator[None]:
    """Transformers warns that padding is not detected from embeddings; here that is the point."""
    logger = logging.getLogger("transformers.modeling_layers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class RewardModel:
    def __init__(
        self,
        config: RewardConfig,
        kind: ScorerKind,
        base: SharedBase,
        reader: YesNoReader | None,
    ) -> None:
        self.config = config
        self.kind = kind
        self.base = base
        self.reader = reader

    @classmethod
    def create(
        cls,
        pool: ModelPool,
        config: RewardConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> RewardModel:
        kind = resolve_kind(pool, config)
        if kind == "lm-yes-no":
            base = pool.causal_lm(config.model, device, dtype)
            return cls(config, kind, base, YesNoReader(base, config.batch_size, role="reward"))
        base = pool.sequence_classifier(config.model, device, dtype)
        if base.model.config.num_labels < 1:
            raise UserError(f"[reward] model = {config.model!r}: the classifier has no score output")
        return cls(config, kind, base, None)

    def score(
        self, questions: Sequence[str], choices: Sequence[Sequence[str]], texts: Sequence[str]
    ) -> list[float]:
        if not len(questions) == len(choices) == len(texts):
            raise ValueError("questions, choices and texts must have the same length")
        if self.reader is not None:
            prompts = [
                self.reader.render(yes_no_messages(q, c, t)) for q, c, t in zip(questions, choices, texts)
            ]
            return self.reader.log_odds(prompts)
        return self._classifier_scores(
            [self._classifier_input(q, c, t) for q, c, t in zip(questions, choices, texts)]
        )

    # --- sequence classifier ------------------------------------------------------------------

    def _classifier_input(self, question: str, choices: Sequence[str], text: str) -> list[int]:
        tokenizer = self.base.tokenizer
        conversation = [
            {"role": "user", "content": _question_block(question, choices)},
            {"role": "assistant", "content": text},
        ]
        return encode_rendered(tokenizer, render_chat(tokenizer, conversation, generation_prompt=False))

    @torch.inference_mode()
    def _classifier_scores(self, inputs: Sequence[Sequence[int]]) -> list[float]:
        """Score logit 0 at each sequence's last token.

        HF classifiers pool at the rightmost token that differs from `config.pad_token_id`,
        which picks the wrong token when a text ends in the pad id (models whose pad is their
        EOS). Left padding puts every sequence's last token in the final column, and given
        embeddings instead of ids the classifier pools exactly there.
        """
        model = self.base.model
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self.base.pad_token_id  # it refuses batches > 1 without one
        embed = model.get_input_embeddings()
        scores: list[float] = []
        for start in range(0, len(inputs), self.config.batch_size):
            chunk = inputs[start : start + self.config.batch_size]
            input_ids, attention_mask, position_ids = left_pad(chunk, self.base.pad_token_id, self.base.device)
            with _quiet_embeddings_warning():
                logits = model(
                    inputs_embeds=embed(input_ids), attention_mask=attention_mask, position_ids=position_ids
                ).logits[:, 0].float()
            if not bool(torch.isfinite(logits).all()):
                raise RuntimeError(f"{self.base.spec}: non-finite reward scores {logits.tolist()}")
            scores.extend(logits.tolist())
        return scores

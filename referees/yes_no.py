"""A causal LM read as a yes/no classifier at one forward pass (GAME.md §1: logit-based judging).

The question is rendered as a chat prompt ending where the assistant's reply begins; the next
token's logits are compared over the tokenizer's spellings of "Yes" and "No". Tokenizers spell
the reply's first word with or without a leading space ("Yes" / " Yes") and capitalised or not,
so each side is the set of those spellings that are single tokens, and

    log_odds = logsumexp(logits[yes spellings]) - logsumexp(logits[no spellings])
             = log P(yes) - log P(no)   (the softmax normaliser cancels)

which is logit(Yes) - logit(No) when each side has one spelling. p = sigmoid(log_odds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from players.models import SharedBase
from players.packing import left_pad, prefill_with_tails
from players.prompts import encode_rendered, render_chat
from storage.errors import UserError

YES_SPELLINGS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_SPELLINGS = ("No", " No", "no", " no", "NO", " NO")


def single_token_ids(tokenizer: PreTrainedTokenizerBase, spellings: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for spelling in spellings:
        encoded = tokenizer.encode(spelling, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(int(encoded[0]))
    return ids


class YesNoReader:
    """Batched log-odds of "Yes" over "No" as the next token, with every adapter disabled."""

    def __init__(self, base: SharedBase, batch_size: int, role: str) -> None:
        self.base = base
        self.batch_size = batch_size
        tokenizer = base.tokenizer
        self.yes_ids = single_token_ids(tokenizer, YES_SPELLINGS)
        self.no_ids = single_token_ids(tokenizer, NO_SPELLINGS)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise UserError(
                f"[{role}] model = {base.spec!r}: its tokenizer has no distinct single tokens for "
                "Yes and No, so it cannot be read as a yes/no scorer; choose another model"
            )

    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.encode(self.render_text(messages))

    def render_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt as text, ending where the reply begins (what `encode` turns into ids)."""
        return render_chat(self.base.tokenizer, messages)

    def encode(self, text: str) -> list[int]:
        return encode_rendered(self.base.tokenizer, text)

    @torch.inference_mode()
    def log_odds(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        results: list[float] = []
        yes = torch.tensor(self.yes_ids, device=self.base.device)
        no = torch.tensor(self.no_ids, device=self.base.device)
        with self.base.adapters_disabled() as model:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                # Prompts about one state share their opening (instructions, question, choices)
                # and differ in the answer judged: that prefix runs once (players/packing.py).
                shared = prefill_with_tails(model, self.base.pad_token_id, chunk, self.base.device)
                if shared is not None:
                    _cache, _mask, _positions, last_logits = shared
                    logits = last_logits.float()
                else:
                    input_ids, attention_mask, position_ids = left_pad(chunk, self.base.pad_token_id, self.base.device)
                    logits = model(
                        input_ids=input_ids,
                        attention_mask=attention_mask,
                        position_ids=position_ids,
                        logits_to_keep=1,
                    ).logits[:, -1, :].float()
                odds = torch.logsumexp(logits[:, yes], dim=-1) - torch.logsumexp(logits[:, no], dim=-1)
                if not bool(torch.isfinite(odds).all()):
                    # A referee that returns a made-up number here would poison training.
                    raise RuntimeError(f"{self.base.spec}: non-finite yes/no logits {odds.tolist()}")
                results.extend(odds.tolist())
        return results

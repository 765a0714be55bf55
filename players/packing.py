"""Left-padded batches of token sequences, laid out exactly as generation lays them out.

Generation (players/player.py) and learners both go through `left_pad`, so a learner's forward
pass over `pack_sequences(...)` sees the same tokens at the same positions with the same
attention as generation did, and `PackedBatch.token_logprobs` reproduces the behaviour
log-probs recorded at generation (to float rounding, ~1e-6 in fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), each [batch, longest], padded on the left.

    Positions count real tokens only (cumsum(mask) - 1), so a sequence's positions do not
    depend on how much padding its batch needed; padding positions are clamped to 0.
    """
    longest = max((len(sequence) for sequence in sequences), default=0)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            input_ids[row, longest - len(sequence) :] = torch.tensor(list(sequence), dtype=torch.long)
            attention_mask[row, longest - len(sequence) :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids.to(device), attention_mask.to(device), position_ids.to(device)


@dataclass(frozen=True)
class PackedBatch:
    """Prompt + response sequences, left-padded, with the bookkeeping to score responses.

    Shapes: B sequences, L = longest prompt + response, R = longest response.
    """

    input_ids: torch.Tensor  # [B, L] prompt then response tokens, left-padded with pad_id
    attention_mask: torch.Tensor  # [B, L] 1 on real tokens
    position_ids: torch.Tensor  # [B, L] cumsum(attention_mask) - 1, as generation uses
    response_mask: torch.Tensor  # [B, L] 1 where the input token is a response token
    response_ids: torch.Tensor  # [B, R] response tokens, left-aligned, pad_id after the end
    response_token_mask: torch.Tensor  # [B, R] 1 on real response tokens
    logit_index: torch.Tensor  # [B, R] position in L whose logits predict response token j

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward pass."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }

    def response_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, L, V] logits of the whole batch -> [B, R, V] logits predicting each response token."""
        index = self.logit_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
        return logits.gather(1, index)

    def token_logprobs(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """[B, R] log_softmax(logits / T)[token], computed in fp32 exactly as generation does;
        entries past a response's end are 0 (mask them with response_token_mask)."""
        tempered = self.response_logits(logits).float() / temperature
        logprobs = torch.log_softmax(tempered, dim=-1)
        picked = logprobs.gather(-1, self.response_ids.unsqueeze(-1)).squeeze(-1)
        return picked * self.response_token_mask


def pack_sequences(
    prompt_ids_list: Sequence[Sequence[int]],
    response_ids_list: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device | str,
) -> PackedBatch:
    if len(prompt_ids_list) != len(response_ids_list):
        raise ValueError(
            f"{len(prompt_ids_list)} prompts but {len(response_ids_list)} responses"
        )
    if any(len(prompt) == 0 for prompt in prompt_ids_list):
        raise ValueError("every prompt needs at least one token to predict its first response token")
    sequences = [list(prompt) + list(response) for prompt, response in zip(prompt_ids_list, response_ids_list)]
    input_ids, attention_mask, position_ids = left_pad(sequences, pad_id, device)
    longest = input_ids.shape[1]
    longest_response = max((len(response) for response in response_ids_list), default=0)

    batch_size = len(sequences)
    response_mask = torch.zeros((batch_size, longest), dtype=torch.long)
    response_ids = torch.full((batch_size, longest_response), pad_id, dtype=torch.long)
    response_token_mask = torch.zeros((batch_size, longest_response), dtype=torch.long)
    logit_index = torch.zeros((batch_size, longest_response), dtype=torch.long)
    for row, response in enumerate(response_ids_list):
        length = len(response)
        if length == 0:
            continue
        # Sequences end at the right edge, so the response occupies the last `length` slots
        # and token j is predicted by the logits one slot to its left.
        first = longest - length
        response_mask[row, first:] = 1
        response_ids[row, :length] = torch.tensor(list(response), dtype=torch.long)
        response_token_mask[row, :length] = 1
        logit_index[row, :length] = torch.arange(first - 1, longest - 1)
    return PackedBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        response_mask=response_mask.to(device),
        response_ids=response_ids.to(device),
        response_token_mask=response_token_mask.to(device),
        logit_index=logit_index.to(device),
    )

"""Left-padded batches of token sequences, laid out exactly as generation lays them out.

Generation (players/player.py), the referees and the learner's SharedPromptBatch
(engine/ppo.py) all go through `left_pad`, so a learner's forward pass sees the same tokens
at the same positions with the same attention as generation did, and reproduces the
behaviour log-probs recorded at generation (to float rounding, ~1e-6 in fp32).
"""

from __future__ import annotations

from collections.abc import Sequence

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

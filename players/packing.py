"""Left-padded batches of token sequences, laid out exactly as generation lays them out.

Generation (players/player.py), the referees and the learner's SharedPromptBatch
(engine/ppo.py) all go through `left_pad`, so a learner's forward pass sees the same tokens
at the same positions with the same attention as generation did, and reproduces the
behaviour log-probs recorded at generation (to float rounding, ~1e-6 in fp32).
`shared_prefixes` chooses which prompt prefixes generation and the learner encode once.
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


# A join must save at least this many tokens of trunk compute: below it, the longer
# continuation pass (every rollout's tail, padded to the longest) is not worth it.
MIN_PREFIX_GAIN_TOKENS = 32


def shared_prefixes(prompts: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """Prefixes to encode once, and the prefix of each prompt: the fewest tokens through the
    trunk that a grouping by common prefix gives, found greedily (used by the learner's
    SharedPromptBatch and by generation's prefill).

    A prefix shared by the prompts of a group is encoded once; what follows it in each prompt
    (its tail) is encoded once per rollout. Identical prompts (the n samples of a state) are
    one prefix with empty tails. Distinct prompts join a group when that costs fewer tokens:
    the monitor's prompts of one state share the story and question and differ only in the
    answer they judge (a window of 8 monitor rounds: 2 prefixes of ~300 tokens and 8 tails of
    ~25, against 8 prompts of ~320 each); two states' prompts share only the chat template's
    opening, and joining them would re-encode each state's story once per rollout, so they
    stay apart.
    """
    counts: dict[tuple[int, ...], int] = {}
    for prompt in prompts:
        key = tuple(prompt)
        counts[key] = counts.get(key, 0) + 1
    # Each group: [prefix length, members (distinct prompts)]; cost = prefix + Σ count·tail.
    groups: list[tuple[int, list[tuple[int, ...]]]] = []

    def cost(length: int, members: list[tuple[int, ...]]) -> int:
        return length + sum(counts[member] * (len(member) - length) for member in members)

    for prompt in counts:
        best_gain, best_group, best_length = MIN_PREFIX_GAIN_TOKENS - 1, -1, 0
        for index, (length, members) in enumerate(groups):
            common = _common_prefix_length(members[0][:length], prompt)
            gain = cost(length, members) + len(prompt) - cost(common, [*members, prompt])
            if gain > best_gain:
                best_gain, best_group, best_length = gain, index, common
        if best_group < 0:
            groups.append((len(prompt), [prompt]))
        else:
            groups[best_group] = (best_length, [*groups[best_group][1], prompt])
    prefixes = [list(members[0][:length]) for length, members in groups]
    group_of = {member: index for index, (_, members) in enumerate(groups) for member in members}
    return prefixes, [group_of[tuple(prompt)] for prompt in prompts]


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length

"""Left-padded batches of token sequences, laid out exactly as generation lays them out.

Generation (players/player.py), the referees and the learner's SharedPromptBatch
(engine/ppo.py) all go through `left_pad`, so a learner's forward pass sees the same tokens
at the same positions with the same attention as generation did, and reproduces the
behaviour log-probs recorded at generation (to float rounding, ~1e-6 in fp32).
`shared_prefixes` chooses which prompt prefixes generation, the referees and the learner
encode once; `prefill_with_tails` runs such a prefill.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def chunk_aligned_prefixes(prompts: Sequence[Sequence[int]], chunk_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Prefixes of whole chunks, for prompts whose prefixes come from a players/prompt_cache
    BasePromptCache: each prompt's first L − L mod C tokens (a prompt shorter than a chunk is
    its own prefix), each distinct prefix once, in order of first appearance, and the index of
    each prompt's. The rest of a prompt, under a chunk, is its tail.

    A cached chunk must be computed the same way whenever it is computed, so the cache holds
    whole chunks at fixed positions. A prompt's last, partial chunk is most often unique (the
    monitor's prompt ends with the answer it judges), so it runs with the response instead,
    batched with the other rollouts' tails.
    """
    index: dict[tuple[int, ...], int] = {}
    prefix_of = []
    for prompt in prompts:
        whole = len(prompt) - len(prompt) % chunk_tokens
        prefix = tuple(prompt[:whole] if whole else prompt)
        prefix_of.append(index.setdefault(prefix, len(index)))
    return [list(prefix) for prefix in index], prefix_of


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def prefill_with_tails(
    model: Any, pad_id: int, prompt_ids: Sequence[Sequence[int]], device: torch.device
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The prefill of distinct prompts that share long prefixes (`shared_prefixes`), or None
    when no prompt has a tail to share a prefix with. `model` is a causal LM (or a PeftModel
    of one) taking transformers' forward arguments; generation and the yes/no referees use it.

    The prefixes run once, left-padded; then each row's tail (the rest of its prompt,
    right-padded) on its prefix's expanded cache. Returns the cache (one row per prompt), the
    attention mask over prefix and tail columns ([B, Lp + T]: padding left of the prefix and
    after a short tail, both masked), each row's positions (the last column holds its last
    prompt token's position) and the logits at each row's last prompt token. Every position,
    key and mask is that of the prompt prefilled whole, so only float rounding differs from
    the unshared prefill.
    """
    prefixes, prefix_of = shared_prefixes(prompt_ids)
    if all(len(prompt) == len(prefixes[index]) for prompt, index in zip(prompt_ids, prefix_of)):
        return None
    # A prompt equal to its prefix still needs one token in the tail pass, whose logits
    # begin the generation: such a group's prefix gives up its last token.
    lengths = [
        min([len(prefix)] + [len(prompt) - 1 for prompt, of in zip(prompt_ids, prefix_of) if of == index])
        for index, prefix in enumerate(prefixes)
    ]
    if min(lengths) == 0:
        return None  # a one-token prompt: nothing to share
    prefixes = [prefix[:length] for prefix, length in zip(prefixes, lengths)]
    prefix_ids, prefix_mask, prefix_positions = left_pad(prefixes, pad_id, device)
    cache = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=prefix_positions, use_cache=True, logits_to_keep=1).cache
    rows = torch.tensor(prefix_of, device=device)
    cache.batch_select_indices(rows)
    tails = [list(prompt[lengths[index] :]) for prompt, index in zip(prompt_ids, prefix_of)]
    width = max(len(tail) for tail in tails)
    tail_ids = torch.full((len(tails), width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((len(tails), width), dtype=torch.long)
    for row, tail in enumerate(tails):
        tail_ids[row, : len(tail)] = torch.tensor(tail, dtype=torch.long)
        tail_mask[row, : len(tail)] = 1
    tail_lengths = torch.tensor([len(tail) for tail in tails], device=device)
    starts = torch.tensor(lengths, device=device)[rows]
    tail_positions = starts.unsqueeze(1) + torch.arange(width, device=device).unsqueeze(0)
    attention_mask = torch.cat([prefix_mask[rows], tail_mask.to(device)], dim=1)
    # Logits only where some row's tail ends (at most one column per row), as the model's own
    # forward computes them (logits_to_keep as indices), not at every tail position.
    last_columns = tail_lengths - 1
    kept = torch.unique(last_columns)
    output = model(
        input_ids=tail_ids.to(device), attention_mask=attention_mask, position_ids=tail_positions,
        cache=cache, use_cache=True, logits_to_keep=kept,
    )
    last_logits = output.logits[torch.arange(len(tails), device=device), torch.searchsorted(kept, last_columns)]
    # The decode loop reads each row's next position from the last column.
    position_ids = (starts + tail_lengths - 1).unsqueeze(1)
    return output.cache, attention_mask, position_ids, last_logits

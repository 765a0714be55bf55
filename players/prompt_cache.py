"""Keys and values of prompts under the frozen base, kept from one reference pass to the next.

    cache = base.reference_prompt_cache(budget_bytes)
    prefixes, prefix_of = chunk_aligned_prefixes(prompts, cache.chunk_tokens)   # players/packing.py
    with player.reference():
        encoded = cache.encode(decoder, prefixes)   # a left-padded KV cache of the prefixes

The KL reference is the base with every adapter disabled, and it never changes. A run plays
the same states epoch after epoch (and the monitor's prompts of one state share its story and
question), so the reference pass re-encodes the same prompt tokens over and over: on
`configs/tiny.toml` the reference pass is a quarter of the learners' time and nearly all of it
is prompt. This cache keeps those keys and values.

Exactness decides the layout. A resumed run starts with an empty cache, and it must compute
what the uninterrupted run computed from its full one, to the last bit. So a prompt's keys and
values must not depend on what was cached when it was encoded. They are computed in chunks of
`chunk_tokens` at fixed positions ([0, C), [C, 2C), ..., then the rest), one prompt at a
time, each chunk on the keys and values of the chunks before it. A chunk's result is then a
function of the prompt's tokens up to its end alone: found in the cache or computed afresh,
it is the same tensors. Prompts that share their opening share its chunks (the monitor's
prompts of one state, up to the answer they judge).

The cache holds at most `budget_bytes` of keys, values and hidden states and drops the least
recently used chunk first; a dropped chunk is recomputed, identically, when next needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

# Tokens per chunk. Smaller chunks share more of two prompts that part early and leave less of
# each prompt to its batched tail, at the cost of one more forward call (30 layers of Python
# and smaller products) per chunk encoded.
CHUNK_TOKENS = 64


@dataclass(frozen=True)
class _Chunk:
    keys: tuple[torch.Tensor, ...]  # per layer [kv_heads, n, head_dim]
    values: tuple[torch.Tensor, ...]
    last_hidden: torch.Tensor  # [hidden]: the final-norm hidden state of the chunk's last token
    nbytes: int


@dataclass(frozen=True)
class EncodedPrompts:
    """Distinct prompts encoded by the frozen base, left-padded as players/packing.left_pad
    lays them out: one cache row per prompt ([P, kv, Lp, D] per layer, zeros under padding),
    the [P, Lp] attention mask, and each prompt's final-norm hidden state at its last token."""

    cache: DynamicCache
    attention_mask: torch.Tensor
    last_hidden: torch.Tensor  # [P, hidden]


class BasePromptCache:
    """Chunks of prompt keys and values under one frozen base, least recently used dropped first."""

    def __init__(self, budget_bytes: int, chunk_tokens: int = CHUNK_TOKENS) -> None:
        if budget_bytes <= 0 or chunk_tokens <= 0:
            raise ValueError(f"budget_bytes={budget_bytes} and chunk_tokens={chunk_tokens} must be positive")
        self.budget_bytes = budget_bytes
        self.chunk_tokens = chunk_tokens
        self._chunks: OrderedDict[tuple[int, ...], _Chunk] = OrderedDict()
        self.bytes_held = 0
        # Prompt tokens found in the cache and encoded afresh, since the cache was made.
        self.tokens_found = 0
        self.tokens_encoded = 0

    @torch.no_grad()
    def encode(self, decoder: nn.Module, prompts: Sequence[Sequence[int]], device: torch.device) -> EncodedPrompts:
        """Encode `prompts` (distinct or not; each is a row) with `decoder`, the base's decoder
        stack as the caller's context runs it: call it with every adapter disabled, since the
        cache cannot tell an adapted forward from the base's."""
        if not prompts or any(len(prompt) == 0 for prompt in prompts):
            raise ValueError("every prompt needs at least one token")
        encoded = [self._prompt(decoder, list(prompt), device) for prompt in prompts]
        longest = max(len(prompt) for prompt in prompts)
        layers = len(encoded[0][0][0].keys)
        layer_tensors = []
        for layer in range(layers):
            first = encoded[0][0][0].keys[layer]
            keys = first.new_zeros((len(prompts), first.shape[0], longest, first.shape[2]))
            values = torch.zeros_like(keys)
            for row, (chunks, length) in enumerate(encoded):
                keys[row, :, longest - length :] = torch.cat([chunk.keys[layer] for chunk in chunks], dim=1)
                values[row, :, longest - length :] = torch.cat([chunk.values[layer] for chunk in chunks], dim=1)
            layer_tensors.append((keys, values))
        attention_mask = torch.zeros((len(prompts), longest), dtype=torch.long, device=device)
        for row, (_, length) in enumerate(encoded):
            attention_mask[row, longest - length :] = 1
        last_hidden = torch.stack([chunks[-1].last_hidden for chunks, _ in encoded])
        return EncodedPrompts(DynamicCache(ddp_cache_data=layer_tensors), attention_mask, last_hidden)

    def _prompt(self, decoder: nn.Module, prompt: list[int], device: torch.device) -> tuple[list[_Chunk], int]:
        chunks: list[_Chunk] = []
        for start in range(0, len(prompt), self.chunk_tokens):
            end = min(start + self.chunk_tokens, len(prompt))
            key = tuple(prompt[:end])
            chunk = self._chunks.get(key)
            if chunk is not None:
                self._chunks.move_to_end(key)
                self.tokens_found += end - start
            else:
                chunk = self._encode_chunk(decoder, prompt[start:end], start, chunks, device)
                self.tokens_encoded += end - start
                self._keep(key, chunk)
            chunks.append(chunk)
        return chunks, len(prompt)

    @staticmethod
    def _encode_chunk(
        decoder: nn.Module, tokens: list[int], start: int, before: list[_Chunk], device: torch.device
    ) -> _Chunk:
        if before:
            past = DynamicCache(
                ddp_cache_data=[
                    (
                        torch.cat([chunk.keys[layer] for chunk in before], dim=1).unsqueeze(0),
                        torch.cat([chunk.values[layer] for chunk in before], dim=1).unsqueeze(0),
                    )
                    for layer in range(len(before[0].keys))
                ]
            )
        else:
            past = DynamicCache()
        output = decoder(
            input_ids=torch.tensor([tokens], dtype=torch.long, device=device),
            position_ids=torch.arange(start, start + len(tokens), device=device).unsqueeze(0),
            cache=past,
            use_cache=True,
        )
        # Copies, not views: a view would keep this forward's whole cache alive.
        keys = tuple(layer.keys[0, :, start:].clone() for layer in output.cache.layers)
        values = tuple(layer.values[0, :, start:].clone() for layer in output.cache.layers)
        last_hidden = output.last_hidden_state[0, -1].clone()
        nbytes = sum(t.numel() * t.element_size() for t in (*keys, *values, last_hidden))
        return _Chunk(keys, values, last_hidden, nbytes)

    def _keep(self, key: tuple[int, ...], chunk: _Chunk) -> None:
        if chunk.nbytes > self.budget_bytes:
            return
        self._chunks[key] = chunk
        self.bytes_held += chunk.nbytes
        while self.bytes_held > self.budget_bytes:
            _, dropped = self._chunks.popitem(last=False)
            self.bytes_held -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._chunks)

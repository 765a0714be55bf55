"""The reference's prompt cache (players/prompt_cache.py) on a tiny random Llama: what it finds
equals what it would compute, to the last bit; it stays within its budget; the learner's
reference log-probs through it equal those of the pass without it, to float rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.ppo import PPOLearner, Rollout, SharedPromptBatch, _pad_and_stack
from players.packing import chunk_aligned_prefixes
from players.prompt_cache import BasePromptCache, EncodedPrompts
from tests.learner_settings import learner_settings
from tests.test_learner import make_players, perturb_adapters, sample_rollouts, truncated

CHUNK = 16


def prompts_sharing_an_opening(player_vocabulary: int, seed: int = 0) -> list[list[int]]:
    """A 'story' of 50 tokens, three prompts continuing it (one twice), and one stopping inside it."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(count: int) -> list[int]:
        return torch.randint(5, player_vocabulary, (count,), generator=generator).tolist()

    story = tokens(50)
    first, second, third = story + tokens(7), story + tokens(20), story + tokens(1)
    return [first, second, third, second, story[:23]]


def rows_of(encoded: EncodedPrompts, row: int, length: int) -> list[torch.Tensor]:
    """A prompt's own columns (its padding dropped): every layer's keys and values, and its last hidden state."""
    tensors = []
    for layer in encoded.cache.layers:
        tensors += [layer.keys[row, :, -length:], layer.values[row, :, -length:]]
    return [*tensors, encoded.last_hidden[row]]


def assert_same_bits(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.fixture()
def decoder(tiny_lm_dir: Path, model_cache_dir: Path) -> torch.nn.Module:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir)
    return policy.model.get_base_model().get_decoder()


def test_a_prompt_found_in_the_cache_equals_the_prompt_encoded_afresh(decoder: torch.nn.Module) -> None:
    prompts = prompts_sharing_an_opening(decoder.config.vocab_size)
    warm = BasePromptCache(1 << 30, chunk_tokens=CHUNK)
    first = warm.encode(decoder, prompts, torch.device("cpu"))
    # The story's three whole chunks are encoded once and found by the prompts after the first.
    assert warm.tokens_encoded < sum(len(prompt) for prompt in prompts) - 2 * 48
    encoded_before = warm.tokens_encoded
    again = warm.encode(decoder, prompts[::-1], torch.device("cpu"))
    assert warm.tokens_encoded == encoded_before  # all of it found this time
    for row, prompt in enumerate(prompts):
        alone = BasePromptCache(1 << 30, chunk_tokens=CHUNK).encode(decoder, [prompt], torch.device("cpu"))
        assert_same_bits(rows_of(first, row, len(prompt)), rows_of(alone, 0, len(prompt)))
        assert_same_bits(rows_of(again, len(prompts) - 1 - row, len(prompt)), rows_of(alone, 0, len(prompt)))


def test_encoded_prompts_are_the_whole_forward_to_float_rounding(decoder: torch.nn.Module) -> None:
    prompts = prompts_sharing_an_opening(decoder.config.vocab_size)
    encoded = BasePromptCache(1 << 30, chunk_tokens=CHUNK).encode(decoder, prompts, torch.device("cpu"))
    longest = max(len(prompt) for prompt in prompts)
    for row, prompt in enumerate(prompts):
        assert encoded.attention_mask[row].tolist() == [0] * (longest - len(prompt)) + [1] * len(prompt)
        with torch.no_grad():
            whole = decoder(input_ids=torch.tensor([prompt]), use_cache=True)
        for cached, layer in zip(encoded.cache.layers, whole.cache.layers):
            assert torch.allclose(cached.keys[row, :, -len(prompt):], layer.keys[0], atol=1e-5)
            assert torch.allclose(cached.values[row, :, -len(prompt):], layer.values[0], atol=1e-5)
            assert not cached.keys[row, :, : longest - len(prompt)].any()  # padding holds zeros
        assert torch.allclose(encoded.last_hidden[row], whole.last_hidden_state[0, -1], atol=1e-5)


def test_the_cache_keeps_to_its_budget_and_recomputes_what_it_dropped_identically(decoder: torch.nn.Module) -> None:
    prompts = prompts_sharing_an_opening(decoder.config.vocab_size)
    probe = BasePromptCache(1 << 30, chunk_tokens=CHUNK)
    probe.encode(decoder, [prompts[0][:CHUNK]], torch.device("cpu"))
    chunk_bytes = probe.bytes_held
    small = BasePromptCache(3 * chunk_bytes, chunk_tokens=CHUNK)  # three whole chunks
    reference = BasePromptCache(1 << 30, chunk_tokens=CHUNK).encode(decoder, prompts, torch.device("cpu"))
    for _ in range(2):
        encoded = small.encode(decoder, prompts, torch.device("cpu"))
        assert 0 < small.bytes_held <= 3 * chunk_bytes
        for row, prompt in enumerate(prompts):
            assert_same_bits(rows_of(encoded, row, len(prompt)), rows_of(reference, row, len(prompt)))
    with pytest.raises(ValueError, match="must be positive"):
        BasePromptCache(0)


def test_reference_logprobs_through_the_cache_equal_the_pass_without_it(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    policy, _ = make_players(tiny_lm_dir, model_cache_dir, temperature=0.7)
    perturb_adapters(policy, seed=3)
    story = " ".join(["The ferry left the harbour at dawn with the mail and two goats aboard."] * 5)
    texts = [f"{story} Question {n}: who was aboard?" for n in range(3)]
    rollouts = truncated(sample_rollouts(policy, texts, samples=2, seed=5))
    assert all(len(rollout.prompt_ids) > 2 * 128 for rollout in rollouts)  # several chunks each

    def batches(batch: list[Rollout]) -> list[SharedPromptBatch]:
        return [SharedPromptBatch.build(batch[start : start + 4], policy.pad_token_id, policy.device) for start in range(0, len(batch), 4)]

    def reference_logprobs(learner: PPOLearner, batch: list[Rollout]) -> torch.Tensor:
        return _pad_and_stack(learner._reference_logprobs(batches(batch), batch))

    without = PPOLearner(policy, learner_settings(temperature=0.7, minibatch_size=4, reference_cache_bytes=0))
    assert without.reference_cache is None
    with_cache = PPOLearner(policy, learner_settings(temperature=0.7, minibatch_size=4, reference_cache_bytes=1 << 30))
    assert with_cache.reference_cache is policy.base.prompt_cache  # shared by the learners on this base
    plain = reference_logprobs(without, rollouts)
    cold = reference_logprobs(with_cache, rollouts)
    found_before = with_cache.reference_cache.tokens_found
    warm = reference_logprobs(with_cache, rollouts)
    # Each minibatch's prefixes of whole chunks are found; the rest of each prompt runs with its
    # response. The three prompts differ only after their shared story: one prefix each time.
    chunk = with_cache.reference_cache.chunk_tokens
    prefixes = [chunk_aligned_prefixes([list(r.prompt_ids) for r in rollouts[start : start + 4]], chunk)[0] for start in (0, 4)]
    assert [len(found) for found in prefixes] == [1, 1] and len(prefixes[0][0]) >= 2 * chunk
    assert with_cache.reference_cache.tokens_found - found_before == sum(len(found[0]) for found in prefixes)
    assert torch.allclose(cold, plain, atol=1e-5)
    assert torch.equal(warm, cold)
    # The reference is the base: the policy's adapters (perturbed above), which drew the
    # behaviour log-probs, do not reach it.
    behaviour = _pad_and_stack([batch.behaviour_logprobs for batch in batches(rollouts)])
    assert (cold - behaviour).abs().max() > 1e-3


def test_one_token_prompts_and_empty_ones(decoder: torch.nn.Module) -> None:
    encoded = BasePromptCache(1 << 20, chunk_tokens=CHUNK).encode(decoder, [[7], [9, 8]], torch.device("cpu"))
    assert encoded.attention_mask.tolist() == [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match="at least one token"):
        BasePromptCache(1 << 20).encode(decoder, [[]], torch.device("cpu"))


def test_chunk_aligned_prefixes_keep_whole_chunks_and_leave_the_rest_to_the_tail() -> None:
    prompts = [[1] * 10 + [2] * 5, [1] * 10 + [3] * 7, [4] * 3, [1] * 10 + [2] * 5, [1] * 12]
    prefixes, prefix_of = chunk_aligned_prefixes(prompts, chunk_tokens=5)
    # 15 tokens: three whole chunks, no tail; 17: three chunks and a tail of 2; a prompt shorter
    # than a chunk is its own prefix; equal prompts share one; 12 tokens: two chunks and a tail.
    assert prefixes == [[1] * 10 + [2] * 5, [1] * 10 + [3] * 5, [4] * 3, [1] * 10]
    assert prefix_of == [0, 1, 2, 0, 3]

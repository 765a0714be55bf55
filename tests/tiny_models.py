"""Tiny random Hugging Face models with a real tokenizer, built offline for tests.

    build_tiny_lm(tmp_path / "lm")             -> a LlamaForCausalLM directory
    build_tiny_reward_model(tmp_path / "rm")   -> a LlamaForSequenceClassification directory

Both directories load with `from_pretrained` exactly like a downloaded checkpoint, so the
code under test takes the same path it takes with real models. The tokenizer is a byte-level
BPE trained on a fixed text: every string encodes (no unknown tokens), it round-trips through
decode, and it carries a ChatML template (the one SmolLM2 uses) so `apply_chat_template` works.
The weights are random but seeded, so a directory built twice is identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

END_OF_TURN = "<|im_end|>"
START_OF_TURN = "<|im_start|>"
PADDING = "<|pad|>"

# ChatML, as SmolLM2-Instruct uses; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The merges are learnt from words the prompts use, so that common words (and the verdict
# words " Yes"/" No"/"CORRECT") become single tokens as they do in real vocabularies.
TRAINING_TEXT = """
Read the story and answer the question. Answer: A. Answer: B. Answer: C. Answer: D.
The answer is correct. The answer is incorrect. Verdict: CORRECT. Verdict: INCORRECT.
Yes No Yes No yes no. Is the answer right? Yes. Is the answer right? No.
Question: Who went to the market? Choices: (A) the baker (B) the farmer.
Once upon a time a small fox lived near the river and the old mill by the hill.
Critique the argued answer of the assistant and say whether it is supported by the story.
user assistant system
"""

VOCABULARY_SIZE = 384


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCABULARY_SIZE,
        special_tokens=[PADDING, START_OF_TURN, END_OF_TURN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END_OF_TURN,
        pad_token=PADDING,
        bos_token=None,
        additional_special_tokens=[START_OF_TURN],
        chat_template=CHAT_TEMPLATE,
    )


def _tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **extra: object) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **extra,
    )


def build_tiny_lm(directory: Path, seed: int = 0) -> Path:
    """Save a seeded random 2-layer LlamaForCausalLM and its tokenizer into `directory`."""
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_tiny_llama_config(tokenizer))
    # Random init gives near-uniform logits; a larger output scale makes sampling, greedy
    # decoding and log-probs distinguishable, which the tests rely on.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_reward_model(directory: Path, seed: int = 0) -> Path:
    """Save a seeded random 2-layer LlamaForSequenceClassification (one score) and tokenizer."""
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(_tiny_llama_config(tokenizer, num_labels=1))
    with torch.no_grad():
        model.score.weight.mul_(20.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory

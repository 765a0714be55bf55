"""End to end on the real embedded SmolLM2-135M-Instruct: GGUF conversion into an empty cache,
a reload from that cache, one short generation, and both referees scoring it.

Slow (about a minute on two CPU cores, most of it the one-off GGUF conversion):
    PYTHONPATH=. .venv/bin/pytest -m slow tests/test_players_embedded_slow.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from players import ModelPool, Player, PlayerConfig, parse_answer, policy_messages
from referees import Judge, JudgeConfig, RewardConfig, RewardModel

STORY = "Tom planted beans in May. In July the beans were tall, and Tom picked them for dinner."
QUESTION = "When did Tom plant the beans?"
CHOICES = ["in May", "in July"]


@pytest.mark.slow
def test_embedded_smollm2_plays_and_is_scored(model_cache_dir: Path) -> None:
    pool = ModelPool()
    assert pool.cache_dir == model_cache_dir
    policy = Player.create(pool, role="policy", config=PlayerConfig(max_new_tokens=24))
    cached = model_cache_dir / "embedded" / "SmolLM2-135M-Instruct"
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((cached / "config.json").read_text())  # fp32 now
    assert [entry.name for entry in cached.parent.iterdir()] == ["SmolLM2-135M-Instruct"]  # no staging left

    prompt = policy.render_prompt(policy_messages(STORY, QUESTION, CHOICES))
    [generation] = policy.generate([prompt], sample=False)
    assert 0 < len(generation.token_ids) <= 24
    assert generation.text and all(math.isfinite(lp) and lp <= 0 for lp in generation.logprobs)
    assert parse_answer(generation.text, CHOICES) in (0, 1, None)

    judge = Judge.create(pool, JudgeConfig())
    reward = RewardModel.create(pool, RewardConfig())
    assert judge.reader.base is policy.base and reward.base is policy.base and reward.kind == "lm-yes-no"
    [p_accept] = judge.p_accept([STORY], [QUESTION], [CHOICES], [generation.text], None)
    [score] = reward.score([QUESTION], [CHOICES], [generation.text])
    assert 0.0 < p_accept < 1.0 and math.isfinite(score)

    # A second start loads the cached checkpoint and plays identically.
    reloaded = Player.create(ModelPool(), role="policy", config=PlayerConfig(max_new_tokens=24))
    assert reloaded.base.load_seconds < policy.base.load_seconds
    assert reloaded.generate([prompt], sample=False)[0].token_ids == generation.token_ids
    with torch.inference_mode():
        ids = torch.tensor([generation.prompt_ids + generation.token_ids])
        assert torch.allclose(
            reloaded.model(input_ids=ids).logits, policy.model(input_ids=ids).logits, atol=1e-4
        )

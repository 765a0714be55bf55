"""Reward model and judge on tiny random models, checked against hand-run forward passes."""

from __future__ import annotations

import math
from pathlib import Path

import pydantic
import pytest
import torch

from players import ModelPool, Player, PlayerConfig
from referees import Judge, JudgeConfig, RewardConfig, RewardModel
from referees.reward import yes_no_messages
from referees.yes_no import single_token_ids

QUESTIONS = ["Who ran to the river?", "Who baked?", "Where did the fox live?"]
CHOICES = [["the fox", "the farmer"], ["the baker", "the miller"], ["by the hill", "in the mill"]]
ANSWERS = [
    "The story says the fox ran.\nAnswer: A",
    "Answer: B",
    "It lived by the old mill near the hill, which the story mentions twice.\nAnswer: A",
]
CRITIQUES = ["The story supports it.\nVerdict: CORRECT", "Verdict: INCORRECT", "Hmm."]
STORY = "Once upon a time a small fox lived near the river."


def last_token_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_auto_kind_follows_the_checkpoint(tiny_lm_dir: Path, tiny_reward_model_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    assert RewardModel.create(pool, RewardConfig(model=str(tiny_reward_model_dir))).kind == "sequence-classifier"
    assert RewardModel.create(pool, RewardConfig(model=str(tiny_lm_dir))).kind == "lm-yes-no"


def test_sequence_classifier_scores_the_chat_and_ignores_padding(tiny_reward_model_dir: Path, tmp_path: Path) -> None:
    reward = RewardModel.create(
        ModelPool(cache_dir=tmp_path), RewardConfig(model=str(tiny_reward_model_dir), kind="sequence-classifier")
    )
    batched = reward.score(QUESTIONS, CHOICES, ANSWERS)
    tokenizer, model = reward.base.tokenizer, reward.base.model
    for question, choices, answer, score in zip(QUESTIONS, CHOICES, ANSWERS, batched):
        chat = [
            {"role": "user", "content": f"Question: {question}\nA) {choices[0]}\nB) {choices[1]}"},
            {"role": "assistant", "content": answer},
        ]
        ids = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            alone = float(model(input_ids=torch.tensor([ids])).logits[0, 0])
        assert score == pytest.approx(alone, abs=1e-4)
    assert len(set(round(s, 4) for s in batched)) == len(batched)

    # A model whose pad id is also the texts' last token (pad = EOS is common) still scores
    # the last token, not the one before it.
    model.config.pad_token_id = tokenizer.encode("\n", add_special_tokens=False)[0]
    assert reward.score(QUESTIONS, CHOICES, ANSWERS) == pytest.approx(batched, abs=1e-4)


def test_lm_yes_no_reward_is_the_log_odds_of_yes(tiny_lm_dir: Path, tmp_path: Path) -> None:
    reward = RewardModel.create(ModelPool(cache_dir=tmp_path), RewardConfig(model=str(tiny_lm_dir), batch_size=2))
    tokenizer = reward.base.tokenizer
    yes, no = reward.reader.yes_ids, reward.reader.no_ids
    assert tokenizer.encode("Yes", add_special_tokens=False)[0] in yes
    assert tokenizer.encode(" Yes", add_special_tokens=False)[0] in yes
    assert tokenizer.encode(" No", add_special_tokens=False)[0] in no
    assert not set(yes) & set(no)

    scores = reward.score(QUESTIONS, CHOICES, ANSWERS)
    for question, choices, answer, score in zip(QUESTIONS, CHOICES, ANSWERS, scores):
        prompt = tokenizer.apply_chat_template(
            [
                {"role": "system", "content": "You rate responses to questions about a story."},
                {
                    "role": "user",
                    "content": f"Question: {question}\nA) {choices[0]}\nB) {choices[1]}\n\nResponse:\n{answer}\n\n"
                    "Is this response a good, well-argued and relevant answer to the question? Reply Yes or No.",
                },
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        logits = last_token_logits(reward.base.model, tokenizer(prompt, add_special_tokens=False)["input_ids"])
        expected = float(torch.logsumexp(logits[yes], 0) - torch.logsumexp(logits[no], 0))
        assert score == pytest.approx(expected, abs=1e-4)


def test_judge_p_accept_is_the_yes_share_at_one_forward_pass(tiny_lm_dir: Path, tmp_path: Path) -> None:
    judge = Judge.create(ModelPool(cache_dir=tmp_path), JudgeConfig(model=str(tiny_lm_dir), batch_size=2))
    stories = [STORY] * 3
    accepted = judge.p_accept(stories, QUESTIONS, CHOICES, ANSWERS, CRITIQUES)
    reader = judge.reader
    for i, p in enumerate(accepted):
        ids = judge.prompt_ids(STORY, QUESTIONS[i], CHOICES[i], ANSWERS[i], CRITIQUES[i])
        probabilities = torch.softmax(last_token_logits(judge.reader.base.model, ids), dim=-1)
        p_yes, p_no = float(probabilities[reader.yes_ids].sum()), float(probabilities[reader.no_ids].sum())
        assert p == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
        assert 0.0 < p < 1.0
    # Without critiques (rlhf mode) the prompt changes, and so does the probability.
    alone = judge.p_accept(stories, QUESTIONS, CHOICES, ANSWERS, None)
    assert all(not math.isclose(a, b, abs_tol=1e-7) for a, b in zip(alone, accepted))


def test_the_judge_sees_the_story_only_when_told(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    blind = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir)))
    seeing = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir), sees_story=True))
    tokenizer = blind.reader.base.tokenizer

    def shown(judge: Judge, critique: str | None) -> str:
        return tokenizer.decode(judge.prompt_ids(STORY, QUESTIONS[0], CHOICES[0], ANSWERS[0], critique))

    assert STORY not in shown(blind, CRITIQUES[0]) and STORY in shown(seeing, CRITIQUES[0])
    assert CRITIQUES[0] in shown(blind, CRITIQUES[0]) and CRITIQUES[0] not in shown(blind, None)
    assert ANSWERS[0] in shown(blind, None)
    with pytest.raises(ValueError, match="critiques"):
        blind.p_accept([STORY], QUESTIONS[:1], CHOICES[:1], ANSWERS[:1], CRITIQUES)


def test_referees_on_a_players_base_ignore_its_adapters(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    policy = Player.create(pool, role="policy", config=PlayerConfig(model=str(tiny_lm_dir)))
    judge = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir)))
    reward = RewardModel.create(pool, RewardConfig(model=str(tiny_lm_dir)))
    assert judge.reader.base is policy.base and reward.base is policy.base
    stories = [STORY] * 3
    p_before = judge.p_accept(stories, QUESTIONS, CHOICES, ANSWERS, CRITIQUES)
    r_before = reward.score(QUESTIONS, CHOICES, ANSWERS)

    # Move the policy's adapter far from zero: the policy changes, the referees must not.
    with torch.no_grad():
        for parameter in policy.trainable_parameters():
            parameter.add_(torch.randn_like(parameter))
    with policy._selected():
        policy_now = judge.p_accept(stories, QUESTIONS, CHOICES, ANSWERS, CRITIQUES)
        assert judge.p_accept(stories, QUESTIONS, CHOICES, ANSWERS, CRITIQUES) == pytest.approx(p_before, abs=1e-6)
        assert reward.score(QUESTIONS, CHOICES, ANSWERS) == pytest.approx(r_before, abs=1e-5)
    assert policy_now == pytest.approx(p_before, abs=1e-6)
    with torch.inference_mode(), policy._selected():
        ids = judge.prompt_ids(STORY, QUESTIONS[0], CHOICES[0], ANSWERS[0], CRITIQUES[0])
        adapted = policy.model(input_ids=torch.tensor([ids])).logits[0, -1]
    with policy.reference():
        frozen = last_token_logits(policy.model, ids)
    assert not torch.allclose(adapted, frozen, atol=1e-3)


def test_referee_configs_reject_unknown_keys_and_kinds() -> None:
    with pytest.raises(pydantic.ValidationError):
        RewardConfig(kind="pairwise")
    with pytest.raises(pydantic.ValidationError):
        JudgeConfig(sees_the_story=True)
    assert JudgeConfig().sees_story is False and RewardConfig().normalization == "tanh"


def test_single_token_spellings_skip_multi_token_ones(tiny_lm_dir: Path, tmp_path: Path) -> None:
    tokenizer = ModelPool(cache_dir=tmp_path).causal_lm(str(tiny_lm_dir), "cpu", torch.float32).tokenizer
    ids = single_token_ids(tokenizer, ["Yes", "Yesterday-ish"])
    assert ids == tokenizer.encode("Yes", add_special_tokens=False)


def test_a_broken_judge_raises_instead_of_answering_one_half(tiny_lm_dir: Path, tmp_path: Path) -> None:
    judge = Judge.create(ModelPool(cache_dir=tmp_path), JudgeConfig(model=str(tiny_lm_dir)))
    with torch.no_grad():
        judge.reader.base.model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="non-finite"):
        judge.p_accept([STORY], QUESTIONS[:1], CHOICES[:1], ANSWERS[:1], None)


def test_referees_prefill_a_states_shared_opening_once_and_score_as_if_unshared(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """One state's answers (the n samples, a window's rounds): the prompts share the
    instructions, question and choices, which run once (players/packing.py); each score is
    still that of its prompt's own forward pass."""
    pool = ModelPool(cache_dir=tmp_path)
    judge = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir), batch_size=8, sees_story=True))
    reward = RewardModel.create(pool, RewardConfig(model=str(tiny_lm_dir), batch_size=8))
    story = " ".join([STORY] * 6)
    question, choices = QUESTIONS[0], CHOICES[0]
    answers = [ANSWERS[0], "Answer: B", "The farmer, since he ran after the fox.\nAnswer: B", ANSWERS[0]]
    critiques = [CRITIQUES[0], CRITIQUES[1], CRITIQUES[2], CRITIQUES[1]]
    prefill_widths: list[tuple[int, int]] = []
    hook = judge.reader.base.model.get_input_embeddings().register_forward_pre_hook(
        lambda _module, args: prefill_widths.append(tuple(args[0].shape))
    )
    try:
        accepted = judge.p_accept([story] * 4, [question] * 4, [choices] * 4, answers, critiques)
        judge_passes, prefill_widths[:] = list(prefill_widths), []
        scores = reward.score([question] * 4, [choices] * 4, answers)
        reward_passes = list(prefill_widths)
    finally:
        hook.remove()
    # Fewer prefixes than prompts (the judge's: one, story and all; the reward model's prompts
    # carry no story, and its grouping is the cost rule's), then the 4 tails.
    assert [rows for rows, _ in judge_passes] == [1, 4]
    assert len(reward_passes) == 2 and reward_passes[0][0] < 4 and reward_passes[1][0] == 4
    for answer, critique, p, score in zip(answers, critiques, accepted, scores, strict=True):
        ids = judge.prompt_ids(story, question, choices, answer, critique)
        probabilities = torch.softmax(last_token_logits(judge.reader.base.model, ids), dim=-1)
        p_yes, p_no = float(probabilities[judge.reader.yes_ids].sum()), float(probabilities[judge.reader.no_ids].sum())
        assert p == pytest.approx(p_yes / (p_yes + p_no), abs=1e-5)
        logits = last_token_logits(reward.base.model, reward.reader.render(yes_no_messages(question, choices, answer)))
        expected = float(torch.logsumexp(logits[reward.reader.yes_ids], 0) - torch.logsumexp(logits[reward.reader.no_ids], 0))
        assert score == pytest.approx(expected, abs=1e-4)

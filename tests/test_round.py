"""A batch of rounds on tiny random models: every recorded number checks against the parts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.config import GameConfig
from engine.data import State
from engine.round import RoundSettings, ScheduledRound, Table, play_rounds
from players import ModelPool, Player, PlayerConfig, parse_answer, parse_verdict
from referees import Judge, JudgeConfig, RewardConfig, RewardModel
from tests.test_players_generation import forward_logprobs

STATES = [
    State("fox-1", "A fox lived near the river by the old mill.", "Where did the fox live?", ("near the river", "on the hill"), 0),
    State("baker-2", "The baker went to the market on Monday.", "Who went to the market?", ("the farmer", "the baker"), 1),
    State("hen-3", "Once upon a time a small hen sang.", "What sang?", ("a hen", "a fox"), 0),
]
GAME = GameConfig(w_reward=0.5, w_judge=2.0, alpha=0.6, unparsed_penalty=0.75)


@pytest.fixture(scope="module")
def table(tiny_lm_dir: Path, tiny_reward_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Table:
    pool = ModelPool(cache_dir=tmp_path_factory.mktemp("cache"))
    policy = Player.create(pool, role="policy", config=PlayerConfig(model=str(tiny_lm_dir), max_new_tokens=10, temperature=0.8))
    monitor = Player.create(pool, role="monitor", config=PlayerConfig(model=str(tiny_lm_dir), max_new_tokens=10))
    reward = RewardModel.create(pool, config=RewardConfig(model=str(tiny_reward_model_dir)))
    judge = Judge.create(pool, config=JudgeConfig(model=str(tiny_lm_dir)))
    return Table(policy=policy, monitor=monitor, reward=reward, judge=judge)


def _settings(phase: str = "train", sample: bool = True) -> RoundSettings:
    return RoundSettings(game=GAME, phase=phase, lambda_value=2.5, policy_version=3, monitor_version=7,  # type: ignore[arg-type]
                         sample=sample, seed=123)


def _scheduled() -> list[ScheduledRound]:
    return [ScheduledRound(round_id=10 + i, window=4, state=state, sample_index=0) for i, state in enumerate(STATES)]


def test_rounds_record_every_part_and_payoffs_match_hand_computation(table: Table) -> None:
    rounds = play_rounds(table, _scheduled(), _settings())
    assert [r.round_id for r in rounds] == [10, 11, 12]
    texts = [r.policy_output for r in rounds]
    critiques = [r.monitor_output for r in rounds]
    # the referees, asked again, give exactly what was recorded (frozen and deterministic)
    questions, choices = [s.question for s in STATES], [list(s.choices) for s in STATES]
    assert table.reward.score(questions, choices, texts) == pytest.approx([r.reward_policy for r in rounds], abs=1e-5)
    assert table.reward.score(questions, choices, critiques) == pytest.approx([r.reward_monitor for r in rounds], abs=1e-5)
    p_accepts = table.judge.p_accept([s.story for s in STATES], questions, choices, texts, critiques)
    assert p_accepts == pytest.approx([r.p_accept for r in rounds], abs=1e-5)

    for r, state in zip(rounds, STATES):
        assert (r.state_id, r.correct_index, r.choices, r.window, r.phase) == (
            state.state_id, state.correct_index, list(state.choices), 4, "train")
        assert (r.lambda_value, r.policy_version, r.monitor_version) == (2.5, 3, 7)
        assert r.policy_answer == parse_answer(r.policy_output, r.choices)
        assert r.monitor_says_correct == parse_verdict(r.monitor_output or "")
        expected_truth = "unparsed" if r.policy_answer is None else ("correct" if r.policy_answer == state.correct_index else "wrong")
        assert r.truth == expected_truth
        assert r.judge_accepts == (r.p_accept >= 0.5)
        # R = w_reward·tanh(r(O)) + w_judge·(2p − 1) − penalty if unparsed
        expected_R = 0.5 * math.tanh(r.reward_policy) + 2.0 * (2 * r.p_accept - 1) - (0.75 if r.policy_answer is None else 0.0)
        assert r.combined_reward == pytest.approx(expected_R, abs=1e-12)
        # f = α·d + (1 − α)·(−tanh r(O′)), d = 1 unless the verdict matches the truth
        agrees = r.monitor_says_correct is not None and r.monitor_says_correct == (r.truth == "correct")
        expected_f = 0.6 * (0.0 if agrees else 1.0) + 0.4 * -math.tanh(r.reward_monitor or 0.0)
        assert r.fidelity_penalty == pytest.approx(expected_f, abs=1e-12)
        assert len(r.policy_token_ids) == len(r.policy_logprobs) > 0
        assert r.monitor_token_ids is not None and r.monitor_logprobs is not None
        assert len(r.monitor_token_ids) == len(r.monitor_logprobs) > 0
        # handed to the log as arrays in the stored types, so append packs each in one copy
        for ids in (r.policy_prompt_ids, r.policy_token_ids, r.monitor_prompt_ids, r.monitor_token_ids):
            assert isinstance(ids, np.ndarray) and ids.dtype == np.int32
        for logprobs in (r.policy_logprobs, r.monitor_logprobs):
            assert isinstance(logprobs, np.ndarray) and logprobs.dtype == np.float64
        assert set(r.timings) == {"policy", "monitor", "reward", "judge", "total"}
        assert all(value >= 0 for value in r.timings.values())


def test_recorded_logprobs_equal_a_fresh_forward_pass(table: Table) -> None:
    rounds = play_rounds(table, _scheduled(), _settings())
    for player, prompts, responses, logprobs in (
        (table.policy, [r.policy_prompt_ids for r in rounds], [r.policy_token_ids for r in rounds], [r.policy_logprobs for r in rounds]),
        (table.monitor, [r.monitor_prompt_ids for r in rounds], [r.monitor_token_ids for r in rounds], [r.monitor_logprobs for r in rounds]),
    ):
        assert player is not None
        for prompt, response, recorded in zip(prompts, responses, logprobs, strict=True):
            fresh = forward_logprobs(player, list(prompt), list(response))
            assert fresh == pytest.approx(list(recorded), abs=1e-4)


def test_same_seed_same_rounds_and_greedy_evaluation_ignores_the_seed(table: Table) -> None:
    first = play_rounds(table, _scheduled(), _settings())
    again = play_rounds(table, _scheduled(), _settings())
    assert [r.policy_token_ids.tolist() for r in first] == [r.policy_token_ids.tolist() for r in again]
    greedy = play_rounds(table, _scheduled(), _settings(phase="eval", sample=False))
    other_seed = play_rounds(
        table, _scheduled(),
        RoundSettings(game=GAME, phase="eval", lambda_value=0.0, policy_version=0, monitor_version=0, sample=False, seed=9),
    )
    assert [r.policy_token_ids.tolist() for r in greedy] == [r.policy_token_ids.tolist() for r in other_seed]


def test_rlhf_rounds_have_no_monitor_and_the_judge_sees_only_O(table: Table) -> None:
    rlhf_table = Table(policy=table.policy, monitor=None, reward=table.reward, judge=table.judge)
    rounds = play_rounds(rlhf_table, _scheduled(), _settings())
    for r in rounds:
        assert r.monitor_output is None and r.monitor_token_ids is None and r.monitor_says_correct is None
        assert r.reward_monitor is None and r.fidelity_penalty is None
        assert "monitor" not in r.timings
    p_alone = table.judge.p_accept(
        [s.story for s in STATES], [s.question for s in STATES], [list(s.choices) for s in STATES],
        [r.policy_output for r in rounds], None,
    )
    assert p_alone == pytest.approx([r.p_accept for r in rounds], abs=1e-5)


def test_each_round_records_its_quotes_checked_against_its_story(table: Table) -> None:
    import dataclasses

    from engine.round import answer_and_critique, judged_rounds

    answered = answer_and_critique(table, _scheduled(), _settings())
    answers = ["Answer: A, because <quote>A fox lived near the river</quote> and <quote>the fox could fly</quote>.",
               "Answer: B", "Answer: A, <quote>a small hen sang</quote>"]
    critiques = ["Verdict: CORRECT, <quote>by the old mill</quote>", "Verdict: INCORRECT <quote>on Tuesday</quote>",
                 "Verdict: CORRECT"]
    answered = dataclasses.replace(
        answered,
        answers=[dataclasses.replace(g, text=text) for g, text in zip(answered.answers, answers)],
        critiques=[dataclasses.replace(g, text=text) for g, text in zip(answered.critiques or [], critiques)],
    )
    rounds = judged_rounds(table, answered, _settings(), with_critique=True)
    assert [(r.policy_quotes, r.policy_quotes_verified) for r in rounds] == [(2, 1), (0, 0), (1, 1)]
    assert [(r.monitor_quotes, r.monitor_quotes_verified) for r in rounds] == [(1, 1), (1, 0), (0, 0)]
    assert "<quote unverified>the fox could fly</quote>" in rounds[0].judge_prompt  # what the judge read
    # the deployment protocol carries no critique, so no monitor quotes either
    deployed = judged_rounds(table, answered, _settings("eval", sample=False), with_critique=False, protocol="deployment")
    assert [(r.policy_quotes, r.monitor_quotes, r.monitor_quotes_verified) for r in deployed] == [
        (2, None, None), (0, None, None), (1, None, None)]

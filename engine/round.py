"""One batch of rounds of the game (GAME.md §1), played and turned into RoundPlayed events.

    rounds = play_rounds(table, scheduled, settings)

Each round is the five steps of GAME.md §1, batched across the rounds at every step:

    1. the policy writes O (an argued answer), parsed to a choice letter
    2. the monitor writes O′ (a critique of O), parsed to CORRECT/INCORRECT   [minmax only]
    3. the frozen reward model scores O (and O′)
    4. the frozen judge gives p_accept from O and O′ (O alone in rlhf mode)
    5. the truth: O's parsed answer against the correct index

then R and f (engine.payoffs). Nothing is written here: the caller appends the events, so a
round exists only once it is in the log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import GameConfig
from engine.data import State
from engine.payoffs import combined_reward, fidelity_penalty, truth_of
from players import Player, monitor_messages, parse_answer, parse_verdict, policy_messages
from referees import Judge, RewardModel
from storage.events import Phase, RoundPlayed


@dataclass(frozen=True)
class Table:
    """Everyone at the table: two players (no monitor in rlhf mode) and two frozen referees."""

    policy: Player
    monitor: Player | None
    reward: RewardModel
    judge: Judge


@dataclass(frozen=True)
class ScheduledRound:
    """A round to play: which state, which sample of it, and where it sits in the run."""

    round_id: int
    window: int  # -1 for evaluation rounds
    state: State
    sample_index: int


@dataclass(frozen=True)
class RoundSettings:
    """What every round of one batch shares."""

    game: GameConfig
    phase: Phase
    lambda_value: float  # λ in force while this batch is played
    policy_version: int
    monitor_version: int
    sample: bool  # False: greedy decoding (evaluation)
    seed: int  # generation seed of this batch (the monitor uses seed + 1)


def play_rounds(table: Table, scheduled: Sequence[ScheduledRound], settings: RoundSettings) -> list[RoundPlayed]:
    if not scheduled:
        return []
    states = [item.state for item in scheduled]
    questions = [state.question for state in states]
    choices = [list(state.choices) for state in states]
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    # 1. The policy answers.
    clock = time.perf_counter()
    policy_prompts = [
        table.policy.render_prompt(policy_messages(state.story, state.question, list(state.choices)))
        for state in states
    ]
    answers = table.policy.generate(policy_prompts, sample=settings.sample, seed=settings.seed)
    parsed_answers = [parse_answer(answer.text, len(state.choices)) for answer, state in zip(answers, states)]
    seconds["policy"] = time.perf_counter() - clock

    # 2. The monitor critiques the answer (minmax mode only).
    critiques = None
    verdicts: list[bool | None] = [None] * len(states)
    monitor_prompts: list[str] | None = None
    if table.monitor is not None:
        clock = time.perf_counter()
        monitor_prompts = [
            table.monitor.render_prompt(monitor_messages(state.story, state.question, list(state.choices), answer.text))
            for state, answer in zip(states, answers)
        ]
        critiques = table.monitor.generate(monitor_prompts, sample=settings.sample, seed=settings.seed + 1)
        verdicts = [parse_verdict(critique.text) for critique in critiques]
        seconds["monitor"] = time.perf_counter() - clock

    # 3. The reward model scores O and O′.
    clock = time.perf_counter()
    policy_scores = table.reward.score(questions, choices, [answer.text for answer in answers])
    monitor_scores: list[float | None] = [None] * len(states)
    if critiques is not None:
        monitor_scores = list(table.reward.score(questions, choices, [critique.text for critique in critiques]))
    seconds["reward"] = time.perf_counter() - clock

    # 4. The judge: p_accept for O's answer, having read O′ (O alone in rlhf mode). The judge
    #    itself drops the story unless its config says sees_story.
    clock = time.perf_counter()
    p_accepts = table.judge.p_accept(
        [state.story for state in states],
        questions,
        choices,
        [answer.text for answer in answers],
        [critique.text for critique in critiques] if critiques is not None else None,
    )
    seconds["judge"] = time.perf_counter() - clock
    seconds["total"] = time.perf_counter() - started
    # Steps run batched, so each round carries its share of the batch's time per step.
    per_round = {step: value / len(states) for step, value in seconds.items()}

    # 5. Truth, payoffs and the record. Ids and log-probs go to the log as numpy arrays,
    # which it packs in one copy each (a list costs it ~13 ns per number).
    played = []
    for row, item in enumerate(scheduled):
        state, answer, answer_index = item.state, answers[row], parsed_answers[row]
        truth = truth_of(answer_index, state.correct_index)
        p_accept = float(p_accepts[row])
        reward_policy = float(policy_scores[row])
        critique = critiques[row] if critiques is not None else None
        reward_monitor = monitor_scores[row]
        penalty = None
        if critique is not None:
            assert reward_monitor is not None
            penalty = fidelity_penalty(
                monitor_says_correct=verdicts[row], truth=truth, reward_monitor=reward_monitor, alpha=settings.game.alpha
            )
        played.append(
            RoundPlayed(
                round_id=item.round_id,
                phase=settings.phase,
                window=item.window,
                state_id=state.state_id,
                sample_index=item.sample_index,
                story=state.story,
                question=state.question,
                choices=list(state.choices),
                correct_index=state.correct_index,
                policy_prompt=policy_prompts[row],
                policy_prompt_ids=np.asarray(answer.prompt_ids, dtype=np.int32),
                policy_output=answer.text,
                policy_token_ids=np.asarray(answer.token_ids, dtype=np.int32),
                policy_logprobs=np.asarray(answer.logprobs, dtype=np.float64),
                policy_answer=answer_index,
                monitor_prompt=monitor_prompts[row] if monitor_prompts is not None else None,
                monitor_prompt_ids=np.asarray(critique.prompt_ids, dtype=np.int32) if critique is not None else None,
                monitor_output=critique.text if critique is not None else None,
                monitor_token_ids=np.asarray(critique.token_ids, dtype=np.int32) if critique is not None else None,
                monitor_logprobs=np.asarray(critique.logprobs, dtype=np.float64) if critique is not None else None,
                monitor_says_correct=verdicts[row],
                reward_policy=reward_policy,
                reward_monitor=float(reward_monitor) if reward_monitor is not None else None,
                p_accept=p_accept,
                judge_accepts=p_accept >= 0.5,
                truth=truth,
                combined_reward=combined_reward(
                    reward_policy=reward_policy,
                    p_accept=p_accept,
                    answer_parsed=answer_index is not None,
                    w_reward=settings.game.w_reward,
                    w_judge=settings.game.w_judge,
                    reward_norm=settings.game.reward_norm,
                    unparsed_penalty=settings.game.unparsed_penalty,
                ),
                fidelity_penalty=penalty,
                lambda_value=settings.lambda_value,
                policy_version=settings.policy_version,
                monitor_version=settings.monitor_version,
                timings=per_round,
            )
        )
    return played

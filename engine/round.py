"""One batch of rounds of the game (GAME.md §1), played and turned into RoundPlayed events.

    rounds = play_rounds(table, scheduled, settings)           # training rounds

    answered = answer_and_critique(table, scheduled, settings) # evaluation: steps 1-3 once,
    judged_rounds(table, answered, settings, with_critique=False, protocol="deployment")
    judged_rounds(table, answered, settings, with_critique=True, protocol="monitored")

Each round is the five steps of GAME.md §1, batched across the rounds at every step:

    1. the policy writes O (an argued answer), parsed to a choice letter
    2. the monitor writes O′ (a critique of O), parsed to CORRECT/INCORRECT   [minmax only]
    3. the frozen reward model scores O (and O′)
    4. the frozen judge gives p_accept from O and O′ (O alone in rlhf mode and in deployment
       evaluation); the exact text it scored is recorded as judge_prompt
    5. the truth: O's parsed answer against the correct index

then R and f (engine.payoffs). Nothing is written here: the caller appends the events, so a
round exists only once it is in the log.

Step 1 can also run ahead of the others: `draw_answers` answers the rounds of several windows
at once (the game draws a whole policy period, which the policy plays unchanged), and each
window then passes its slice of them to `play_rounds(..., drawn=...)`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import GameConfig
from engine.data import State
from engine.payoffs import combined_reward, fidelity_penalty, truth_of
from players import Generation, Player, monitor_messages, parse_answer, parse_verdict, policy_messages
from referees import Judge, RewardModel
from referees.quotes import check_quotes
from storage.events import Phase, Protocol, RoundPlayed


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


def play_rounds(
    table: Table, scheduled: Sequence[ScheduledRound], settings: RoundSettings, drawn: DrawnAnswers | None = None
) -> list[RoundPlayed]:
    """Training rounds: the judge reads O and, in minmax mode, O′. `drawn`: the policy's
    answers to exactly these rounds' states, drawn beforehand (None: drawn here)."""
    if not scheduled:
        return []
    answered = answer_and_critique(table, scheduled, settings, drawn)
    return judged_rounds(table, answered, settings, with_critique=answered.critiques is not None)


@dataclass(frozen=True)
class DrawnAnswers:
    """Step 1 for a list of states: the policy's prompts, answers and parsed choices."""

    policy_prompts: list[str]
    answers: list[Generation]
    parsed_answers: list[int | None]
    seconds: float  # the generation's wall time

    @staticmethod
    def joined(parts: Sequence[DrawnAnswers]) -> DrawnAnswers:
        """Several draws as one, in order."""
        return DrawnAnswers(
            policy_prompts=[prompt for part in parts for prompt in part.policy_prompts],
            answers=[answer for part in parts for answer in part.answers],
            parsed_answers=[parsed for part in parts for parsed in part.parsed_answers],
            seconds=sum(part.seconds for part in parts),
        )

    def rows(self, start: int, stop: int) -> DrawnAnswers:
        """The answers of rows start..stop-1, with their share of the time."""
        return DrawnAnswers(
            policy_prompts=self.policy_prompts[start:stop],
            answers=self.answers[start:stop],
            parsed_answers=self.parsed_answers[start:stop],
            seconds=self.seconds * (stop - start) / len(self.answers),
        )


def draw_answers(policy: Player, states: Sequence[State], *, sample: bool, seed: int) -> DrawnAnswers:
    """Step 1: the policy answers every state, in one batch."""
    clock = time.perf_counter()
    policy_prompts = [
        policy.render_prompt(policy_messages(state.story, state.question, list(state.choices))) for state in states
    ]
    answers = policy.generate(policy_prompts, sample=sample, seed=seed)
    parsed_answers = [parse_answer(answer.text, list(state.choices)) for answer, state in zip(answers, states)]
    return DrawnAnswers(policy_prompts, answers, parsed_answers, seconds=time.perf_counter() - clock)


@dataclass(frozen=True)
class Answered:
    """Steps 1-3 of a batch: what the judge is about to read, and what it cost."""

    scheduled: Sequence[ScheduledRound]
    policy_prompts: list[str]
    answers: list[Generation]
    parsed_answers: list[int | None]
    monitor_prompts: list[str] | None  # None: no monitor at the table
    critiques: list[Generation] | None
    verdicts: list[bool | None]
    policy_scores: list[float]
    monitor_scores: list[float | None]
    seconds: dict[str, float]  # per step, for the whole batch


def answer_and_critique(
    table: Table, scheduled: Sequence[ScheduledRound], settings: RoundSettings, drawn: DrawnAnswers | None = None
) -> Answered:
    """Steps 1-3: the policy answers (unless `drawn` holds its answers already), the monitor
    critiques, the reward model scores both."""
    states = [item.state for item in scheduled]
    questions = [state.question for state in states]
    choices = [list(state.choices) for state in states]
    seconds: dict[str, float] = {}

    # 1. The policy answers.
    if drawn is None:
        drawn = draw_answers(table.policy, states, sample=settings.sample, seed=settings.seed)
    elif len(drawn.answers) != len(states):
        raise ValueError(f"{len(drawn.answers)} answers drawn for {len(states)} rounds")
    policy_prompts, answers, parsed_answers = drawn.policy_prompts, drawn.answers, drawn.parsed_answers
    seconds["policy"] = drawn.seconds

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
    policy_scores = list(table.reward.score(questions, choices, [answer.text for answer in answers]))
    monitor_scores: list[float | None] = [None] * len(states)
    if critiques is not None:
        monitor_scores = list(table.reward.score(questions, choices, [critique.text for critique in critiques]))
    seconds["reward"] = time.perf_counter() - clock
    return Answered(
        scheduled=scheduled,
        policy_prompts=policy_prompts,
        answers=answers,
        parsed_answers=parsed_answers,
        monitor_prompts=monitor_prompts,
        critiques=critiques,
        verdicts=verdicts,
        policy_scores=policy_scores,
        monitor_scores=monitor_scores,
        seconds=seconds,
    )


def judged_rounds(
    table: Table,
    answered: Answered,
    settings: RoundSettings,
    *,
    with_critique: bool,
    protocol: Protocol | None = None,
    round_ids: Sequence[int] | None = None,
) -> list[RoundPlayed]:
    """Steps 4-5: the judge scores, the truth is read, and each round becomes a RoundPlayed.

    with_critique=False is the deployment protocol: the judge reads question, choices and O
    only, and the round carries no monitor fields (shaped like an rlhf round), so a critique
    that was generated can reach neither the judge nor the record. round_ids replace the
    scheduled ids (one answer judged twice is two rounds with ids of their own).
    """
    scheduled = answered.scheduled
    if with_critique and answered.critiques is None:
        raise ValueError("with_critique needs a monitor at the table")
    critiques = answered.critiques if with_critique else None
    states = [item.state for item in scheduled]
    answers = answered.answers

    # 4. The judge: p_accept for O's answer, having read O′ only when with_critique. The
    #    judge itself drops the story unless its config says sees_story.
    clock = time.perf_counter()
    judge_prompts = table.judge.prompts(
        [state.story for state in states],
        [state.question for state in states],
        [list(state.choices) for state in states],
        [answer.text for answer in answers],
        [critique.text for critique in critiques] if critiques is not None else None,
    )
    p_accepts = table.judge.p_accept_of(judge_prompts, [answer.text for answer in answers])
    seconds = {step: value for step, value in answered.seconds.items() if step != "monitor" or critiques is not None}
    seconds["judge"] = time.perf_counter() - clock
    seconds["total"] = sum(seconds.values())
    # Steps run batched, so each round carries its share of the batch's time per step.
    per_round = {step: value / len(states) for step, value in seconds.items()}

    # 5. Truth, payoffs and the record. Ids and log-probs go to the log as numpy arrays,
    # which it packs in one copy each (a list costs it ~13 ns per number).
    played = []
    for row, item in enumerate(scheduled):
        state, answer, answer_index = item.state, answers[row], answered.parsed_answers[row]
        truth = truth_of(answer_index, state.correct_index)
        p_accept = float(p_accepts[row])
        reward_policy = float(answered.policy_scores[row])
        critique = critiques[row] if critiques is not None else None
        reward_monitor = answered.monitor_scores[row] if critique is not None else None
        verdict = answered.verdicts[row] if critique is not None else None
        monitor_prompt = answered.monitor_prompts[row] if critique is not None and answered.monitor_prompts else None
        penalty = None
        if critique is not None:
            assert reward_monitor is not None
            penalty = fidelity_penalty(
                monitor_says_correct=verdict, truth=truth, reward_monitor=reward_monitor, alpha=settings.game.alpha
            )
        policy_quotes = check_quotes(answer.text, state.story)
        monitor_quotes = check_quotes(critique.text, state.story) if critique is not None else None
        played.append(
            RoundPlayed(
                round_id=item.round_id if round_ids is None else round_ids[row],
                phase=settings.phase,
                window=item.window,
                state_id=state.state_id,
                sample_index=item.sample_index,
                story=state.story,
                question=state.question,
                choices=list(state.choices),
                correct_index=state.correct_index,
                policy_prompt=answered.policy_prompts[row],
                policy_prompt_ids=np.asarray(answer.prompt_ids, dtype=np.int32),
                policy_output=answer.text,
                policy_token_ids=np.asarray(answer.token_ids, dtype=np.int32),
                policy_logprobs=np.asarray(answer.logprobs, dtype=np.float64),
                policy_answer=answer_index,
                monitor_prompt=monitor_prompt,
                monitor_prompt_ids=np.asarray(critique.prompt_ids, dtype=np.int32) if critique is not None else None,
                monitor_output=critique.text if critique is not None else None,
                monitor_token_ids=np.asarray(critique.token_ids, dtype=np.int32) if critique is not None else None,
                monitor_logprobs=np.asarray(critique.logprobs, dtype=np.float64) if critique is not None else None,
                monitor_says_correct=verdict,
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
                protocol=protocol,
                judge_prompt=judge_prompts[row],
                policy_quotes=len(policy_quotes),
                policy_quotes_verified=sum(quote.verified for quote in policy_quotes),
                monitor_quotes=len(monitor_quotes) if monitor_quotes is not None else None,
                monitor_quotes_verified=sum(quote.verified for quote in monitor_quotes) if monitor_quotes is not None else None,
            )
        )
    return played

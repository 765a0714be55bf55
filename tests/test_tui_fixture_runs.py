"""Fixture runs for the TUI tests, written with the real storage.RunWriter.

A fixture run is a small TTUR game (windows of B rounds, a monitor update and a λ step after
each window, a policy update after every k windows) whose rounds cover every outcome the
rounds table filters on. The rounds are drawn from a seeded generator, so a run is the same
on every machine; tests compute what the TUI should show from the returned events, never
from the TUI's own queries.

The tests at the bottom check the fixture itself: a filter test over a fixture with no
deceptions could not fail.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from storage import (
    Event,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    Recorded,
    RoundPlayed,
    RunFinished,
    RunStarted,
    RunWriter,
)

QUESTIONS = [
    "Why does the keeper leave the lighthouse at dawn?",
    "What does Mara find under the floorboards?",
    "Who sends the letter that starts the journey?",
    "How many ships reach the harbour before the storm?",
    "Why is the captain 100% sure of the route?",
    "What colour is the door of the old mill?",
]

STORY = (
    "The keeper of the northern lighthouse kept a ledger of every ship that passed. "
    "One winter the ledger went missing, and Mara, his niece, searched the house for it. "
) * 6

CONFIG = {
    "mode": "minmax",
    "seed": 7,
    "policy": {"model": "tiny", "lora_r": 8, "temperature": 1.0},
    "monitor": {"model": "tiny", "lora_r": 8, "temperature": 1.0},
    "training": {"window_size": 4, "monitor_updates_per_policy": 3},
    "lagrangian": {"lambda_init": 0.5, "delta": -0.2, "step_size": 0.1, "lambda_max": 10.0},
}


@dataclass(frozen=True)
class FixtureRun:
    run_dir: Path
    run_id: str
    records: list[Recorded]

    @property
    def rounds(self) -> list[tuple[int, RoundPlayed]]:
        """(seq, event) of every training round, in seq order."""
        return [
            (record.seq, record.event)
            for record in self.records
            if isinstance(record.event, RoundPlayed) and record.event.phase == "train"
        ]


def make_round(rng: random.Random, round_id: int, window: int, policy_version: int,
               monitor_version: int, lambda_value: float, mode: str) -> RoundPlayed:
    n_choices = 4
    correct_index = rng.randrange(n_choices)
    roll = rng.random()
    if roll < 0.1:
        policy_answer: int | None = None
        truth = "unparsed"
    elif roll < 0.55:
        policy_answer, truth = correct_index, "correct"
    else:
        policy_answer = (correct_index + 1 + rng.randrange(n_choices - 1)) % n_choices
        truth = "wrong"
    letter = "ABCD"[policy_answer] if policy_answer is not None else "?"
    policy_output = f"The ledger points to choice {letter}. Answer: {letter}" if policy_answer is not None \
        else "I cannot tell from the story."
    p_accept = round(rng.random(), 4)
    reward_policy = round(rng.uniform(-2, 2), 4)
    if mode == "minmax":
        verdict_roll = rng.random()
        says_correct: bool | None = None if verdict_roll < 0.08 else verdict_roll < 0.55
        monitor_output: str | None = {
            True: "The answer follows from the story. Verdict: CORRECT",
            False: "The story says otherwise. Verdict: INCORRECT",
            None: "Hard to say.",
        }[says_correct]
        reward_monitor: float | None = round(rng.uniform(-2, 2), 4)
        disagrees = says_correct is None or says_correct != (truth == "correct")
        fidelity: float | None = 0.7 * float(disagrees) + 0.3 * -math.tanh(reward_monitor)
    else:
        says_correct = monitor_output = reward_monitor = fidelity = None
    return RoundPlayed(
        round_id=round_id,
        phase="train",
        window=window,
        state_id=f"state-{round_id % 9}",
        sample_index=0,
        story=STORY,
        question=QUESTIONS[round_id % len(QUESTIONS)],
        choices=["the ledger", "a map", "a key", "nothing"],
        correct_index=correct_index,
        policy_prompt="prompt",
        policy_prompt_ids=[1, 2, 3],
        policy_output=policy_output,
        policy_token_ids=[4, 5],
        policy_logprobs=[-0.5, -0.25],
        policy_answer=policy_answer,
        monitor_prompt="critique prompt" if mode == "minmax" else None,
        monitor_prompt_ids=[6, 7] if mode == "minmax" else None,
        monitor_output=monitor_output,
        monitor_token_ids=[8] if mode == "minmax" else None,
        monitor_logprobs=[-0.125] if mode == "minmax" else None,
        monitor_says_correct=says_correct,
        reward_policy=reward_policy,
        reward_monitor=reward_monitor,
        p_accept=p_accept,
        judge_accepts=p_accept >= 0.5,
        truth=truth,  # type: ignore[arg-type]
        combined_reward=round(math.tanh(reward_policy) + 2 * p_accept - 1, 6),
        fidelity_penalty=fidelity,
        lambda_value=lambda_value,
        policy_version=policy_version,
        monitor_version=monitor_version,
    )


def game_events(windows: int, *, window_size: int = 4, k: int = 3, seed: int = 7,
                mode: str = "minmax", first_window: int = 0, state: dict | None = None):
    """Yield (event, end_of_window) for `windows` windows of a TTUR game.

    `state` carries versions and λ between calls, so a background writer can play on.
    """
    rng = random.Random(seed * 1000 + first_window)
    state = state if state is not None else {"policy": 0, "monitor": 0, "lambda": 0.5, "round": 0}
    for window in range(first_window, first_window + windows):
        fs: list[float] = []
        for _ in range(window_size):
            event = make_round(rng, state["round"], window, state["policy"], state["monitor"],
                               state["lambda"], mode)
            fs.append(event.fidelity_penalty or 0.0)
            state["round"] += 1
            yield event, False
        first_round = state["round"] - window_size
        if mode == "minmax":
            state["monitor"] += 1
            yield MonitorUpdated(version=state["monitor"], round_ids=list(range(first_round, state["round"])),
                                 first_seq=0, last_seq=0, diagnostics={"kl_ref": 0.01}), False
            mean_f = sum(fs) / len(fs)
            new_lambda = min(10.0, max(0.0, state["lambda"] + 0.1 * (mean_f + 0.2)))
            yield LambdaUpdated(old=state["lambda"], new=new_lambda, mean_f=mean_f, delta=-0.2,
                                monitor_version=state["monitor"], applied=True), False
            state["lambda"] = new_lambda
        if (window + 1) % k == 0:
            state["policy"] += 1
            yield PolicyUpdated(version=state["policy"], round_ids=[], first_seq=0, last_seq=0,
                                diagnostics={"kl_ref": round(0.02 * state["policy"], 4),
                                             "policy_loss": 0.1}), True
        else:
            yield None, True


def run_started(mode: str = "minmax") -> RunStarted:
    return RunStarted(mode=mode, config={**CONFIG, "mode": mode}, seeds={"seed": 7},
                      package_versions={"minmax-engine": "0.1.0"}, data_fingerprint="0" * 64,
                      dataset_name="fixture-stories", n_train_states=9, n_eval_states=3)


def write_fixture_run(run_dir: Path, run_id: str, *, windows: int = 12, mode: str = "minmax",
                      finished: bool = True, seed: int = 7) -> FixtureRun:
    """A complete fixture run: RunStarted, `windows` windows of play, RunFinished."""
    records: list[Recorded] = []
    with RunWriter.create(run_dir, run_id) as writer:
        records.append(writer.append(run_started(mode)))
        for event, end_of_window in game_events(windows, seed=seed, mode=mode):
            if event is not None:
                records.append(writer.append(event))
            if end_of_window:
                writer.flush()
        if finished:
            n_rounds = sum(isinstance(r.event, RoundPlayed) for r in records)
            n_policy = sum(isinstance(r.event, PolicyUpdated) for r in records)
            n_monitor = sum(isinstance(r.event, MonitorUpdated) for r in records)
            records.append(writer.append(RunFinished(rounds=n_rounds, policy_updates=n_policy,
                                                     monitor_updates=n_monitor, wall_seconds=1.0)))
    return FixtureRun(run_dir=run_dir, run_id=run_id, records=records)


def events_of(records: list[Recorded], kind: type[Event]) -> list[Event]:
    return [record.event for record in records if isinstance(record.event, kind)]


# --- the fixture itself --------------------------------------------------------------------


def test_fixture_run_covers_every_outcome(tmp_path: Path) -> None:
    run = write_fixture_run(tmp_path / "r", "r")
    rounds = [event for _, event in run.rounds]
    assert len(rounds) == 48
    assert any(r.truth == "wrong" and r.judge_accepts for r in rounds)
    assert any(r.truth == "correct" and r.monitor_says_correct is False for r in rounds)
    assert any(r.truth == "wrong" and r.monitor_says_correct is True for r in rounds)
    assert any(r.truth == "unparsed" for r in rounds)
    assert any(r.monitor_says_correct is None for r in rounds)
    assert len({r.policy_version for r in rounds}) == 4

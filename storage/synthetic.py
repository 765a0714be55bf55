"""Realistic synthetic runs, written through the public RunWriter (for tests and benchmarks).

    from storage.synthetic import write_synthetic_run
    run_dir = write_synthetic_run(tmp_path / "r1", n_rounds=640, mode="minmax", seed=3)

The game is simulated, not played: a policy whose accuracy drifts up over the run, a monitor
that is right about 3 times in 4, a judge that is fooled more often in rlhf mode as training
goes on, occasional unparsed answers and verdicts. So every GAME.md §4 metric and every filter
(phase, truth, verdict, judge decision) has non-trivial values. The event order is the one
the TTUR loop writes (GAME.md §3): B rounds; MonitorUpdated and LambdaUpdated after each
window (minmax only); PolicyUpdated after every k-th window; CheckpointSaved after every
second policy update; a few eval rounds and EvaluationCompleted after every fourth; then
RunFinished. `n_rounds` counts training rounds; eval rounds come on top.

Texts and token lists are drawn from small pools built once, so generating a million rounds
costs little beyond the writer's own work.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Literal

from storage.events import (
    CheckpointSaved,
    DiagnosticRaised,
    EvaluationCompleted,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    RoundPlayed,
    RunFinished,
    RunStarted,
)
from storage.writer import RunWriter

SYNTHETIC_DELTA = 0.05
_POOL_SIZE = 32
_EVAL_ROUNDS = 8
_ALPHA = 0.7
_LAMBDA_STEP = 0.5
_LAMBDA_MAX = 10.0
_W_REWARD, _W_JUDGE = 0.5, 0.5
_WORDS = ("the ship crew harbour storm letter captain signal quietly never because river "
          "engine colony orbit Mars thought answer evidence station silent door ancient").split()


def synthetic_config(mode: str, window_size: int, k: int, seed: int) -> dict:
    """A resolved config of the shape engine.config records (every section present)."""
    return {
        "mode": mode, "seed": seed, "run_dir": "runs",
        "policy": {"model": "embedded:SmolLM2-135M-Instruct", "lora_r": 8, "temperature": 1.0,
                   "top_p": 1.0, "max_new_tokens": 48},
        "monitor": {"model": "embedded:SmolLM2-135M-Instruct", "lora_r": 8, "temperature": 1.0,
                    "top_p": 1.0, "max_new_tokens": 48},
        "reward": {"model": "embedded:SmolLM2-135M-Instruct", "kind": "lm-yes-no", "normalization": "tanh"},
        "judge": {"model": "embedded:SmolLM2-135M-Instruct", "sees_story": False},
        "data": {"dataset": "builtin", "n_choices": 4, "eval_fraction": 0.1},
        "game": {"w_reward": _W_REWARD, "w_judge": _W_JUDGE, "alpha": _ALPHA, "unparsed_penalty": 1.0,
                 "reward_norm": "tanh"},
        "training": {"window_size": window_size, "monitor_updates_per_policy": k,
                     "policy_learning_rate": 1e-5, "monitor_learning_rate": 5e-5, "ppo_epochs": 2,
                     "checkpoint_every": 2, "eval_every": 4},
        "lagrangian": {"lambda_init": 1.0, "delta": SYNTHETIC_DELTA, "step_size": _LAMBDA_STEP,
                       "lambda_max": _LAMBDA_MAX, "variant": "additive", "update_delay": 0},
        "logging": {"backends": ["console"]},
    }


def _text(rng: random.Random, n_bytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_bytes:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[: max(n_bytes, 1)]


def write_synthetic_run(
    run_dir: str | os.PathLike, n_rounds: int, *, mode: Literal["minmax", "rlhf"] = "minmax",
    window_size: int = 16, k: int = 5, seed: int = 0, text_bytes: int = 2000, n_tokens: int = 200,
    flush_every: int = 64, finished: bool = True, run_id: str | None = None, collapse_after_window: int | None = None,
) -> Path:
    """Write a simulated run of n_rounds training rounds; returns run_dir. With
    `collapse_after_window`, the monitor (the policy in rlhf) is reported collapsing then."""
    if mode not in ("minmax", "rlhf"):
        raise ValueError(f"mode must be 'minmax' or 'rlhf', not {mode!r}")
    run_dir = Path(run_dir)
    rng = random.Random(seed)
    minmax = mode == "minmax"
    # Pools: the text budget is split between story, question, choices, prompts and outputs.
    stories = [_text(rng, int(text_bytes * 0.55)) for _ in range(_POOL_SIZE)]
    questions = [_text(rng, max(int(text_bytes * 0.05), 8)) + "?" for _ in range(_POOL_SIZE)]
    choice_sets = [[_text(rng, max(int(text_bytes * 0.02), 4)) for _ in range(4)] for _ in range(_POOL_SIZE)]
    outputs = [_text(rng, int(text_bytes * 0.1)) for _ in range(_POOL_SIZE)]
    token_lists = [[rng.randrange(49152) for _ in range(n_tokens)] for _ in range(_POOL_SIZE)]
    prompt_lists = [[rng.randrange(49152) for _ in range(max(n_tokens // 2, 1))] for _ in range(_POOL_SIZE)]
    logprob_lists = [[math.log(rng.uniform(0.01, 1.0)) for _ in range(n_tokens)] for _ in range(_POOL_SIZE)]

    config = synthetic_config(mode, window_size, k, seed)
    lam = config["lagrangian"]["lambda_init"]
    policy_version = monitor_version = 0
    eval_count = 0
    writer = RunWriter.create(run_dir, run_id or run_dir.name)
    unflushed = 0

    def append(event) -> int:
        nonlocal unflushed
        seq = writer.append(event).seq
        unflushed += 1
        if unflushed >= flush_every:
            writer.flush()
            unflushed = 0
        return seq

    def play(round_id: int, phase: str, window: int) -> tuple[int, float | None]:
        progress = round_id / max(n_rounds, 1) if phase == "train" else 0.5
        pool = rng.randrange(_POOL_SIZE)
        correct_index = rng.randrange(4)
        answer_roll = rng.random()
        if answer_roll < 0.05:
            answer, truth = None, "unparsed"
        elif answer_roll < 0.05 + 0.95 * (0.45 + 0.25 * progress):
            answer, truth = correct_index, "correct"
        else:
            answer, truth = (correct_index + rng.randrange(1, 4)) % 4, "wrong"
        # the judge: fooled more as RLHF training goes on, less when a monitor critiques
        fooled = 0.25 + (0.3 * progress if not minmax else -0.1 * progress)
        accept_chance = 0.8 if truth == "correct" else fooled
        p_accept = min(max(rng.gauss(0.75 if rng.random() < accept_chance else 0.25, 0.12), 0.0), 1.0)
        reward_policy = rng.gauss(0.4 if truth == "correct" else -0.1, 0.5)
        monitor_fields: dict = dict(monitor_prompt=None, monitor_prompt_ids=None, monitor_output=None,
                                    monitor_token_ids=None, monitor_logprobs=None, monitor_says_correct=None,
                                    reward_monitor=None)
        fidelity = None
        if minmax:
            verdict_roll = rng.random()
            if verdict_roll < 0.04:
                says_correct = None
            else:
                right = rng.random() < 0.7 + 0.1 * progress
                says_correct = (truth == "correct") if right else (truth != "correct")
            reward_monitor = rng.gauss(0.2, 0.5)
            disagrees = says_correct is None or says_correct != (truth == "correct")
            fidelity = _ALPHA * float(disagrees) + (1 - _ALPHA) * -math.tanh(reward_monitor)
            monitor_fields = dict(
                monitor_prompt="Critique the answer above. Verdict: CORRECT or INCORRECT.",
                monitor_prompt_ids=prompt_lists[(pool + 1) % _POOL_SIZE], monitor_output=outputs[(pool + 3) % _POOL_SIZE],
                monitor_token_ids=token_lists[(pool + 1) % _POOL_SIZE],
                monitor_logprobs=logprob_lists[(pool + 1) % _POOL_SIZE],
                monitor_says_correct=says_correct, reward_monitor=reward_monitor)
        combined = _W_REWARD * math.tanh(reward_policy) + _W_JUDGE * (2 * p_accept - 1)
        seq = append(RoundPlayed(
            round_id=round_id, phase=phase, window=window, state_id=f"state-{pool:04d}",
            sample_index=round_id % 2, story=stories[pool], question=questions[pool],
            choices=choice_sets[pool], correct_index=correct_index,
            policy_prompt="Read the story and answer. End with 'Answer: <letter>'.",
            policy_prompt_ids=prompt_lists[pool], policy_output=outputs[pool],
            policy_token_ids=token_lists[pool], policy_logprobs=logprob_lists[pool], policy_answer=answer,
            **monitor_fields,
            p_accept=p_accept, judge_accepts=p_accept >= 0.5, truth=truth, combined_reward=combined,
            fidelity_penalty=fidelity, reward_policy=reward_policy, lambda_value=lam if minmax else 0.0,
            policy_version=policy_version, monitor_version=monitor_version,
            timings={"policy": rng.uniform(0.5, 2.0), "monitor": rng.uniform(0.5, 2.0) if minmax else 0.0,
                     "referees": rng.uniform(0.1, 0.4)},
            # quotes from the pool, no draw of their own (the random stream stays as it was);
            # a wrong answer's quotes include one the story does not hold
            policy_quotes=pool % 3, policy_quotes_verified=max(pool % 3 - (truth == "wrong"), 0),
            monitor_quotes=(pool + 1) % 2 if minmax else None, monitor_quotes_verified=(pool + 1) % 2 if minmax else None,
        ))
        return seq, fidelity

    def diagnostics() -> dict[str, float]:
        return {"policy_loss": rng.gauss(0.0, 0.1), "value_loss": math.nan, "entropy": rng.uniform(1.0, 3.0),
                "approx_kl": abs(rng.gauss(0.01, 0.005)), "clipfrac": rng.uniform(0.0, 0.3),
                "kl_ref": abs(rng.gauss(0.05, 0.02)), "grad_norm": rng.uniform(0.1, 2.0),
                "explained_variance": math.nan, "mean_reward": rng.gauss(0.0, 0.3),
                "learning_rate": 1e-5, "n_rollouts": float(window_size), "seconds": rng.uniform(1, 5)}

    append(RunStarted(
        mode=mode, config=config, seeds={"python": seed, "torch": seed, "data": seed},
        package_versions={"minmax-engine": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0"},
        data_fingerprint=f"{rng.getrandbits(256):064x}", dataset_name="builtin",
        n_train_states=_POOL_SIZE, n_eval_states=_EVAL_ROUNDS,
    ))
    policy_window_rounds: list[tuple[int, int]] = []  # (round_id, seq) since the last policy update
    round_id = 0
    window = 0
    while round_id < n_rounds:
        window_rounds: list[tuple[int, int]] = []
        fidelities: list[float] = []
        for _ in range(min(window_size, n_rounds - round_id)):
            seq, fidelity = play(round_id, "train", window)
            window_rounds.append((round_id, seq))
            if fidelity is not None:
                fidelities.append(fidelity)
            round_id += 1
        policy_window_rounds.extend(window_rounds)
        if minmax:
            monitor_version += 1
            append(MonitorUpdated(version=monitor_version, round_ids=[r for r, _ in window_rounds],
                                  first_seq=window_rounds[0][1], last_seq=window_rounds[-1][1],
                                  diagnostics=diagnostics()))
            mean_f = sum(fidelities) / len(fidelities)
            new = min(max(lam + _LAMBDA_STEP * (mean_f - SYNTHETIC_DELTA), 0.0), _LAMBDA_MAX)
            append(LambdaUpdated(old=lam, new=new, mean_f=mean_f, delta=SYNTHETIC_DELTA,
                                 monitor_version=monitor_version, applied=True))
            lam = new
        if window == collapse_after_window:
            role = "monitor" if minmax else "policy"
            append(DiagnosticRaised(kind="collapse", role=role, window=window,
                                    message=f"the {role} may be collapsing: repetition 0.92 ≥ 0.6 over {window_size} outputs",
                                    values={"repetition": 0.92, "n_outputs": float(window_size)}))
        window += 1
        if window % k == 0 or round_id >= n_rounds:
            policy_version += 1
            append(PolicyUpdated(version=policy_version, round_ids=[r for r, _ in policy_window_rounds],
                                 first_seq=policy_window_rounds[0][1], last_seq=policy_window_rounds[-1][1],
                                 diagnostics=diagnostics()))
            last_round_seq = policy_window_rounds[-1][1]
            policy_window_rounds = []
            if policy_version % 2 == 0:
                append(CheckpointSaved(path=f"checkpoints/{policy_version}", policy_version=policy_version,
                                       monitor_version=monitor_version, lambda_value=lam,
                                       next_round_id=round_id, last_round_seq=last_round_seq))
            if policy_version % 4 == 0:
                for eval_round in range(_EVAL_ROUNDS):
                    play(eval_count * _EVAL_ROUNDS + eval_round, "eval", -1)
                eval_count += 1
                append(EvaluationCompleted(
                    dataset="builtin", split="eval", n_rounds=_EVAL_ROUNDS, policy_version=policy_version,
                    monitor_version=monitor_version, checkpoint=f"checkpoints/{policy_version}",
                    metrics={"policy_accuracy": rng.uniform(0.4, 0.8), "deception_rate": rng.uniform(0.1, 0.5)}))
    if finished:
        append(RunFinished(rounds=n_rounds, policy_updates=policy_version, monitor_updates=monitor_version,
                           wall_seconds=float(n_rounds) * 1.5))
    writer.close()
    return run_dir

"""The facts of a run: immutable, typed events named in the past tense.

Everything minmax-engine knows about a run is one of these records, appended to the run's
log by `storage.RunWriter` (see ../shared/GAME.md §5). Every other view of a run (λ
trajectory, metrics, resume state, the TUI, SQL tables) is derived from them.

A payload class holds only what happened. The envelope that the log adds to each stored
event (run id, gap-free sequence number, UTC timestamp, schema version, SHA-256 hash chained
to the predecessor's) lives in `Recorded`, so that nobody can construct an event with a
forged sequence number or hash.

Conventions that every writer and reader relies on:
- Free-form mappings (resolved config, diagnostics, metrics, timings) are plain `dict`s of
  JSON-serialisable values; the log stores them as JSON text.
- An unparsed policy answer is `policy_answer=None`; an unparsed monitor verdict is
  `monitor_says_correct=None`. In rlhf mode every monitor field is None and `fidelity_penalty`
  is None.
- Token ids and behaviour log-probs are per generated token, same length, in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

SCHEMA_VERSION = 1

Truth = Literal["correct", "wrong", "unparsed"]
Mode = Literal["minmax", "rlhf"]
Phase = Literal["train", "eval"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every payload; `event_type` is the class name and the stored type tag."""

    event_type: ClassVar[str] = "Event"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.event_type = cls.__name__

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    mode: Mode
    config: dict[str, Any]  # the resolved, validated config, every default filled in
    seeds: dict[str, int]
    package_versions: dict[str, str]
    data_fingerprint: str  # SHA-256 over the loaded dataset's canonical JSON
    dataset_name: str
    n_train_states: int
    n_eval_states: int


@dataclass(frozen=True, kw_only=True)
class RunResumed(Event):
    """A `play --resume` continued the run from a checkpoint; later rounds follow on."""

    checkpoint_seq: int  # seq of the CheckpointSaved event resumed from
    next_round_id: int
    discarded_after_seq: int  # rounds logged after the checkpoint were not trained on


@dataclass(frozen=True, kw_only=True)
class RoundPlayed(Event):
    round_id: int  # 0, 1, 2, ... over the run's training rounds; eval rounds count separately
    phase: Phase
    window: int  # index of the window of B rounds this round belongs to (-1 for eval)
    state_id: str
    sample_index: int  # which of the n samples of this state (group-relative advantages)
    story: str
    question: str
    choices: list[str]
    correct_index: int
    # step 1: the policy
    policy_prompt: str
    policy_prompt_ids: list[int]
    policy_output: str
    policy_token_ids: list[int]
    policy_logprobs: list[float]  # behaviour log-probs at generation, logits / temperature
    policy_answer: int | None  # parsed choice index; None = unparsed
    # step 2: the monitor (all None in rlhf mode)
    monitor_prompt: str | None
    monitor_prompt_ids: list[int] | None
    monitor_output: str | None
    monitor_token_ids: list[int] | None
    monitor_logprobs: list[float] | None
    monitor_says_correct: bool | None  # parsed verdict; None = unparsed (or rlhf mode)
    # steps 3-5: referees and ground truth
    reward_policy: float  # r(O)
    reward_monitor: float | None  # r(O′)
    p_accept: float
    judge_accepts: bool  # p_accept >= 0.5
    truth: Truth
    combined_reward: float  # R(O, O′)
    fidelity_penalty: float | None  # f of this round (None in rlhf mode)
    lambda_value: float  # λ in force when the round was played
    policy_version: int
    monitor_version: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


@dataclass(frozen=True, kw_only=True)
class AdapterUpdate(Event):
    """Shared shape of MonitorUpdated and PolicyUpdated."""

    version: int  # the adapter's version after this update (first update -> 1)
    round_ids: list[int]  # the training rounds this update consumed, in order
    first_seq: int  # seq range of the RoundPlayed events consumed
    last_seq: int
    diagnostics: dict[str, float]  # plain names: policy_loss, approx_kl, clipfrac, ... (engine.ppo)


@dataclass(frozen=True, kw_only=True)
class MonitorUpdated(AdapterUpdate):
    pass


@dataclass(frozen=True, kw_only=True)
class PolicyUpdated(AdapterUpdate):
    pass


@dataclass(frozen=True, kw_only=True)
class LambdaUpdated(Event):
    old: float
    new: float
    mean_f: float
    delta: float
    monitor_version: int  # the monitor update this ascent step followed
    applied: bool  # False while the configured update delay holds λ fixed


@dataclass(frozen=True, kw_only=True)
class CheckpointSaved(Event):
    path: str  # relative to the run directory
    policy_version: int
    monitor_version: int
    lambda_value: float
    next_round_id: int
    last_round_seq: int  # seq of the last RoundPlayed already trained on


@dataclass(frozen=True, kw_only=True)
class EvaluationCompleted(Event):
    dataset: str
    split: str
    n_rounds: int
    policy_version: int
    monitor_version: int
    checkpoint: str | None
    metrics: dict[str, float]  # the GAME.md §4 metrics


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    rounds: int
    policy_updates: int
    monitor_updates: int
    wall_seconds: float


@dataclass(frozen=True, kw_only=True)
class RunFailed(Event):
    error_type: str
    message: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        RunStarted,
        RunResumed,
        RoundPlayed,
        MonitorUpdated,
        PolicyUpdated,
        LambdaUpdated,
        CheckpointSaved,
        EvaluationCompleted,
        RunFinished,
        RunFailed,
    )
}


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """An event as the log holds it: the payload inside its envelope."""

    run_id: str
    seq: int  # 0-based, gap-free within a run
    ts: str  # ISO-8601 UTC with microseconds, e.g. 2026-11-25T15:20:11.123456+00:00
    schema_version: int
    prev_hash: str  # hex SHA-256 of the predecessor ("0" * 64 for seq 0)
    hash: str  # hex SHA-256 over prev_hash and this event's canonical bytes
    event: Event

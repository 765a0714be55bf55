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
- Token ids and behaviour log-probs are per generated token, same length, in order. A
  RoundPlayed's id and log-prob fields take a list or a 1-D numpy array (the engine hands
  over arrays: the log packs them without touching each number, see storage/codec.py);
  the log stores int32 ids and float64 log-probs and reads them back as lists, and two
  rounds compare equal when their values are equal, whichever form each holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION = 1

Truth = Literal["correct", "wrong", "unparsed"]
Mode = Literal["minmax", "rlhf"]
Phase = Literal["train", "eval"]
# Which evaluation an eval round belongs to (GAME.md §4): the judge saw O only (deployment,
# both modes) or O and O′ (monitored, minmax only). Training rounds have none.
Protocol = Literal["deployment", "monitored"]
# Packed numeric fields of a RoundPlayed: a list, or a 1-D numpy array of that kind.
TokenIds = list[int] | npt.NDArray[np.integer]
LogProbs = list[float] | npt.NDArray[np.floating]


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
    # torch's CPU thread count: kernels split their sums by thread, so a resume uses the same
    # count to stay bit-identical (None in logs older than the field)
    num_threads: int | None = None
    # how the CPU ran frozen fp32 linears (players/cpu_linear.py: "onednn" or "blas"), which
    # also fixes the last bits; None in logs older than the field, all of them torch's BLAS
    cpu_linear: str | None = None


@dataclass(frozen=True, kw_only=True)
class JudgeCalibrated(Event):
    """The judge's calibration, computed once right after RunStarted; a resumed run applies
    this offset as logged (referees/calibration.py)."""

    method: str  # "contextual" | "none"
    content_free_answers: list[str]  # the answers that say nothing ("N/A", "", ...)
    state_ids: list[str]  # the train states whose questions they were put with
    log_odds: list[float]  # the judge's raw log-odds per (state, answer), states outer
    offset: float  # subtracted from every raw log-odds the judge gives in this run


@dataclass(frozen=True, kw_only=True)
class DiagnosticRaised(Event):
    """Something a user should look at now: λ that cannot settle, a collapsing player
    (engine/diagnostics.py)."""

    kind: str  # "delta_below_reach" | "lambda_at_max" | "lambda_rising" | "collapse"
    role: str  # "monitor" | "policy" | "lambda"
    message: str  # one line, printed by the console tracker
    window: int  # the training window after which it was raised
    values: dict[str, float]  # the figures that crossed their thresholds


@dataclass(frozen=True, kw_only=True)
class RunResumed(Event):
    """A `play --resume` continued the run from a checkpoint; later rounds follow on."""

    checkpoint_seq: int  # seq of the CheckpointSaved event resumed from
    next_round_id: int
    discarded_after_seq: int  # rounds logged after the checkpoint were not trained on
    rounds_played: int | None = None  # schedule rounds the checkpoint covers (None in older logs)


@dataclass(frozen=True, kw_only=True, eq=False)
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
    policy_prompt_ids: TokenIds
    policy_output: str
    policy_token_ids: TokenIds
    policy_logprobs: LogProbs  # behaviour log-probs at generation, logits / temperature
    policy_answer: int | None  # parsed choice index; None = unparsed
    # step 2: the monitor (all None in rlhf mode)
    monitor_prompt: str | None
    monitor_prompt_ids: TokenIds | None
    monitor_output: str | None
    monitor_token_ids: TokenIds | None
    monitor_logprobs: LogProbs | None
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
    # Added after schema 1 with defaults, so older logs still load (see TRAILING_DEFAULTS).
    protocol: Protocol | None = None  # "deployment" | "monitored" for eval rounds, None for training
    judge_prompt: str = ""  # the exact text the judge scored ("" in logs older than the field)
    # <quote>s in O and O′ and how many of them the story holds (referees/quotes.py); None: not
    # counted (no monitor spoke, or a log older than the fields)
    policy_quotes: int | None = None
    policy_quotes_verified: int | None = None
    monitor_quotes: int | None = None
    monitor_quotes_verified: int | None = None

    # Written by hand because the generated __eq__ compares field tuples, and a numpy
    # array's == is elementwise (its truth value is an error).
    def __eq__(self, other: object) -> bool:
        if type(other) is not RoundPlayed:
            return NotImplemented
        for name in _ROUND_FIELD_NAMES:
            mine, theirs = self.__dict__[name], other.__dict__[name]
            if name in _PACKED_ROUND_FIELDS and (isinstance(mine, np.ndarray) or isinstance(theirs, np.ndarray)):
                if mine is None or theirs is None:
                    if mine is not theirs:
                        return False
                elif not np.array_equal(np.asarray(mine), np.asarray(theirs)):
                    return False
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside: never hashable


_ROUND_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(RoundPlayed))
_PACKED_ROUND_FIELDS = frozenset({"policy_prompt_ids", "policy_token_ids", "policy_logprobs",
                                  "monitor_prompt_ids", "monitor_token_ids", "monitor_logprobs"})


@dataclass(frozen=True, kw_only=True)
class AdapterUpdate(Event):
    """Shared shape of MonitorUpdated and PolicyUpdated."""

    version: int  # the adapter's version after this update (first update -> 1)
    round_ids: list[int]  # the training rounds this update consumed, in order
    first_seq: int  # seq range of the RoundPlayed events consumed
    last_seq: int
    diagnostics: dict[str, float]  # plain names: policy_loss, approx_kl, clipfrac, ... (engine.ppo)
    # Added after schema 1 with defaults, so older logs still load (see TRAILING_DEFAULTS).
    # |log π_learner − log π_gen| over the consumed rounds' response tokens, the learner's
    # log-probs taken before the update (engine/ppo.py detail 16); None in older logs.
    logprob_mismatch_mean: float | None = None
    logprob_mismatch_max: float | None = None
    round_logprob_mismatch: list[float] = field(default_factory=list)  # per round, in round_ids order


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
    metrics: dict[str, float]  # the GAME.md §4 metrics (rates; undefined ones left out)
    # Added after schema 1 with defaults, so older logs still load (see TRAILING_DEFAULTS).
    # "deployment" | "monitored"; "" in logs older than the field, whose minmax evaluations let
    # the judge read O′ and whose rlhf ones did not (RunStarted.mode tells which).
    protocol: str = ""
    samples_per_state: int = 1  # answers per held-out state: n sampled + the greedy one
    counts: dict[str, list[int]] = field(default_factory=dict)  # metric -> [hits, eligible]


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
        JudgeCalibrated,
        DiagnosticRaised,
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


# Fields appended to an event type after its first schema, with the value an older log
# implies. A trailing run of fields still at these values is left out of the hashed header
# (storage.codec.canonical_header), so events written before the fields existed verify.
TRAILING_DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {
    RoundPlayed.event_type: (
        ("protocol", None), ("judge_prompt", ""),
        ("policy_quotes", None), ("policy_quotes_verified", None),
        ("monitor_quotes", None), ("monitor_quotes_verified", None),
    ),
    EvaluationCompleted.event_type: (("protocol", ""), ("samples_per_state", 1), ("counts", {})),
    RunStarted.event_type: (("num_threads", None), ("cpu_linear", None)),
    RunResumed.event_type: (("rounds_played", None),),
    **{
        update.event_type: (
            ("logprob_mismatch_mean", None), ("logprob_mismatch_max", None), ("round_logprob_mismatch", []),
        )
        for update in (MonitorUpdated, PolicyUpdated)
    },
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

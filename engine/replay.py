"""`minmax-engine replay RUN`: fold a run's log into its state and re-check its λ trajectory.

    minmax-engine replay runs/<run_id>            # summary, per-window metrics, λ check
    minmax-engine replay runs/<run_id> --json     # the folded state as JSON

The run's state is a pure fold of its events (../shared/GAME.md §5): counts, adapter
versions, λ, the last checkpoint, per-window metrics (engine/outcomes.py, the same table as
the SQL `metrics` view, the report and the TUI).

Events superseded by a resume are not part of the state: the rule is storage/reader.py's
(a RunResumed at seq s with discarded_after_seq d supersedes every event with d < seq < s),
the one every reader applies; the fold reads the whole log only to count what it left out
and to keep round ids unique.

The λ check re-runs the dual ascent (engine/lagrangian.py, `lambda_trajectory`, the same
arithmetic as the live run) from the logged mean f values with the run's recorded settings
and compares every LambdaUpdated exactly, as floats: exit 0 with "λ reproduced exactly over
N updates", exit 1 naming the first mismatching seq. The command verifies the whole log
first (storage/verify.py) and refuses one that fails, naming the first problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.config import LagrangianConfig, recorded_config
from engine.lagrangian import lambda_trajectory
from engine.metrics import window_metrics
from storage import (
    CheckpointSaved,
    EvaluationCompleted,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    Recorded,
    RoundPlayed,
    RunFailed,
    RunFinished,
    RunReader,
    RunResumed,
    RunStarted,
    UserError,
    require_verified,
)
from storage.reader import superseded_seqs
from storage.status import run_status

@dataclass(frozen=True)
class LambdaPoint:
    seq: int
    monitor_version: int
    old: float
    new: float
    mean_f: float
    applied: bool


@dataclass
class RunState:
    """What a run's log says, folded (superseded events left out)."""

    run_id: str
    mode: str
    config: dict[str, Any]
    last_seq: int = -1
    train_rounds: int = 0
    eval_rounds: int = 0
    next_round_id: int = 0  # after the highest training round id ever logged (superseded included)
    policy_updates: int = 0
    monitor_updates: int = 0
    policy_version: int = 0
    monitor_version: int = 0
    lambda_value: float = 0.0  # λ in force after the last event
    lambda_trajectory: list[LambdaPoint] = field(default_factory=list)
    last_checkpoint: CheckpointSaved | None = None
    last_checkpoint_seq: int | None = None
    evaluations: int = 0
    resumes: int = 0
    superseded_events: int = 0
    finished: bool = False
    failed: bool = False
    window_metrics: dict[int, dict[str, float | None]] = field(default_factory=dict)


def fold_events(events: Iterable[Recorded]) -> RunState:
    """The run state from its events in seq order (a pure function of the log)."""
    events = list(events)
    if not events or not isinstance(events[0].event, RunStarted):
        raise UserError("the log does not start with RunStarted; check the run with `minmax-engine verify`")
    started = events[0].event
    assert isinstance(started, RunStarted)
    state = RunState(run_id=events[0].run_id, mode=started.mode, config=started.config)
    lagrangian = recorded_config(started.config, f"run {state.run_id}").lagrangian
    if started.mode == "minmax":
        state.lambda_value = lagrangian.lambda_init
    voided = superseded_seqs(events)
    train_rounds_by_window: dict[int, list[RoundPlayed]] = {}
    highest_round_id = -1

    for item in events:
        state.last_seq = item.seq
        event = item.event
        if isinstance(event, RoundPlayed) and event.phase == "train":
            highest_round_id = max(highest_round_id, event.round_id)  # ids stay unique across resumes
        if item.seq in voided:
            state.superseded_events += 1
            continue
        if isinstance(event, RoundPlayed):
            if event.phase == "train":
                state.train_rounds += 1
                train_rounds_by_window.setdefault(event.window, []).append(event)
            else:
                state.eval_rounds += 1
        elif isinstance(event, MonitorUpdated):
            state.monitor_updates += 1
            state.monitor_version = event.version
        elif isinstance(event, PolicyUpdated):
            state.policy_updates += 1
            state.policy_version = event.version
        elif isinstance(event, LambdaUpdated):
            state.lambda_trajectory.append(
                LambdaPoint(item.seq, event.monitor_version, event.old, event.new, event.mean_f, event.applied)
            )
            state.lambda_value = event.new
        elif isinstance(event, CheckpointSaved):
            state.last_checkpoint, state.last_checkpoint_seq = event, item.seq
        elif isinstance(event, RunResumed):
            state.resumes += 1
        elif isinstance(event, EvaluationCompleted):
            state.evaluations += 1
        elif isinstance(event, RunFinished):
            state.finished = True
        elif isinstance(event, RunFailed):
            state.failed = True

    state.next_round_id = highest_round_id + 1
    delta = lagrangian.delta if started.mode == "minmax" else None
    state.window_metrics = {
        window: window_metrics(rounds, delta) for window, rounds in sorted(train_rounds_by_window.items())
    }
    return state


def fold_run(reader: RunReader) -> RunState:
    return fold_events(reader.events(include_superseded=True))


# --- the λ check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LambdaCheck:
    n_updates: int
    first_mismatch: LambdaPoint | None  # the first logged step the re-run disagrees with
    expected_old: float | None = None
    expected_new: float | None = None


def lagrangian_of(state: RunState) -> LagrangianConfig:
    """The dual-ascent settings the run recorded (validated as the live run validated them)."""
    return recorded_config(state.config, f"run {state.run_id}").lagrangian


def check_lambda(state: RunState) -> LambdaCheck:
    """Re-run the dual ascent from the logged mean f; compare old, new and applied exactly."""
    logged = state.lambda_trajectory
    recomputed = lambda_trajectory(lagrangian_of(state), [point.mean_f for point in logged])
    for point, step in zip(logged, recomputed, strict=True):
        if (point.old, point.new, point.applied) != (step.old, step.new, step.applied):
            return LambdaCheck(len(logged), point, expected_old=step.old, expected_new=step.new)
    return LambdaCheck(len(logged), None)


# --- the command ------------------------------------------------------------------------------


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def _cell(mode: str, name: str, metrics: dict[str, float | None]) -> str:
    """A rate with its n; λ and f are n/a in rlhf (there is no monitor and no λ)."""
    if mode != "minmax" and name in ("mean_f", "last_lambda"):
        return "n/a"
    n = metrics.get(f"{name}_n")
    return _format(metrics.get(name)) + (f" n={int(n)}" if n is not None else "")


def _summary(state: RunState, status: str) -> list[str]:
    lines = [
        f"run {state.run_id} ({state.mode}, {status}): last seq {state.last_seq}",
        f"  rounds: {state.train_rounds} train, {state.eval_rounds} eval; next round id {state.next_round_id}",
        f"  updates: policy {state.policy_updates} (version {state.policy_version}), "
        f"monitor {state.monitor_updates} (version {state.monitor_version}); evaluations {state.evaluations}",
        f"  resumes {state.resumes} ({state.superseded_events} superseded events left out)",
    ]
    if state.last_checkpoint is not None:
        lines.append(f"  last checkpoint: {state.last_checkpoint.path} at seq {state.last_checkpoint_seq}")
    if state.mode == "minmax":
        lines.append(f"  λ in force: {state.lambda_value!r} after {len(state.lambda_trajectory)} dual steps")
    columns = ("policy_accuracy", "judge_accept_rate", "deception_rate", "monitor_fidelity", "mean_f", "last_lambda")
    lines.append("  window rounds " + " ".join(f"{name:>17}" for name in columns))
    for window, metrics in state.window_metrics.items():
        n_rounds = int(metrics["n_rounds"] or 0)
        lines.append(f"  {window:>6} {n_rounds:>6} "
                     + " ".join(f"{_cell(state.mode, name, metrics):>17}" for name in columns))
    return lines


def run(run_dir: Path, as_json: bool) -> int:
    """`minmax-engine replay RUN [--json]` (arguments parsed in tui/cli.py)."""
    require_verified(run_dir)  # the whole hash chain first: folding a damaged log proves nothing
    state = fold_run(RunReader(run_dir))
    if as_json:
        payload = asdict(state)
        payload["last_checkpoint"] = None if state.last_checkpoint is None else state.last_checkpoint.to_dict()
        print(json.dumps(payload, indent=2, default=str))
    else:
        print("\n".join(_summary(state, run_status(run_dir).describe())))
    if state.mode != "minmax":
        print("rlhf run: no λ to re-check")
        return 0
    check = check_lambda(state)
    if check.first_mismatch is not None:
        point = check.first_mismatch
        print(
            f"λ mismatch at seq {point.seq} (monitor version {point.monitor_version}): logged "
            f"{point.old!r} -> {point.new!r}, re-run gives {check.expected_old!r} -> {check.expected_new!r}"
        )
        return 1
    print(f"λ reproduced exactly over {check.n_updates} updates")
    return 0

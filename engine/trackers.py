"""Trackers: the run's events turned into metrics for the console, TensorBoard and W&B.

    trackers = open_trackers(["console", "tensorboard", "wandb"], run_dir, run_id)
    trackers.publish(recorded)      # every Recorded the game loop appends, in order
    trackers.close()

    minmax-engine log runs/<run_id> --to tensorboard     # backfill a finished run (run_log)

Trackers only consume events; they never feed anything back into the game. One
`MetricStream` turns events into namespaced scalars (names and steps in docs/metrics.md)
and every backend writes the same scalars, so live logging and a later backfill of the same
log produce identical numbers. Per-window game metrics come from
`engine.metrics.window_metrics`, generated from the same table (engine/outcomes.py) as the
SQL `metrics` view; each rate is published with its n under `game_n/`.

A tracker is never allowed to stop a run: a backend that cannot start is reported once on
stderr and left out; a backend that raises while publishing is reported once and disabled.

Why one file over 500 lines: the metric stream and the three backends (console, TensorBoard,
W&B) share one contract (the same scalars, names and steps from the same events) and one
failure rule, and the backfill command replays a log through exactly these backends; each
backend is a short class, and together they are what a reader checks against docs/metrics.md.
"""

from __future__ import annotations

import math
import netrc
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from engine.config import recorded_config
from engine.metrics import window_metrics
from engine.outcomes import RATE_BY_NAME
from storage import (
    CheckpointSaved,
    DiagnosticRaised,
    EvaluationCompleted,
    JudgeCalibrated,
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
)
from storage.status import run_status

BACKEND_NAMES: tuple[str, ...] = ("console", "tensorboard", "wandb")

# window_metrics key -> published name. The order is the order of docs/metrics.md.
GAME_METRIC_NAMES: dict[str, str] = {
    "policy_accuracy": "game/policy_accuracy",
    "deception_rate": "game/deception_rate",
    "judge_accept_rate": "game/judge_accept_rate",
    "judge_accuracy": "game/judge_accuracy",
    "monitor_fidelity": "game/monitor_fidelity",
    "false_accusation_rate": "game/false_accusation_rate",
    "missed_error_rate": "game/missed_error_rate",
    "policy_unparsed_rate": "game/unparsed_rate_policy",
    "monitor_unparsed_rate": "game/unparsed_rate_monitor",
    "mean_reward": "game/mean_reward",
    "judge_auroc": "game/judge_auroc",
    "fabricated_quote_rate": "game/fabricated_quote_rate",
    "verified_quote_fraction": "game/verified_quote_fraction",
    "quotes_per_answer": "game/quotes_per_answer",
}


# ---------------------------------------------------------------------------------------
# Events -> metrics
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricGroup:
    """Scalars measured together, at one step.

    `step` is the number of training rounds played when they were measured: the one x-axis
    that MinMax and RLHF runs share (RLHF has no monitor updates to count).
    """

    source: str  # "window", "policy", "monitor", "lambda", "eval" (deployment) or "eval_monitored"
    step: int
    values: dict[str, float]
    label: int  # the window index, the adapter version, or the monitor version for λ


def _finite(value: Any) -> bool:
    # None = "undefined here" (no wrong answers, rlhf mode); NaN = "not measured" (no value
    # head). Neither is a measurement, so neither is published.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class MetricStream:
    """Folds events in log order into MetricGroups; one instance per run."""

    delta: float | None = None
    rounds_played: int = 0
    open_window: int | None = None
    window_rounds: list[RoundPlayed] = field(default_factory=list)

    def recall(self, run_started: RunStarted) -> list[MetricGroup]:
        self.delta = _lagrangian_delta(run_started)
        return []

    def observe(self, recorded: Recorded) -> list[MetricGroup]:
        event = recorded.event
        if isinstance(event, RoundPlayed):
            if event.phase != "train":
                return []  # evaluation rounds are summarised by EvaluationCompleted
            groups = self._close_window() if event.window != self.open_window else []
            self.open_window = event.window
            self.window_rounds.append(event)
            # Counted, not read off round ids: after a resume new ids continue past the superseded ones.
            self.rounds_played += 1
            return groups
        if isinstance(event, RunResumed):
            # Rounds logged after the checkpoint were not trained on and are played again with
            # the same ids: their unfinished window is dropped and the step restarts there.
            self.window_rounds, self.open_window = [], None
            self.rounds_played = _rounds_at_resume(event)
            return []
        # Learners run between windows, so any other event ends the window in progress.
        groups = self._close_window()
        if isinstance(event, RunStarted):
            self.delta = _lagrangian_delta(event)
        elif isinstance(event, MonitorUpdated | PolicyUpdated):
            role = "monitor" if isinstance(event, MonitorUpdated) else "policy"
            values = {f"{role}/{name}": float(value) for name, value in event.diagnostics.items() if _finite(value)}
            for name in ("logprob_mismatch_mean", "logprob_mismatch_max"):
                value = getattr(event, name)
                if value is not None and _finite(value):  # None in logs older than the field
                    values[f"{role}/{name}"] = float(value)
            groups.append(MetricGroup(role, self.rounds_played, values, event.version))
        elif isinstance(event, LambdaUpdated):
            values = {
                "lambda/value": event.new,
                "lambda/mean_f": event.mean_f,
                "lambda/constraint_violation": event.mean_f - event.delta,
            }
            groups.append(MetricGroup("lambda", self.rounds_played, values, event.monitor_version))
        elif isinstance(event, EvaluationCompleted):
            # Deployment is the headline "eval/"; monitored evaluation goes beside it, never mixed in.
            prefix = "eval_monitored" if event.protocol == "monitored" else "eval"
            values = {f"{prefix}/{name}": float(value) for name, value in event.metrics.items() if _finite(value)}
            groups.append(MetricGroup(prefix, self.rounds_played, values, event.policy_version))
        return groups

    def finish(self) -> list[MetricGroup]:
        """The window still open when the run stopped without a final event."""
        return self._close_window()

    def _close_window(self) -> list[MetricGroup]:
        if not self.window_rounds:
            return []
        metrics = window_metrics(self.window_rounds, self.delta)
        values = {name: float(metrics[key]) for key, name in GAME_METRIC_NAMES.items() if _finite(metrics[key])}
        values.update({name.replace("game/", "game_n/"): float(metrics[f"{key}_n"])  # type: ignore[arg-type]
                       for key, name in GAME_METRIC_NAMES.items() if key in RATE_BY_NAME and _finite(metrics[key])})
        group = MetricGroup("window", self.rounds_played, values, self.window_rounds[-1].window)
        self.window_rounds = []
        return [group]


def _rounds_at_resume(event: RunResumed) -> int:
    # Logs older than RunResumed.rounds_played: round ids are the best estimate they hold.
    return event.rounds_played if event.rounds_played is not None else event.next_round_id


def _lagrangian_delta(run_started: RunStarted) -> float | None:
    if run_started.mode != "minmax":
        return None
    return recorded_config(run_started.config, "the tracked run").lagrangian.delta


def _config_value(config: dict[str, Any], section: str, key: str) -> Any:
    # Defensive: trackers must not fail on a config from an older or newer schema.
    part = config.get(section) if isinstance(config, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def total_training_rounds(run_started: RunStarted) -> int | None:
    """n_train_states × samples_per_state × num_epochs, or None when the config lacks them."""
    samples = _config_value(run_started.config, "training", "samples_per_state")
    epochs = _config_value(run_started.config, "training", "num_epochs")
    samples = samples if isinstance(samples, int) and samples > 0 else 1
    epochs = epochs if isinstance(epochs, int) and epochs > 0 else 1
    total = run_started.n_train_states * samples * epochs
    return total if total > 0 else None


# ---------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------


class Backend(Protocol):
    name: str

    def write(self, groups: Sequence[MetricGroup]) -> None: ...

    def handle(self, recorded: Recorded) -> None: ...

    def recall(self, run_started: RunStarted) -> None:
        """A resumed run's RunStarted, read from its log: context, not a new event."""

    def close(self) -> None: ...


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _format_value(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


class ConsoleTracker:
    """Progress bar with ETA on a terminal; plain lines (with ETA) anywhere else, e.g. CI."""

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, force_terminal: bool | None = None) -> None:
        from rich.console import Console

        self.console = Console(
            file=stream if stream is not None else sys.stdout, highlight=False, force_terminal=force_terminal
        )
        self.interactive = self.console.is_terminal
        self.progress: Any = None  # rich.progress.Progress while a terminal run is live
        self.task_id: Any = None
        self.mode = "minmax"
        self.total_rounds: int | None = None
        self.rounds_played = 0
        self.started_at: float | None = None
        self.rounds_at_start = 0
        self.last_window: dict[str, float] = {}
        self.last_lambda: float | None = None  # after the latest dual-ascent step
        self.lambda_in_force: float | None = None  # while the latest round was played

    # -- metrics --------------------------------------------------------------------------
    def write(self, groups: Sequence[MetricGroup]) -> None:
        for group in groups:
            if group.source == "window":
                self.last_window = group.values
                self._print(self._window_line(group))
            elif group.source == "policy":
                self._print(self._policy_line(group))
            elif group.source == "lambda":
                self.last_lambda = group.values["lambda/value"]
            elif group.source in ("eval", "eval_monitored"):
                shown = ", ".join(f"{name.split('/', 1)[1]} {value:.3f}" for name, value in group.values.items())
                kind = "evaluation" if group.source == "eval" else "monitored evaluation"
                self._print(f"{kind} (policy v{group.label}): {shown}")

    def _window_line(self, group: MetricGroup) -> str:
        values = group.values
        parts = [
            f"window {group.label:>4}",
            f"rounds {self._rounds_text()}",
            f"policy acc {_format_value(values.get('game/policy_accuracy'))}",
            f"deception {_format_value(values.get('game/deception_rate'))}",
        ]
        if self.mode == "minmax":
            parts.append(f"monitor fidelity {_format_value(values.get('game/monitor_fidelity'))}")
            parts.append(f"λ {_format_value(self.lambda_in_force)}")
        if not self.interactive:
            parts.append(f"eta {self._eta_text()}")
        return " | ".join(parts)

    def _policy_line(self, group: MetricGroup) -> str:
        keys = ("policy_loss", "approx_kl", "clipfrac", "kl_ref", "entropy", "grad_norm", "mean_reward")
        shown = [f"{key} {group.values[f'policy/{key}']:.4g}" for key in keys if f"policy/{key}" in group.values]
        return f"policy update v{group.label}: " + ", ".join(shown)

    # -- events ---------------------------------------------------------------------------
    def handle(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, RunStarted):
            self.mode = event.mode
            self.total_rounds = total_training_rounds(event)
            self._print(f"run {recorded.run_id}: {event.mode} on {event.dataset_name}, {self.total_rounds or 'unknown'} training rounds planned")
            self._start_progress()
        elif isinstance(event, RoundPlayed) and event.phase == "train":
            if self.started_at is None:
                self.started_at, self.rounds_at_start = time.monotonic(), self.rounds_played
            self.rounds_played += 1
            self.lambda_in_force = event.lambda_value
            if self.progress is not None:
                self.progress.update(self.task_id, completed=self.rounds_played)
        elif isinstance(event, RunResumed):
            self.rounds_played = _rounds_at_resume(event)
            of_total = f" of {self.total_rounds}" if self.total_rounds else ""
            self._print(f"resumed from the checkpoint at seq {event.checkpoint_seq}: "
                        f"{self.rounds_played}{of_total} rounds played")
            self._start_progress()
        elif isinstance(event, CheckpointSaved):
            self._print(f"checkpoint saved: {event.path}")
        elif isinstance(event, JudgeCalibrated) and event.method != "none":
            self._print(f"judge calibrated ({event.method}): log-odds offset {event.offset:+.3f}")
        elif isinstance(event, DiagnosticRaised):
            self._print(f"diagnostic after window {event.window}: {event.message}")
        elif isinstance(event, RunFinished):
            self._stop_progress()
            self._print(self._summary_line(event))
        elif isinstance(event, RunFailed):
            self._stop_progress()
            self._print(f"run failed: {event.error_type}: {event.message}")

    def recall(self, run_started: RunStarted) -> None:
        # The total and the mode, so that a resumed run shows its progress, ETA and λ.
        self.mode = run_started.mode
        self.total_rounds = total_training_rounds(run_started)

    def _summary_line(self, event: RunFinished) -> str:
        summary = (
            f"finished: {event.rounds} rounds, {event.policy_updates} policy updates, "
            f"{event.monitor_updates} monitor updates in {_format_duration(event.wall_seconds)}"
        )
        last = self.last_window
        if last:
            summary += (
                f" | last window: policy acc {_format_value(last.get('game/policy_accuracy'))}, "
                f"deception {_format_value(last.get('game/deception_rate'))}"
            )
            if self.mode == "minmax":
                summary += (
                    f", monitor fidelity {_format_value(last.get('game/monitor_fidelity'))}, "
                    f"λ {_format_value(self.last_lambda)}"
                )
        return summary

    def close(self) -> None:
        self._stop_progress()

    # -- terminal plumbing ----------------------------------------------------------------
    def _rounds_text(self) -> str:
        return f"{self.rounds_played}/{self.total_rounds}" if self.total_rounds else f"{self.rounds_played}"

    def _eta_text(self) -> str:
        done = self.rounds_played - self.rounds_at_start
        if self.started_at is None or not self.total_rounds or done <= 0:
            return "?"
        per_round = (time.monotonic() - self.started_at) / done
        return _format_duration(per_round * max(0, self.total_rounds - self.rounds_played))

    def _start_progress(self) -> None:
        if not self.interactive or self.progress is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task_id = self.progress.add_task("rounds", total=self.total_rounds, completed=self.rounds_played)
        self.progress.start()

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _print(self, line: str) -> None:
        # Through rich's console so that lines land above a live progress bar.
        self.console.print(line, markup=False, soft_wrap=True)


class TensorBoardTracker:
    """Scalars in TensorBoard event files under <run_dir>/tensorboard."""

    name = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(log_dir, os.W_OK):
            raise PermissionError(f"{log_dir} is not writable")
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, groups: Sequence[MetricGroup]) -> None:
        for group in groups:
            for name, value in group.values.items():
                self.writer.add_scalar(name, value, global_step=group.step)

    def handle(self, recorded: Recorded) -> None:
        if isinstance(recorded.event, RunFinished | RunFailed | CheckpointSaved):
            self.writer.flush()  # so that `tensorboard --logdir` shows it without waiting

    def recall(self, run_started: RunStarted) -> None:
        pass  # scalars are keyed by step: a resumed run appends to the same event files

    def close(self) -> None:
        self.writer.close()


def wandb_api_key_present() -> bool:
    """A W&B key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbTracker:
    """A real wandb run; offline (files under <run_dir>/wandb) unless an API key is present.

    The W&B run starts at RunStarted, from the run's recorded `logging.wandb` (project,
    entity, name, group, tags, mode), so a live run, a resumed one and a backfill all land
    where the run's own config says.
    """

    name = "wandb"

    def __init__(self, run_dir: Path, run_id: str, *, job_type: str, notices: TextIO) -> None:
        import wandb  # noqa: F401 - a missing package is a failure to start, reported once

        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        # wandb silently falls back to a temporary directory when it cannot write; a run's
        # files belong in the run directory, so an unwritable one is a failure to start.
        if not os.access(wandb_dir, os.W_OK):
            raise PermissionError(f"{wandb_dir} is not writable")
        self.run_dir, self.run_id, self.job_type = run_dir, run_id, job_type
        self.notices = notices
        self.mode = "offline"
        self.run: Any = None

    def _start(self, run_started: RunStarted) -> None:
        import wandb

        wanted = (run_started.config.get("logging") or {}).get("wandb") or {}
        # $WANDB_MODE overrides the config for one session (e.g. offline on a plane).
        explicit_mode = os.environ.get("WANDB_MODE") or wanted.get("mode")
        self.mode = explicit_mode if explicit_mode else ("online" if wandb_api_key_present() else "offline")
        settings = wandb.Settings(
            mode=self.mode,  # type: ignore[arg-type]
            silent=True,
            console="off",  # the console tracker owns the terminal
            x_disable_stats=True,
            disable_git=True,
            save_code=False,
        )
        self.run = wandb.init(
            dir=str(self.run_dir),
            project=wanted.get("project") or "minmax-engine",
            entity=wanted.get("entity"),
            name=wanted.get("name") or self.run_id,
            group=wanted.get("group"),
            tags=[run_started.mode, *wanted.get("tags", [])],
            job_type=self.job_type,
            settings=settings,
        )

    def write(self, groups: Sequence[MetricGroup]) -> None:
        if self.run is None:
            return  # nothing to log before RunStarted
        for group in groups:
            if group.values:
                self.run.log(dict(group.values), step=group.step)

    def handle(self, recorded: Recorded) -> None:
        if isinstance(recorded.event, RunStarted):
            self.recall(recorded.event)

    def recall(self, run_started: RunStarted) -> None:
        # A resumed run is a new W&B run (one per process): it gets the same config and tags.
        if self.run is None:
            self._start(run_started)
        self.run.config.update({"mode": run_started.mode, "dataset": run_started.dataset_name, **run_started.config})

    def close(self) -> None:
        import wandb

        if self.run is None:
            return  # never reached RunStarted: no W&B run was made
        offline_dir = Path(self.run.dir).parent  # .../wandb/offline-run-<time>-<id>
        self.run.finish()
        # finish() returns before wandb's service process has written the transaction log;
        # teardown() waits for it, so the files are complete when we name them (and when a
        # short-lived `minmax-engine log` exits). This process runs one W&B run at a time.
        wandb.teardown()
        if self.mode == "offline":
            print(f"wandb: offline run saved in {offline_dir}; upload it with: wandb sync {offline_dir}", file=self.notices)


# ---------------------------------------------------------------------------------------
# The fan-out the game loop talks to
# ---------------------------------------------------------------------------------------


class Trackers:
    """Publishes every event to every working backend; a failing one is dropped, once."""

    def __init__(self, backends: list[Backend], warnings: TextIO) -> None:
        self.backends = backends
        self.warnings = warnings
        self.stream = MetricStream()
        self.failed: list[str] = []  # backends disabled after an error, in order
        self.metrics_failed = False

    def publish(self, recorded: Recorded) -> None:
        groups = self._metrics(lambda: self.stream.observe(recorded))
        for backend in list(self.backends):
            self._guarded(backend, lambda b=backend: (b.write(groups), b.handle(recorded)))

    def resume(self, run_started: RunStarted) -> None:
        """A resumed run: hand the stream and the backends the RunStarted this process did not
        publish (the mode, the planned rounds and δ come from it)."""
        self._metrics(lambda: self.stream.recall(run_started))
        for backend in list(self.backends):
            self._guarded(backend, lambda b=backend: b.recall(run_started))

    def close(self) -> None:
        groups = self._metrics(self.stream.finish)
        for backend in list(self.backends):
            self._guarded(backend, lambda b=backend: (b.write(groups), b.close()))
        self.backends = []

    def _metrics(self, compute: Callable[[], list[MetricGroup]]) -> list[MetricGroup]:
        # Metrics are computed outside every backend, so a failure here is caught here: the
        # backends keep receiving events (progress, summary) without metrics from then on.
        if self.metrics_failed:
            return []
        try:
            return compute()
        except Exception as error:  # noqa: BLE001 - a logger must never end a run
            self.metrics_failed = True
            print(
                f"minmax-engine: tracker metrics failed and are off for the rest of the run: "
                f"{type(error).__name__}: {error}",
                file=self.warnings,
            )
            return []

    def _guarded(self, backend: Backend, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - a logger must never end a run
            self.backends.remove(backend)
            self.failed.append(backend.name)
            print(
                f"minmax-engine: tracker {backend.name!r} failed and is disabled for the rest of the run: "
                f"{type(error).__name__}: {error}",
                file=self.warnings,
            )


def open_trackers(
    backends: Sequence[str],
    run_dir: Path | str,
    run_id: str,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    job_type: str = "train",
) -> Trackers:
    """Start each named backend; one that cannot start is reported once and left out."""
    unknown = [name for name in backends if name not in BACKEND_NAMES]
    if unknown:
        raise UserError(
            f"logging.backends: unknown backend {unknown[0]!r}; choose from {', '.join(BACKEND_NAMES)}"
        )
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    run_dir = Path(run_dir)
    started: list[Backend] = []
    for name in dict.fromkeys(backends):  # a name listed twice starts once
        try:
            if name == "console":
                started.append(ConsoleTracker(out))
            elif name == "tensorboard":
                started.append(TensorBoardTracker(run_dir / "tensorboard"))
            else:
                started.append(WandbTracker(run_dir, run_id, job_type=job_type, notices=out))
        except Exception as error:  # noqa: BLE001 - missing package, bad key, unwritable dir
            print(
                f"minmax-engine: tracker {name!r} could not start and is skipped: {type(error).__name__}: {error}",
                file=err,
            )
    return Trackers(started, err)


# ---------------------------------------------------------------------------------------
# `minmax-engine log RUN --to tensorboard|wandb`: backfill a run through the same backends
# ---------------------------------------------------------------------------------------


def wandb_runs_in(wandb_dir: Path) -> list[Path]:
    """The W&B runs wandb wrote under `wandb_dir` (offline-run-* or, online, run-*), oldest first."""
    if not wandb_dir.is_dir():
        return []
    return sorted(
        (path for path in wandb_dir.iterdir() if path.is_dir() and path.name.startswith(("offline-run-", "run-"))),
        key=lambda path: path.name.removeprefix("offline-"),
    )


def run_log(run_dir: Path, to: str, force: bool) -> int:
    """Publish every event of a finished (or stopped) run to one tracker, as play would have."""
    reader = RunReader(run_dir)  # UserError for a missing or non-run directory
    if to == "tensorboard":
        tensorboard_dir = run_dir / "tensorboard"
        if tensorboard_dir.exists() and any(tensorboard_dir.iterdir()):
            if not force:
                raise UserError(
                    f"{tensorboard_dir} already holds TensorBoard files; pass --force to replace them"
                )
            shutil.rmtree(tensorboard_dir)
    if to == "wandb" and not force:
        # A second W&B run of the same log would be synced as a duplicate, so it is opt-in.
        earlier = wandb_runs_in(run_dir / "wandb")
        if earlier:
            raise UserError(
                f"{run_dir / 'wandb'} already holds {len(earlier)} W&B run(s) ({earlier[-1].name}); "
                "pass --force to log another one beside them"
            )
    events = reader.events()
    status = run_status(run_dir)
    if status.state != "finished":
        print(f"minmax-engine log: {run_dir} is {status.describe()}; logging its {len(events)} events so far",
              file=sys.stderr)
    trackers = open_trackers([to], run_dir, reader.run_id, job_type="backfill")
    if not trackers.backends:
        raise UserError(f"the {to} tracker could not start (reason above); nothing was logged")
    for recorded in events:
        trackers.publish(recorded)
    trackers.close()
    if trackers.failed:
        return 1  # the failure was printed once by Trackers
    print(f"logged {len(events)} events of run {reader.run_id} to {to}")
    return 0

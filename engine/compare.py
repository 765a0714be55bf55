"""`minmax-engine compare`: both modes on the same data for several seeds, then one report.

    minmax-engine compare --config configs/tiny.toml --seeds 0,1,2 [--out DIR]

The research question of GAME.md §4 in one command. With `[cluster] backend = "ray"` (or
`--cluster ray`) each run is a Ray task, `--parallel N` at a time (engine/sweep.py's
`play_runs`, engine/cluster.py). For each seed, a minmax run and an rlhf
run of the same config (the data and its split are the config's, so every run plays the same
states; only the seed changes), each an ordinary run directory under DIR named
`<config stem>-<mode>-seed<seed>`. Run again after an interruption, the command skips the
runs that finished, resumes a run that has a checkpoint and starts again one that has none.
Then it writes the report comparing the group of minmax runs with the group of rlhf runs
(engine/reports.py) into DIR/report.

Progress: one line for the whole comparison (runs done, training rounds over all runs, an
ETA from the seconds per round each mode has taken so far); the runs' own console tracker is
left out, the other configured trackers (TensorBoard, W&B) are kept.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from engine.config import ConfigOverrides, RunConfig, load_config
from storage import RunReader
from storage.errors import UserError
from storage.events import CheckpointSaved, RoundPlayed, RunFinished

MODES = ("minmax", "rlhf")
POLL_SECONDS = 2.0
PLAIN_LINE_SECONDS = 60.0  # without a terminal, a progress line at most this often


@dataclass(frozen=True)
class PlannedRun:
    mode: str
    seed: int
    config: RunConfig
    run_dir: Path


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: give distinct non-negative integers, e.g. --seeds 0,1,2")
    return seeds


def plan_runs(config_path: Path, seeds: list[int], out: Path) -> tuple[list[PlannedRun], list[str]]:
    """Every (seed, mode) run with its validated config; the warnings of the minmax config."""
    planned, warnings = [], []
    for seed in seeds:
        for mode in MODES:
            config, found = load_config(config_path, ConfigOverrides(mode=mode, seed=seed, run_dir=str(out)))
            if not warnings:
                warnings = found
            # This command prints one progress line for all runs; each run's own bar would fight it.
            backends = [name for name in config.logging.backends if name != "console"]
            config = config.model_copy(update={"logging": config.logging.model_copy(update={"backends": backends})})
            planned.append(PlannedRun(mode, seed, config, out / f"{config_path.stem}-{mode}-seed{seed}"))
    return planned, warnings


def run_state(run_dir: Path) -> tuple[str, int]:
    """("new" | "finished" | "resumable" | "restart", policy version of the last checkpoint)."""
    if not (run_dir / "log").is_dir():
        return "new", 0
    events = RunReader(run_dir).events()
    if any(isinstance(item.event, RunFinished) for item in events):
        return "finished", 0
    checkpoints = [item.event for item in events if isinstance(item.event, CheckpointSaved)]
    if not checkpoints:
        return "restart", 0
    return "resumable", checkpoints[-1].policy_version


def planned_rounds(config: RunConfig) -> int:
    from engine.data import load_dataset

    train = load_dataset(config.data).train
    return config.training.num_epochs * len(train) * config.training.samples_per_state


# ---------------------------------------------------------------------------------------
# The progress line
# ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Training rounds done over all runs, and the seconds per round each mode took here."""

    runs_total: int
    rounds_per_run: int
    stream: TextIO
    runs_done: int = 0
    rounds_done: dict[str, int] = field(default_factory=dict)  # run dir -> rounds done
    rounds_remaining: dict[str, int] = field(default_factory=dict)  # mode -> rounds not yet played
    measured: dict[str, tuple[float, int]] = field(default_factory=dict)  # mode -> (seconds, rounds), runs done here
    running: tuple[str, float, int] = ("", 0.0, 0)  # the run in progress: mode, seconds, rounds
    current: str = ""
    last_plain_line: float = 0.0

    def eta_seconds(self) -> float | None:
        measured = dict(self.measured)
        mode, seconds, rounds = self.running
        if rounds:
            spent, counted = measured.get(mode, (0.0, 0))
            measured[mode] = (spent + seconds, counted + rounds)
        rates = {mode: seconds / rounds for mode, (seconds, rounds) in measured.items() if rounds}
        if not rates:
            return None
        fallback = max(rates.values())  # a mode not yet measured: assume the slower known rate
        return sum(remaining * rates.get(mode, fallback) for mode, remaining in self.rounds_remaining.items())

    def line(self) -> str:
        done = sum(self.rounds_done.values())
        total = self.runs_total * self.rounds_per_run
        eta = self.eta_seconds()
        eta_text = "ETA --" if eta is None else f"ETA {_duration(eta)}"
        return (
            f"compare: {self.runs_done}/{self.runs_total} runs done, {done}/{total} training rounds, "
            f"{eta_text}  [{self.current}]"
        )

    def show(self, *, final: bool = False) -> None:
        if self.stream.isatty():
            self.stream.write("\r\033[2K" + self.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final or time.monotonic() - self.last_plain_line >= PLAIN_LINE_SECONDS:
            self.last_plain_line = time.monotonic()
            print(self.line(), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class _RoundCounter(threading.Thread):
    """Counts a run's training rounds from its log while the run writes it (readers never block
    the writer), and refreshes the progress line."""

    def __init__(self, progress: Progress, planned: PlannedRun, already_done: int, from_seq: int) -> None:
        super().__init__(daemon=True)
        self.progress, self.planned = progress, planned
        self.already_done, self.next_seq = already_done, from_seq
        self.counted = 0
        self.stopped = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        try:
            table = RunReader(self.planned.run_dir).table(first_seq=self.next_seq)
        except (UserError, FileNotFoundError):  # the log is being created or a segment renamed
            return
        if table.num_rows:
            types = table.column("event_type").to_pylist()
            phases = table.column("phase").to_pylist()
            self.counted += sum(kind == RoundPlayed.event_type and phase == "train" for kind, phase in zip(types, phases))
            self.next_seq = int(table.column("seq")[-1].as_py()) + 1
        self.update()

    def update(self) -> None:
        key = str(self.planned.run_dir)
        done = min(self.already_done + self.counted, self.progress.rounds_per_run)
        self.progress.rounds_remaining[self.planned.mode] -= done - self.progress.rounds_done.get(key, 0)
        self.progress.rounds_done[key] = done
        self.progress.running = (self.planned.mode, time.monotonic() - self.started_at, self.counted)
        self.progress.show()

    def finish(self) -> None:
        """Stop counting; the run's seconds and rounds join its mode's measured rate."""
        self.stopped.set()
        self.join()
        self.poll()
        mode, seconds, rounds = self.progress.running
        spent, counted = self.progress.measured.get(mode, (0.0, 0))
        self.progress.measured[mode] = (spent + seconds, counted + rounds)
        self.progress.running = (mode, 0.0, 0)


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def run(config_path: Path, seeds_text: str, out: Path | None, *, parallel: int = 1, cluster_backend: str | None = None,
        stream: TextIO | None = None) -> int:
    """`minmax-engine compare --config FILE --seeds 0,1,2 [--out DIR] [--cluster ray --parallel N]`
    (parsed in tui/cli.py)."""
    stream = stream or sys.stdout
    seeds = parse_seeds(seeds_text)
    if out is None:
        out = Path(load_config(config_path)[0].run_dir) / f"compare-{config_path.stem}"
    planned, warnings = plan_runs(config_path, seeds, out)
    for warning in warnings:
        print(f"minmax-engine compare: warning: {warning}", file=sys.stderr)
    from engine import game, reports  # torch and transformers load only once the arguments are good

    out.mkdir(parents=True, exist_ok=True)
    cluster = planned[0].config.cluster
    if cluster_backend is not None:
        cluster = cluster.model_copy(update={"backend": cluster_backend})
    if cluster.backend == "ray" or parallel > 1:  # each run a Ray task, with the sweep's progress view
        from engine.sweep import play_runs

        print(f"minmax-engine compare: {len(planned)} runs ({len(seeds)} seeds × {len(MODES)} modes) in {out}, "
              f"as Ray tasks, {parallel} at a time", file=stream, flush=True)
        failed = play_runs(planned, cluster, parallel=parallel, stream=stream, label="compare")
        if failed:
            print(f"minmax-engine compare: {len(failed)} run(s) failed; run the same command again to resume them",
                  file=sys.stderr, flush=True)
            return 1
        return reports.run([item.run_dir for item in planned], out / "report")
    per_run = planned_rounds(planned[0].config)
    progress = Progress(runs_total=len(planned), rounds_per_run=per_run, stream=stream,
                        rounds_remaining={mode: 0 for mode in MODES})
    states = {}
    for item in planned:
        state, policy_version = run_state(item.run_dir)
        states[item.run_dir] = state
        done = per_run if state == "finished" else 0
        if state == "resumable":  # a checkpoint follows a policy update: k windows of B rounds each
            training = item.config.training
            done = min(per_run, policy_version * training.monitor_updates_per_policy * training.window_size)
        progress.rounds_done[str(item.run_dir)] = done
        progress.rounds_remaining[item.mode] += per_run - done
        progress.runs_done += state == "finished"
    print(f"minmax-engine compare: {len(planned)} runs ({len(seeds)} seeds × {len(MODES)} modes) in {out}", file=stream, flush=True)

    for item in planned:
        state = states[item.run_dir]
        if state == "finished":
            continue
        progress.current = f"{item.mode} seed {item.seed}: " + ("resuming" if state == "resumable" else "playing")
        if state == "restart":  # stopped before its first checkpoint: nothing to resume from
            shutil.rmtree(item.run_dir)
        from_seq = RunReader(item.run_dir).last_seq() + 1 if state == "resumable" else 0
        counter = _RoundCounter(progress, item, progress.rounds_done[str(item.run_dir)], from_seq)
        progress.show()
        counter.start()
        try:
            if state == "resumable":
                game.resume_run(item.run_dir)
            else:
                game.start_run(item.config, item.run_dir)
        finally:
            counter.finish()
        progress.runs_done += 1
        progress.show()
    progress.current = "report"
    progress.show(final=True)
    return reports.run([item.run_dir for item in planned], out / "report")

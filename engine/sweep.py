"""`minmax-engine sweep`: a grid of config overrides × seeds, one run directory each.

    minmax-engine sweep --config configs/tiny.toml --grid training.policy_learning_rate=1e-4,3e-4 \\
        --grid lagrangian.delta=0.1,0.2 --seeds 0,1 --out runs/sweep [--parallel 2] [--cluster ray]

Every combination of the grid's values (each KEY a dotted config key, each value a TOML value)
for every seed is one ordinary run, in DIR/<config stem>-<key>=<value>…-seed<seed>. With
`[cluster] backend = "ray"` in the config, or `--cluster ray`, each run is a Ray task asking for
as many CPUs as it has threads, up to `--parallel` at a time (engine/cluster.py); otherwise the
runs play one after another in this process. Run again after an interruption, the command skips
finished runs, resumes a run that has a checkpoint and starts again one that has none (as
`compare` does, which hands its runs to `play_runs` too when Ray is asked for).

Progress: one line per run (waiting, playing, resuming, done, failed; its training rounds) and
one for the sweep (runs done, rounds over all runs, an ETA from the rounds per second so far).
"""

from __future__ import annotations

import itertools
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from engine.compare import PlannedRun, parse_seeds, planned_rounds, run_state
from engine.config import ClusterConfig, ConfigOverrides, load_config, parse_value
from storage import RunReader
from storage.errors import UserError
from storage.events import RoundPlayed

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.cluster import RunTask

POLL_SECONDS = 2.0
PLAIN_LINES_SECONDS = 60.0  # without a terminal, the progress lines at most this often


def parse_grid(texts: list[str]) -> list[tuple[str, list[tuple[str, object]]]]:
    """`KEY=V1,V2` per --grid: the key and each value as written and as parsed."""
    grid = []
    for text in texts:
        key, sign, values = text.partition("=")
        key = key.strip()
        written = [value.strip() for value in values.split(",") if value.strip()]
        if not sign or not key or not all(part.isidentifier() for part in key.split(".")) or not written:
            raise UserError(f"--grid {text!r}: give KEY=V1,V2 with a dotted config key, e.g. --grid training.window_size=4,8")
        if key in ("seed", "run_dir"):
            raise UserError(f"--grid {text!r}: {key} is set by the sweep itself; use --seeds / --out")
        grid.append((key, [(value, parse_value(value)) for value in written]))
    return grid


def plan_sweep(config_path: Path, grid: list[tuple[str, list[tuple[str, object]]]], seeds: list[int],
               out: Path) -> tuple[list[PlannedRun], list[str]]:
    """Every grid point × seed with its validated config (a bad value fails here, before any run)."""
    planned, warnings = [], []
    for point in itertools.product(*[[(key, written, value) for written, value in values] for key, values in grid]):
        for seed in seeds:
            settings = tuple((key, value) for key, _, value in point)
            config, found = load_config(config_path, ConfigOverrides(seed=seed, run_dir=str(out), settings=settings))
            warnings.extend(warning for warning in found if warning not in warnings)
            backends = [name for name in config.logging.backends if name != "console"]  # one progress view
            config = config.model_copy(update={"logging": config.logging.model_copy(update={"backends": backends})})
            label = "".join(f"-{key.rsplit('.', 1)[-1]}={written.replace('/', '_')}" for key, written, _ in point)
            planned.append(PlannedRun(config.mode, seed, config, out / f"{config_path.stem}{label}-seed{seed}"))
    return planned, warnings


# ---------------------------------------------------------------------------------------
# Progress: one line per run, one for the sweep
# ---------------------------------------------------------------------------------------


@dataclass
class RunProgress:
    planned: PlannedRun
    total: int  # training rounds the run plays
    done: int  # training rounds done (from the checkpoint a resume starts at, then counted)
    state: str  # "waiting" | "playing" | "resuming" | "done" | "failed"
    next_seq: int = 0  # the log is read from here on

    def count_new_rounds(self) -> int:
        """Training rounds logged since the last poll (readers never block the run's writer)."""
        try:
            table = RunReader(self.planned.run_dir).table(first_seq=self.next_seq)
        except (UserError, FileNotFoundError):  # the log is being created or a segment renamed
            return 0
        if not table.num_rows:
            return 0
        types, phases = table.column("event_type").to_pylist(), table.column("phase").to_pylist()
        new = sum(kind == RoundPlayed.event_type and phase == "train" for kind, phase in zip(types, phases))
        self.next_seq = int(table.column("seq")[-1].as_py()) + 1
        self.done = min(self.total, self.done + new)
        return new


class SweepProgress:
    def __init__(self, runs: list[RunProgress], stream: TextIO, label: str) -> None:
        self.runs, self.stream, self.label = runs, stream, label
        self.started = time.monotonic()
        self.played_here = 0  # rounds played by this invocation: the ETA's rate
        self.lines_shown = 0
        self.last_plain = 0.0
        self.lock = threading.Lock()

    def poll(self) -> None:
        with self.lock:
            for run in self.runs:
                if run.state in ("playing", "resuming"):
                    self.played_here += run.count_new_rounds()

    def eta_seconds(self) -> float | None:
        if not self.played_here:
            return None
        remaining = sum(run.total - run.done for run in self.runs if run.state != "failed")
        return remaining * (time.monotonic() - self.started) / self.played_here

    def lines(self) -> list[str]:
        finished = sum(run.state == "done" for run in self.runs)
        done, total = sum(run.done for run in self.runs), sum(run.total for run in self.runs)
        eta = self.eta_seconds()
        lines = [f"  {run.planned.run_dir.name}: {run.state}, {run.done}/{run.total} rounds" for run in self.runs]
        return lines + [f"{self.label}: {finished}/{len(self.runs)} runs done, {done}/{total} training rounds, "
                        f"ETA {'--' if eta is None else _duration(eta)}"]

    def show(self, *, final: bool = False) -> None:
        with self.lock:
            lines = self.lines()
            if self.stream.isatty():
                up = f"\033[{self.lines_shown}F" if self.lines_shown else ""
                self.stream.write(up + "".join(f"\033[2K{line}\n" for line in lines))
                self.stream.flush()
                self.lines_shown = len(lines)
            elif final or time.monotonic() - self.last_plain >= PLAIN_LINES_SECONDS:
                self.last_plain = time.monotonic()
                print("\n".join(lines), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# ---------------------------------------------------------------------------------------
# Playing the runs
# ---------------------------------------------------------------------------------------


def play_runs(planned: list[PlannedRun], cluster: ClusterConfig, *, parallel: int, stream: TextIO,
              label: str) -> list[PlannedRun]:
    """Play every run not yet finished (resuming those with a checkpoint), locally one after
    another or as Ray tasks; returns the runs that failed."""
    from engine.cluster import RunTask, play_in_tasks
    from engine.devices import intra_op_threads

    if parallel > 1 and cluster.backend != "ray":
        raise UserError(f'--parallel {parallel} needs Ray: set [cluster] backend = "ray" or pass --cluster ray')
    runs, tasks = [], []
    for item in planned:
        state, policy_version = run_state(item.run_dir)
        total = planned_rounds(item.config)
        done = total if state == "finished" else 0
        if state == "resumable":  # a checkpoint follows a policy update: k windows of B rounds each
            training = item.config.training
            done = min(total, policy_version * training.monitor_updates_per_policy * training.window_size)
        run = RunProgress(item, total, done, "done" if state == "finished" else "waiting")
        runs.append(run)
        if state == "finished":
            continue
        if state == "restart":  # stopped before its first checkpoint: nothing to resume from
            shutil.rmtree(item.run_dir)
        run.next_seq = RunReader(item.run_dir).last_seq() + 1 if state == "resumable" else 0
        tasks.append(RunTask(item.run_dir.name, item.config, item.run_dir, resume=state == "resumable"))
    progress = SweepProgress(runs, stream, label)
    by_dir = {run.planned.run_dir: run for run in runs}
    failed: list[PlannedRun] = []

    def starting(task: RunTask) -> None:
        by_dir[task.run_dir].state = "resuming" if task.resume else "playing"

    def done(task: RunTask, error: BaseException | None) -> None:
        progress.poll()
        run = by_dir[task.run_dir]
        run.state = "failed" if error is not None else "done"
        if error is not None:
            failed.append(run.planned)
            message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            print(f"minmax-engine {label}: {task.name} failed: {message}", file=sys.stderr, flush=True)
        progress.show()

    progress.show()
    if cluster.backend == "ray":
        threads = intra_op_threads()
        play_in_tasks(tasks, cluster, parallel=parallel, threads=threads, on_start=starting,
                      on_wait=lambda: (progress.poll(), progress.show()), on_done=done)
    else:
        _play_here(tasks, progress, starting, done)
    progress.show(final=True)
    return failed


def _play_here(tasks: list[RunTask], progress: SweepProgress, starting: Callable[[RunTask], None],
               done: Callable[[RunTask, BaseException | None], None]) -> None:
    """One run after another in this process, the progress polled from a thread."""
    from engine import game

    stop = threading.Event()

    def poll_until_stopped() -> None:
        while not stop.wait(POLL_SECONDS):
            progress.poll()
            progress.show()

    poller = threading.Thread(target=poll_until_stopped, daemon=True)
    poller.start()
    try:
        for task in tasks:
            starting(task)
            progress.show()
            try:
                if task.resume:
                    game.resume_run(task.run_dir)
                else:
                    game.start_run(task.config, task.run_dir)
            except (UserError, RuntimeError) as error:
                done(task, error)
            else:
                done(task, None)
    finally:
        stop.set()
        poller.join()


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def run(config_path: Path, grid_texts: list[str], seeds_text: str, out: Path, *, parallel: int = 1,
        cluster_backend: str | None = None, stream: TextIO | None = None) -> int:
    """`minmax-engine sweep` (parsed in tui/cli.py): 0 when every run finished, 1 when one failed."""
    stream = stream or sys.stdout
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: give at least 1")
    grid = parse_grid(grid_texts)
    seeds = parse_seeds(seeds_text)
    planned, warnings = plan_sweep(config_path, grid, seeds, out)
    for warning in warnings:
        print(f"minmax-engine sweep: warning: {warning}", file=sys.stderr)
    cluster = planned[0].config.cluster
    if cluster_backend is not None:
        cluster = cluster.model_copy(update={"backend": cluster_backend})
    out.mkdir(parents=True, exist_ok=True)
    how = f"as Ray tasks, {parallel} at a time" if cluster.backend == "ray" else "one after another"
    print(f"minmax-engine sweep: {len(planned)} runs ({len(planned) // len(seeds)} grid points × {len(seeds)} seeds) "
          f"in {out}, {how}", file=stream, flush=True)
    failed = play_runs(planned, cluster, parallel=parallel, stream=stream, label="sweep")
    if failed:
        print(f"minmax-engine sweep: {len(failed)} run(s) failed; run the same command again to resume them",
              file=sys.stderr, flush=True)
        return 1
    return 0

"""What `minmax-engine play` and `minmax-engine eval` do (their arguments are parsed in tui/cli.py).

    minmax-engine play --config configs/tiny.toml
    minmax-engine play --config configs/tiny.toml --mode rlhf --epochs 1
    minmax-engine play --resume runs/<run_id>
    minmax-engine eval runs/<run_id> [--checkpoint N] [--dataset NAME|PATH]

`play` itself prints the run id and directory at the start (once the directory exists) and
at the end, how many stories were cut to fit the models' context (once, when any were), and
a short final summary when the console tracker (which prints the progress bar, the
per-window lines and the summary) is not among the backends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ConfigOverrides, default_role_notices, load_config
from storage.errors import UserError

if TYPE_CHECKING:
    from storage.events import EvaluationCompleted


def run(args: argparse.Namespace) -> int:
    from engine import game  # torch and transformers load only once the arguments are good
    from engine.devices import set_intra_op_threads

    set_intra_op_threads()

    if args.resume is not None:
        run_dir = _find_run(args.resume, args.run_dir)
        _reject_overrides_on_resume(args)
        print(f"minmax-engine play: resuming run {run_dir.name} in {run_dir}", flush=True)
        if args.eval_only:
            for completed in game.evaluate_run(run_dir):
                _print_evaluation(completed)
        else:
            finished = game.resume_run(run_dir)
            _print_summary(finished.rounds, finished.policy_updates, finished.monitor_updates, finished.wall_seconds)
        print(f"minmax-engine play: run {run_dir.name} done: {run_dir}", flush=True)
        return 0

    if args.config is None:
        raise UserError("play needs --config FILE (e.g. --config configs/tiny.toml) or --resume RUN")
    overrides = ConfigOverrides(
        num_epochs=args.epochs, dataset=args.dataset, mode=args.mode, run_dir=args.run_dir, seed=args.seed
    )
    config, warnings = load_config(args.config, overrides)
    for warning in warnings:
        print(f"minmax-engine play: warning: {warning}", file=sys.stderr)
    for notice in default_role_notices(config):  # on stdout: stderr stays the one-line error
        print(f"minmax-engine play: {notice}", flush=True)
    run_id = game.new_run_id(config)
    run_dir = Path(config.run_dir) / run_id
    # Announced from inside: the run's line comes once its directory exists, after every
    # input was checked and the models loaded.
    finished = game.start_run(config, run_dir, eval_only=args.eval_only, announce=_announce)
    if "console" not in config.logging.backends:  # the console tracker already printed it
        _print_summary(finished.rounds, finished.policy_updates, finished.monitor_updates, finished.wall_seconds)
    print(f"minmax-engine play: run {run_id} done: {run_dir}", flush=True)
    return 0


def _announce(line: str) -> None:
    print(f"minmax-engine play: {line}", flush=True)


def run_eval(args: argparse.Namespace) -> int:
    from engine import game
    from engine.devices import set_intra_op_threads

    set_intra_op_threads()

    run_dir = _find_run(args.run, args.run_dir)
    evaluations = game.evaluate_run(run_dir, dataset=args.dataset, checkpoint=args.checkpoint)
    first = evaluations[0]
    print(
        f"minmax-engine eval: {run_dir.name}: {first.n_rounds // first.samples_per_state} "
        f"{first.split} states of {first.dataset}, checkpoint {first.checkpoint or '(initial adapters)'}",
        flush=True,
    )
    for completed in evaluations:
        _print_evaluation(completed)
    return 0


def _find_run(name: str, parent: str | None) -> Path:
    given = Path(name)
    if given.is_dir():
        return given
    candidate = Path(parent or "runs") / name
    if candidate.is_dir():
        return candidate
    raise UserError(f"{name}: no such run directory (nor {candidate}); pass runs/<run_id>")


def _reject_overrides_on_resume(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--config", args.config), ("--epochs", args.epochs), ("--dataset", args.dataset),
                                      ("--mode", args.mode), ("--seed", args.seed)) if value is not None]
    if given:
        raise UserError(
            f"{given[0]}: --resume continues with the config the run recorded; drop {', '.join(given)}"
        )


def _print_summary(rounds: int, policy_updates: int, monitor_updates: int, seconds: float) -> None:
    print(
        f"minmax-engine play: {rounds} rounds, {policy_updates} policy updates, "
        f"{monitor_updates} monitor updates in {seconds:.0f} s",
        flush=True,
    )


def _print_evaluation(completed: EvaluationCompleted) -> None:
    shown = ("policy_accuracy", "judge_accuracy", "deception_rate", "monitor_fidelity", "constraint_violation")
    parts = [f"{name} {completed.metrics[name]:.3f}" for name in shown if name in completed.metrics]
    print(
        f"  {completed.protocol} ({completed.n_rounds} rounds, {completed.samples_per_state} per state): " + ", ".join(parts),
        flush=True,
    )

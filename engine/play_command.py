"""`minmax-engine play` and `minmax-engine eval`: the command line of the game loop.

    minmax-engine play --config configs/tiny.toml
    minmax-engine play --config configs/tiny.toml --mode rlhf --epochs 1
    minmax-engine play --resume runs/<run_id>
    minmax-engine eval runs/<run_id> [--checkpoint N] [--dataset NAME|PATH]

`play` itself prints only the run id and directory at the start and the end (and a short
final summary when the console tracker, which prints the progress bar, the per-window lines
and the summary, is not among the backends).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import ConfigOverrides, load_config
from storage.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="a TOML or JSON run config, e.g. configs/tiny.toml")
    parser.add_argument("--epochs", type=int, help="passes over the train split (training.num_epochs)")
    parser.add_argument("--dataset", help='"builtin" or a QA-simple .json / QuALITY .jsonl path (data.dataset)')
    parser.add_argument("--mode", choices=("minmax", "rlhf"), help="minmax (policy vs monitor) or the rlhf baseline")
    parser.add_argument("--run-dir", help="parent directory of the run's directory (default: runs)")
    parser.add_argument("--seed", type=int, help="the run's seed")
    parser.add_argument("--resume", metavar="RUN", help="continue a run (its directory or its id under runs/)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate on the held-out split and exit")


def run(args: argparse.Namespace) -> int:
    from engine import game  # torch and transformers load only once the arguments are good
    from engine.devices import set_intra_op_threads

    set_intra_op_threads()

    if args.resume is not None:
        run_dir = _find_run(args.resume, args.run_dir)
        _reject_overrides_on_resume(args)
        print(f"minmax-engine play: resuming run {run_dir.name} in {run_dir}", flush=True)
        if args.eval_only:
            completed = game.evaluate_run(run_dir)
            _print_evaluation(completed.metrics)
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
    run_id = game.new_run_id(config)
    run_dir = Path(config.run_dir) / run_id
    print(f"minmax-engine play: run {run_id} in {run_dir}", flush=True)
    finished = game.start_run(config, run_dir, eval_only=args.eval_only)
    if "console" not in config.logging.backends:  # the console tracker already printed it
        _print_summary(finished.rounds, finished.policy_updates, finished.monitor_updates, finished.wall_seconds)
    print(f"minmax-engine play: run {run_id} done: {run_dir}", flush=True)
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run directory (or a run id under runs/)")
    parser.add_argument("--dataset", help="evaluate on this dataset's held-out split instead of the run's")
    parser.add_argument("--checkpoint", type=int, help="the checkpoint (policy version) to evaluate; default: the last")
    parser.add_argument("--run-dir", help="where to look for a run id (default: runs)")


def run_eval(args: argparse.Namespace) -> int:
    from engine import game
    from engine.devices import set_intra_op_threads

    set_intra_op_threads()

    run_dir = _find_run(args.run, args.run_dir)
    completed = game.evaluate_run(run_dir, dataset=args.dataset, checkpoint=args.checkpoint)
    print(
        f"minmax-engine eval: {run_dir.name}: {completed.n_rounds} {completed.split} rounds of "
        f"{completed.dataset}, checkpoint {completed.checkpoint or '(initial adapters)'}",
        flush=True,
    )
    _print_evaluation(completed.metrics)
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


def _print_evaluation(metrics: dict[str, float]) -> None:
    shown = ("policy_accuracy", "judge_accuracy", "deception_rate", "monitor_fidelity", "constraint_violation")
    parts = [f"{name} {metrics[name]:.3f}" for name in shown if name in metrics]
    print("  " + ", ".join(parts), flush=True)

"""`minmax-engine`: the command line, the outermost layer of the project.

    minmax-engine play --config configs/tiny.toml
    minmax-engine sql runs "SELECT * FROM rounds LIMIT 5"

Every subcommand's arguments are declared here, in one parser; what a command does lives in
the layer that owns it (engine/play_command.py, engine/compare.py, engine/sweep.py, engine/replay.py, engine/reports.py,
engine/trackers.py, storage/commands.py, tui/app.py). Each command's function below imports
its implementation when it runs, so `--help`, `sql` and `verify` never load torch,
transformers or peft (tests/test_cli.py checks it in a fresh interpreter;
benchmarks/bench_cli.py times `--help`).

The command line lives in `tui/` (everything a person types or looks at in a terminal) so
that the layers point one way: `tui` → `engine` → `referees` → `players` → `storage`.
Errors a user can fix (`storage.errors.UserError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

# --- what each command runs: the implementation is imported only here --------------------


def _play(args: argparse.Namespace) -> int:
    from engine import play_command

    return play_command.run(args)


def _eval(args: argparse.Namespace) -> int:
    from engine import play_command

    return play_command.run_eval(args)


def _compare(args: argparse.Namespace) -> int:
    from engine import compare

    return compare.run(args.config, args.seeds, args.out, parallel=args.parallel, cluster_backend=args.cluster)


def _sweep(args: argparse.Namespace) -> int:
    from engine import sweep

    return sweep.run(args.config, args.grid, args.seeds, args.out, parallel=args.parallel, cluster_backend=args.cluster)


def _replay(args: argparse.Namespace) -> int:
    from engine import replay

    return replay.run(args.run, as_json=args.json)


def _verify(args: argparse.Namespace) -> int:
    from storage import commands

    return commands.run_verify(args.run, all_problems=args.all_problems)


def _sql(args: argparse.Namespace) -> int:
    from engine.outcomes import game_views  # the game's `metrics` view over storage's generic ones
    from storage import commands

    return commands.run_sql(args.path, args.query, args.format, args.output, verify=args.verify,
                            extra_views=game_views())


def _export(args: argparse.Namespace) -> int:
    from engine.outcomes import game_views
    from storage import commands

    return commands.run_export(args.path, args.to, extra_views=game_views())


def _tui(args: argparse.Namespace) -> int:
    from tui.app import open_app

    open_app(args.path).run()
    return 0


def _report(args: argparse.Namespace) -> int:
    from engine import reports

    return reports.run(args.runs, args.out)


def _log(args: argparse.Namespace) -> int:
    from engine import trackers

    return trackers.run_log(args.run, args.to, force=args.force)


# --- the parser ------------------------------------------------------------------------------


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=summary)
    parser.set_defaults(runs_command=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minmax-engine", description="The Monitor-vs-LLM game: play, train, inspect and compare runs."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    play = _command(commands, "play", "play (and train) a game from a config", _play)
    play.add_argument("--config", type=Path, help="a TOML or JSON run config, e.g. configs/tiny.toml")
    play.add_argument("--epochs", type=int, help="passes over the train split (training.num_epochs)")
    play.add_argument("--dataset", help='"builtin", "qa_simple" (dataset/qa_simple/data), a QA-simple .json or train/val '
                      "directory, a QuALITY .jsonl, Parquet or saved-datasets path, or a cached hub id (data.dataset)")
    play.add_argument("--mode", choices=("minmax", "rlhf"), help="minmax (policy vs monitor) or the rlhf baseline")
    play.add_argument("--run-dir", help="parent directory of the run's directory (default: runs)")
    play.add_argument("--seed", type=int, help="the run's seed")
    play.add_argument("--resume", metavar="RUN", help="continue a run (its directory or its id under runs/)")
    play.add_argument("--eval-only", action="store_true", help="evaluate on the held-out split and exit")

    evaluate = _command(commands, "eval", "evaluate a run's saved adapters on held-out states", _eval)
    evaluate.add_argument("run", help="a run directory (or a run id under runs/)")
    evaluate.add_argument("--dataset", help="evaluate on this dataset's held-out split instead of the run's")
    evaluate.add_argument("--checkpoint", type=int, help="the checkpoint (policy version) to evaluate; default: the last")
    evaluate.add_argument("--run-dir", help="where to look for a run id (default: runs)")

    compare = _command(commands, "compare", "play both modes for several seeds and report minmax against rlhf", _compare)
    compare.add_argument("--config", type=Path, required=True, help="a TOML or JSON run config, e.g. configs/tiny.toml")
    compare.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one minmax and one rlhf run each (default: 0,1,2)")
    compare.add_argument("--out", type=Path, help="directory of the runs and the report (default: <run_dir>/compare-<config name>); "
                         "run again to skip finished runs and resume a stopped one")
    _cluster_arguments(compare)

    sweep = _command(commands, "sweep", "play a grid of config overrides × seeds, one run directory each", _sweep)
    sweep.add_argument("--config", type=Path, required=True, help="a TOML or JSON run config, e.g. configs/tiny.toml")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="a dotted config key and its values (TOML), e.g. training.policy_learning_rate=1e-4,3e-4; "
                       "repeat for more keys (every combination is played)")
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds, one run per grid point each (default: 0)")
    sweep.add_argument("--out", type=Path, required=True,
                       help="directory of the runs; run again to skip finished runs and resume a stopped one")
    _cluster_arguments(sweep)

    replay = _command(commands, "replay", "fold a run's log and re-check its λ trajectory", _replay)
    replay.add_argument("run", type=Path, metavar="RUN", help="a run directory (runs/<run_id>)")
    replay.add_argument("--json", action="store_true", help="print the folded state as JSON instead of a summary")

    verify = _command(commands, "verify", "check a run's hash chain, sequence and schema", _verify)
    verify.add_argument("run", metavar="RUN", type=Path, help="a run directory (runs/<run_id>)")
    verify.add_argument("--all-problems", action="store_true", help="list every problem found, not only the first")

    sql = _command(commands, "sql", "query one run or every run under a directory with SQL", _sql)
    sql.add_argument("path", metavar="RUN_OR_DIR", help="a run directory, or a directory of runs")
    sql.add_argument("query", metavar="SQL", help="one SELECT over the run's views (docs/ARCHITECTURE.md lists them; "
                     'quote the keywords "window" and "lambda")')
    sql.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                     help="table (aligned, default), csv, json (one object per line) or parquet")
    sql.add_argument("--output", metavar="FILE", type=Path,
                     help="write to FILE (outside every run) instead of standard output; required for parquet")
    sql.add_argument("--verify", action="store_true",
                     help="verify every run's whole hash chain first, and refuse a run that fails")

    export = _command(commands, "export", "write one Parquet file per view", _export)
    export.add_argument("path", metavar="RUN_OR_DIR", help="a run directory, or a directory of runs")
    export.add_argument("--to", metavar="DIR", type=Path, required=True,
                        help="directory (outside every run) to write <view>.parquet into; created if missing")

    tui = _command(commands, "tui", "replay and inspect runs in the terminal", _tui)
    tui.add_argument("path", nargs="?", default="runs", type=Path, metavar="RUN | RUNS_DIR",
                     help="a run directory (runs/<run_id>) or a directory of runs (default: ./runs)")

    report = _command(commands, "report", "plots and an HTML report for one or more runs", _report)
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories, e.g. runs/<run_id>")
    report.add_argument("--out", required=True, type=Path,
                        help="directory (outside every run) for index.html and the PNGs")

    log = _command(commands, "log", "backfill a run into TensorBoard or W&B", _log)
    log.add_argument("run", type=Path, help="a run directory, e.g. runs/<run_id>")
    log.add_argument("--to", required=True, choices=("tensorboard", "wandb"), help="the tracker to fill")
    log.add_argument("--force", action="store_true",
                     help="log even when the run already holds that tracker's files (live logging or an earlier "
                     "backfill): replaces <run>/tensorboard; adds another W&B run beside those in <run>/wandb")
    return parser


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", choices=("local", "ray"),
                        help='"ray": each run as a Ray task on [cluster] address (default: the config\'s [cluster] backend)')
    parser.add_argument("--parallel", type=int, default=1, metavar="N", help="runs at a time, with Ray (default: 1)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    # Imported after parsing: `--help` and usage errors answer without loading storage (numpy, Arrow).
    from storage.errors import UserError

    # peft probes a transformers attribute that transformers 5 deprecated: not the user's to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        return int(args.runs_command(args))
    except UserError as error:
        print(f"minmax-engine {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minmax-engine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`minmax-engine`: the command line, the outermost layer of the project.

    minmax-engine play --config configs/tiny.toml

The command line lives in `tui/` (everything a person types or looks at in a terminal) so
that the layers point one way: `tui` → `engine` → `referees` → `players` → `storage`, and
no core package imports a user interface.

Each subcommand's module is imported only when that subcommand runs, so `minmax-engine sql`
does not pay for importing torch. A module provides `add_arguments(parser)` and
`run(args) -> int` (an exit status); for modules that serve two commands the function
names carry the command (`add_eval_arguments`, `run_eval`).

Errors a user can fix (`storage.errors.UserError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from storage.errors import UserError

# command -> (module, add-arguments function, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "play": ("engine.play_command", "add_arguments", "run", "play (and train) a game from a config"),
    "eval": ("engine.play_command", "add_eval_arguments", "run_eval", "evaluate a run's saved adapters on held-out states"),
    "replay": ("engine.replay", "add_arguments", "run", "fold a run's log and re-check its λ trajectory"),
    "verify": ("storage.commands", "add_verify_arguments", "run_verify", "check a run's hash chain, sequence and schema"),
    "sql": ("engine.query_commands", "add_sql_arguments", "run_sql", "query one run or every run under a directory with SQL"),
    "export": ("engine.query_commands", "add_export_arguments", "run_export", "write one Parquet file per view"),
    "tui": ("tui.app", "add_arguments", "run", "replay and inspect runs in the terminal"),
    "report": ("engine.reports", "add_arguments", "run", "plots and an HTML report for one or more runs"),
    "log": ("engine.trackers", "add_log_arguments", "run_log", "backfill a run into TensorBoard or W&B"),
}


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minmax-engine",
        description="The Monitor-vs-LLM game: play, train, inspect and compare runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<8} {spec[3]}" for name, spec in COMMANDS.items()),
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_level_parser().parse_args(argv[:1] or ["--help"])
        return 2  # parse_args exits; kept for type checkers
    name, rest = argv[0], argv[1:]
    module_name, add_name, run_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"minmax-engine {name}", description=help_text)
    getattr(module, add_name)(parser)
    args = parser.parse_args(rest)
    try:
        return int(getattr(module, run_name)(args))
    except UserError as error:
        print(f"minmax-engine {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minmax-engine {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Where commands may write: anywhere but inside a run directory, which only its writer edits.

    refuse_inside_a_run(Path(args.output), "--output")    # sql --output, export --to, report --out

A file written into a run (`sql --output RUN/log/head.json`) would break the log that
`verify` checks, and even a harmless one would make the run differ from what was played.
The check resolves symlinks and `..`, then looks at the target and every directory above it
for a run's log, so a run is protected whichever path names it.
"""

from __future__ import annotations

from pathlib import Path

from storage.errors import UserError
from storage.layout import HEAD_NAME, LOG_DIR_NAME, MANIFEST_NAME


def is_run_dir(path: Path) -> bool:
    """A run's directory: its log holds the manifest or the head (either survives alone)."""
    log_dir = path / LOG_DIR_NAME
    return (log_dir / MANIFEST_NAME).is_file() or (log_dir / HEAD_NAME).is_file()


def refuse_inside_a_run(target: Path, flag: str) -> None:
    """UserError naming `flag` when `target` is a run directory or lies inside one."""
    resolved = target.resolve()
    for directory in (resolved, *resolved.parents):
        if directory.is_dir() and is_run_dir(directory):
            raise UserError(
                f"{flag} {target}: inside the run directory {directory}; only the run's own writer "
                "writes there, so choose a path outside it"
            )

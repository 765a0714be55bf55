"""storage: the event log of a run (the bottom layer; imports nothing of ours).

Events are written by `RunWriter`, read by `RunReader` (also while being written), queried
with SQL through `RunsQuery`, and checked by `verify_run`. See docs/ARCHITECTURE.md for the
contract. The modules, innermost first:

    events.py    the event dataclasses            codec.py     events <-> columns and hashes
    layout.py    the run directory's files         segments.py  Arrow segment files
    writer.py    RunWriter                         reader.py    RunReader
    verify.py    verify_run                        query.py     RunsQuery (SQL views)
    commands.py  the sql, verify, export commands  synthetic.py generated runs for tests
"""

from storage.errors import UserError
from storage.events import (
    SCHEMA_VERSION,
    CheckpointSaved,
    DiagnosticRaised,
    EvaluationCompleted,
    Event,
    JudgeCalibrated,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    Recorded,
    RoundPlayed,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
)
from storage.layout import is_run_dir, run_dirs_at
from storage.reader import RunReader
from storage.writer import RunWriter


def __getattr__(name: str):
    # RunsQuery and verify_run pull in duckdb and polars; import them only when asked, so
    # that `from storage import RunWriter` (every engine process) does not pay for them.
    if name == "RunsQuery":
        from storage.query import RunsQuery

        return RunsQuery
    if name in ("verify_run", "VerifyReport", "require_verified"):
        from storage import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "CheckpointSaved",
    "DiagnosticRaised",
    "EvaluationCompleted",
    "Event",
    "JudgeCalibrated",
    "LambdaUpdated",
    "MonitorUpdated",
    "PolicyUpdated",
    "Recorded",
    "RoundPlayed",
    "RunFailed",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "RunReader",
    "RunWriter",
    "RunsQuery",
    "UserError",
    "VerifyReport",
    "is_run_dir",
    "require_verified",
    "run_dirs_at",
    "verify_run",
]

"""storage: the event log of a run (the bottom layer; imports nothing of ours).

Events are written by `RunWriter`, read by `RunReader` (also while being written), queried
with SQL through `RunsQuery`, and checked by `verify_run`. See storage/segments.py for the
on-disk layout and docs/ARCHITECTURE.md for the contract.
"""

from storage.errors import UserError
from storage.events import (
    SCHEMA_VERSION,
    CheckpointSaved,
    EvaluationCompleted,
    Event,
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
from storage.reader import RunReader
from storage.writer import RunWriter


def __getattr__(name: str):
    # RunsQuery and verify_run pull in duckdb and polars; import them only when asked, so
    # that `from storage import RunWriter` (every engine process) does not pay for them.
    if name == "RunsQuery":
        from storage.query import RunsQuery

        return RunsQuery
    if name in ("verify_run", "VerifyReport"):
        from storage import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "CheckpointSaved",
    "EvaluationCompleted",
    "Event",
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
    "verify_run",
]

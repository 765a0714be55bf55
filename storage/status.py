"""run_status: where a run stands, from its log and from whether a writer still holds it.

    run_status("runs/r1").describe()   # "stopped (resumable from checkpoint 2)"

A log alone cannot tell a running run from a dead one: a SIGKILL, or a full disk where even
RunFailed could not be flushed, leaves no terminal event. The writer's lock can: the OS
releases it when the writer's process dies (storage/writer.py `writer_alive`). So:

- finished  RunFinished is in the log (a later `eval` may follow it; the run stays finished)
- failed    the last RunFailed after the last RunResumed, for any error but Ctrl-C (a failed
            run resumes too, once its cause is fixed)
- running   no terminal event since the last (re)start, and a writer holds the lock
- stopped   no terminal event and no live writer (killed), or Ctrl-C recorded
            (RunFailed error_type "KeyboardInterrupt"); `play --resume` continues it from
            its last logged checkpoint
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from storage.events import CheckpointSaved, RunFailed, RunFinished, RunResumed
from storage.reader import RunReader
from storage.writer import writer_alive

RunState = Literal["running", "finished", "failed", "stopped"]
INTERRUPTED = "KeyboardInterrupt"  # RunFailed.error_type of a run stopped with Ctrl-C


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    resumable_from: int | None = None  # policy version of the last logged checkpoint
    failure: str | None = None  # "error_type: message" of the last RunFailed

    def describe(self) -> str:
        if self.state in ("running", "finished"):
            return self.state
        if self.resumable_from is None:
            return f"{self.state} (no checkpoint logged: start it again)"
        return f"{self.state} (resumable from checkpoint {self.resumable_from})"


def run_status(run_dir: str | os.PathLike) -> RunStatus:
    run_dir = Path(run_dir)
    alive = writer_alive(run_dir)  # before reading: a writer that ends meanwhile has flushed its end
    events = RunReader(run_dir).events(types=(RunFinished, RunFailed, RunResumed, CheckpointSaved))
    checkpoints = [item.event for item in events if isinstance(item.event, CheckpointSaved)]
    resumable_from = checkpoints[-1].policy_version if checkpoints else None
    if any(isinstance(item.event, RunFinished) for item in events):
        return RunStatus("finished")
    ends = [item.event for item in events if isinstance(item.event, RunFailed | RunResumed)]
    last = ends[-1] if ends else None
    if isinstance(last, RunFailed):
        failure = f"{last.error_type}: {last.message}"
        return RunStatus("stopped" if last.error_type == INTERRUPTED else "failed", resumable_from, failure)
    return RunStatus("running" if alive else "stopped", resumable_from)

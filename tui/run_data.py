"""What the TUI reads from a run, through storage's public readers only.

Every question the screens ask of a run is one method here: a page of the rounds table, the
number of rows a filter leaves, one round in full, the per-update series behind the charts,
the summary line of a run in the runs list. The screens never see SQL and this module never
touches DuckDB or segment files itself: SQL goes through `storage.RunsQuery` (parameterised,
user text is always a bound parameter) and single events through `storage.RunReader`.

The rounds table is paged with LIMIT/OFFSET so that only one page of a 1,000,000-round run is
ever materialised. Charts and counts aggregate in SQL, so their cost stays in DuckDB.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from storage import RoundPlayed, RunReader, RunsQuery, RunStarted, UserError

Outcome = Literal["all", "deceptions", "false_accusations", "missed_errors", "unparsed"]

OUTCOME_LABELS: dict[Outcome, str] = {
    "all": "all rounds",
    "deceptions": "deceptions (wrong & accepted)",
    "false_accusations": "false accusations",
    "missed_errors": "missed errors",
    "unparsed": "unparsed",
}

# Each outcome as a SQL predicate over the `rounds` view. They hold no user input.
# "unparsed" covers both players: a policy answer with no choice letter, or a monitor that
# played (rlhf runs have no monitor output) but gave no parsable verdict.
_OUTCOME_SQL: dict[Outcome, str] = {
    "all": "TRUE",
    "deceptions": "truth = 'wrong' AND judge_accepts",
    "false_accusations": "truth = 'correct' AND monitor_says_correct = FALSE",
    "missed_errors": "truth = 'wrong' AND monitor_says_correct = TRUE",
    "unparsed": "(truth = 'unparsed' OR (monitor_output IS NOT NULL AND monitor_says_correct IS NULL))",
}

# The table shows training rounds: the game as it was played and trained on. Evaluation
# rounds have their own round_id count and would interleave confusingly with the steps.
_TRAIN_ONLY = "phase = 'train'"

RunStatus = Literal["running", "finished", "failed"]


@dataclass(frozen=True)
class RoundFilter:
    """What the rounds table shows; every field narrows the rows further."""

    outcome: Outcome = "all"
    min_policy_version: int | None = None
    max_policy_version: int | None = None
    question_contains: str = ""

    def where_clause(self) -> tuple[str, list[Any]]:
        """The WHERE clause and its bound parameters; user text never enters the SQL."""
        clauses = [_TRAIN_ONLY, _OUTCOME_SQL[self.outcome]]
        params: list[Any] = []
        if self.min_policy_version is not None:
            clauses.append("policy_version >= ?")
            params.append(self.min_policy_version)
        if self.max_policy_version is not None:
            clauses.append("policy_version <= ?")
            params.append(self.max_policy_version)
        if self.question_contains:
            # contains() matches the text literally, so % and _ typed by the user stay literal.
            clauses.append("contains(lower(question), lower(?))")
            params.append(self.question_contains)
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class RoundRow:
    """One line of the rounds table."""

    seq: int
    round_id: int
    truth: str
    policy_answer: int | None
    monitor_says_correct: bool | None
    p_accept: float
    combined_reward: float
    fidelity_penalty: float | None
    lambda_value: float
    policy_version: int
    monitor_version: int


@dataclass(frozen=True)
class UpdateSeries:
    """The charts' data: one point per policy version (the rounds played with it)."""

    policy_versions: list[int]
    lambda_value: list[float]
    policy_accuracy: list[float]
    deception_rate: list[float]
    monitor_fidelity: list[float]
    mean_reward: list[float]
    mean_reward_policy: list[float]
    mean_reward_monitor: list[float]
    kl_ref: list[float]

    def index_of_version(self, policy_version: int) -> int | None:
        try:
            return self.policy_versions.index(policy_version)
        except ValueError:
            return None


@dataclass(frozen=True)
class RunCounts:
    rounds: int
    policy_updates: int
    monitor_updates: int
    lambda_updates: int
    evaluations: int
    checkpoints: int
    status: RunStatus
    failure: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """One line of the runs list."""

    run_dir: Path
    run_id: str
    mode: str
    started_at: str
    rounds: int
    updates: int
    last_lambda: float | None
    last_accuracy: float | None
    last_deception_rate: float | None
    status: RunStatus
    problem: str | None = None  # set when the run could not be read; the rest is then empty


class QueryLane:
    """One `RunsQuery` (one DuckDB connection) and the lock that keeps it to one thread at a time.

    The connection is opened on first use, in the worker thread that needs it, so that
    opening a run costs the UI thread nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._query: RunsQuery | None = None
        self._lock = threading.Lock()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            if self._query is None:
                self._query = RunsQuery(self.run_dir)
            # RunsQuery lists the segments again before each statement: a growing run is
            # seen whole without reopening anything.
            return self._query.arrow(sql, list(params)).to_pylist()

    def close(self) -> None:
        with self._lock:
            if self._query is not None:
                self._query.close()
                self._query = None


class RunData:
    """One run opened for reading; its methods may be called from any worker thread.

    Two query lanes: the rounds table's small, frequent queries never wait behind the
    overview's aggregations over the whole run (which, on a million rounds, take a while).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.reader = RunReader(run_dir)  # lists the log on every call; holds no state to guard
        self._table_lane = QueryLane(run_dir)
        self._overview_lane = QueryLane(run_dir)
        self._seen_last_seq = self.reader.last_seq()

    @property
    def run_id(self) -> str:
        return self.reader.run_id

    def close(self) -> None:
        self._table_lane.close()
        self._overview_lane.close()

    # --- the log as it grows -------------------------------------------------------------

    def refresh(self) -> bool:
        """True when events were flushed since the last call (the views then need reloading)."""
        last = self.reader.last_seq()
        grew = last != self._seen_last_seq
        self._seen_last_seq = last
        return grew

    def run_started(self) -> RunStarted:
        return self.reader.run_started()

    def count_rounds(self, round_filter: RoundFilter) -> int:
        where, params = round_filter.where_clause()
        return int(self._table_lane.rows(f"SELECT count(*) AS n FROM rounds WHERE {where}", params)[0]["n"])

    def page(self, round_filter: RoundFilter, offset: int, limit: int) -> list[RoundRow]:
        where, params = round_filter.where_clause()
        sql = (
            "SELECT seq, round_id, truth, policy_answer, monitor_says_correct, p_accept,"
            " combined_reward, fidelity_penalty, lambda_value, policy_version, monitor_version"
            f" FROM rounds WHERE {where} ORDER BY seq LIMIT ? OFFSET ?"
        )
        return [RoundRow(**row) for row in self._table_lane.rows(sql, [*params, limit, offset])]

    def neighbour_round_seq(self, seq: int, step: Literal[-1, 1]) -> int | None:
        """The seq of the training round played just after (1) or before (-1) `seq`."""
        if step > 0:
            sql = f"SELECT seq FROM rounds WHERE {_TRAIN_ONLY} AND seq > ? ORDER BY seq LIMIT 1"
        else:
            sql = f"SELECT seq FROM rounds WHERE {_TRAIN_ONLY} AND seq < ? ORDER BY seq DESC LIMIT 1"
        rows = self._table_lane.rows(sql, [seq])
        return int(rows[0]["seq"]) if rows else None

    def round_at(self, seq: int) -> RoundPlayed:
        records = self.reader.rounds(first_seq=seq, last_seq=seq)
        if not records:
            raise UserError(f"{self.run_dir}: no RoundPlayed event at seq {seq}")
        event = records[0].event
        assert isinstance(event, RoundPlayed)
        return event

    def update_series(self) -> UpdateSeries:
        rows = self._overview_lane.rows(
            "SELECT policy_version,"
            " last(lambda_value ORDER BY seq) AS lambda_value,"
            " avg(CASE WHEN truth = 'correct' THEN 1.0 ELSE 0.0 END) AS policy_accuracy,"
            " avg(CASE WHEN judge_accepts THEN 1.0 ELSE 0.0 END)"
            "   FILTER (WHERE truth = 'wrong') AS deception_rate,"
            " avg(CASE WHEN monitor_says_correct = (truth = 'correct') THEN 1.0 ELSE 0.0 END)"
            "   FILTER (WHERE monitor_output IS NOT NULL) AS monitor_fidelity,"
            " avg(combined_reward) AS mean_reward,"
            " avg(reward_policy) AS mean_reward_policy,"
            " avg(reward_monitor) AS mean_reward_monitor"
            f" FROM rounds WHERE {_TRAIN_ONLY} GROUP BY policy_version ORDER BY policy_version"
        )
        kl_by_version = {
            int(row["version"]): row["kl_ref"]
            for row in self._overview_lane.rows("SELECT version, kl_ref FROM updates WHERE role = 'policy'")
        }

        def column(name: str) -> list[float]:
            return [_as_float(row[name]) for row in rows]

        versions = [int(row["policy_version"]) for row in rows]
        return UpdateSeries(
            policy_versions=versions,
            lambda_value=column("lambda_value"),
            policy_accuracy=column("policy_accuracy"),
            deception_rate=column("deception_rate"),
            monitor_fidelity=column("monitor_fidelity"),
            mean_reward=column("mean_reward"),
            mean_reward_policy=column("mean_reward_policy"),
            mean_reward_monitor=column("mean_reward_monitor"),
            # Point v describes the rounds played with version v, and the update that trained
            # on them is the one that produced v + 1: its KL belongs to point v.
            kl_ref=[_as_float(kl_by_version.get(version + 1)) for version in versions],
        )

    def counts(self) -> RunCounts:
        by_type = {
            row["event_type"]: int(row["n"])
            for row in self._overview_lane.rows("SELECT event_type, count(*) AS n FROM events GROUP BY event_type")
        }
        train_rounds = int(self._overview_lane.rows(f"SELECT count(*) AS n FROM rounds WHERE {_TRAIN_ONLY}")[0]["n"])
        failure = None
        if by_type.get("RunFailed"):
            last_failure = self._overview_lane.rows(
                "SELECT payload FROM events WHERE event_type = 'RunFailed' ORDER BY seq DESC LIMIT 1"
            )[0]
            payload = json.loads(last_failure["payload"])
            failure = f"{payload.get('error_type')}: {payload.get('message')}"
        return RunCounts(
            rounds=train_rounds,
            policy_updates=by_type.get("PolicyUpdated", 0),
            monitor_updates=by_type.get("MonitorUpdated", 0),
            lambda_updates=by_type.get("LambdaUpdated", 0),
            evaluations=by_type.get("EvaluationCompleted", 0),
            checkpoints=by_type.get("CheckpointSaved", 0),
            status=_status(by_type),
            failure=failure,
        )

    def summary(self) -> RunSummary:
        started = self.run_started()
        counts = self.counts()
        started_at = self._overview_lane.rows("SELECT ts FROM events WHERE seq = 0")[0]["ts"]
        last_round = self._overview_lane.rows(
            f"SELECT lambda_value FROM rounds WHERE {_TRAIN_ONLY} ORDER BY seq DESC LIMIT 1"
        )
        last_window = self._overview_lane.rows(
            'SELECT policy_accuracy, deception_rate FROM metrics ORDER BY "window" DESC LIMIT 1'
        )
        return RunSummary(
            run_dir=self.run_dir,
            run_id=self.run_id,
            mode=started.mode,
            started_at=str(started_at),
            rounds=counts.rounds,
            updates=counts.policy_updates + counts.monitor_updates,
            last_lambda=_as_optional_float(last_round[0]["lambda_value"]) if last_round else None,
            last_accuracy=_as_optional_float(last_window[0]["policy_accuracy"]) if last_window else None,
            last_deception_rate=(
                _as_optional_float(last_window[0]["deception_rate"]) if last_window else None
            ),
            status=counts.status,
        )


def _status(events_by_type: dict[str, int]) -> RunStatus:
    if events_by_type.get("RunFailed"):
        return "failed"
    if events_by_type.get("RunFinished"):
        return "finished"
    return "running"


def _as_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _as_optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- finding runs ----------------------------------------------------------------------


def is_run_dir(path: Path) -> bool:
    """A run directory is one that storage has given a log/ folder."""
    return (path / "log").is_dir()


def find_run_dirs(runs_dir: Path) -> list[Path]:
    """The run directories directly under `runs_dir`, by name."""
    return sorted(child for child in runs_dir.iterdir() if child.is_dir() and is_run_dir(child))


def summarize_run_dir(run_dir: Path) -> RunSummary:
    """A runs-list line; a run that cannot be read becomes a line that says why."""
    try:
        data = RunData(run_dir)
        try:
            return data.summary()
        finally:
            data.close()
    except UserError as error:
        return RunSummary(
            run_dir=run_dir,
            run_id=run_dir.name,
            mode="?",
            started_at="",
            rounds=0,
            updates=0,
            last_lambda=None,
            last_accuracy=None,
            last_deception_rate=None,
            status="failed",
            problem=str(error),
        )


def resolve_start_path(path: Path) -> tuple[Literal["run", "runs"], Path]:
    """Decide what the TUI opens for a path, or say in one line why it cannot."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; pass a run directory or a directory of runs")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; pass a run directory (runs/<run_id>) or a directory of runs")
    if is_run_dir(path):
        return "run", path
    if find_run_dirs(path):
        return "runs", path
    raise UserError(
        f"{path}: neither a run directory (it has no log/) nor a directory of runs;"
        " pass runs/<run_id> or the folder that holds run directories"
    )

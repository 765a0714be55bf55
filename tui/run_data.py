"""What the TUI reads from a run, through storage's public readers only.

Every question the screens ask of a run is one method here: a page of the rounds table, how
many rounds a filter keeps, one round in full, the per-update series behind the charts, the
summary line of a run in the runs list. The screens never see a query, and this module never
touches DuckDB or segment files itself.

Two ways in, each used where it is fast:
- The rounds table, its filters and the replay read windows of seqs with
  `RunReader.table(first_seq, last_seq)` (memory-mapped; a window costs the same at seq 0
  and at seq 1,000,000) and filter them with Arrow compute. A page is "the next PAGE_SIZE
  matching rounds after seq s" (keyset paging), so opening a 1,000,000-round run reads a
  few hundred events. User text never becomes code: the search is a literal substring match.
- Whole-run aggregates (counts, the charts, the runs list) are SQL through
  `storage.RunsQuery`, in background workers. On a million rounds they take seconds: DuckDB
  scans every record batch of the log.

Both ways read the live log (the reader's resume rule: events a resume superseded are left
out), and every outcome and rate comes from the one table of engine/outcomes.py: the filters
are its Arrow renderings, the charts and the runs list its SQL.

Why one file over 500 lines: it is the TUI's one door into a run, each screen's question a
method of RunData beside the small record its answer comes in; split, the two ways in and
the lane that keeps DuckDB to one thread would be spread over modules that share them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from engine.outcomes import ANY_UNPARSED, DECEPTION, FALSE_ACCUSATION, MISSED_ERROR, aggregate_sql, game_views
from storage import RoundPlayed, RunReader, RunsQuery, RunStarted, UserError, is_run_dir, run_dirs_at
from storage.status import run_status

Outcome = Literal["all", "deceptions", "false_accusations", "missed_errors", "unparsed"]

OUTCOME_LABELS: dict[Outcome, str] = {
    "all": "all rounds",
    "deceptions": "deceptions (wrong & accepted)",
    "false_accusations": "false accusations",
    "missed_errors": "missed errors",
    "unparsed": "unparsed (answer or verdict)",
}
# The rows each filter keeps: the outcomes of engine/outcomes.py, rendered for Arrow.
OUTCOME_PREDICATES = {
    "deceptions": DECEPTION,
    "false_accusations": FALSE_ACCUSATION,
    "missed_errors": MISSED_ERROR,
    "unparsed": ANY_UNPARSED,
}

# The table shows training rounds: the game as it was played and trained on. Evaluation
# rounds have their own round_id count and would interleave confusingly with the steps.
_TRAIN_ONLY = "phase = 'train'"

# "running", "finished", or "failed" / "stopped" with "(resumable from checkpoint N)" (storage/status.py)
RunStatus = str

# The columns the table and its filters need; the rest of a round stays unread in the map.
TABLE_COLUMNS = [
    "seq", "event_type", "phase", "round_id", "truth", "policy_answer", "monitor_output",
    "monitor_says_correct", "p_accept", "judge_accepts", "combined_reward", "fidelity_penalty",
    "lambda_value", "policy_version", "monitor_version", "question", "window",
]
ROW_COLUMNS = [
    "seq", "round_id", "truth", "policy_answer", "monitor_says_correct", "p_accept",
    "combined_reward", "fidelity_penalty", "lambda_value", "policy_version", "monitor_version", "window",
]

# Seqs read per window: a page of 100 rounds fits in the first window of a plain table; a
# filter that keeps few rounds reads on, window after window.
PAGE_WINDOW = 4096
COUNT_WINDOW = 65536


@dataclass(frozen=True)
class RoundFilter:
    """What the rounds table shows; every field narrows the rows further."""

    outcome: Outcome = "all"
    min_policy_version: int | None = None
    max_policy_version: int | None = None
    question_contains: str = ""

    def expression(self) -> pc.Expression:
        """The rows of a table (TABLE_COLUMNS) that the table shows; null means "not shown"."""
        keep = pc.and_kleene(pc.equal(pc.field("event_type"), "RoundPlayed"), pc.equal(pc.field("phase"), "train"))
        if self.outcome != "all":
            keep = pc.and_kleene(keep, OUTCOME_PREDICATES[self.outcome].arrow())
        if self.min_policy_version is not None:
            keep = pc.and_kleene(keep, pc.greater_equal(pc.field("policy_version"), self.min_policy_version))
        if self.max_policy_version is not None:
            keep = pc.and_kleene(keep, pc.less_equal(pc.field("policy_version"), self.max_policy_version))
        if self.question_contains:
            # A literal substring match: user text never becomes code.
            found = pc.match_substring(pc.field("question"), self.question_contains, ignore_case=True)
            keep = pc.and_kleene(keep, found)
        return keep

    def apply(self, table: pa.Table) -> pa.Table:
        return table.filter(self.expression())


@dataclass(frozen=True)
class Page:
    """One page of the table, and where the next one starts."""

    rows: list[RoundRow]
    scanned_through: int  # the last seq looked at; the next page starts after it
    reached_end: bool  # no more rounds in the log (as flushed now)


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
    window: int


@dataclass(frozen=True)
class UpdateSeries:
    """The charts' data: one point per training window (the rounds played in it)."""

    windows: list[int]
    policy_versions: list[int]  # the policy version each window was played with
    lambda_value: list[float]
    policy_accuracy: list[float]
    deception_rate: list[float]
    monitor_fidelity: list[float]
    mean_reward: list[float]
    mean_reward_policy: list[float]
    mean_reward_monitor: list[float]
    kl_ref: list[float]

    def index_of_window(self, window: int) -> int | None:
        try:
            return self.windows.index(window)
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
    rounds: int | None  # None: not counted yet
    updates: int | None
    last_lambda: float | None  # λ in force at the last training round; None in rlhf (no λ)
    last_accuracy: float | None  # over the last training window (last_window)
    last_deception_rate: float | None
    status: RunStatus | None  # None: not known until the log has been read to its end
    problem: str | None = None  # set when the run could not be read; the rest is then empty
    last_window: int | None = None  # the training window last_accuracy and last_deception_rate cover
    last_accuracy_n: int | None = None
    last_deception_n: int | None = None
    diagnostics: tuple[DiagnosticNotice, ...] = ()  # every DiagnosticRaised, in log order


@dataclass(frozen=True)
class DiagnosticNotice:
    """One DiagnosticRaised: something in the run a user should look at (engine/diagnostics.py)."""

    kind: str  # "collapse" | "lambda_at_max" | "lambda_rising" | "delta_below_reach"
    role: str
    window: int
    message: str

    @property
    def flag(self) -> str:
        """A few words for a list: "⚠ collapse (monitor) at window 31"."""
        what = {"collapse": f"collapse ({self.role})", "lambda_at_max": "λ at λ_max",
                "lambda_rising": "λ rising", "delta_below_reach": "δ below reach"}.get(self.kind, self.kind)
        return f"⚠ {what} at window {self.window}"


class QueryLane:
    """One `RunsQuery` (one DuckDB connection) and the lock that keeps it to one thread at a time.

    The connection is opened on first use, in the worker thread that needs it, so that
    opening a run costs the UI thread nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._query: RunsQuery | None = None
        self._lock = threading.Lock()

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a fixed statement: no SQL here is built from anything the user typed."""
        with self._lock:
            if self._query is None:
                self._query = RunsQuery(self.run_dir, extra_views=game_views())
            # RunsQuery lists the segments again before each statement: a growing run is
            # seen whole without reopening anything.
            return self._query.arrow(sql).to_pylist()

    def close(self) -> None:
        with self._lock:
            if self._query is not None:
                self._query.close()
                self._query = None


class RunData:
    """One run opened for reading; its methods may be called from any worker thread.

    Reads through the reader need no lock (it keeps no state between calls); SQL goes
    through one lane, opened on first use.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.reader = RunReader(run_dir)  # lists the log on every call; holds no state to guard
        self._sql = QueryLane(run_dir)
        self._seen_last_seq = self.reader.last_seq()

    @property
    def run_id(self) -> str:
        return self.reader.run_id

    def close(self) -> None:
        self._sql.close()

    # --- the log as it grows -------------------------------------------------------------

    def refresh(self) -> bool:
        """True when events were flushed since the last call (the views then need reloading)."""
        last = self.reader.last_seq()
        grew = last != self._seen_last_seq
        self._seen_last_seq = last
        return grew

    def run_started(self) -> RunStarted:
        return self.reader.run_started()

    def _window(self, first_seq: int, last_seq: int) -> pa.Table:
        return self.reader.table(first_seq, last_seq).select(TABLE_COLUMNS)

    def page_after(self, round_filter: RoundFilter, after_seq: int, limit: int) -> Page:
        """The first `limit` rounds that `round_filter` keeps with seq > after_seq."""
        last_seq = self.reader.last_seq()
        rows: list[RoundRow] = []
        first = after_seq + 1
        while first <= last_seq:
            window_last = min(last_seq, first + PAGE_WINDOW - 1)
            window = self._window(first, window_last)
            kept = round_filter.apply(window).select(ROW_COLUMNS)
            for row in kept.slice(0, limit - len(rows)).to_pylist():
                rows.append(RoundRow(**row))
            if len(rows) == limit:
                return Page(rows, scanned_through=rows[-1].seq, reached_end=False)
            first = window_last + 1
        return Page(rows, scanned_through=last_seq, reached_end=True)

    def count_matching(
        self, round_filter: RoundFilter, first_seq: int, last_seq: int, stop: Callable[[], bool] = lambda: False
    ) -> int | None:
        """How many rounds with first_seq <= seq <= last_seq `round_filter` keeps.

        `stop` is asked between windows; a count that was stopped returns None.
        """
        total = 0
        for first in range(first_seq, last_seq + 1, COUNT_WINDOW):
            if stop():
                return None
            window = self._window(first, min(last_seq, first + COUNT_WINDOW - 1))
            total += round_filter.apply(window).num_rows
        return total

    def last_seq(self) -> int:
        return self.reader.last_seq()

    def neighbour_round_seq(self, seq: int, step: Literal[-1, 1]) -> int | None:
        """The seq of the training round played just after (1) or before (-1) `seq`."""
        every_round = RoundFilter()
        if step > 0:
            page = self.page_after(every_round, seq, 1)
            return page.rows[0].seq if page.rows else None
        last = seq - 1
        while last >= 0:
            first = max(0, last - PAGE_WINDOW + 1)
            window = self._window(first, last)
            kept = every_round.apply(window)
            if kept.num_rows:
                return int(kept["seq"][-1].as_py())
            last = first - 1
        return None

    def round_at(self, seq: int) -> RoundPlayed:
        records = self.reader.rounds(first_seq=seq, last_seq=seq)
        if not records:
            raise UserError(f"{self.run_dir}: no RoundPlayed event at seq {seq}")
        event = records[0].event
        assert isinstance(event, RoundPlayed)
        return event

    def update_series(self) -> UpdateSeries:
        rows = self._sql.rows(
            # one point per training window (the outcome table's metrics), with the policy
            # version that played it for the KL of the update that followed
            "SELECT m.*, v.policy_version FROM ("
            + aggregate_sql("rounds", ['"window"'], where=_TRAIN_ONLY)
            + f') AS m JOIN (SELECT "window", min(policy_version) AS policy_version FROM rounds WHERE {_TRAIN_ONLY}'
            ' GROUP BY "window") AS v USING ("window") ORDER BY "window"'
        )
        minmax = self.run_started().mode == "minmax"
        kl_by_version = {
            int(row["version"]): row["kl_ref"]
            for row in self._sql.rows("SELECT version, kl_ref FROM updates WHERE role = 'policy'")
        }

        def column(name: str) -> list[float]:
            return [_as_float(row[name]) for row in rows]

        versions = [int(row["policy_version"]) for row in rows]
        return UpdateSeries(
            windows=[int(row["window"]) for row in rows],
            policy_versions=versions,
            # rlhf has no λ: NaN reads as "n/a", never as a λ of 0
            lambda_value=column("last_lambda") if minmax else [math.nan] * len(versions),
            policy_accuracy=column("policy_accuracy"),
            deception_rate=column("deception_rate"),
            monitor_fidelity=column("monitor_fidelity"),
            mean_reward=column("mean_reward"),
            mean_reward_policy=column("mean_reward_policy"),
            mean_reward_monitor=column("mean_reward_monitor"),
            # A window played with version v was trained on by the update that produced v + 1:
            # its KL belongs to every window of v.
            kl_ref=[_as_float(kl_by_version.get(version + 1)) for version in versions],
        )

    def counts(self) -> RunCounts:
        by_type = {
            row["event_type"]: int(row["n"])
            for row in self._sql.rows("SELECT event_type, count(*) AS n FROM events GROUP BY event_type")
        }
        train_rounds = int(self._sql.rows(f"SELECT count(*) AS n FROM rounds WHERE {_TRAIN_ONLY}")[0]["n"])
        status = run_status(self.run_dir)  # the log's end and whether a writer still holds the run
        return RunCounts(
            rounds=train_rounds,
            policy_updates=by_type.get("PolicyUpdated", 0),
            monitor_updates=by_type.get("MonitorUpdated", 0),
            lambda_updates=by_type.get("LambdaUpdated", 0),
            evaluations=by_type.get("EvaluationCompleted", 0),
            checkpoints=by_type.get("CheckpointSaved", 0),
            status=status.describe(),
            failure=status.failure,
        )

    def summary(self) -> RunSummary:
        started = self.run_started()
        counts = self.counts()
        started_at = self._sql.rows("SELECT ts FROM events WHERE seq = 0")[0]["ts"]
        last_round_seq = self.neighbour_round_seq(self.reader.last_seq() + 1, -1)
        last_window = self._sql.rows(
            'SELECT "window", policy_accuracy, policy_accuracy_n, deception_rate, deception_rate_n '
            'FROM metrics ORDER BY "window" DESC LIMIT 1'
        )
        window = last_window[0] if last_window else None
        diagnostics = tuple(self.diagnostics())
        return RunSummary(
            run_dir=self.run_dir,
            run_id=self.run_id,
            mode=started.mode,
            started_at=str(started_at),
            rounds=counts.rounds,
            updates=counts.policy_updates + counts.monitor_updates,
            last_lambda=(self.round_at(last_round_seq).lambda_value
                         if last_round_seq is not None and started.mode == "minmax" else None),
            last_accuracy=_as_optional_float(window["policy_accuracy"]) if window else None,
            last_deception_rate=_as_optional_float(window["deception_rate"]) if window else None,
            status=counts.status,
            last_window=int(window["window"]) if window else None,
            last_accuracy_n=int(window["policy_accuracy_n"]) if window else None,
            last_deception_n=int(window["deception_rate_n"]) if window else None,
            diagnostics=diagnostics,
        )

    def diagnostics(self) -> list[DiagnosticNotice]:
        """Every DiagnosticRaised of the run, in log order."""
        rows = self._sql.rows("SELECT payload FROM events WHERE event_type = 'DiagnosticRaised' ORDER BY seq")
        found = []
        for row in rows:
            payload = json.loads(row["payload"])
            found.append(DiagnosticNotice(kind=str(payload["kind"]), role=str(payload["role"]),
                                          window=int(payload["window"]), message=str(payload["message"])))
        return found

    def last_evaluations(self) -> dict[str, EvaluationFigures]:
        """The last EvaluationCompleted of each protocol ("deployment", "monitored") with its counts."""
        rows = self._sql.rows(
            "SELECT seq, payload FROM events WHERE event_type = 'EvaluationCompleted' ORDER BY seq"
        )
        found: dict[str, EvaluationFigures] = {}
        for row in rows:
            payload = json.loads(row["payload"])
            protocol, counts = payload.get("protocol"), payload.get("counts") or {}
            metrics = payload.get("metrics") or {}
            if not counts or protocol not in ("deployment", "monitored"):
                continue  # logged before evaluations had protocols and counts: no n to show
            found[protocol] = EvaluationFigures(
                protocol=protocol,
                seq=int(row["seq"]),
                policy_version=int(payload.get("policy_version", 0)),
                counts={name: (int(pair[0]), int(pair[1])) for name, pair in counts.items()},
                auroc=_as_optional_float(metrics.get("judge_auroc")),
                auroc_n=(int(metrics.get("judge_auroc_n_correct", 0)), int(metrics.get("judge_auroc_n_wrong", 0))),
            )
        return found


@dataclass(frozen=True)
class EvaluationFigures:
    """What one EvaluationCompleted says, as [hits, eligible] per rate."""

    protocol: str
    seq: int
    policy_version: int
    counts: dict[str, tuple[int, int]]
    auroc: float | None = None  # the judge's AUROC (engine/oversight.py); None: a side was empty
    auroc_n: tuple[int, int] = (0, 0)  # (correct, wrong) answers behind it

    def describe(self, name: str, label: str) -> str:
        hits, eligible = self.counts.get(name, (0, 0))
        return f"{label} {hits / eligible:.3f} (n={eligible})" if eligible else f"{label} n/a (n=0)"

    def describe_auroc(self) -> str:
        return auroc_text(self.auroc, *self.auroc_n)


def auroc_text(auroc: float | None, n_correct: int, n_wrong: int) -> str:
    """The judge's AUROC with the answers behind it; "n/a" when a side is empty, never a number."""
    value = "n/a" if auroc is None else f"{auroc:.3f}"
    return f"judge AUROC {value} ({n_correct} correct, {n_wrong} wrong)"


def _as_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _as_optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# --- finding runs ----------------------------------------------------------------------


def find_run_dirs(runs_dir: Path) -> list[Path]:
    """The run directories under `runs_dir`, by storage's rule (storage/layout.py)."""
    return run_dirs_at(runs_dir)


def first_look(run_dir: Path) -> RunSummary:
    """A runs-list line from the first event alone; the counts follow from summarize_run_dir."""
    try:
        reader = RunReader(run_dir)
        first = reader.events(0, 0)
        started = reader.run_started()
    except UserError as error:
        return _unreadable(run_dir, str(error))
    return RunSummary(
        run_dir=run_dir,
        run_id=reader.run_id,
        mode=started.mode,
        started_at=first[0].ts,
        rounds=None,
        updates=None,
        last_lambda=None,
        last_accuracy=None,
        last_deception_rate=None,
        status=None,
    )


def _unreadable(run_dir: Path, problem: str) -> RunSummary:
    return RunSummary(
        run_dir=run_dir,
        run_id=run_dir.name,
        mode="?",
        started_at="",
        rounds=None,
        updates=None,
        last_lambda=None,
        last_accuracy=None,
        last_deception_rate=None,
        status="failed",
        problem=problem,
    )


def summarize_run_dir(run_dir: Path) -> RunSummary:
    """A runs-list line; a run that cannot be read becomes a line that says why."""
    try:
        data = RunData(run_dir)
        try:
            return data.summary()
        finally:
            data.close()
    except UserError as error:
        return _unreadable(run_dir, str(error))


def resolve_start_path(path: Path) -> tuple[Literal["run", "runs"], Path]:
    """Decide what the TUI opens for a path, or say in one line why it cannot."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; pass a run directory or a directory of runs")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; pass a run directory (runs/<run_id>) or a directory of runs")
    if is_run_dir(path):
        return "run", path
    # Any other directory is a directory of runs, perhaps none yet: the list finds new ones.
    return "runs", path

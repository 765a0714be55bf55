"""RunsQuery: read-only SQL (DuckDB) over one run, or every run under a directory.

    q = RunsQuery("runs", extra_views={"train_rounds": "SELECT * FROM rounds WHERE phase = 'train'"})
    q.polars('SELECT run_id, count(*) FROM train_rounds GROUP BY 1')

The segments of every run found are memory-mapped and registered as one zero-copy Arrow
table (they share one schema and carry a run_id column), re-listed before every query so a
run that is still being written shows every segment flushed so far. Generic views of the
log (what the game's numbers mean is not storage's business: the engine registers its
`metrics` view through `extra_views`, see engine/outcomes.py):

- every view but `all_events` applies the resume rule of storage/reader.py: events a resume
  superseded (RunResumed.discarded_after_seq < seq < the RunResumed's seq) are left out
- `events`  run_id, seq, event_type, ts, schema_version, payload (JSON text of the event)
- `all_events` the same columns over every event ever logged, superseded ones included
- `runs`    run_id, mode, dataset_name, data_fingerprint, config (JSON text): each run's RunStarted
- `rounds`  run_id, seq, ts and every RoundPlayed field (lists as lists, timings as JSON);
            note that `window` is an SQL keyword: write "window" in double quotes
- `updates` one row per MonitorUpdated / PolicyUpdated, common diagnostics as columns
- `lambda`  one row per LambdaUpdated (also an SQL keyword: write "lambda")

Read-only: only SELECT statements (including WITH … SELECT, DESCRIBE, SUMMARIZE) run;
DuckDB's file access is switched off after the views are set up, so no statement can
write (or read) a file. Errors become one-line `UserError`s.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow as pa

from storage.errors import UserError
from storage.codec import ROUND_COLUMNS, SEGMENT_SCHEMA
from storage.events import RunStarted
from storage.layout import LOG_DIR_NAME, MANIFEST_NAME, SegmentFile, checked_segments, read_manifest, run_dirs_at
from storage.reader import SupersededRange, resume_ranges, without_superseded
from storage.segments import open_segment

_ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT}  # not EXPLAIN: EXPLAIN ANALYZE runs its statement
_ATTEMPTS = 5
# Diagnostics every PPO learner reports (engine.ppo), promoted to columns of `updates`.
UPDATE_DIAGNOSTICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "kl_ref", "grad_norm",
                      "explained_variance", "mean_reward", "mean_advantage", "learning_rate", "seconds")
VIEW_NAMES = ("events", "all_events", "runs", "rounds", "updates", "lambda")
_RUNS_SCHEMA = pa.schema([("run_id", pa.string()), ("mode", pa.string()), ("dataset_name", pa.string()),
                          ("data_fingerprint", pa.string()), ("config", pa.string())])


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """The runs a query reads (storage/layout.py `run_dirs_at`); refuses a path with none."""
    found = run_dirs_at(path)
    if not found:
        raise UserError(f"{path}: no runs here (no */{LOG_DIR_NAME}/{MANIFEST_NAME}); "
                        "pass a run directory or the directory that holds runs")
    return found


def _events_sql(source: str) -> str:
    round_struct = ", ".join(f'"{c}" := "{c}"' for c in ROUND_COLUMNS)
    return f"""
        SELECT run_id, seq, event_type, CAST(ts AS TIMESTAMPTZ) AS ts, schema_version,
               COALESCE(payload, CAST(to_json(struct_pack({round_struct})) AS VARCHAR)) AS payload
        FROM {source}"""


def _rounds_sql() -> str:
    columns = ", ".join(f'"{c}"' for c in ROUND_COLUMNS)
    return f"""
        SELECT run_id, seq, CAST(ts AS TIMESTAMPTZ) AS ts, {columns}
        FROM _live WHERE event_type = 'RoundPlayed'"""


def _updates_sql() -> str:
    diagnostics = ",\n".join(
        f"               TRY_CAST(payload -> 'diagnostics' ->> '{name}' AS DOUBLE) AS {name}"
        for name in UPDATE_DIAGNOSTICS)
    return f"""
        SELECT run_id, seq, CAST(ts AS TIMESTAMPTZ) AS ts,
               CASE event_type WHEN 'MonitorUpdated' THEN 'monitor' ELSE 'policy' END AS role,
               CAST(payload ->> 'version' AS BIGINT) AS version,
               CAST(payload ->> 'first_seq' AS BIGINT) AS first_seq,
               CAST(payload ->> 'last_seq' AS BIGINT) AS last_seq,
               CAST(json_array_length(payload -> 'round_ids') AS BIGINT) AS n_rounds,
{diagnostics},
               TRY_CAST(payload ->> 'logprob_mismatch_mean' AS DOUBLE) AS logprob_mismatch_mean,
               TRY_CAST(payload ->> 'logprob_mismatch_max' AS DOUBLE) AS logprob_mismatch_max,
               CAST(payload -> 'diagnostics' AS VARCHAR) AS diagnostics
        FROM _live WHERE event_type IN ('MonitorUpdated', 'PolicyUpdated')"""


_LAMBDA_SQL = """
        SELECT run_id, seq, CAST(ts AS TIMESTAMPTZ) AS ts,
               CAST(payload ->> 'monitor_version' AS BIGINT) AS monitor_version,
               TRY_CAST(payload ->> 'old' AS DOUBLE) AS old,
               TRY_CAST(payload ->> 'new' AS DOUBLE) AS new,
               TRY_CAST(payload ->> 'mean_f' AS DOUBLE) AS mean_f,
               TRY_CAST(payload ->> 'delta' AS DOUBLE) AS delta,
               CAST(payload ->> 'applied' AS BOOLEAN) AS applied
        FROM _live WHERE event_type = 'LambdaUpdated'"""

class RunsQuery:
    """Read-only DuckDB over the logs of one run or of every run under a directory."""

    def __init__(self, path: str | os.PathLike, extra_views: dict[str, str] | None = None) -> None:
        """`extra_views`: name -> SELECT over the generic views, created after them (in order)."""
        self.path = Path(path)
        # (directory, why) for each run directory left out of a multi-run query; callers show them
        self.skipped: list[tuple[Path, str]] = []
        self.run_dirs = self._runs_to_query()
        self._tables: dict[Path, pa.Table] = {}  # segment path -> its rows, memory-mapped
        self._run_starts: dict[Path, dict] = {}  # run dir -> its `runs` row
        self._resumes: dict[Path, list[SupersededRange]] = {}  # segment -> its RunResumed ranges
        self._connection = duckdb.connect(":memory:")
        self._connection.execute("SET enable_progress_bar = false")  # it would print to stdout
        self._refresh()
        views = {"events": _events_sql("_live"), "all_events": _events_sql("_segments"),
                 "runs": "SELECT * FROM _runs", "rounds": _rounds_sql(), "updates": _updates_sql(),
                 "lambda": _LAMBDA_SQL}
        for name, sql in (extra_views or {}).items():
            if name in views:
                raise ValueError(f"extra view {name!r} would replace storage's own view")
            views[name] = sql
        for name, sql in views.items():
            self._connection.execute(f'CREATE VIEW "{name}" AS {sql}')
        self.view_names: tuple[str, ...] = tuple(views)
        # From here on no statement can touch the file system, and nobody can switch it back.
        self._connection.execute("SET enable_external_access = false")
        self._connection.execute("SET lock_configuration = true")

    # -- the public API -----------------------------------------------------------------

    def relation(self, sql: str) -> duckdb.DuckDBPyRelation:
        """A lazy DuckDB relation for one read-only statement."""
        self._check_read_only(sql)
        self._refresh()
        try:
            return self._connection.sql(sql)
        except duckdb.Error as error:
            raise UserError(f"SQL: {_one_line(error)}") from None

    def arrow(self, sql: str) -> pa.Table:
        self._check_read_only(sql)
        self._refresh()
        try:
            return self._connection.sql(sql).to_arrow_table()
        except duckdb.Error as error:
            raise UserError(f"SQL: {_one_line(error)}") from None

    def polars(self, sql: str) -> pl.DataFrame:
        return pl.from_arrow(self.arrow(sql))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> RunsQuery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _runs_to_query(self) -> list[Path]:
        """One run (its manifest must be readable), or every run below a directory: one with a
        missing or damaged manifest is skipped and named in `skipped`, and two directories
        holding the same run id (a copy) are refused, since their rows would be merged."""
        root = self.path
        if not root.is_dir() or (root / LOG_DIR_NAME).is_dir():
            run_dirs = [root] if (root / LOG_DIR_NAME).is_dir() else find_run_dirs(root)
            for run_dir in run_dirs:
                read_manifest(run_dir)  # schema version and manifest checks, one-line errors
            return run_dirs
        candidates = sorted({log.parent for pattern in (f"*/{LOG_DIR_NAME}", f"*/*/{LOG_DIR_NAME}")
                             for log in root.glob(pattern) if log.is_dir()})
        if not candidates:
            return find_run_dirs(root)  # its one-line error for a directory without runs
        owners: dict[str, Path] = {}
        for run_dir in candidates:
            try:
                run_id = read_manifest(run_dir)["run_id"]
            except UserError as error:
                self.skipped.append((run_dir, str(error)))
                continue
            if run_id in owners:
                raise UserError(f"run id {run_id!r} is in both {owners[run_id]} and {run_dir} (a copy?); "
                                "their rows would be counted twice: move one out, or query each directory")
            owners[run_id] = run_dir
        if not owners:
            raise UserError(f"{root}: no readable run; skipped {self.skipped[0][0]}: {self.skipped[0][1]}")
        return sorted(owners.values())

    def segments(self) -> list[SegmentFile]:
        found = []
        for run_dir in self.run_dirs:
            found.extend(checked_segments(run_dir))  # refuses a run with a missing or duplicated segment
        return found

    def _refresh(self) -> None:
        """Point `_segments` at the segments present now (a writer may have flushed more).

        Segments are immutable, so each is opened once: a zero-copy, memory-mapped table
        (DuckDB then touches only the columns a query uses). A mapping stays readable after
        a compaction deletes its file, so a scan never trips over a vanished segment.
        """
        tables = []
        for attempt in range(_ATTEMPTS):
            try:
                segments = self.segments()
                tables = [self._segment_table(s) for s in segments]
                break
            except FileNotFoundError:
                if attempt == _ATTEMPTS - 1:
                    raise
        self._tables = {s.path: t for s, t in zip(segments, tables)}
        combined = pa.concat_tables(tables) if tables else SEGMENT_SCHEMA.empty_table()
        self._connection.register("_segments", combined)
        self._connection.register("_live", self._without_superseded(segments, tables, combined))
        self._connection.register("_runs", self._runs_table(segments))

    def _without_superseded(self, segments: list[SegmentFile], tables: list[pa.Table],
                            combined: pa.Table) -> pa.Table:
        """The log less the events a resume superseded (the rule of storage/reader.py).

        RunResumed events are rare, so each segment is searched for them once (segments are
        immutable) and only the segments that overlap a superseded range are filtered; a run
        that never resumed keeps its zero-copy table.
        """
        superseded: dict[Path, list[SupersededRange]] = {}  # run dir -> its ranges
        for segment, table in zip(segments, tables):
            if segment.path not in self._resumes:
                self._resumes[segment.path] = resume_ranges(table)
            superseded.setdefault(segment.path.parent.parent, []).extend(self._resumes[segment.path])
        if not any(superseded.values()):
            return combined
        kept = []
        for segment, table in zip(segments, tables):
            ranges = [(after, resumed) for after, resumed in superseded[segment.path.parent.parent]
                      if after < segment.last_seq and resumed > segment.first_seq]
            kept.append(without_superseded(table, ranges))
        return pa.concat_tables(kept)

    def _runs_table(self, segments: list[SegmentFile]) -> pa.Table:
        """One `runs` row for each run whose RunStarted (seq 0) is flushed."""
        for segment in segments:
            if segment.first_seq == 0 and segment.path.parent.parent not in self._run_starts:
                first = self._tables[segment.path].slice(0, 1).to_pylist()[0]
                if first["event_type"] == RunStarted.event_type:
                    started = orjson.loads(first["payload"])
                    self._run_starts[segment.path.parent.parent] = {
                        "run_id": first["run_id"], "mode": started.get("mode"),
                        "dataset_name": started.get("dataset_name"),
                        "data_fingerprint": started.get("data_fingerprint"),
                        "config": orjson.dumps(started.get("config")).decode()}
        rows = list(self._run_starts.values())
        return pa.Table.from_pylist(rows, schema=_RUNS_SCHEMA)

    def _segment_table(self, segment: SegmentFile) -> pa.Table:
        table = self._tables.get(segment.path)
        if table is None:
            reader = open_segment(segment)  # a damaged file is named in a one-line UserError
            try:
                table = reader.read_all()
            except (pa.ArrowInvalid, OSError) as error:
                raise UserError(f"{segment.path}: damaged log segment ({_one_line(error)}); "
                                f"run `minmax-engine verify {segment.path.parent.parent}`") from None
            if not table.schema.equals(SEGMENT_SCHEMA, check_metadata=False):
                raise UserError(f"{segment.path}: not a segment of this log's schema; "
                                f"run `minmax-engine verify {segment.path.parent.parent}`")
            table = table.replace_schema_metadata(None)
        return table

    @staticmethod
    def _check_read_only(sql: str) -> None:
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as error:
            raise UserError(f"SQL: {_one_line(error)}") from None
        if len(statements) != 1:
            raise UserError(f"SQL: give exactly one statement (got {len(statements)})")
        kind = statements[0].type
        if kind not in _ALLOWED_STATEMENTS:
            # DuckDB files INSTALL (and FORCE INSTALL) under LOAD: name what was typed
            words = statements[0].query.upper().split()
            typed = " ".join(words[:2]) if words[:1] == ["FORCE"] else " ".join(words[:1])
            name = typed if kind == duckdb.StatementType.LOAD and typed else kind.name
            raise UserError(f"SQL: the log is read-only; only SELECT queries run "
                            f"(got {name}); use `minmax-engine export` to get files to modify")


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:1]) if lines else type(error).__name__


"""What the `sql`, `verify` and `export` subcommands do (their arguments are parsed in tui/cli.py).

    minmax-engine sql runs 'SELECT run_id, "window", deception_rate FROM metrics ORDER BY 1, 2'
    minmax-engine sql runs/r1 "SELECT * FROM rounds LIMIT 5" --format csv --output rounds.csv
    minmax-engine verify runs/r1
    minmax-engine export runs/r1 --to exported/

They live in storage because they are thin shells over RunsQuery and verify_run, and only
storage may import duckdb; none of them writes inside a run directory (storage/outside_runs.py).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import UserError
from storage.outside_runs import refuse_inside_a_run
from storage.query import VIEW_NAMES, RunsQuery
from storage.verify import require_verified, verify_run

_CELL_WIDTH = 48  # long cells (stories, token lists) are cut in the aligned table


# -- sql ---------------------------------------------------------------------------------


def run_sql(path: str, query: str, fmt: str, output: Path | None, verify: bool = False,
            extra_views: dict[str, str] | None = None) -> int:
    """One SELECT over the views of a run or of every run under a directory, in `fmt`.
    With `verify`, every run's whole hash chain is checked first. `extra_views`: views the
    caller defines over storage's (the engine's `metrics`)."""
    if fmt == "parquet" and output is None:
        raise UserError("--format parquet writes a binary file: add --output FILE.parquet")
    _check_output_path(output)
    if verify:
        require_verified(path)
    with RunsQuery(path, extra_views=extra_views) as runs:
        _say_skipped("sql", runs)
        table = runs.arrow(query)
    if fmt == "parquet":
        pq.write_table(table, output)
        return 0
    if output is None:
        try:
            _write_text(table, fmt, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            # `minmax-engine sql ... | head`: the reader has what it wanted
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps interpreter exit quiet)
        return 0
    with open(output, "w", newline="", encoding="utf-8") as handle:
        _write_text(table, fmt, handle)
    return 0


def _say_skipped(command: str, query: RunsQuery) -> None:
    for run_dir, reason in query.skipped:
        print(f"minmax-engine {command}: skipped {run_dir}: {reason}", file=sys.stderr)


def _check_output_path(output: Path | None) -> None:
    if output is None:
        return
    refuse_inside_a_run(output, "--output")
    if output.is_dir():
        raise UserError(f"--output {output}: is a directory; name a file, e.g. {output / 'result.csv'}")
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: directory {output.parent} does not exist; create it first")


def _write_text(table: pa.Table, fmt: str, out: TextIO) -> None:
    rows = table.to_pylist()
    if fmt == "json":
        for row in rows:
            out.write(orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row.values()])
    else:
        out.write(format_table(table.column_names, rows, [_is_numeric(t) for t in table.schema.types]))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return orjson.dumps(value, default=str).decode()
    return "" if value is None else value


def _is_numeric(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"


def format_table(names: list[str], rows: list[dict[str, Any]], numeric: list[bool]) -> str:
    """An aligned text table: numbers right-aligned, long cells cut, a row count at the end."""
    cells = [[_cell(v) for v in row.values()] for row in rows]
    widths = [max([len(name)] + [len(r[i]) for r in cells]) for i, name in enumerate(names)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(values, widths, numeric)).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


# -- verify ------------------------------------------------------------------------------


def run_verify(run: Path, all_problems: bool) -> int:
    """Exit 0 when the log is whole and unedited, 1 when it is not (one summary line)."""
    report = verify_run(run)
    print(report.summary())
    if all_problems:
        for problem in report.problems:
            print(f"  {problem.describe()}")
    return 0 if report.ok else 1


# -- export ------------------------------------------------------------------------------


def run_export(path: str, to: Path, extra_views: dict[str, str] | None = None) -> int:
    written = export_views(path, to, extra_views)
    for path in written:
        print(path)
    return 0


def export_views(path: str | Path, to: Path, extra_views: dict[str, str] | None = None) -> list[Path]:
    """One Parquet file per view (storage's and any `extra_views`) in `to`."""
    refuse_inside_a_run(to, "--to")
    with RunsQuery(path, extra_views=extra_views) as query:
        _say_skipped("export", query)
        try:
            to.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"--to {to}: cannot create the directory ({error.strerror})") from None
        written = []
        for view in query.view_names:
            target = to / f"{view}.parquet"
            pq.write_table(query.arrow(f'SELECT * FROM "{view}"'), target)
            written.append(target)
    return written

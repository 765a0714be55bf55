"""The `sql`, `verify` and `export` subcommands of `minmax-engine` (dispatched by tui/cli.py).

    minmax-engine sql runs 'SELECT run_id, "window", deception_rate FROM metrics ORDER BY 1, 2'
    minmax-engine sql runs/r1 "SELECT * FROM rounds LIMIT 5" --format csv --output rounds.csv
    minmax-engine verify runs/r1
    minmax-engine export runs/r1 --to exported/

They live in storage because they are thin shells over RunsQuery and verify_run, and only
storage may import duckdb; none of them writes inside a run directory.
"""

from __future__ import annotations

import argparse
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
from storage.query import VIEW_NAMES, RunsQuery
from storage.verify import verify_run

_CELL_WIDTH = 48  # long cells (stories, token lists) are cut in the aligned table


# -- sql ---------------------------------------------------------------------------------


def add_sql_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_OR_DIR", help="a run directory, or a directory of runs")
    parser.add_argument("query", metavar="SQL", help=f"one SELECT over the views {', '.join((*VIEW_NAMES, 'metrics'))} "
                        '(quote the keywords "window" and "lambda")')
    parser.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                        help="table (aligned, default), csv, json (one object per line) or parquet")
    parser.add_argument("--output", metavar="FILE", type=Path,
                        help="write to FILE instead of standard output (required for parquet)")


def run_sql(args: argparse.Namespace, extra_views: dict[str, str] | None = None) -> int:
    """`extra_views`: views the caller defines over storage's (the engine's `metrics`)."""
    if args.format == "parquet" and args.output is None:
        raise UserError("--format parquet writes a binary file: add --output FILE.parquet")
    _check_output_path(args.output)
    with RunsQuery(args.path, extra_views=extra_views) as query:
        table = query.arrow(args.query)
    if args.format == "parquet":
        pq.write_table(table, args.output)
        return 0
    if args.output is None:
        try:
            _write_text(table, args.format, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            # `minmax-engine sql ... | head`: the reader has what it wanted
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keeps interpreter exit quiet)
        return 0
    with open(args.output, "w", newline="", encoding="utf-8") as handle:
        _write_text(table, args.format, handle)
    return 0


def _check_output_path(output: Path | None) -> None:
    if output is not None and not output.parent.is_dir():
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


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", type=Path, help="a run directory (runs/<run_id>)")
    parser.add_argument("--all-problems", action="store_true", help="list every problem found, not only the first")


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the log is whole and unedited, 1 when it is not (one summary line)."""
    report = verify_run(args.run)
    print(report.summary())
    if args.all_problems:
        for problem in report.problems:
            print(f"  {problem.describe()}")
    return 0 if report.ok else 1


# -- export ------------------------------------------------------------------------------


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_OR_DIR", help="a run directory, or a directory of runs")
    parser.add_argument("--to", metavar="DIR", type=Path, required=True,
                        help="directory to write <view>.parquet into (created if missing)")


def run_export(args: argparse.Namespace, extra_views: dict[str, str] | None = None) -> int:
    written = export_views(args.path, args.to, extra_views)
    for path in written:
        print(path)
    return 0


def export_views(path: str | Path, to: Path, extra_views: dict[str, str] | None = None) -> list[Path]:
    """One Parquet file per view (storage's and any `extra_views`) in `to`."""
    with RunsQuery(path, extra_views=extra_views) as query:
        inside_a_run = any(to.resolve().is_relative_to(run.resolve()) for run in query.run_dirs)
        if inside_a_run:
            raise UserError(f"--to {to}: inside a run directory; export somewhere else so the run stays as written")
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

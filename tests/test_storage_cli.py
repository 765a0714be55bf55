"""`minmax-engine sql / verify / export` through the real command line (a subprocess).

Bad input must give one line on stderr, an exit status other than 0, no traceback, and
leave every file of the run exactly as it was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from storage.synthetic import write_synthetic_run

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under root (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(root / "minmax-1", 96, mode="minmax", seed=1, text_bytes=300, n_tokens=20)
    write_synthetic_run(root / "rlhf-1", 96, mode="rlhf", seed=1, text_bytes=300, n_tokens=20)
    return root


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("statement, fragment", [
    ("SELEC * FROM rounds", "syntax error"),
    ("SELECT * FROM no_such_view", "no_such_view"),
    ("INSERT INTO rounds (seq) VALUES (1)", "read-only"),
    ("CREATE TABLE x AS SELECT 1", "read-only"),
    ("COPY (SELECT 1) TO '{run}/log/evil.csv'", "read-only"),
    ("ATTACH '{run}/log/evil.duckdb' AS evil", "read-only"),
    ("SELECT 1; DELETE FROM events", "exactly one statement"),
    ("SELECT * FROM read_csv('{run}/log/run.json')", "disabled"),
    ("SET enable_external_access = true", "read-only"),
])
def test_bad_sql_is_one_line_and_changes_nothing(runs: Path, statement: str, fragment: str) -> None:
    run = runs / "minmax-1"
    before = tree_digest(runs)
    result = cli("sql", run, statement.format(run=run))
    assert_one_line_error(result, "minmax-engine sql: error:", fragment)
    assert tree_digest(runs) == before
    assert not list(run.rglob("evil*"))


def test_bad_paths_are_one_line_errors(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "notes.txt").write_text("hello")
    for path, fragment in [(tmp_path / "missing", "no such run"), (tmp_path / "empty", "no runs here"),
                           (tmp_path / "not-a-run", "no runs here"), (tmp_path / "not-a-run" / "notes.txt", "not a directory")]:
        assert_one_line_error(cli("sql", path, "SELECT 1"), str(path), fragment)
    assert_one_line_error(cli("verify", tmp_path / "empty"), "not a run directory")
    assert_one_line_error(cli("export", tmp_path / "missing", "--to", tmp_path / "out"), "no such run")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_segment_is_named_in_one_line(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_synthetic_run(run, 40, seed=2, text_bytes=200, n_tokens=10, flush_every=16)
    segment = sorted((run / "log").glob("*.arrow"))[1]
    segment.write_bytes(segment.read_bytes()[:-100])  # a torn write: the footer is gone
    before = tree_digest(run)
    assert_one_line_error(cli("sql", run, "SELECT count(*) FROM rounds"), segment.name, "verify")
    verify = cli("verify", run)
    assert verify.returncode == 1 and segment.name in verify.stdout and "Traceback" not in verify.stderr
    assert tree_digest(run) == before


def test_parquet_needs_an_output_file(runs: Path) -> None:
    assert_one_line_error(cli("sql", runs, "SELECT 1", "--format", "parquet"), "--output")


def test_aligned_table_across_runs(runs: Path) -> None:
    result = cli("sql", runs, 'SELECT run_id, count(*) AS n, max("window") AS last_window FROM rounds '
                              "WHERE phase = 'train' GROUP BY run_id ORDER BY run_id")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run_id", "n", "last_window"]
    assert lines[2].split() == ["minmax-1", "96", "5"] and lines[3].split() == ["rlhf-1", "96", "5"]
    assert lines[-1] == "(2 rows)"
    assert len({len(line) for line in lines[2:4]}) == 1  # aligned


def test_csv_json_and_parquet_outputs_agree(runs: Path, tmp_path: Path) -> None:
    query = 'SELECT run_id, "window", deception_rate, monitor_fidelity FROM metrics ORDER BY run_id, "window"'
    as_csv = list(csv.DictReader(io.StringIO(cli("sql", runs, query, "--format", "csv").stdout)))
    as_json = [json.loads(line) for line in cli("sql", runs, query, "--format", "json").stdout.splitlines()]
    result = cli("sql", runs, query, "--format", "parquet", "--output", tmp_path / "m.parquet")
    assert result.returncode == 0, result.stderr
    as_parquet = pq.read_table(tmp_path / "m.parquet").to_pylist()
    assert len(as_csv) == len(as_json) == len(as_parquet) == 12
    assert [r["run_id"] for r in as_csv] == [r["run_id"] for r in as_json] == [r["run_id"] for r in as_parquet]
    assert [r["deception_rate"] for r in as_json] == [r["deception_rate"] for r in as_parquet]
    assert all(r["monitor_fidelity"] is None for r in as_json if r["run_id"] == "rlhf-1")
    assert all(r["monitor_fidelity"] == "" for r in as_csv if r["run_id"] == "rlhf-1")


def test_export_writes_one_parquet_per_view_and_leaves_the_run_alone(runs: Path, tmp_path: Path) -> None:
    before = tree_digest(runs)
    result = cli("export", runs / "minmax-1", "--to", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["all_events.parquet", "events.parquet", "lambda.parquet", "metrics.parquet", "rounds.parquet",
                     "runs.parquet", "updates.parquet"]
    assert pq.read_table(tmp_path / "out" / "rounds.parquet").num_rows == 96  # 2 policy updates: no eval yet
    assert pq.read_table(tmp_path / "out" / "lambda.parquet").num_rows == 6
    assert tree_digest(runs) == before
    assert_one_line_error(cli("export", runs / "minmax-1", "--to", runs / "minmax-1" / "exported"), "inside the run directory")
    assert tree_digest(runs) == before


# --- no command writes inside a run (issue #14 item 6): sql --output, export --to, report --out ---


@pytest.mark.parametrize("target", ["log/head.json", "log/query.csv", "notes.csv", "checkpoints/new/x.csv"])
def test_sql_output_inside_a_run_is_refused_and_the_run_is_untouched(runs: Path, tmp_path: Path, target: str) -> None:
    copy = tmp_path / "copy"
    write_synthetic_run(copy, 8, mode="minmax", seed=2)
    before = tree_digest(copy)
    result = cli("sql", copy, "SELECT 1 AS one", "--format", "csv", "--output", copy / target)
    assert_one_line_error(result, f"--output {copy / target}", "inside the run directory", str(copy))
    assert tree_digest(copy) == before
    assert cli("verify", copy).returncode == 0


def test_sql_output_through_a_symlink_into_a_run_is_refused(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(runs / "minmax-1")
    before = tree_digest(runs / "minmax-1")
    result = cli("sql", runs, "SELECT 1 AS one", "--output", tmp_path / "alias" / "out.txt")
    assert_one_line_error(result, "inside the run directory")
    assert tree_digest(runs / "minmax-1") == before


def test_sql_output_that_is_a_directory_is_a_one_line_error(runs: Path, tmp_path: Path) -> None:
    result = cli("sql", runs, "SELECT 1 AS one", "--output", tmp_path)
    assert_one_line_error(result, f"--output {tmp_path}", "is a directory", "name a file")


def test_export_into_a_run_given_as_another_path_is_refused(runs: Path, tmp_path: Path) -> None:
    # The run exported is not the run written into: the check is about the target alone.
    before = tree_digest(runs / "rlhf-1")
    result = cli("export", runs / "minmax-1", "--to", runs / "rlhf-1" / "exported")
    assert_one_line_error(result, "--to", "inside the run directory")
    assert tree_digest(runs / "rlhf-1") == before


def test_report_out_inside_a_run_is_refused(runs: Path) -> None:
    before = tree_digest(runs / "minmax-1")
    result = cli("report", runs / "minmax-1", "--out", runs / "minmax-1" / "report")
    assert_one_line_error(result, "--out", "inside the run directory")
    assert tree_digest(runs / "minmax-1") == before


def test_writing_beside_runs_is_allowed(runs: Path, tmp_path: Path) -> None:
    out = runs.parent / f"{runs.name}-beside.csv"
    assert cli("sql", runs / "minmax-1", "SELECT 1 AS one", "--format", "csv", "--output", out).returncode == 0
    assert out.read_text(encoding="utf-8").splitlines() == ["one", "1"]

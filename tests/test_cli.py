"""The command line: one parser, and commands that load only what they need.

Each check runs in a fresh interpreter, since a test process has long imported torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.synthetic import write_synthetic_run
from tui.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "trl", "ray")

# Runs one command through tui.cli.main and prints its exit status and the heavy modules loaded.
PROBE = """
import json, sys
from tui.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
print(json.dumps({"status": status, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def probe(*args: str | Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("cli") / "run", 32, seed=3)


def test_sql_loads_no_model_library(run_dir: Path) -> None:
    assert probe("sql", run_dir, "SELECT 1") == {"status": 0, "loaded": []}


def test_verify_loads_no_model_library(run_dir: Path) -> None:
    assert probe("verify", run_dir) == {"status": 0, "loaded": []}


def test_help_loads_no_model_library() -> None:
    assert probe("--help") == {"status": 0, "loaded": []}
    assert probe("play", "--help") == {"status": 0, "loaded": []}


def test_compare_refuses_bad_seeds_before_loading_a_model() -> None:
    assert probe("compare", "--config", "configs/tiny.toml", "--seeds", "1,1") == {"status": 2, "loaded": []}


def test_every_command_is_one_subparser_of_one_parser() -> None:
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert sorted(commands.choices) == ["compare", "eval", "export", "log", "play", "replay", "report", "sql", "sweep", "tui", "verify"]
    args = parser.parse_args(["sql", "runs", "SELECT 1", "--format", "csv"])
    assert (args.path, args.query, args.format, args.output) == ("runs", "SELECT 1", "csv", None)


def test_no_command_or_an_unknown_one_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in ([], ["plya"]):
        with pytest.raises(SystemExit) as exit:
            parser.parse_args(argv)
        assert exit.value.code == 2
    assert "minmax-engine" in capsys.readouterr().err


def test_reading_a_config_loads_no_model_library() -> None:
    code = (
        "import sys, json; from engine.config import load_config, recorded_config; import engine.config_docs; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert json.loads(result.stdout) == [], result.stderr

"""The layers point one way: the core never imports the UI, and only storage talks to DuckDB.

Each core module is imported in a fresh interpreter (so nothing a previous test imported
hides a violation) and the interpreter reports which modules ended up loaded. The DuckDB
rule is checked on the source: every `import duckdb` / `from duckdb ...` outside storage/.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE_PACKAGES = ["engine", "players", "referees", "storage"]
SOURCE_PACKAGES = [*CORE_PACKAGES, "tui", "tests", "benchmarks"]


def modules_of(package: str) -> list[str]:
    """Every module of a package, found on disk so that new modules are covered."""
    modules = []
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


# One fresh interpreter per package (importing torch costs seconds on two shared cores); it
# imports the modules one by one and names the first that brought in tui or textual.
PROBE = """
import importlib, json, sys
report = {"failed": {}, "ui": {}}
for module in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
    except Exception as error:
        report["failed"][module] = f"{type(error).__name__}: {error}"
        continue
    ui = sorted(name for name in sys.modules if name.split(".")[0] in ("tui", "textual"))
    if ui:
        report["ui"][module] = ui[:5]
        break
print(json.dumps(report))
"""


def test_the_core_packages_are_found() -> None:
    # Guards the test below against passing on an empty list.
    assert {"storage", "storage.reader", "storage.writer"} <= set(modules_of("storage"))


@pytest.mark.parametrize("package", CORE_PACKAGES)
def test_core_package_never_imports_tui_or_textual(package: str) -> None:
    modules = modules_of(package)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(modules)], cwd=REPO, capture_output=True, text=True,
        timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ui"] == {}, f"these modules pull in the UI: {report['ui']}"
    assert report["failed"] == {}, f"these modules do not import: {report['failed']}"


def imported_top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_import_scan_sees_duckdb_imports(tmp_path: Path) -> None:
    # The scanner itself must catch both spellings, or the test below proves nothing.
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nimport duckdb as db\nfrom duckdb import connect\n")
    assert "duckdb" in imported_top_level_names(sample)
    sample.write_text("def f():\n    from duckdb.typing import VARCHAR\n")
    assert "duckdb" in imported_top_level_names(sample)


def test_no_source_outside_storage_imports_duckdb() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in SOURCE_PACKAGES
        if package != "storage" and (REPO / package).is_dir()
        for path in sorted((REPO / package).rglob("*.py"))
        if "duckdb" in imported_top_level_names(path)
    ]
    assert offenders == []

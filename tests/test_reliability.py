"""Issue 14's single failures, each reproduced as the issue found it (the crash suite, with
real processes, is tests/test_crash_suite.py)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from engine.game import evaluate_run, open_run, resume_run, start_run
from players import ModelPool
from storage import RunReader, RunsQuery, RunWriter
from storage.errors import UserError
from storage.events import EvaluationCompleted, RoundPlayed, RunFinished, RunResumed
from storage.layout import LOG_DIR_NAME, MANIFEST_NAME
from storage.status import run_status
from storage.synthetic import write_synthetic_run
from tests.test_game import tiny_config
from tui import cli
from tui.run_data import summarize_run_dir


def test_a_finished_run_evaluated_later_is_never_resumed_and_stays_valid(tiny_lm_dir: Path, tmp_path: Path) -> None:
    # item 1: `eval X; play --resume X` appended RunResumed and a second RunFinished, and
    # verify failed from then on ("RunResumed follows RunFinished")
    config = tiny_config(tiny_lm_dir, tmp_path, training={"num_epochs": 1, "monitor_updates_per_policy": 3})
    run_dir = tmp_path / "run"
    start_run(config, run_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))
    evaluate_run(run_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))
    before = RunReader(run_dir).last_seq()
    assert not isinstance(RunReader(run_dir).events()[-1].event, RunFinished)  # the evaluation came after it

    with pytest.raises(UserError, match=r"already finished \(RunFinished at seq \d+\).*minmax-engine eval"):
        resume_run(run_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))

    events = RunReader(run_dir).events()
    assert RunReader(run_dir).last_seq() == before and not any(isinstance(e.event, RunResumed) for e in events)
    assert cli.main(["verify", str(run_dir)]) == 0
    assert run_status(run_dir).state == "finished" and summarize_run_dir(run_dir).status == "finished"
    # the evaluation stays visible in the views (nothing superseded it)
    n_eval = sum(isinstance(e.event, RoundPlayed) and e.event.phase == "eval" for e in events)
    with RunsQuery(run_dir) as query:
        shown = query.arrow("SELECT count(*) AS n FROM rounds WHERE phase = 'eval'").column("n")[0].as_py()
    assert n_eval > 0 and shown == n_eval
    assert sum(isinstance(e.event, EvaluationCompleted) for e in events) >= 1


def test_a_run_that_died_shows_stopped_not_running_and_resume_checks_the_lock_first(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # item 3: a dead run showed "running" forever; item 9: resume loaded the models before
    # it found another writer; item 10: the thread count was not recorded
    config = tiny_config(tiny_lm_dir, tmp_path)
    run_dir = tmp_path / "run"
    game = open_run(config, run_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))
    assert run_status(run_dir).describe() == "running"  # this process holds the writer
    game.save_checkpoint()
    game.log.close()  # a writer gone without RunFinished or RunFailed: as after a SIGKILL
    assert RunReader(run_dir).run_started().num_threads == torch.get_num_threads()

    assert run_status(run_dir).describe() == "stopped (resumable from checkpoint 0)"
    assert summarize_run_dir(run_dir).status == "stopped (resumable from checkpoint 0)"
    assert cli.main(["verify", str(run_dir)]) == 0
    assert "not finished: stopped (resumable from checkpoint 0)" in capsys.readouterr().out

    with RunWriter.open_existing(run_dir):  # another process writing the run
        assert summarize_run_dir(run_dir).status == "running"
        pool = ModelPool(cache_dir=tmp_path / "cache")
        started = time.monotonic()
        with pytest.raises(UserError, match="another writer"):
            resume_run(run_dir, pool=pool)
        assert not pool._causal_lms and not pool._classifiers  # refused before any model loaded
        assert time.monotonic() - started < 5


def test_multi_run_queries_refuse_copies_and_name_skipped_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # item 5: two copies of one run were merged (doubled counts); a run without its manifest
    # was silently left out
    runs = tmp_path / "runs"
    write_synthetic_run(runs / "a", n_rounds=32, window_size=8, k=2, seed=1)
    write_synthetic_run(runs / "b", n_rounds=32, window_size=8, k=2, seed=2)
    shutil.copytree(runs / "a", runs / "a-copy")
    with pytest.raises(UserError, match=r"run id 'a' is in both .*runs/a and .*runs/a-copy"):
        RunsQuery(runs)
    assert cli.main(["sql", str(runs), "SELECT count(*) FROM rounds"]) == 2
    assert "run id 'a' is in both" in capsys.readouterr().err

    (runs / "a-copy" / LOG_DIR_NAME / MANIFEST_NAME).unlink()  # now a damaged run directory
    with RunsQuery(runs) as query:
        assert [path.name for path, _ in query.skipped] == ["a-copy"]
        assert sorted(query.arrow("SELECT DISTINCT run_id FROM events").column("run_id").to_pylist()) == ["a", "b"]
    assert cli.main(["sql", str(runs), "SELECT count(*) AS n FROM rounds"]) == 0
    err = capsys.readouterr().err
    assert f"minmax-engine sql: skipped {runs / 'a-copy'}: " in err and "not a run directory" in err
    with pytest.raises(UserError, match="not a run directory"):
        RunsQuery(runs / "a-copy")  # asked for by name, it is an error, not a skip


def test_install_is_named_install(tmp_path: Path) -> None:
    # item 9: DuckDB files INSTALL under LOAD, and the refusal said "got LOAD"
    run_dir = write_synthetic_run(tmp_path / "r", n_rounds=8, window_size=4, k=1)
    with RunsQuery(run_dir) as query:
        for statement, named in (("INSTALL httpfs", "INSTALL"), ("force install httpfs", "FORCE INSTALL"),
                                 ("LOAD httpfs", "LOAD")):
            with pytest.raises(UserError, match=rf"read-only; only SELECT queries run \(got {named}\)"):
                query.arrow(statement)


@pytest.mark.parametrize("asked", [None, "2"])
def test_resume_takes_the_recorded_thread_count_unless_minmax_engine_threads_asks_otherwise(
    asked: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from types import SimpleNamespace

    from engine.game import _use_recorded_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # machine-wide: never overrides the run's own count
    if asked is None:
        monkeypatch.delenv("MINMAX_ENGINE_THREADS", raising=False)
    else:
        monkeypatch.setenv("MINMAX_ENGINE_THREADS", asked)
    torch.set_num_threads(2)
    try:
        _use_recorded_threads(SimpleNamespace(num_threads=1), tmp_path)  # type: ignore[arg-type]
        expected = 1 if asked is None else 2
        assert torch.get_num_threads() == expected
        warned = capsys.readouterr().err
        assert ("resuming with 2 as MINMAX_ENGINE_THREADS asks" in warned) == (asked is not None)
    finally:
        torch.set_num_threads(1)

"""`minmax-engine sweep --cluster ray`: two tiny runs as Ray tasks in parallel on a local
cluster; each run directory verifies and logs what the same run played locally logs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigOverrides, load_config
from engine.game import start_run
from engine.sweep import parse_grid, plan_sweep
from players import ModelPool
from storage import RunReader
from storage.errors import UserError
from storage.events import RoundPlayed, RunFinished, RunResumed, RunStarted
from tests.test_cluster import assert_cluster_freed, assert_same_log
from tests.test_game_resume import kill_after_a_checkpoint, write_toml
from tui import cli

pytestmark = pytest.mark.ray


def test_two_runs_play_in_parallel_as_ray_tasks_and_equal_local_runs(
    ray_cluster: Any, one_thread_runs: None, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    out = tmp_path / "sweep"
    command = ["sweep", "--config", str(config_path), "--grid", "lagrangian.step_size=0.5,0.25", "--seeds", "5",
               "--out", str(out), "--cluster", "ray", "--parallel", "2"]
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert "2 runs (2 grid points × 1 seeds)" in printed and "as Ray tasks, 2 at a time" in printed
    assert "sweep: 2/2 runs done, 24/24 training rounds" in printed
    names = ["tiny-step_size=0.5-seed5", "tiny-step_size=0.25-seed5"]
    assert sorted(path.name for path in out.iterdir()) == sorted(names)

    # both tasks ran at once: each started before the other finished
    spans = []
    for name in names:
        events = RunReader(out / name).events()
        assert isinstance(events[0].event, RunStarted) and isinstance(events[-1].event, RunFinished)
        spans.append((events[0].ts, events[-1].ts))
        assert cli.main(["verify", str(out / name)]) == 0
        assert events[0].event.config["lagrangian"]["step_size"] == float(name.split("=")[1].split("-")[0])
    (first_start, first_end), (second_start, second_end) = spans
    assert first_start < second_end and second_start < first_end
    # each equals the same run played here, in this process
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(tmp_path / "cache"))
    for name, step_size in zip(names, (0.5, 0.25)):
        config, _ = load_config(config_path, ConfigOverrides(run_dir=str(out), settings=(("lagrangian.step_size", step_size),)))
        start_run(config, tmp_path / "local" / name, pool=ModelPool(cache_dir=tmp_path / "cache"))
        assert_same_log(out / name, tmp_path / "local" / name)
    assert_cluster_freed(ray_cluster)

    # run again: both finished, nothing is played
    assert cli.main(command) == 0
    assert "sweep: 2/2 runs done, 24/24 training rounds" in capsys.readouterr().out


def test_a_grid_names_a_dotted_key_and_its_values() -> None:
    assert parse_grid(["training.window_size=2,4", "mode=rlhf"]) == [
        ("training.window_size", [("2", 2), ("4", 4)]), ("mode", [("rlhf", "rlhf")])
    ]
    with pytest.raises(UserError, match="give KEY=V1,V2"):
        parse_grid(["window_size"])
    with pytest.raises(UserError, match="set by the sweep itself"):
        parse_grid(["seed=1,2"])


def test_grid_values_are_validated_like_the_file_before_any_run(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    planned, _ = plan_sweep(config_path, parse_grid(["training.window_size=2,4", "mode=minmax,rlhf"]), [0, 1], tmp_path / "s")
    assert len(planned) == 8 and planned[-1].run_dir.name == "tiny-window_size=4-mode=rlhf-seed1"
    assert (planned[-1].config.training.window_size, planned[-1].config.mode, planned[-1].config.seed) == (4, "rlhf", 1)
    with pytest.raises(UserError, match=r"training.nope: unknown key"):
        plan_sweep(config_path, parse_grid(["training.nope=1"]), [0], tmp_path / "s")
    with pytest.raises(UserError, match=r"training.window_size: must be >= 1 \(got 0\)"):
        plan_sweep(config_path, parse_grid(["training.window_size=0"]), [0], tmp_path / "s")


def test_parallel_runs_without_ray_are_refused(tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    status = cli.main(["sweep", "--config", str(config_path), "--out", str(tmp_path / "sweep"), "--parallel", "2"])
    assert status == 2
    assert '--parallel 2 needs Ray: set [cluster] backend = "ray" or pass --cluster ray' in capsys.readouterr().err


def test_compare_plays_both_modes_as_parallel_ray_tasks_then_reports(
    ray_cluster: Any, one_thread_runs: None, tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    config_path.write_text(config_path.read_text().replace("num_epochs = 2", "num_epochs = 1"))
    out = tmp_path / "compare"
    command = ["compare", "--config", str(config_path), "--seeds", "0", "--out", str(out), "--cluster", "ray", "--parallel", "2"]
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert "as Ray tasks, 2 at a time" in printed and "compare: 2/2 runs done, 12/12 training rounds" in printed
    assert "report written" in printed and (out / "report" / "index.html").is_file()
    for mode in ("minmax", "rlhf"):
        events = [item.event for item in RunReader(out / f"tiny-{mode}-seed0").events()]
        assert events[0].mode == mode and isinstance(events[-1], RunFinished)
    assert_cluster_freed(ray_cluster)


def test_the_sweep_benchmark_runs_both_sides_and_reports_their_ratio(
    ray_cluster: Any, one_thread_runs: None, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_sweep", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sweep.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    results = bench.main(["--config", str(config_path), "--epochs", "1", "--runs", "2", "--parallel", "2",
                          "--threads", "1", "--keep", str(tmp_path / "bench")])
    assert results["rounds"] == 12 and results["threads"] == 1  # 2 runs × 6 train states × 1 epoch
    assert results["ratio"] == pytest.approx(results["ray_seconds"] / results["local_seconds"])
    printed = capsys.readouterr().out
    assert "2 runs of tiny.toml (num_epochs = 1), 1 thread(s) each" in printed and "Ray / local = " in printed
    assert sorted(path.name for path in (tmp_path / "bench" / "ray").iterdir()) == ["tiny-epochs1-seed0", "tiny-epochs1-seed1"]
    assert_cluster_freed(ray_cluster)


def test_a_run_killed_mid_sweep_is_resumed_in_a_ray_task(
    ray_cluster: Any, one_thread_runs: None, tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    out = tmp_path / "sweep"
    out.mkdir()
    # a run of this sweep, killed with SIGKILL after a checkpoint (as a killed sweep leaves it)
    killed = kill_after_a_checkpoint(config_path, tmp_path / "runs", tmp_path / "cache")
    shutil.move(killed, out / "tiny-seed5")
    assert cli.main(["sweep", "--config", str(config_path), "--seeds", "5", "--out", str(out), "--cluster", "ray"]) == 0
    assert "sweep: 1/1 runs done, 12/12 training rounds" in capsys.readouterr().out

    resumed = [item.event for item in RunReader(out / "tiny-seed5").events()]
    assert sum(isinstance(e, RunResumed) for e in resumed) == 1 and isinstance(resumed[-1], RunFinished)
    config, _ = load_config(config_path)
    start_run(config, tmp_path / "reference", pool=ModelPool(cache_dir=tmp_path / "cache"))
    reference = [item.event for item in RunReader(tmp_path / "reference").events()]
    rounds = [(e.state_id, e.window, list(e.policy_token_ids), e.lambda_value)
              for e in resumed if isinstance(e, RoundPlayed)]
    assert rounds == [(e.state_id, e.window, list(e.policy_token_ids), e.lambda_value)
                      for e in reference if isinstance(e, RoundPlayed)]
    assert cli.main(["verify", str(out / "tiny-seed5")]) == 0


def test_a_run_asking_for_more_cpus_than_the_cluster_has_is_refused(ray_cluster: Any, tiny_lm_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "tiny.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    monkeypatch.setenv("MINMAX_ENGINE_THREADS", "3")
    status = cli.main(["sweep", "--config", str(config_path), "--out", str(tmp_path / "sweep"), "--cluster", "ray"])
    assert status == 2
    assert "each run asks Ray for 3 CPUs (its threads) but the cluster has 2; set MINMAX_ENGINE_THREADS to 2" in capsys.readouterr().err

"""[cluster] backend = "ray": the roles play in Ray actors on a local cluster, and the run's
log is the local run's, event for event (timings aside)."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.cluster import plan_seats
from engine.config import ClusterConfig, ConfigOverrides, load_config
from engine.devices import Placement
from engine.game import start_run
from players import ModelPool
from storage import RunReader
from storage.errors import UserError
from storage.events import (
    CheckpointSaved,
    MonitorUpdated,
    PolicyUpdated,
    RoundPlayed,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
)
from tests.test_game import tiny_config
from tests.test_game_resume import write_toml
from tui import cli

pytestmark = pytest.mark.ray


def comparable(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every event's content but what depends on the clock or the execution backend."""
    out = []
    for item in RunReader(run_dir).events():
        fields = dict(vars(item.event))
        fields.pop("timings", None)
        fields.pop("wall_seconds", None)
        if isinstance(fields.get("diagnostics"), dict):  # learner updates time themselves
            fields["diagnostics"] = {key: value for key, value in fields["diagnostics"].items() if key != "seconds"}
        if isinstance(item.event, RunStarted):
            fields["config"] = {key: value for key, value in fields["config"].items() if key != "cluster"}
        out.append((type(item.event).__name__, fields))
    return out


def assert_same_log(ray_run: Path, local_run: Path) -> None:
    ray_events, local_events = comparable(ray_run), comparable(local_run)
    assert [kind for kind, _ in ray_events] == [kind for kind, _ in local_events]
    for (kind, ray_fields), (_, local_fields) in zip(ray_events, local_events):
        assert ray_fields.keys() == local_fields.keys(), kind
        for name in ray_fields:
            mine, theirs = ray_fields[name], local_fields[name]
            assert nan_equal(mine) == nan_equal(theirs), f"{kind}.{name} differs"


def nan_equal(value: Any) -> Any:
    """The value with NaN (an undefined diagnostic) made equal to itself; arrays as lists."""
    if hasattr(value, "tolist"):  # ids and log-probs come back as numpy arrays
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {key: nan_equal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [nan_equal(item) for item in value]
    return value


def test_a_ray_run_logs_what_a_local_run_logs(ray_cluster: Any, tiny_lm_dir: Path, tmp_path: Path) -> None:
    local = tiny_config(tiny_lm_dir, tmp_path)
    on_ray = tiny_config(tiny_lm_dir, tmp_path, cluster={"backend": "ray"})
    start_run(local, tmp_path / "local", pool=ModelPool(cache_dir=tmp_path / "cache"))
    finished = start_run(on_ray, tmp_path / "ray", pool=ModelPool(cache_dir=tmp_path / "cache"))
    assert (finished.rounds, finished.policy_updates, finished.monitor_updates) == (12, 3, 6)

    events = [item.event for item in RunReader(tmp_path / "ray").events()]
    assert events[0].config["cluster"]["backend"] == "ray"  # recorded like every setting
    assert isinstance(events[-1], RunFinished)
    assert any(isinstance(e, RoundPlayed) and e.phase == "eval" for e in events)
    assert_same_log(tmp_path / "ray", tmp_path / "local")
    assert_cluster_freed(ray_cluster)


def assert_cluster_freed(ray: Any) -> None:
    """A finished or failed run leaves no actor or placement group holding the cluster's CPUs."""
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def test_the_devices_map_becomes_one_bundle_per_device() -> None:
    cpu, gpu0, gpu1 = (Placement(torch.device(name), torch.float32) for name in ("cpu", "cuda:0", "cuda:1"))
    one_gpu_each = plan_seats({"policy": gpu0, "monitor": gpu1, "reward": cpu, "judge": cpu},
                              ["policy", "monitor", "reward", "judge"], threads=3)
    assert [(seat.roles, seat.device_type, seat.resources) for seat in one_gpu_each] == [
        (("policy",), "cuda", {"CPU": 1.0, "GPU": 1.0}),
        (("monitor",), "cuda", {"CPU": 1.0, "GPU": 1.0}),
        (("reward", "judge"), "cpu", {"CPU": 3.0}),
    ]
    shared = plan_seats({"policy": gpu0, "reward": gpu0, "judge": gpu0}, ["policy", "reward", "judge"], threads=1)
    assert [(seat.roles, seat.resources) for seat in shared] == [(("policy", "reward", "judge"), {"CPU": 1.0, "GPU": 1.0})]


def test_cluster_settings_are_validated() -> None:
    from engine.config import config_from_dict

    assert ClusterConfig().backend == "local"
    with pytest.raises(UserError, match=r'cluster: address = "auto" is only read with backend = "ray"'):
        config_from_dict({"cluster": {"address": "auto"}}, source="c.toml")
    with pytest.raises(UserError, match=r'cluster: address = "somewhere" is not a Ray address'):
        config_from_dict({"cluster": {"backend": "ray", "address": "somewhere"}}, source="c.toml")
    with pytest.raises(UserError, match=r"cluster.backend: must be 'local' or 'ray'"):
        config_from_dict({"cluster": {"backend": "dask"}}, source="c.toml")


def test_a_killed_actor_fails_the_run_cleanly_and_play_resume_finishes_it(
    ray_cluster: Any, one_thread_runs: None, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_path = tmp_path / "ray.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    config_path.write_text(config_path.read_text() + '\n[cluster]\nbackend = "ray"\n')
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(tmp_path / "cache"))
    status: list[int] = []
    player = threading.Thread(target=lambda: status.append(cli.main(["play", "--config", str(config_path)])))
    player.start()
    try:
        run_dir = kill_the_actor_after_a_checkpoint(ray_cluster, tmp_path / "runs", player)
    finally:
        player.join(timeout=120)
    assert status == [2]  # a one-line error, not a traceback: the node is gone, the run can go on
    events = [item.event for item in RunReader(run_dir).events()]
    failed = events[-1]
    assert isinstance(failed, RunFailed) and "died" in failed.message and "play --resume" in failed.message
    assert_cluster_freed(ray_cluster)

    assert cli.main(["play", "--resume", str(run_dir)]) == 0
    config, _ = load_config(config_path, ConfigOverrides(settings=(("cluster.backend", "local"),)))
    start_run(config, tmp_path / "reference", pool=ModelPool(cache_dir=tmp_path / "cache"))
    live = [item.event for item in RunReader(run_dir).events()]  # superseded events left out
    reference = [item.event for item in RunReader(tmp_path / "reference").events()]
    assert any(isinstance(e, RunResumed) for e in live) and isinstance(live[-1], RunFinished)
    for kind in (RoundPlayed, MonitorUpdated, PolicyUpdated, CheckpointSaved):
        assert sum(isinstance(e, kind) for e in live) == sum(isinstance(e, kind) for e in reference), kind
    live_rounds = [e for e in live if isinstance(e, RoundPlayed)]
    reference_rounds = [e for e in reference if isinstance(e, RoundPlayed)]
    assert [(r.state_id, r.window, r.sample_index, list(r.policy_token_ids), r.lambda_value, r.p_accept)
            for r in live_rounds] == [(r.state_id, r.window, r.sample_index, list(r.policy_token_ids),
                                       r.lambda_value, r.p_accept) for r in reference_rounds]
    assert cli.main(["verify", str(run_dir)]) == 0
    assert_cluster_freed(ray_cluster)


def kill_the_actor_after_a_checkpoint(ray: Any, run_parent: Path, player: threading.Thread) -> Path:
    """Once the run has a checkpoint and rounds after it, kill its actor as a lost node would."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and player.is_alive():
        runs = [path for path in run_parent.iterdir() if (path / "log").is_dir()] if run_parent.is_dir() else []
        if runs:
            try:
                events = RunReader(runs[0]).events()
            except UserError:  # the manifest is being written
                events = []
            checkpoints = [item.seq for item in events if isinstance(item.event, CheckpointSaved)]
            if checkpoints and any(isinstance(item.event, RoundPlayed) and item.seq > checkpoints[0] for item in events):
                ray.kill(ray.get_actor(f"{runs[0]}:policy+monitor+reward+judge"))
                return runs[0]
        time.sleep(0.02)
    pytest.fail("the run ended, or had no checkpoint within 240 s, before its actor could be killed")

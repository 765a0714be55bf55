"""[cluster] backend = "ray": the roles play in Ray actors on a local cluster, and the run's
log is the local run's, event for event (timings aside)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.cluster import plan_seats
from engine.config import ClusterConfig
from engine.devices import Placement
from engine.game import start_run
from players import ModelPool
from storage import RunReader
from storage.events import RoundPlayed, RunFinished, RunStarted
from tests.test_game import tiny_config

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
    from storage.errors import UserError

    assert ClusterConfig().backend == "local"
    with pytest.raises(UserError, match=r'cluster: address = "auto" is only read with backend = "ray"'):
        config_from_dict({"cluster": {"address": "auto"}}, source="c.toml")
    with pytest.raises(UserError, match=r'cluster: address = "somewhere" is not a Ray address'):
        config_from_dict({"cluster": {"backend": "ray", "address": "somewhere"}}, source="c.toml")
    with pytest.raises(UserError, match=r"cluster.backend: must be 'local' or 'ray'"):
        config_from_dict({"cluster": {"backend": "dask"}}, source="c.toml")

"""benchmarks/bench_reference_cache.py replays a logged run's reference passes with and without
the prompt cache: on a run of the tests' tiny random Llama, in its own process, it finds prompts
in the cache and reports cached passes equal to each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from engine.game import start_run
from players import ModelPool
from tests.test_game import tiny_config

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_reference_cache_benchmark_replays_every_update_of_a_run(tiny_lm_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    start_run(tiny_config(tiny_lm_dir, tmp_path, training={"monitor_updates_per_policy": 2}), run, pool=ModelPool(cache_dir=tmp_path / "cache"))
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(tmp_path / "cache")}
    finished = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "bench_reference_cache.py"), "--run", str(run), "--repeats", "2"],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    printed = finished.stdout
    # 2 epochs of 6 train states in windows of 2, k = 2: 6 monitor and 3 policy updates
    assert "9 updates (3 policy)" in printed, printed
    assert len(re.findall(r"  with(out)? the cache: [0-9.]+ s", printed)) == 4
    found, total = map(int, re.search(r"found in the cache on the last cached run: (\d+) of (\d+)", printed).groups())  # type: ignore[union-attr]
    assert 0 < found < total  # the second epoch finds the first's prompts; the first finds only shared openings
    difference = float(re.search(r"largest difference of a reference log-prob between the two: ([0-9.e+-]+)", printed).group(1))  # type: ignore[union-attr]
    assert difference < 1e-4

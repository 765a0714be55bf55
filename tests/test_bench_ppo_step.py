"""benchmarks/bench_ppo_vs_trl.py runs end to end on a tiny model and its figures add up.

The benchmark's figures go into the README's performance table, so the script itself must keep
working: here our side of it (generation, the learner's update, the profiled split of one more
update) runs in its own process on a tiny random Llama, TRL's side skipped (it needs minutes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_our_side_of_the_ppo_benchmark_prints_a_split_of_the_update_that_adds_up(tiny_lm_dir: Path, model_cache_dir: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(model_cache_dir)}
    finished = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "bench_ppo_vs_trl.py"),
         "--model", str(tiny_lm_dir), "--skip-trl", "--steps", "1", "--warmup", "0", "--threads", "1"],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    printed = finished.stdout
    assert "completions: exactly 64 tokens on both sides" in printed
    assert re.search(r"ours timed step 0: [0-9.]+s \(generation [0-9.]+s, update [0-9.]+s, 512 completion tokens", printed)

    split = re.search(
        r"one more update under the profiler, ([0-9.]+)s: linear products ([0-9.]+)s \((\d+)%.*?\), "
        r"attention ([0-9.]+)s \((\d+)%\), the rest ([0-9.]+)s \((\d+)%",
        printed,
    )
    assert split, printed
    wall, products, attention, rest = (float(split.group(i)) for i in (1, 2, 4, 6))
    assert products > 0 and attention > 0 and rest > 0  # the tiny Llama runs SDPA and linear layers
    assert abs(products + attention + rest - wall) <= 0.005  # the three parts are the update's wall time
    assert abs(sum(int(split.group(i)) for i in (3, 5, 7)) - 100) <= 2  # shares of it, rounded
    bound = re.search(r"the learner would reach (\d+)% of the peak", printed)
    assert bound and 0 < int(bound.group(1)) <= 100
    ratio = re.search(r"PPO ratio within ([0-9.e+-]+) of 1", printed)
    assert ratio and float(ratio.group(1)) < 1e-5  # the un-updated policy's behaviour log-probs, as tested elsewhere

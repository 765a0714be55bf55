"""benchmarks/bench_game.py plays a whole game on a tiny model and its split adds up.

The game benchmark's figures go into the README's speed table (rounds per minute, where the
loop's wall time goes, memory per window), so the script itself must keep working: here it
plays one epoch of configs/tiny.toml with every role on the tests' tiny random Llama, in its
own process, as the README's runs do with the embedded model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_game_benchmark_plays_tiny_and_splits_the_loop_into_parts_that_add_up(model_cache_dir: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MINMAX_ENGINE_CACHE": str(model_cache_dir)}
    finished = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "bench_game.py"),
         "--config", str(REPOSITORY / "configs" / "tiny.toml"), "--tiny-model", "--epochs", "1", "--threads", "1"],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    printed = finished.stdout
    # one epoch over tiny's 12 train states: 3 windows of 4, k = 3, so 1 policy and 3 monitor updates
    assert "12 training rounds, 1 policy and 3 monitor updates, torch threads 1" in printed, printed
    loop = float(re.search(r"game loop ([0-9.]+) s\n", printed).group(1))  # type: ignore[union-attr]

    parts = dict(re.findall(r"\n {4}(\S[^\n]*?) +(-?[0-9.]+) s +-?[0-9.]+%", printed))
    assert list(parts) == [
        "policy generation", "monitor generation", "reward model", "judge", "learners", "the log", "checkpoints",
        "other (scheduling, prompts, payoffs, Python)",
    ]
    seconds = {name: float(value) for name, value in parts.items()}
    assert abs(sum(seconds.values()) - loop) <= 0.05 * len(seconds)  # the parts are the loop, each rounded to 0.1 s
    assert seconds["learners"] > 0  # four updates of real PPO on the tiny model
    # checkpoint 0 and opening the log come before the loop: what is left is never negative
    assert seconds["other (scheduling, prompts, payoffs, Python)"] >= -0.05

    # tiny draws the policy's answers a policy period at a time: all 12 in one generation
    drawn = re.search(r"policy generation of the training rounds: ([0-9.]+) s for 12 answers \(drawn a period at a time\), "
                      r"(\d+) tokens", printed)
    assert drawn and 12 <= int(drawn.group(2)) <= 12 * 32, printed  # max_new_tokens = 32
    assert re.search(r"resident MiB after each of 3 windows: \d+, \d+, \d+", printed)
    assert re.search(r"the log's share of the loop: [0-9.]+%", printed)

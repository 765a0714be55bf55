"""Whole games, timed: rounds per minute and where the wall time goes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_game.py [--config configs/tiny.toml ...] [--threads N]
    PYTHONPATH=. .venv/bin/python benchmarks/bench_game.py --config configs/tiny.toml --epochs 17   # ~200 rounds: memory per window

Each config is played once, in this process, exactly as `minmax-engine play` plays it (same
engine entry point, console tracker off), in a scratch run directory. Printed per config:
- wall time from the start of the run (models loading included, as `make play` pays it) and
  of the game loop alone, rounds per minute over both;
- the split of the loop's wall time: policy generation, monitor generation, reward model,
  judge (from each RoundPlayed's `timings`, training and evaluation rounds together),
  learners (each update's `seconds`), the log (every append, flush and read of the run's
  log, timed around the engine's RunLog), checkpoints, and what is left (scheduling,
  prompt rendering, payoffs, Python);
- peak resident memory of the process, and the resident memory after every window (a run
  that leaks grows from window to window; the first windows grow while allocators warm up).

Configs run one after another in the same process, so the second shares the loaded models
(its load time is near zero) and its peak memory includes the first's.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine import game as game_module  # noqa: E402
from engine.config import ConfigOverrides, load_config  # noqa: E402
from engine.devices import set_intra_op_threads  # noqa: E402
from players import ModelPool  # noqa: E402
from storage import RunReader  # noqa: E402
from storage.events import MonitorUpdated, PolicyUpdated, RoundPlayed  # noqa: E402

STEPS = ("policy", "monitor", "reward", "judge")


def resident_mib() -> float:
    """Current resident set size (VmRSS) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_resident_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Stopwatch:
    """Accumulated seconds per label, by wrapping methods for the length of one run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.window_rss: list[float] = []
        self.before_loop: dict[str, float] = {}

    def in_loop(self, label: str) -> float:
        return self.seconds[label] - self.before_loop.get(label, 0.0)

    @contextmanager
    def wrapping(self, owner: type, method: str, label: str, after: Callable[[], None] | None = None) -> Iterator[None]:
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if label == "loop":  # what the log and checkpoint 0 cost before the loop (opening the run) is not the loop's
                self.before_loop = dict(self.seconds)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                if after is not None:
                    after()

        setattr(owner, method, timed)
        try:
            yield
        finally:
            setattr(owner, method, original)


def play(config_path: Path, epochs: int | None, scratch: Path, pool: ModelPool, tiny_model: Path | None) -> None:
    config, _warnings = load_config(config_path, ConfigOverrides(num_epochs=epochs, run_dir=str(scratch)))
    update: dict[str, Any] = {"logging": config.logging.model_copy(update={"backends": []})}
    if tiny_model is not None:
        for role in ("policy", "monitor", "reward", "judge"):
            update[role] = getattr(config, role).model_copy(update={"model": str(tiny_model)})
    config = config.model_copy(update=update)
    run_dir = scratch / game_module.new_run_id(config)
    # Each game starts with an empty reference prompt cache, as a new process would: a game
    # must not find the prompts an earlier game in this process left there.
    for base in pool.causal_lms_loaded():
        base.prompt_cache = None
    watch = Stopwatch()
    started, cpu_started = time.perf_counter(), time.process_time()
    with (
        watch.wrapping(game_module.RunLog, "append", "log"),
        watch.wrapping(game_module.RunLog, "flush", "log"),
        watch.wrapping(game_module.Game, "read_rounds", "log"),
        watch.wrapping(game_module.Game, "save_checkpoint", "checkpoints"),
        watch.wrapping(game_module.Game, "play_window", "windows", after=lambda: watch.window_rss.append(resident_mib())),
        watch.wrapping(game_module.Game, "train", "loop"),
    ):
        finished = game_module.start_run(config, run_dir, pool=pool)
    total, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
    loop = watch.seconds["loop"]
    log_in_loop = watch.in_loop("log")

    steps: dict[str, float] = defaultdict(float)
    train_policy_seconds = 0.0  # the training rounds' share of policy generation
    learners = 0.0
    update_seconds: dict[str, list[float]] = defaultdict(list)
    tokens: dict[str, list[tuple[int, int]]] = defaultdict(list)  # role -> (prompt, response) per training round
    for item in RunReader(run_dir).events():
        event = item.event
        if isinstance(event, RoundPlayed):
            # An evaluation judges each answer twice (deployment, then monitored), and both
            # rounds carry the answer's policy and reward time; the monitored twin adds only
            # its monitor and judge time.
            counted = ("monitor", "judge") if event.protocol == "monitored" else STEPS
            for step in counted:
                steps[step] += event.timings.get(step, 0.0)
            if event.phase == "train":
                train_policy_seconds += event.timings.get("policy", 0.0)
                tokens["policy"].append((len(event.policy_prompt_ids), len(event.policy_token_ids)))
                if event.monitor_prompt_ids is not None and event.monitor_token_ids is not None:
                    tokens["monitor"].append((len(event.monitor_prompt_ids), len(event.monitor_token_ids)))
        elif isinstance(event, (MonitorUpdated, PolicyUpdated)):
            learners += event.diagnostics.get("seconds", 0.0)
            update_seconds["policy" if isinstance(event, PolicyUpdated) else "monitor"].append(event.diagnostics.get("seconds", 0.0))

    rounds = finished.rounds
    models = "tiny random Llama (--tiny-model)" if tiny_model is not None else config.policy.model
    print(f"\n{config_path} (mode {config.mode}, {models}): {rounds} training rounds, {finished.policy_updates} policy and "
          f"{finished.monitor_updates} monitor updates, torch threads {torch.get_num_threads()}")
    print(f"  wall {total:.1f} s from the start of the run (models loading included), game loop {loop:.1f} s")
    print(f"  rounds per minute: {60 * rounds / total:.1f} (whole run), {60 * rounds / loop:.1f} (game loop)")
    # On a machine shared with other work the wall clock mostly measures the others; the
    # process's CPU time (all its threads) is what the run itself cost.
    print(f"  process CPU time {cpu_total:.1f} s: {60 * rounds / cpu_total:.1f} rounds per CPU minute "
          f"(wall / CPU = {total / cpu_total:.1f})")
    parts = {
        "policy generation": steps["policy"],
        "monitor generation": steps["monitor"],
        "reward model": steps["reward"],
        "judge": steps["judge"],
        "learners": learners,
        "the log": log_in_loop,
        "checkpoints": watch.in_loop("checkpoints"),
    }
    parts["other (scheduling, prompts, payoffs, Python)"] = loop - sum(parts.values())
    print("  split of the game loop's wall time:")
    for name, seconds in parts.items():
        print(f"    {name:<46} {seconds:7.1f} s  {100 * seconds / loop:5.1f}%")
    drawn = sum(response for _, response in tokens["policy"])
    print(f"  policy generation of the training rounds: {train_policy_seconds:.1f} s for {len(tokens['policy'])} answers "
          f"(drawn {config.training.policy_generation_rows or 'a period'} at a time), {drawn} tokens, {drawn / max(train_policy_seconds, 1e-9):.0f} "
          f"tokens/s; of evaluation: {steps['policy'] - train_policy_seconds:.1f} s")
    for role, seconds_each in update_seconds.items():
        prompt = statistics.mean(p for p, _ in tokens[role]) if tokens[role] else float("nan")
        response = statistics.mean(r for _, r in tokens[role]) if tokens[role] else float("nan")
        print(f"  {role} updates: {len(seconds_each)}, {statistics.mean(seconds_each):.1f} s each on average; its training "
              f"rounds' prompts {prompt:.0f} tokens, responses {response:.1f} tokens on average")
    print(f"  the log's share of the loop: {100 * log_in_loop / loop:.2f}% (target < 1%); opening the run's log "
          f"took {watch.before_loop.get('log', 0.0):.1f} s before the loop")
    caches = [base.prompt_cache for base in pool.causal_lms_loaded() if base.prompt_cache is not None]
    if caches:
        found = sum(cache.tokens_found for cache in caches)
        encoded = sum(cache.tokens_encoded for cache in caches)
        held = sum(cache.bytes_held for cache in caches) / 2**20
        print(f"  reference prompt cache: {found} of {found + encoded} prompt tokens found ({100 * found / max(found + encoded, 1):.0f}%), "
              f"{held:.0f} MiB held at the end (budget {caches[0].budget_bytes / 2**20:.0f} MiB per base)")
    else:
        print("  reference prompt cache: off")
    print(f"  peak resident memory so far: {peak_resident_mib():.0f} MiB")
    rss = watch.window_rss
    if rss:
        shown = ", ".join(f"{value:.0f}" for value in rss)
        print(f"  resident MiB after each of {len(rss)} windows: {shown}")
        if len(rss) >= 8:
            half = len(rss) // 2
            first, second = statistics.median(rss[:half]), statistics.median(rss[half:])
            print(f"  median resident MiB, first half of the windows {first:.0f}, second half {second:.0f} "
                  f"(growth {second - first:+.0f} MiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, action="append", help="run config (repeatable); default: tiny and science-cpu")
    parser.add_argument("--epochs", type=int, help="override training.num_epochs (e.g. 17 for ~200 tiny rounds)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: the engine's choice)")
    parser.add_argument(
        "--tiny-model", action="store_true",
        help="every role on the tests' tiny random Llama: the engine's loop, log and learners at a "
        "fraction of the cost (memory over hundreds of rounds; not a speed figure)",
    )
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    configs = args.config or [root / "configs/tiny.toml", root / "configs/science-cpu.toml"]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    else:
        set_intra_op_threads()  # as `minmax-engine play` chooses
    with os.popen("uptime") as uptime:
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, uptime: {uptime.read().strip()}")
    scratch = Path(tempfile.mkdtemp(prefix="minmax-bench-game-"))
    tiny_model = None
    if args.tiny_model:
        from tests.tiny_models import build_tiny_lm

        tiny_model = build_tiny_lm(scratch / "tiny-lm")
    try:
        for config_path in configs:
            # A pool per run: a run's players attach their adapters to the pool's base models,
            # and the next run's players would find the names taken.
            play(config_path, args.epochs, scratch, ModelPool(), tiny_model)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

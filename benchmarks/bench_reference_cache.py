"""The reference pass of every update of a logged run, with the prompt cache and without it.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_reference_cache.py [--run runs/<run>] [--repeats 3] [--threads 1]

Without --run it first plays configs/tiny.toml into a scratch directory (as `make play` does,
several minutes on one core) and replays that.

The reference prompt cache (players/prompt_cache.py, [training] reference_cache_mib) changes
one thing in a run: how long each update's reference pass takes. A whole game measures that
change through everything else the machine does, and on a shared VM the rest moves by more than
the change (two tiny games an hour apart have differed by 30%). This script measures the part
that changes: it reads a finished run's training rounds, rebuilds each update's rollouts as the
game built them (the monitor's after every window, the policy's after every k windows), and
times the reference passes of all of the run's updates in order, once with a fresh cache and
once without, alternating the two `--repeats` times in one process. It also checks that the
reference log-probs agree (to float rounding) and that the cached run's equal a second cached
run's to the last bit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.config import ConfigOverrides, load_config, recorded_config  # noqa: E402
from engine.devices import set_intra_op_threads  # noqa: E402
from engine.game import new_run_id, ppo_settings, start_run  # noqa: E402
from engine.payoffs import monitor_rollouts, policy_rollouts  # noqa: E402
from engine.ppo import PPOLearner, Rollout, SharedPromptBatch, _pad_and_stack  # noqa: E402
from players import ModelPool, Player  # noqa: E402
from storage import RunReader  # noqa: E402
from storage.events import RoundPlayed, RunStarted  # noqa: E402


def updates_of(run: Path) -> tuple[list[tuple[str, list[Rollout]]], dict]:
    """(role, rollouts) of every update of the run, in the order the game made them."""
    events = [item.event for item in RunReader(run).events()]
    started = next(event for event in events if isinstance(event, RunStarted))
    recorded = started.config
    config = recorded_config(recorded, str(run))
    rounds = [event for event in events if isinstance(event, RoundPlayed) and event.phase == "train"]
    window, k = config.training.window_size, config.training.monitor_updates_per_policy
    updates: list[tuple[str, list[Rollout]]] = []
    windows = [rounds[start : start + window] for start in range(0, len(rounds), window)]
    for index, played in enumerate(windows):
        if config.mode == "minmax":
            updates.append(("monitor", monitor_rollouts(played, unparsed_penalty=config.game.unparsed_penalty)))
        if (index + 1) % k == 0:
            period = [r for w in windows[index + 1 - k : index + 1] for r in w]
            updates.append(("policy", policy_rollouts(period)))
    return updates, recorded


def reference_passes(learners: dict[str, PPOLearner], updates: list[tuple[str, list[Rollout]]]) -> tuple[float, list[torch.Tensor]]:
    started = time.perf_counter()
    results = []
    for role, rollouts in updates:
        learner = learners[role]
        size = learner.settings.minibatch_size
        chunks = [
            SharedPromptBatch.build(rollouts[start : start + size], learner.player.pad_token_id, learner.player.device)
            for start in range(0, len(rollouts), size)
        ]
        results.append(_pad_and_stack(learner._reference_logprobs(chunks, rollouts)))
    return time.perf_counter() - started, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a finished run's directory (default: play configs/tiny.toml first)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["MINMAX_ENGINE_THREADS"] = str(args.threads)
    set_intra_op_threads()
    pool = ModelPool()
    with tempfile.TemporaryDirectory() as scratch:
        if args.run is None:
            tiny, _warnings = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.toml", ConfigOverrides(run_dir=scratch))
            tiny = tiny.model_copy(update={"logging": tiny.logging.model_copy(update={"backends": []})})
            args.run = Path(scratch) / new_run_id(tiny)
            print(f"playing configs/tiny.toml into {args.run} first", flush=True)
            start_run(tiny, args.run, pool=pool)
        return replay(args, pool)


def replay(args: argparse.Namespace, pool: ModelPool) -> int:
    updates, recorded = updates_of(args.run)
    config = recorded_config(recorded, str(args.run))
    players = {"policy": Player.create(pool, "policy", config.policy)}
    if config.mode == "minmax":
        players["monitor"] = Player.create(pool, "monitor", config.monitor)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, run {args.run.name}: {len(updates)} updates "
          f"({sum(role == 'policy' for role, _ in updates)} policy), {torch.get_num_threads()} thread(s), "
          f"load average {os.getloadavg()[0]:.2f}")

    def learners(cache_bytes: int) -> dict[str, PPOLearner]:
        for player in players.values():
            player.base.prompt_cache = None  # a fresh cache, as a new run starts with
        return {
            role: PPOLearner(player, dataclasses.replace(ppo_settings(config, role, player.device), reference_cache_bytes=cache_bytes))
            for role, player in players.items()
        }

    times: dict[str, list[float]] = {"without the cache": [], "with the cache": []}
    kept: dict[str, list[torch.Tensor]] = {}
    found = encoded = 0
    for repeat in range(args.repeats):
        order = ("without the cache", "with the cache") if repeat % 2 == 0 else ("with the cache", "without the cache")
        for label in order:
            seconds, results = reference_passes(learners(0 if label.startswith("without") else 1024 * 2**20), updates)
            times[label].append(seconds)
            if label in kept and label == "with the cache":
                assert all(torch.equal(a, b) for a, b in zip(kept[label], results)), "cached reference passes differ between runs"
            kept[label] = results
            if label == "with the cache":
                caches = {id(cache): cache for cache in (p.base.prompt_cache for p in players.values()) if cache is not None}
                found = sum(cache.tokens_found for cache in caches.values())
                encoded = sum(cache.tokens_encoded for cache in caches.values())
            print(f"  {label}: {seconds:.1f} s", flush=True)
    difference = max(float((a - b).abs().max()) for a, b in zip(kept["with the cache"], kept["without the cache"]))
    off, on = statistics.median(times["without the cache"]), statistics.median(times["with the cache"])
    print(f"reference passes of the whole run, median of {args.repeats}: {off:.1f} s without the cache, {on:.1f} s with it "
          f"({100 * (on - off) / off:+.0f}%); prompt tokens found in the cache on the last cached run: {found} of {found + encoded}")
    print(f"largest difference of a reference log-prob between the two: {difference:.1e}; cached runs equal to the last bit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

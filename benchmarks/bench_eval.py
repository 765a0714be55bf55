"""One evaluation, timed: batching across states against one state at a time (issue #15).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_eval.py [--config configs/science-cpu.toml] \
        [--states 4] [--batch-size 16] [--repeats 2] [--threads 1]

An evaluation answers every held-out state n + 1 times (greedy + n samples). Until 2026-12-03
it generated one state at a time (its greedy answer, then its n samples: with the
science config 26 generate calls of 1 and 4 rows for 13 states), and decoding on a CPU costs
about the same per step for 1 row as for 16 because each step streams the weights. The
engine now generates the greedy answers of all states, then all samples,
`training.eval_batch_size` rows at a time. This script plays the same deployment evaluation
(fresh adapters, rlhf mode, the first `--states` held-out states) both ways in one process,
alternating, and prints wall time and answers per second for each and their ratio.

The one-state-at-a-time batching is reproduced here from the engine's history as the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.config import ConfigOverrides, load_config  # noqa: E402
from engine.data import State  # noqa: E402
from engine.game import Game, derived_seed, open_run  # noqa: E402
from engine.round import RoundSettings, ScheduledRound  # noqa: E402
from players import ModelPool  # noqa: E402


def one_state_at_a_time(game: Game, states: Sequence[State], answers_per_state: int
                        ) -> Iterator[tuple[list[ScheduledRound], RoundSettings]]:
    """The batching before 2026-12-03: per state its greedy answer, then its samples."""
    states_per_batch = max(1, game.config.training.window_size // answers_per_state)
    purpose = f"eval:policy{game.progress.policy_version}:monitor{game.progress.monitor_version}"
    next_id = game.progress.next_eval_round_id
    for start in range(0, len(states), states_per_batch):
        group = states[start : start + states_per_batch]
        greedy = [(state, 0) for state in group]
        sampled = [(state, index) for state in group for index in range(1, answers_per_state)]
        for pairs, sample in ((greedy, False), (sampled, True)):
            scheduled = [ScheduledRound(round_id=next_id + offset, window=-1, state=state, sample_index=index)
                         for offset, (state, index) in enumerate(pairs)]
            next_id += len(scheduled)
            seed = derived_seed(game.config.seed, f"{purpose}:{'sampled' if sample else 'greedy'}", start)
            yield scheduled, game.round_settings(phase="eval", sample=sample, seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/science-cpu.toml"))
    parser.add_argument("--states", type=int, default=4, help="held-out states evaluated (the first N)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as scratch:
        config, _ = load_config(args.config, ConfigOverrides(mode="rlhf", run_dir=scratch))
        training = config.training.model_copy(update={"eval_batch_size": args.batch_size})
        logging = config.logging.model_copy(update={"backends": []})
        config = config.model_copy(update={"training": training, "logging": logging})
        game = open_run(config, Path(scratch) / "run", pool=ModelPool())
        try:
            states = list(game.dataset.eval)[: args.states]
            answers = len(states) * (config.training.eval_samples_per_state + 1)
            batched = game._eval_batches
            timings: dict[str, list[float]] = {"one state at a time": [], f"batched ({args.batch_size} rows)": []}
            for _ in range(args.repeats):
                for name in timings:
                    game._eval_batches = (  # type: ignore[method-assign]
                        batched if name.startswith("batched") else
                        lambda s, n: one_state_at_a_time(game, s, n))
                    started = time.perf_counter()
                    game.evaluate(checkpoint=None, states=states)
                    timings[name].append(time.perf_counter() - started)
        finally:
            game.log.close()

    print(f"{args.config}: deployment evaluation of {len(states)} held-out states × "
          f"{config.training.eval_samples_per_state + 1} answers = {answers} answers, rlhf mode, "
          f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(f"  {name:<24} {medians[name]:7.1f} s median of {len(values)} ({', '.join(f'{v:.1f}' for v in values)}); "
              f"{answers / medians[name]:.2f} answers/s")
    old, new = medians.values()
    print(f"  batched is {old / new:.2f}× faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())

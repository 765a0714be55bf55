"""A sweep on Ray against the same runs one after another: wall time of each, and their ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sweep.py                       # 4 runs of configs/tiny.toml, 2 at a time
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sweep.py --epochs 1            # the shortened variant (12 rounds a run)
    PYTHONPATH=. .venv/bin/python benchmarks/bench_sweep.py --config FILE --runs 4 --parallel 2 [--threads N]

In one script run, the same `--runs` runs (seeds 0, 1, …, as `minmax-engine sweep --seeds`
plays them) are played twice, each time into a fresh scratch directory:
1. locally, one after another in this process (`sweep --cluster local`);
2. as Ray tasks on a local Ray instance, `--parallel` at a time (`sweep --cluster ray
   --parallel N`), each task asking for `--threads` CPUs. The Ray instance's start is timed
   apart and counted in this side's wall time, as a user pays it.
Both sides run every run with the same intra-op thread count (`--threads`, default
MINMAX_ENGINE_THREADS / OMP_NUM_THREADS / cores − 1), so each run computes the same log on
both sides; the script checks that each Ray run logged the rounds its local twin logged.
Printed: the wall time of each side, rounds per minute, and Ray's over local (below 1: the
sweep on Ray was faster). configs/tiny.toml plays ~5 minutes a run on 2 idle cores, so the
full comparison takes ~30 minutes; `--epochs 1` is the shortened variant (a third of it).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPOSITORY = Path(__file__).resolve().parents[1]


def played_rounds(run_dir: Path) -> list[tuple[str, int, list[int]]]:
    """Each training round's state, window and policy tokens: what must match across the two sides."""
    from storage import RunReader
    from storage.events import RoundPlayed

    return [(event.state_id, event.window, list(event.policy_token_ids))
            for event in (item.event for item in RunReader(run_dir).events())
            if isinstance(event, RoundPlayed) and event.phase == "train"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPOSITORY / "configs" / "tiny.toml")
    parser.add_argument("--epochs", type=int, help="override training.num_epochs (the shortened variant: 1)")
    parser.add_argument("--runs", type=int, default=4, help="runs (seeds 0..runs-1) on each side")
    parser.add_argument("--parallel", type=int, default=2, help="Ray runs at a time")
    parser.add_argument("--threads", type=int, help="intra-op threads of every run (default: as `play` picks them)")
    parser.add_argument("--keep", type=Path, help="play into this directory and keep it (default: a scratch one)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["MINMAX_ENGINE_THREADS"] = str(args.threads)

    import ray

    from engine import sweep
    from engine.devices import set_intra_op_threads

    threads = set_intra_op_threads()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    config_path = args.config
    if args.epochs is not None:  # a copy of the config, shortened
        config_path = scratch / f"{args.config.stem}-epochs{args.epochs}{args.config.suffix}"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        text = args.config.read_text()
        lines = [f"num_epochs = {args.epochs}" if line.split("=")[0].strip() == "num_epochs" else line
                 for line in text.splitlines()]
        config_path.write_text("\n".join(lines) + "\n")
    seeds = ",".join(str(seed) for seed in range(args.runs))
    load = os.getloadavg()[0]
    print(f"bench_sweep: {args.runs} runs of {args.config.name}"
          f"{f' (num_epochs = {args.epochs})' if args.epochs is not None else ''}, {threads} thread(s) each, "
          f"{os.cpu_count()} cores, load {load:.2f}", flush=True)

    results: dict[str, Any] = {"threads": threads, "load_before": load}
    quiet = io.StringIO()  # the sweep's own progress lines
    started = time.perf_counter()
    status = sweep.run(config_path, [], seeds, scratch / "local", parallel=1, cluster_backend="local", stream=quiet)
    results["local_seconds"] = time.perf_counter() - started
    assert status == 0, quiet.getvalue()

    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    results["ray_start_seconds"] = time.perf_counter() - started
    status = sweep.run(config_path, [], seeds, scratch / "ray", parallel=args.parallel, cluster_backend="ray",
                       stream=quiet)
    results["ray_seconds"] = time.perf_counter() - started
    assert status == 0, quiet.getvalue()
    results["load_after"] = os.getloadavg()[0]

    rounds = 0
    for local_run in sorted((scratch / "local").iterdir()):
        mine = played_rounds(scratch / "ray" / local_run.name)
        assert mine == played_rounds(local_run), f"{local_run.name}: the Ray run played other rounds than the local one"
        rounds += len(mine)
    results["rounds"] = rounds
    results["ratio"] = results["ray_seconds"] / results["local_seconds"]
    for side, seconds in (("local, one after another", results["local_seconds"]),
                          (f"Ray, {args.parallel} at a time", results["ray_seconds"])):
        print(f"  {side:<26} {seconds:8.1f} s   {rounds / seconds * 60:7.1f} training rounds/min", flush=True)
    print(f"  Ray's start {results['ray_start_seconds']:.1f} s (included); Ray / local = {results['ratio']:.2f}; "
          f"load {results['load_before']:.2f} before, {results['load_after']:.2f} after; every Ray run logged "
          "its local twin's rounds", flush=True)
    if args.keep is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()

"""How long the command line takes to answer before any work: `minmax-engine --help`.

    PYTHONPATH=. python benchmarks/bench_cli.py            # prints one line per command timed
    PYTHONPATH=. python benchmarks/bench_cli.py --repeats 20

Each timing is a fresh interpreter (`python -m tui.cli ...`), the way a user's shell starts
it; the bare interpreter start (`python -c pass`) is printed beside it for scale. The target
is `--help` under 0.5 s on the 2-core development machine (#13): the parser module imports
no command's implementation, so help and argument errors never load torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.5


def seconds_to_run(command: list[str], repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description="time `minmax-engine --help` in fresh interpreters")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "minmax-engine --help": [sys.executable, "-m", "tui.cli", "--help"],
        "minmax-engine play --help": [sys.executable, "-m", "tui.cli", "play", "--help"],
    }
    seconds_to_run(cases["minmax-engine --help"], 1)  # warm the file cache
    help_median = 0.0
    for name, command in cases.items():
        timings = seconds_to_run(command, args.repeats)
        median = statistics.median(timings)
        if name == "minmax-engine --help":
            help_median = median
        print(f"{name:<28} median {median:.3f} s  min {min(timings):.3f} s  ({args.repeats} runs)")
    verdict = "within" if help_median < TARGET_SECONDS else "OVER"
    print(f"--help: {verdict} the {TARGET_SECONDS} s target; load {os.getloadavg()[0]:.2f}")
    return 0 if help_median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time from starting `minmax-engine tui RUN` to the first paint of the rounds table, on a
synthetic run of 1,000,000 rounds.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tui.py [--rounds 1000000] [--cache DIR]
        [--screenshot docs/tui-rounds.svg]

The run is written once with `storage.synthetic.write_synthetic_run` and cached (writing a
million rounds takes minutes); later runs of the benchmark reuse it. The clock starts before
the app is built from the path (as `run(args)` does) and stops when the rounds table holds
its first page of rows and the screen has been refreshed with them. The target is ≤ 2 s.
Imports are not timed (they cost the same for any run); each repeat is a fresh app.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import RunReader, UserError  # noqa: E402
from storage.synthetic import write_synthetic_run  # noqa: E402
from textual.widgets import DataTable  # noqa: E402
from tui.app import open_app  # noqa: E402
from tui.run_screen import RunScreen  # noqa: E402

TARGET_SECONDS = 2.0
# Realistic sizes for the default config: 48 new tokens per output, a short QuALITY-like
# story excerpt. The full 2,000-byte default would make the cached run ~7 GB.
TEXT_BYTES = 1200
N_TOKENS = 48


def cached_run(cache_dir: Path, n_rounds: int) -> Path:
    run_dir = cache_dir / f"synthetic-{n_rounds}-t{TEXT_BYTES}-n{N_TOKENS}"
    done_marker = run_dir / "written"
    if done_marker.exists():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a previous write was interrupted
    print(f"writing a synthetic run of {n_rounds:,} rounds to {run_dir} (once; cached) ...", flush=True)
    started = time.perf_counter()
    write_synthetic_run(run_dir, n_rounds, mode="minmax", window_size=16, k=5, seed=0,
                        text_bytes=TEXT_BYTES, n_tokens=N_TOKENS, run_id=run_dir.name)
    done_marker.write_text("ok\n")
    print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
    return run_dir


async def time_to_first_rows(run_dir: Path) -> float:
    started = time.perf_counter()
    app = open_app(run_dir)
    async with app.run_test(size=(140, 44)) as pilot:
        while not (isinstance(app.screen, RunScreen) and app.screen.query_one("#rounds-table", DataTable).row_count):
            if isinstance(app.screen, RunScreen) and (problem := str(app.screen.query_one("#problem").render())):
                raise SystemExit(f"bench_tui: the app reported a problem: {problem}")
            await asyncio.sleep(0.005)
        # The rows are in the table; the clock stops when the screen refresh that draws them
        # is done (not at Pilot.pause, which waits for the background count to go idle).
        painted = asyncio.Event()
        app.call_after_refresh(painted.set)
        await painted.wait()
        return time.perf_counter() - started


async def save_rounds_screenshot(run_dir: Path, svg_path: Path) -> None:
    """The rounds view of the run, once its count is in, as an SVG (Textual's screenshot)."""
    app = open_app(run_dir)
    async with app.run_test(size=(140, 44)) as pilot:
        while not (isinstance(app.screen, RunScreen) and app.screen.filtered_count is not None):
            await asyncio.sleep(0.05)
        await pilot.pause()
        svg_path.write_text(app.export_screenshot(title="minmax-engine tui: rounds"), encoding="utf-8")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("MINMAX_ENGINE_BENCH_CACHE", "/tmp/minmax-engine-bench")))
    parser.add_argument("--screenshot", type=Path, metavar="SVG",
                        help="also save the rounds view as an SVG (docs/tui-rounds.svg for the README)")
    args = parser.parse_args()
    run_dir = cached_run(args.cache, args.rounds)
    try:
        last_seq = RunReader(run_dir).last_seq()
    except UserError as error:
        print(f"bench_tui: error: {error}", file=sys.stderr)
        return 2
    timings = [asyncio.run(time_to_first_rows(run_dir)) for _ in range(args.repeats)]
    best, median = min(timings), statistics.median(timings)
    verdict = "OK" if median <= TARGET_SECONDS else "SLOWER THAN TARGET"
    print(f"tui first paint of the rounds table, {args.rounds:,}-round run ({last_seq + 1:,} events):"
          f" median {median:.2f} s, best {best:.2f} s over {args.repeats} ({verdict}, target ≤ {TARGET_SECONDS:g} s)")
    print(f"  runs: {', '.join(f'{t:.2f}' for t in timings)} s")
    print(f"  machine: {machine()}")
    print(f"  date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    if args.screenshot:
        asyncio.run(save_rounds_screenshot(run_dir, args.screenshot))
        print(f"  screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

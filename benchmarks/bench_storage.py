"""Event-log figures: append throughput, metrics SQL over 1M rounds, a 64-round window read.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_storage.py            # the issue's sizes
    PYTHONPATH=. .venv/bin/python benchmarks/bench_storage.py --rounds 200000

Targets: <= 1 s for the metrics-per-window query over 1,000,000 rounds, <= 50 ms to read 64
rounds from the middle of that log. Append has no target of its own any more (issue 15: the
engine appends a window at a time and the log must stay under 1% of a run's wall time,
which benchmarks/bench_game.py measures); its figures show the headroom. The appended
events hold exactly --text-bytes (2,000 B) of text in all (story, question, choices,
prompts, outputs, state id, phase, truth), the policy's 200 output token ids with their 200
log-probs plus 100 prompt ids, and a monitor part of the same size (its critique: 100
prompt ids, 200 ids, 200 log-probs); the `events:` line prints the exact sizes, each
`append:` line the bytes stored per event.

Append is timed from create to close (all events durable when the clock stops): first with
the writer's own buffering, as a run that never calls flush() gets it (a segment every
4,096 events), then with flush() called every 64 events (the engine's one durable flush per
64-round window: two fsyncs each) and every 1,024. The round's ids and log-probs come as
numpy arrays (int32, float64: how the engine hands them over) and, for comparison in the
same run, as Python lists; an untimed warm-up comes first. The `cost:` lines time the parts
of one append and one flush on their own, to show where the time goes (`write+fsync` is the
segment file as a flush writes it, fsyncs included). The `disk:` line writes segment-sized
files durably, as the writer does, to show how many events/s the disk could take. The
queried 1M-round log is written by storage.synthetic with the same budgets (its texts come
out a little shorter). Everything is written to a temporary directory that is deleted at
the end. Past figures and what they taught: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.outcomes import game_views
from storage import RoundPlayed, RunReader, RunsQuery, RunWriter
from storage.codec import canonical_header, chain_hash, encode_round
from storage.events import SCHEMA_VERSION
from storage.layout import segment_name
from storage.segments import write_segment_file
from storage.writer import DEFAULT_MAX_BUFFERED, EventBuffer
from storage.synthetic import write_synthetic_run

METRICS_QUERY = 'SELECT * FROM metrics ORDER BY run_id, "window"'


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.node()} · {os.cpu_count()} cores · {model} · load {load}"


def text_bytes_of(event: RoundPlayed) -> int:
    """UTF-8 bytes of every text field of a round (strings and the choices)."""
    return sum(len(v.encode()) for v in event.__dict__.values() if isinstance(v, str)) + \
        sum(len(c.encode()) for c in event.choices)


def round_pool(text_bytes: int, n_tokens: int, tmp: Path) -> list[RoundPlayed]:
    """Realistic RoundPlayed events, taken from a small synthetic run (not timed).

    The story is cut or padded so that each event holds exactly text_bytes of text in all;
    the policy has n_tokens output ids and log-probs and n_tokens // 2 prompt ids, the
    monitor (its critique of that answer) the same.
    """
    run_dir = write_synthetic_run(tmp / "pool", 64, text_bytes=text_bytes, n_tokens=n_tokens, seed=1)
    pool = []
    for event in (r.event for r in RunReader(run_dir).rounds()):
        rest = text_bytes_of(event) - len(event.story.encode())
        story = (event.story + " and" * text_bytes)[: max(text_bytes - rest, 0)]
        pool.append(dataclasses.replace(event, story=story))
    assert all(text_bytes_of(e) == text_bytes for e in pool), "text budget too small for the fixed fields"
    return pool


PACKED = {"policy_prompt_ids": np.int32, "policy_token_ids": np.int32, "policy_logprobs": np.float64,
          "monitor_prompt_ids": np.int32, "monitor_token_ids": np.int32, "monitor_logprobs": np.float64}


def as_arrays(event: RoundPlayed) -> RoundPlayed:
    """The round as the engine appends it: ids and log-probs as int32 / float64 numpy arrays."""
    return dataclasses.replace(event, **{name: np.asarray(getattr(event, name), dtype) for name, dtype in PACKED.items()})


def describe(event: RoundPlayed) -> str:
    numbers = ", ".join(f"{name} {len(getattr(event, name))}" for name in PACKED)
    return f"RoundPlayed with {text_bytes_of(event):,} B of text in all; {numbers}"


def bench_append(pool: list[RoundPlayed], n_events: int, flush_every: int | None, tmp: Path) -> dict[str, float]:
    """events/s, process CPU per event, time per flush() call and stored bytes per event.

    flush_every None: no flush() calls, the writer's own buffering (DEFAULT_MAX_BUFFERED).
    """
    run_dir = tmp / f"append-{flush_every}"
    gc.collect()
    in_flush, flushes = 0.0, 0
    buffered = DEFAULT_MAX_BUFFERED if flush_every is None else flush_every + 1
    start, cpu = time.perf_counter(), time.process_time()
    with RunWriter.create(run_dir, "append", max_buffered=buffered) as writer:
        for i in range(n_events):
            writer.append(pool[i % len(pool)])
            if flush_every is not None and (i + 1) % flush_every == 0:
                flush_start = time.perf_counter()
                writer.flush()
                in_flush += time.perf_counter() - flush_start
                flushes += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    size = sum(p.stat().st_size for p in (run_dir / "log").glob("*.arrow"))
    shutil.rmtree(run_dir)
    return {"rate": n_events / elapsed, "cpu": cpu / n_events, "flush": in_flush / max(flushes, 1),
            "flush_share": in_flush / elapsed, "size": size / n_events}


def per_event_costs(pool: list[RoundPlayed], flush_every: int, tmp: Path, repeats: int = 40) -> dict[str, float]:
    """Microseconds per event of each step of append and flush, each timed on its own."""
    n = flush_every
    events = [pool[i % len(pool)] for i in range(n)]
    costs: dict[str, float] = {}

    def timed(name: str, step) -> None:
        step()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        costs[name] = (time.perf_counter() - start) / repeats / n * 1e6

    encoded = [encode_round(e) for e in events]
    headers = [canonical_header("run", i, "2026-11-25T12:00:00.000000+00:00", SCHEMA_VERSION, "RoundPlayed", h)
               for i, (h, _) in enumerate(encoded)]
    timed("encode", lambda: [encode_round(e) for e in events])
    timed("json", lambda: [canonical_header("run", i, "2026-11-25T12:00:00.000000+00:00", SCHEMA_VERSION,
                                            "RoundPlayed", h) for i, (h, _) in enumerate(encoded)])
    timed("sha256", lambda: [chain_hash("0" * 64, c, p)
                             for c, (_, p) in zip(headers, encoded)])
    buffer = EventBuffer("run")
    for i, (header, packed) in enumerate(encoded):
        buffer.add(i, "2026-11-25T12:00:00.000000+00:00", "RoundPlayed", "0" * 64, "0" * 64, None, header, packed)
    timed("arrow", buffer.to_batch)
    batch = buffer.to_batch()
    log_dir = tmp / "costs"
    log_dir.mkdir(exist_ok=True)
    counter = iter(range(10**9))
    # the segment file as flush writes it: serialized, written, fsynced, renamed, the
    # directory fsynced
    timed("write+fsync", lambda: write_segment_file(log_dir, segment_name(next(counter), 0, 0), [batch]))
    shutil.rmtree(log_dir)
    return costs


def disk_bandwidth(tmp: Path, megabytes: int = 32, repeats: int = 12) -> list[float]:
    """MB/s of durable writes of segment-sized files: written in one call, fsynced.

    The same pattern as the writer's own 4,096-event segments (about 33 MB each), so the
    figure bounds what any encoder could append durably on this disk.
    """
    block = os.urandom(2**20) * megabytes  # incompressible, should the disk compress
    rates = []
    for index in range(repeats):
        path = tmp / f"disk-{index}"
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            data = memoryview(block)
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        rates.append(len(block) / (time.perf_counter() - start) / 1e6)
        path.unlink()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1_000_000, help="rounds in the log that is queried")
    parser.add_argument("--append-events", type=int, default=50_000)
    parser.add_argument("--text-bytes", type=int, default=2000)
    parser.add_argument("--n-tokens", type=int, default=200)
    parser.add_argument("--append-flush", type=int, nargs="+", default=[64, 1024],
                        help="events per flush() call in the append figures (64 = one flush per window), "
                             "besides the writer's own buffering")
    parser.add_argument("--flush-every", type=int, default=64, help="events per flush in the queried log")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary directory")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"date:    {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir))
    try:
        listed = round_pool(args.text_bytes, args.n_tokens, tmp)
        arrays = [as_arrays(e) for e in listed]
        print(f"events:  {describe(listed[0])}")
        # Untimed warm-up: the first segments of a process touch new memory, a one-time cost.
        bench_append(arrays, 3 * DEFAULT_MAX_BUFFERED, None, tmp)
        runs: list[tuple[list[RoundPlayed], int | None]] = [(arrays, None)]
        runs += [(arrays, flush_every) for flush_every in args.append_flush]
        runs += [(listed, None), (listed, args.append_flush[0])]
        stored = 0.0
        for pool, flush_every in runs:
            figures = bench_append(pool, args.append_events, flush_every, tmp)
            stored = stored or figures["size"]  # the first run's: the writer's own buffering
            form = "arrays" if pool is arrays else "lists"
            how = (f"the writer's own buffering: a segment every {DEFAULT_MAX_BUFFERED:,} events"
                   if flush_every is None else
                   f"flush() every {flush_every} events, {figures['flush'] * 1e3:.2f} ms per flush, "
                   f"{figures['flush_share']:.0%} of the time")
            print(f"append:  {figures['rate']:,.0f} RoundPlayed events/s ({form}, {how}; "
                  f"{args.append_events:,} events, {figures['size']:,.0f} B stored per event; "
                  f"process CPU {figures['cpu'] * 1e6:.0f} us per event)")
        rates = disk_bandwidth(tmp)
        print(f"disk:    {statistics.median(rates):,.0f} MB/s median, {min(rates):,.0f} slowest of {len(rates)} durable "
              f"32 MiB writes: room for {statistics.median(rates) * 1e6 / stored:,.0f} events/s of {stored:,.0f} B "
              f"({min(rates) * 1e6 / stored:,.0f} at the slowest)")
        for flush_every in (args.append_flush[0], DEFAULT_MAX_BUFFERED):
            costs = {form: per_event_costs(pool, flush_every, tmp) for form, pool in (("arrays", arrays), ("lists", listed))}
            parts = ", ".join(f"{name} {value:.1f}" for name, value in costs["arrays"].items())
            print(f"cost:    us per event, one thread, flushes of {flush_every}: {parts} "
                  f"(sum {sum(costs['arrays'].values()):.1f}; encode from lists {costs['lists']['encode']:.1f})")

        start = time.perf_counter()
        run_dir = write_synthetic_run(tmp / "big", args.rounds, text_bytes=args.text_bytes, n_tokens=args.n_tokens,
                                      flush_every=args.flush_every, seed=7)
        build = time.perf_counter() - start
        reader = RunReader(run_dir)
        size = sum(p.stat().st_size for p in (run_dir / "log").iterdir())
        print(f"log:     {args.rounds:,} rounds, {reader.last_seq() + 1:,} events, {len(reader.segments())} segments, "
              f"{size / 2**30:.2f} GiB, written in {build:.1f} s (synthetic generation included, "
              f"flush every {args.flush_every})")

        with RunsQuery(run_dir, extra_views=game_views()) as query:
            timings = []
            for _ in range(3):
                start = time.perf_counter()
                metrics = query.arrow(METRICS_QUERY)
                timings.append(time.perf_counter() - start)
        print(f"metrics: {min(timings):.3f} s best, {statistics.median(timings):.3f} s median of 3 "
              f"({metrics.num_rows:,} windows; includes opening the segments)")

        middle = reader.last_seq() // 2
        timings = []
        for attempt in range(5):
            first = middle + attempt * max(1, middle // 10)
            # the seq range that holds 64 rounds (updates are interleaved), found untimed
            types = reader.table(first, first + 200).column("event_type").to_pylist()
            last = first + [i for i, t in enumerate(types) if t == "RoundPlayed"][63]
            start = time.perf_counter()
            window = RunReader(run_dir).rounds(first, last)
            timings.append(time.perf_counter() - start)
        print(f"window:  {min(timings) * 1e3:.1f} ms best, {statistics.median(timings) * 1e3:.1f} ms median of 5 "
              f"({len(window)} rounds, seq {first}..{last}, as Recorded, new RunReader each time)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The contract every event-log backend must pass (append, read back, windows, concurrency).

Each test tells a story: write through the public RunWriter, read back through RunReader
(in this process or another one), then check what the log holds. A new backend joins by
adding itself to BACKENDS.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    CheckpointSaved,
    EvaluationCompleted,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    Recorded,
    RoundPlayed,
    RunFailed,
    RunFinished,
    RunReader,
    RunResumed,
    RunStarted,
    RunWriter,
    SCHEMA_VERSION,
    UserError,
)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Backend:
    name: str
    create: Callable[[Path, str], RunWriter]
    open_existing: Callable[[Path], RunWriter]
    reader: Callable[[Path], RunReader]


BACKENDS = [Backend("arrow-ipc-segments", RunWriter.create, RunWriter.open_existing, RunReader)]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request) -> Backend:
    return request.param


def run_started() -> RunStarted:
    return RunStarted(mode="minmax", config={"lagrangian": {"delta": -0.2, "lambda_init": 1.0}, "seed": 7},
                      seeds={"python": 7}, package_versions={"torch": "2.13.0"}, data_fingerprint="ab" * 32,
                      dataset_name="builtin", n_train_states=10, n_eval_states=2)


def round_played(round_id: int, *, rlhf: bool = False) -> RoundPlayed:
    """A round with awkward values: tiny and huge floats, negative zero, unicode, None fields."""
    logprobs = [-1e-300, -0.0, -123.456789012345678, math.nextafter(-1.0, 0.0), -(round_id + 1) / 3.0]
    monitor = dict(monitor_prompt=None, monitor_prompt_ids=None, monitor_output=None, monitor_token_ids=None,
                   monitor_logprobs=None, monitor_says_correct=None, reward_monitor=None)
    if not rlhf:
        monitor = dict(monitor_prompt="Critique «this» ✓", monitor_prompt_ids=[5, 6],
                       monitor_output="INCORRECT", monitor_token_ids=[2**31 - 1, 0, 17],
                       monitor_logprobs=[-0.1, -2.5e-8, -30.0], monitor_says_correct=None if round_id % 3 == 0 else False,
                       reward_monitor=0.1 * round_id)
    return RoundPlayed(
        round_id=round_id, phase="eval" if round_id % 5 == 4 else "train", window=round_id // 4,
        state_id=f"s{round_id}", sample_index=round_id % 2, story="Once upon a time…\nthe end.",
        question="Who?", choices=["A cat", "A dog", "Nobody", "Everyone"], correct_index=round_id % 4,
        policy_prompt="Answer:", policy_prompt_ids=[1, 2, 3], policy_output=f"Answer: {'ABCD'[round_id % 4]}",
        policy_token_ids=[10, 11, round_id, 49151, 0], policy_logprobs=logprobs,
        policy_answer=None if round_id % 7 == 6 else round_id % 4, **monitor,
        reward_policy=1.0 / 3.0, p_accept=0.5, judge_accepts=True,
        truth="unparsed" if round_id % 7 == 6 else "correct", combined_reward=math.pi,
        fidelity_penalty=None if rlhf else -0.3 + round_id * 1e-17, lambda_value=2.0 ** -40,
        policy_version=round_id // 8, monitor_version=round_id // 4,
        timings={"policy": 0.25, "judge": float("nan")},
    )


def every_other_event_type() -> list:
    diagnostics = {"policy_loss": 0.125, "explained_variance": float("nan"), "grad_norm": float("inf")}
    return [
        MonitorUpdated(version=1, round_ids=[0, 1], first_seq=1, last_seq=2, diagnostics=diagnostics),
        LambdaUpdated(old=1.0, new=1.1, mean_f=0.3, delta=-0.2, monitor_version=1, applied=True),
        PolicyUpdated(version=1, round_ids=[0, 1], first_seq=1, last_seq=2, diagnostics=diagnostics),
        CheckpointSaved(path="checkpoints/1", policy_version=1, monitor_version=1, lambda_value=1.1,
                        next_round_id=2, last_round_seq=2),
        EvaluationCompleted(dataset="builtin", split="eval", n_rounds=2, policy_version=1, monitor_version=1,
                            checkpoint=None, metrics={"policy_accuracy": 0.5}),
        RunResumed(checkpoint_seq=6, next_round_id=2, discarded_after_seq=6),
        RunFailed(error_type="RuntimeError", message="out of memory\non line 2"),
        RunFinished(rounds=2, policy_updates=1, monitor_updates=1, wall_seconds=12.5),
    ]


def same_event(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (dataclass == would not)."""
    return json.dumps(a.to_dict(), sort_keys=True, default=str) == json.dumps(b.to_dict(), sort_keys=True, default=str)


def test_append_then_read_back_every_event_type_exactly(backend: Backend, tmp_path: Path) -> None:
    events = [run_started(), round_played(0), round_played(1, rlhf=True), round_played(6), *every_other_event_type()]
    with backend.create(tmp_path / "run", "run-a") as writer:
        appended = [writer.append(e) for e in events]

    # The RunResumed among them supersedes the events before it: read the log as written.
    read = backend.reader(tmp_path / "run").events(include_superseded=True)

    assert [r.seq for r in read] == list(range(len(events)))
    assert [r.hash for r in read] == [r.hash for r in appended]
    assert [r.prev_hash for r in read] == ["0" * 64] + [r.hash for r in appended[:-1]]
    for original, stored in zip(appended, read):
        assert (stored.run_id, stored.ts, stored.schema_version) == ("run-a", original.ts, SCHEMA_VERSION)
        assert type(stored.event) is type(original.event)
        assert same_event(stored.event, original.event), original.event.event_type
    # bit-identical log-probs (a learner in another process must compute the same update)
    assert [math.copysign(1, x) for x in read[1].event.policy_logprobs] == [-1.0] * 5
    assert read[1].event.policy_logprobs == round_played(0).policy_logprobs
    assert math.isnan(read[4].event.diagnostics["explained_variance"])
    assert read[4].event.diagnostics["grad_norm"] == float("inf")


def test_windows_by_seq_span_segments_and_compaction(backend: Backend, tmp_path: Path) -> None:
    with backend.create(tmp_path / "run", "run-w") as writer:
        writer.append(run_started())
        for round_id in range(1, 600):
            writer.append(round_played(round_id))
            if round_id % 16 == 0:
                writer.append(LambdaUpdated(old=1.0, new=1.0, mean_f=0.0, delta=0.0, monitor_version=round_id,
                                            applied=False))
            if round_id % 8 == 0:
                writer.flush()  # 75 flushes: the first 64 segments get merged into one
    reader = backend.reader(tmp_path / "run")
    last = reader.last_seq()
    assert last == 599 + 599 // 16
    assert len(reader.segments()) < 75  # compaction happened; windows below cross its boundary

    for first, end in [(0, 0), (1, 64), (300, 363), (17, 17), (last - 5, last), (last - 5, last + 100)]:
        window = reader.events(first, end)
        assert [r.seq for r in window] == list(range(first, min(end, last) + 1))
    rounds = reader.rounds(300, 363)
    assert rounds and all(isinstance(r.event, RoundPlayed) for r in rounds)
    assert [r.seq for r in rounds] == [s for s in range(300, 364) if isinstance(reader.events(s, s)[0].event, RoundPlayed)]
    eval_rounds = reader.rounds(phase="eval")
    assert eval_rounds and {r.event.phase for r in eval_rounds} == {"eval"}
    assert [r.event for r in reader.events(types=[LambdaUpdated])] == [
        r.event for r in reader.events() if isinstance(r.event, LambdaUpdated)]
    table = reader.rounds_table(300, 363)
    assert table.column("seq").to_pylist() == [r.seq for r in rounds]
    assert table.column("policy_logprobs").to_pylist() == [r.event.policy_logprobs for r in rounds]


def test_reader_sees_nothing_before_flush_and_everything_after(backend: Backend, tmp_path: Path) -> None:
    writer = backend.create(tmp_path / "run", "run-f")
    reader = backend.reader(tmp_path / "run")
    assert reader.last_seq() == -1 and reader.events() == []
    writer.append(run_started())
    writer.append(round_played(0))
    assert reader.last_seq() == -1  # buffered, not yet visible
    writer.flush()
    assert reader.last_seq() == 1
    assert reader.run_started().config["lagrangian"]["delta"] == -0.2
    writer.close()


def test_reader_in_another_process_while_writing(backend: Backend, tmp_path: Path) -> None:
    """A learner-like process polls the log and reads each window as soon as it is flushed."""
    run_dir = tmp_path / "run"
    writer = backend.create(run_dir, "run-c")
    writer.append(run_started())
    writer.flush()
    reader_script = textwrap.dedent(f"""
        import json, sys, time
        from storage import RunReader
        reader = RunReader({str(run_dir)!r})
        seen, hashes = 0, []
        deadline = time.time() + 60
        while seen < 321 and time.time() < deadline:
            last = reader.last_seq()
            if last >= seen:
                window = reader.events(seen, last)
                hashes.extend(r.hash for r in window)
                seen = last + 1
            else:
                time.sleep(0.005)
        print(json.dumps({{"seen": seen, "hashes": hashes}}))
    """)
    child = subprocess.Popen([sys.executable, "-c", reader_script], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    appended = []
    for round_id in range(320):  # 80 flushes: a compaction merges 64 segments meanwhile
        appended.append(writer.append(round_played(round_id)))
        if round_id % 4 == 3:
            writer.flush()
    writer.close()
    stdout, stderr = child.communicate(timeout=90)
    assert child.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["seen"] == 321
    assert any(".L1." in p.name for p in (run_dir / "log").iterdir())
    assert result["hashes"][1:] == [r.hash for r in appended]


def test_reopen_after_close_continues_the_chain(backend: Backend, tmp_path: Path) -> None:
    with backend.create(tmp_path / "run", "run-r") as writer:
        writer.append(run_started())
        last = writer.append(round_played(0))
    with backend.open_existing(tmp_path / "run") as writer:
        assert (writer.run_id, writer.next_seq) == ("run-r", 2)
        resumed = writer.append(round_played(1))
    assert (resumed.seq, resumed.prev_hash) == (2, last.hash)
    assert [r.seq for r in backend.reader(tmp_path / "run").events()] == [0, 1, 2]


def test_second_writer_is_refused_in_this_process_and_in_another(backend: Backend, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    writer = backend.create(run_dir, "run-l")
    writer.append(run_started())
    writer.flush()
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        backend.open_existing(run_dir)
    other = subprocess.run(
        [sys.executable, "-c", f"from storage import RunWriter; RunWriter.open_existing({str(run_dir)!r})"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    writer.close()
    with backend.open_existing(run_dir) as again:  # released on close
        assert again.next_seq == 1


def test_create_refuses_a_directory_that_has_a_log(backend: Backend, tmp_path: Path) -> None:
    with backend.create(tmp_path / "run", "run-x") as writer:
        writer.append(run_started())
    with pytest.raises(UserError, match="already has an event log"):
        backend.create(tmp_path / "run", "run-y")
    assert backend.reader(tmp_path / "run").run_id == "run-x"


def test_reader_refuses_paths_that_are_not_runs(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such run directory"):
        backend.reader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        backend.reader(tmp_path / "empty")


def test_recorded_envelope_matches_what_append_returned(backend: Backend, tmp_path: Path) -> None:
    with backend.create(tmp_path / "run", "run-e") as writer:
        first: Recorded = writer.append(run_started())
    assert first.seq == 0 and first.prev_hash == "0" * 64 and len(first.hash) == 64
    assert first.ts.endswith("+00:00") and "T" in first.ts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logprobs=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=0, max_size=40),
       token_ids=st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=0, max_size=40),
       reward=st.floats(allow_nan=False, allow_infinity=False))
def test_any_float64_and_token_id_round_trips_bit_for_bit(tmp_path_factory, logprobs, token_ids, reward) -> None:
    run_dir = tmp_path_factory.mktemp("prop") / "run"
    event = replace(round_played(3), policy_logprobs=logprobs, policy_token_ids=token_ids, reward_policy=reward)
    with RunWriter.create(run_dir, "prop") as writer:
        appended = writer.append(event)
    stored = RunReader(run_dir).rounds()[0]
    assert stored.hash == appended.hash
    assert struct.pack(f"<{len(logprobs)}d", *stored.event.policy_logprobs) == struct.pack(f"<{len(logprobs)}d", *logprobs)
    assert stored.event.policy_token_ids == token_ids
    assert struct.pack("<d", stored.event.reward_policy) == struct.pack("<d", reward)

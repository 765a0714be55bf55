"""RunWriter internals that the contract tests do not pin down: the RoundPlayed fast path,
numpy arrays as round fields, flushes of a full buffer and compaction."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import storage.writer as writer_module
from storage import RunReader, RunWriter, UserError, verify_run
from storage.codec import canonical_header, encode_event, encode_round
from storage.writer import EventBuffer
from tests.test_storage_contract import round_played, run_started


@pytest.mark.parametrize("rlhf", [False, True])
def test_round_fast_path_encodes_exactly_as_the_generic_encoder(rlhf: bool) -> None:
    event = round_played(7, rlhf=rlhf)
    event = replace(event, reward_policy=math.nan, timings={"policy": math.inf, "monitor": 0.5})
    header, packed = encode_round(event)
    encoded = encode_event(event)
    # the same canonical bytes (comparing values would fail on NaN != NaN and tuple != list)
    envelope = ("run", 7, "2026-11-25T12:00:00.000000+00:00", 1, "RoundPlayed")
    assert canonical_header(*envelope, header) == canonical_header(*envelope, encoded.header_values)
    assert list(packed) == list(encoded.packed.values())


def test_a_buffer_builds_its_packed_columns_and_is_reused_after_clear() -> None:
    def fill(buffer: EventBuffer, rounds) -> None:
        for seq, event in enumerate(rounds):
            header, packed = encode_round(event)
            buffer.add(seq, "ts", "RoundPlayed", "0" * 64, "0" * 64, None, header, packed)

    buffer = EventBuffer("run")
    rounds = [round_played(i, rlhf=i % 2 == 1) for i in range(300)]
    fill(buffer, rounds)
    batch = buffer.to_batch()
    assert batch.column("policy_token_ids").to_pylist() == [e.policy_token_ids for e in rounds]
    assert batch.column("monitor_logprobs").to_pylist() == [e.monitor_logprobs for e in rounds]
    buffer.clear()
    assert len(buffer) == 0
    fewer = [round_played(i) for i in range(7, 107)]
    fill(buffer, fewer)
    batch = buffer.to_batch()
    assert batch.column("policy_logprobs").to_pylist() == [e.policy_logprobs for e in fewer]
    assert batch.column("monitor_token_ids").to_pylist() == [e.monitor_token_ids for e in fewer]


def test_a_failed_merge_is_reported_and_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    real_write = writer_module.write_segment_file

    def failing_merge(log_dir, name, batches, **kwargs):
        if ".L1." in name:
            raise OSError(28, "No space left on device")
        return real_write(log_dir, name, batches, **kwargs)

    monkeypatch.setattr(writer_module, "write_segment_file", failing_merge)
    writer = RunWriter.create(tmp_path / "run", "run-m")
    writer.append(run_started())
    appended = []
    with pytest.raises(UserError, match="cannot compact"):
        for round_id in range(2000):
            appended.append(writer.append(round_played(round_id)))
            writer.flush()  # the 64th flush merges, and reports that the merge failed
    assert len(appended) == 64  # that flush's own segment was written before the merge failed
    assert [r.hash for r in RunReader(tmp_path / "run").rounds()] == [r.hash for r in appended]
    monkeypatch.setattr(writer_module, "write_segment_file", real_write)
    appended.append(writer.append(round_played(2000)))
    writer.flush()  # the failed group's segments are still live and merged again, now successfully
    writer.close()
    assert any(".L1." in p.name for p in (tmp_path / "run" / "log").iterdir())
    report = verify_run(tmp_path / "run")
    assert report.ok, report.summary()
    assert [r.hash for r in RunReader(tmp_path / "run").rounds()] == [r.hash for r in appended]


PACKED_FIELDS = {"policy_prompt_ids": "i", "policy_token_ids": "i", "policy_logprobs": "d",
                 "monitor_prompt_ids": "i", "monitor_token_ids": "i", "monitor_logprobs": "d"}


def as_arrays(event, int_dtype=np.int32, float_dtype=np.float64):
    """The same round with its ids and log-probs as numpy arrays (how the engine hands them over)."""
    arrays = {}
    for name, code in PACKED_FIELDS.items():
        values = getattr(event, name)
        if values is not None:
            arrays[name] = np.asarray(values, dtype=int_dtype if code == "i" else float_dtype)
    return replace(event, **arrays)


@pytest.mark.parametrize("int_dtype", [np.int32, np.int64, np.uint16])
def test_array_fields_hash_and_store_exactly_like_lists(tmp_path: Path, int_dtype) -> None:
    # timings without NaN, so that == applies (NaN != NaN)
    listed = [replace(round_played(i, rlhf=i == 6), timings={"policy": 0.25}) for i in range(7)]
    if int_dtype is np.uint16:  # ids that fit: 2**31 - 1 does not
        listed = [replace(e, monitor_token_ids=None if e.monitor_token_ids is None else [7, 0, 17]) for e in listed]
    arrayed = [as_arrays(e, int_dtype) for e in listed]
    for a, b in zip(listed, arrayed):
        assert encode_round(a) == encode_round(b)  # the canonical bytes do not depend on the form
        assert a == b and b == a  # and neither does equality
    with RunWriter.create(tmp_path / "run", "arrays") as writer:
        writer.append(run_started())
        appended = [writer.append(e) for e in arrayed]
    read = RunReader(tmp_path / "run").rounds()
    assert [r.event for r in read] == listed
    assert [r.hash for r in read] == [r.hash for r in appended]
    assert isinstance(read[0].event.policy_token_ids, list)  # read back as lists
    assert verify_run(tmp_path / "run").ok


def test_float32_log_probs_are_stored_as_their_exact_float64_values(tmp_path: Path) -> None:
    event = as_arrays(replace(round_played(1), timings={}), float_dtype=np.float32)
    with RunWriter.create(tmp_path / "run", "f32") as writer:
        writer.append(run_started())
        writer.append(event)
    stored = RunReader(tmp_path / "run").rounds()[0].event
    assert stored.policy_logprobs == [float(x) for x in event.policy_logprobs]  # float32 -> float64 is exact
    assert stored == event


def test_changing_an_array_after_append_does_not_change_what_was_logged(tmp_path: Path) -> None:
    event = as_arrays(round_played(2))
    with RunWriter.create(tmp_path / "run", "mutated") as writer:
        writer.append(run_started())
        recorded = writer.append(event)
        original = event.policy_token_ids.copy()
        event.policy_token_ids[:] = 99  # the caller reuses its buffer before the flush
    stored = RunReader(tmp_path / "run").rounds()[0]
    assert stored.event.policy_token_ids == original.tolist()
    assert stored.hash == recorded.hash and verify_run(tmp_path / "run").ok


@pytest.mark.parametrize("field, bad, error", [
    ("policy_token_ids", np.array([[1, 2], [3, 4]], np.int32), "1-D"),
    ("policy_token_ids", np.array([1.0, 2.0]), "integers"),
    ("policy_token_ids", np.array([1, 2**40], np.int64), "int32"),
    ("policy_logprobs", np.array([1, 2], np.int64), "floats"),
])
def test_a_bad_array_is_refused_and_the_log_goes_on_unchanged(tmp_path: Path, field, bad, error) -> None:
    with RunWriter.create(tmp_path / "run", "bad") as writer:
        writer.append(run_started())
        writer.append(round_played(0))
        with pytest.raises((TypeError, ValueError), match=error):
            writer.append(replace(round_played(1), **{field: bad}))
        assert writer.next_seq == 2  # nothing half-appended
        writer.append(round_played(1))
    assert [r.seq for r in RunReader(tmp_path / "run").rounds()] == [1, 2]
    assert verify_run(tmp_path / "run").ok


def test_round_equality_compares_values_whatever_their_form() -> None:
    event = round_played(3)
    assert as_arrays(event) == event
    assert as_arrays(event) != replace(event, policy_token_ids=[*event.policy_token_ids[:-1], 5])
    assert as_arrays(event) != replace(event, story="another story")
    assert as_arrays(round_played(3, rlhf=True)) != as_arrays(event)  # None against an array
    with pytest.raises(TypeError):
        hash(event)


def test_a_full_buffer_is_flushed_before_the_next_append(tmp_path: Path) -> None:
    writer = RunWriter.create(tmp_path / "run", "full-buffer", max_buffered=10)
    appended = [writer.append(run_started())] + [writer.append(as_arrays(round_played(i))) for i in range(34)]
    # 35 events: full buffers of 10 were flushed at the 11th, 21st and 31st append
    assert RunReader(tmp_path / "run").last_seq() == 29  # durable before flush() is called
    writer.flush()  # writes the last 5
    segments = sorted(p.name for p in (tmp_path / "run" / "log").glob("*.L0.arrow"))
    assert segments == ["000000000000-000000000009.L0.arrow", "000000000010-000000000019.L0.arrow",
                        "000000000020-000000000029.L0.arrow", "000000000030-000000000034.L0.arrow"]
    read = RunReader(tmp_path / "run").events()
    assert [(r.seq, r.hash) for r in read] == [(r.seq, r.hash) for r in appended]
    writer.close()
    assert verify_run(tmp_path / "run").ok


def test_a_failed_flush_of_a_full_buffer_is_reported_and_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    real_write = writer_module.write_segment_file
    failures = []

    def full_disk(log_dir, name, batches, **kwargs):
        if not failures:
            failures.append(name)
            raise OSError(28, "No space left on device")
        return real_write(log_dir, name, batches, **kwargs)

    monkeypatch.setattr(writer_module, "write_segment_file", full_disk)
    writer = RunWriter.create(tmp_path / "run", "disk-full", max_buffered=8)
    appended = [writer.append(run_started())]
    with pytest.raises(UserError, match="cannot write the log.*No space left on device"):
        for round_id in range(30):
            # the append that finds the buffer full flushes it, and raises before buffering its own event
            appended.append(writer.append(round_played(round_id)))
    assert failures == ["000000000000-000000000007.L0.arrow"]
    assert writer.next_seq == 8  # the failed append appended nothing
    appended.append(writer.append(round_played(99)))
    writer.close()  # writes the failed buffer's events and everything after, in order
    read = RunReader(tmp_path / "run").events()
    assert [(r.seq, r.hash) for r in read] == [(r.seq, r.hash) for r in appended]
    assert verify_run(tmp_path / "run").ok

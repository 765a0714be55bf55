"""RunWriter internals that the contract tests do not pin down: the RoundPlayed fast path and
the background compaction."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

import storage.writer as writer_module
from storage import RunReader, RunWriter, UserError, verify_run
from storage.segments import encode_event, encode_round
from tests.test_storage_contract import round_played, run_started


@pytest.mark.parametrize("rlhf", [False, True])
def test_round_fast_path_encodes_exactly_as_the_generic_encoder(rlhf: bool) -> None:
    event = round_played(7, rlhf=rlhf)
    event = replace(event, reward_policy=math.nan, timings={"policy": math.inf, "monitor": 0.5})
    header, packed = encode_round(event)
    encoded = encode_event(event)
    assert header == encoded.header_values or repr(header) == repr(encoded.header_values)  # NaN != NaN
    assert packed == list(encoded.packed.values())


def test_a_failed_background_merge_is_reported_and_loses_nothing(tmp_path: Path, monkeypatch) -> None:
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
            writer.flush()  # the 64th flush starts a merge; a later flush reports its failure
    monkeypatch.setattr(writer_module, "write_segment_file", real_write)
    appended.append(writer.append(round_played(2000)))
    writer.flush()  # the failed group's segments are still live and merged again, now successfully
    writer.close()  # waits for that merge
    assert any(".L1." in p.name for p in (tmp_path / "run" / "log").iterdir())
    report = verify_run(tmp_path / "run")
    assert report.ok, report.summary()
    assert [r.hash for r in RunReader(tmp_path / "run").rounds()] == [r.hash for r in appended]

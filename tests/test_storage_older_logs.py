"""A log written before RoundPlayed.protocol/judge_prompt, EvaluationCompleted.protocol/
samples_per_state/counts and the updates' logprob_mismatch fields existed still loads,
verifies, answers SQL and takes new events; so does one written after those but before the
rounds' quote counts (policy_quotes, ...).

The older log is made the way the older writer made it: segment files without the two round
columns, EvaluationCompleted and PolicyUpdated payloads without their added keys, hashes over headers without the
added fields.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa

from storage import RunReader, RunWriter
from storage.events import TRAILING_DEFAULTS, EvaluationCompleted, PolicyUpdated, RoundPlayed
from storage.query import RunsQuery
from storage.codec import SEGMENT_SCHEMA, canonical_header, encode_event
from storage.layout import LOG_DIR_NAME, list_segment_files, live_segments
from storage.writer import MERGE_SEGMENTS
from storage.verify import verify_run
from tests.test_storage_contract import round_played, run_started

ADDED_ROUND_COLUMNS = [name for name, _ in TRAILING_DEFAULTS[RoundPlayed.event_type]]
ADDED_EVALUATION_KEYS = [name for name, _ in TRAILING_DEFAULTS[EvaluationCompleted.event_type]]
ADDED_UPDATE_KEYS = [name for name, _ in TRAILING_DEFAULTS[PolicyUpdated.event_type]]
QUOTE_COLUMNS = ["policy_quotes", "policy_quotes_verified", "monitor_quotes", "monitor_quotes_verified"]


def older_evaluation() -> EvaluationCompleted:
    return EvaluationCompleted(dataset="builtin", split="eval", n_rounds=2, policy_version=1, monitor_version=1,
                               checkpoint=None, metrics={"policy_accuracy": 0.5})


def rewrite_as_older(run_dir: Path, dropped: list[str] = ADDED_ROUND_COLUMNS) -> None:
    """Drop the `dropped` round columns (and, with all of them, the added evaluation and update keys) from
    every segment file."""
    older_schema = pa.schema([field for field in SEGMENT_SCHEMA if field.name not in dropped])
    for segment in live_segments(list_segment_files(run_dir / LOG_DIR_NAME)):
        with pa.ipc.open_file(pa.BufferReader(segment.path.read_bytes())) as reader:  # not mapped: rewritten below
            metadata = reader.schema.metadata
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        older = []
        for batch in batches:
            payloads = []
            for text in batch.column("payload").to_pylist():
                if text is not None and '"samples_per_state"' in text and dropped == ADDED_ROUND_COLUMNS:
                    values = orjson.loads(text)
                    text = orjson.dumps({k: v for k, v in values.items() if k not in ADDED_EVALUATION_KEYS}).decode()
                if text is not None and '"round_logprob_mismatch"' in text and dropped == ADDED_ROUND_COLUMNS:
                    values = orjson.loads(text)
                    text = orjson.dumps({k: v for k, v in values.items() if k not in ADDED_UPDATE_KEYS}).decode()
                payloads.append(text)
            columns = [pa.array(payloads, pa.string()) if field.name == "payload" else batch.column(field.name)
                       for field in older_schema]
            older.append(pa.RecordBatch.from_arrays(columns, schema=older_schema))
        schema = older_schema.with_metadata(metadata)
        with pa.OSFile(str(segment.path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in older:
                writer.write_batch(batch)


def older_update() -> PolicyUpdated:
    return PolicyUpdated(version=1, round_ids=[0, 1], first_seq=2, last_seq=3, diagnostics={"policy_loss": 0.5})


def test_an_event_at_the_added_defaults_hashes_without_the_added_fields() -> None:
    for event, added in ((round_played(1), ADDED_ROUND_COLUMNS), (older_evaluation(), ADDED_EVALUATION_KEYS),
                         (older_update(), ADDED_UPDATE_KEYS)):
        values = encode_event(event).header_values
        older_header = orjson.dumps(["run", 3, "2026-01-01T00:00:00.000000+00:00", 1, event.event_type, values[: -len(added)]])
        assert canonical_header("run", 3, "2026-01-01T00:00:00.000000+00:00", 1, event.event_type, values) == older_header


def test_an_older_log_loads_verifies_answers_sql_and_takes_new_events(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    events = [run_started(), round_played(0), round_played(4), older_update(), older_evaluation()]
    with RunWriter.create(run_dir, "older") as writer:
        appended = [writer.append(event) for event in events]
    rewrite_as_older(run_dir)
    (segment,) = live_segments(list_segment_files(run_dir / LOG_DIR_NAME))
    with pa.ipc.open_file(pa.memory_map(str(segment.path), "r")) as reader:
        assert not set(ADDED_ROUND_COLUMNS) & set(reader.schema.names)  # really the older shape

    read = RunReader(run_dir).events()
    assert [item.hash for item in read] == [item.hash for item in appended]
    rounds = [item.event for item in read if isinstance(item.event, RoundPlayed)]
    assert [(r.protocol, r.judge_prompt) for r in rounds] == [(None, ""), (None, "")]
    evaluation = read[-1].event
    assert isinstance(evaluation, EvaluationCompleted)
    assert (evaluation.protocol, evaluation.samples_per_state, evaluation.counts) == ("", 1, {})
    update = read[-2].event
    assert isinstance(update, PolicyUpdated)
    assert (update.logprob_mismatch_mean, update.logprob_mismatch_max, update.round_logprob_mismatch) == (None, None, [])
    assert verify_run(run_dir).ok, verify_run(run_dir).problems

    with RunsQuery(run_dir) as query:
        assert query.arrow("SELECT count(*) AS n FROM rounds").column("n").to_pylist() == [2]

    # New events follow on, in the current shape, one segment each, until a compaction merges
    # the older segment with the new ones.
    with RunWriter.open_existing(run_dir) as writer:
        for round_id in range(8, 8 + MERGE_SEGMENTS):
            newer = round_played(round_id)
            writer.append(RoundPlayed(**{**newer.__dict__, "protocol": "deployment", "judge_prompt": f"Is {round_id} right?"}))
            writer.flush()
    merged = live_segments(list_segment_files(run_dir / LOG_DIR_NAME))[0]
    assert (merged.level, merged.first_seq) == (1, 0)  # the older segment was merged with new ones
    read = RunReader(run_dir).events()
    assert [item.hash for item in read[: len(appended)]] == [item.hash for item in appended]
    prompts = [item.event.judge_prompt for item in read if isinstance(item.event, RoundPlayed)]
    assert prompts == ["", ""] + [f"Is {round_id} right?" for round_id in range(8, 8 + MERGE_SEGMENTS)]
    assert RunReader(run_dir).table().schema.equals(SEGMENT_SCHEMA, check_metadata=False)
    assert verify_run(run_dir).ok, verify_run(run_dir).problems


def test_a_log_from_before_the_quote_counts_reads_them_as_not_counted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, "before-quotes") as writer:
        appended = [writer.append(event) for event in (run_started(), round_played(0), round_played(4))]
    rewrite_as_older(run_dir, QUOTE_COLUMNS)
    (segment,) = live_segments(list_segment_files(run_dir / LOG_DIR_NAME))
    with pa.ipc.open_file(pa.memory_map(str(segment.path), "r")) as reader:
        assert "judge_prompt" in reader.schema.names and not set(QUOTE_COLUMNS) & set(reader.schema.names)
    read = RunReader(run_dir).events()
    assert [item.hash for item in read] == [item.hash for item in appended]
    rounds = [item.event for item in read if isinstance(item.event, RoundPlayed)]
    assert {(r.policy_quotes, r.policy_quotes_verified, r.monitor_quotes) for r in rounds} == {(None, None, None)}
    assert verify_run(run_dir).ok, verify_run(run_dir).problems
    with RunWriter.open_existing(run_dir) as writer:  # a resumed run writes the counts from here on
        writer.append(RoundPlayed(**{**round_played(8).__dict__, "policy_quotes": 2, "policy_quotes_verified": 1}))
    with RunsQuery(run_dir) as query:
        assert query.arrow("SELECT policy_quotes FROM rounds ORDER BY seq").column("policy_quotes").to_pylist() == [None, None, 2]
    assert verify_run(run_dir).ok, verify_run(run_dir).problems

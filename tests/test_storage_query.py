"""RunsQuery views, checked against the log read back in Python and hand-computed metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest

from storage import RoundPlayed, RunReader, RunsQuery, RunWriter, UserError
from storage.synthetic import SYNTHETIC_DELTA, write_synthetic_run
from tests.test_storage_contract import round_played, run_started


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(root / "mm", 400, mode="minmax", seed=5, text_bytes=200, n_tokens=8, k=2)
    write_synthetic_run(root / "rl", 160, mode="rlhf", seed=6, text_bytes=200, n_tokens=8, finished=False)
    return root


def test_extra_views_are_created_over_the_generic_ones(runs: Path) -> None:
    """Storage owns no game metric: a caller (the engine) registers its own views."""
    per_window = 'SELECT run_id, "window", count(*) AS n FROM rounds WHERE phase = \'train\' GROUP BY ALL'
    with RunsQuery(runs, extra_views={"per_window": per_window}) as query:
        assert "per_window" in query.view_names and "metrics" not in query.view_names
        rows = query.arrow('SELECT * FROM per_window ORDER BY run_id, "window"').to_pylist()
    reader = RunReader(runs / "mm")
    windows = [r.event.window for r in reader.rounds(phase="train")]
    assert [row["n"] for row in rows if row["run_id"] == "mm"] == [windows.count(w) for w in sorted(set(windows))]
    with pytest.raises(ValueError, match="rounds"):
        RunsQuery(runs, extra_views={"rounds": "SELECT 1"})


def test_runs_view_holds_each_run_started(runs: Path) -> None:
    with RunsQuery(runs) as query:
        rows = query.arrow("SELECT * FROM runs ORDER BY run_id").to_pylist()
    assert [(row["run_id"], row["mode"]) for row in rows] == [("mm", "minmax"), ("rl", "rlhf")]
    config = json.loads(rows[0]["config"])
    assert config == RunReader(runs / "mm").run_started().config
    assert config["lagrangian"]["delta"] == SYNTHETIC_DELTA


def test_rounds_updates_lambda_and_events_views_hold_the_log(runs: Path) -> None:
    reader = RunReader(runs / "mm")
    events = reader.events()
    with RunsQuery(runs / "mm") as query:
        assert query.arrow("SELECT DISTINCT run_id FROM events").column(0).to_pylist() == ["mm"]
        stored = query.arrow("SELECT seq, event_type, payload FROM events ORDER BY seq").to_pylist()
        assert [(r["seq"], r["event_type"]) for r in stored] == [(e.seq, e.event.event_type) for e in events]
        round_payload = json.loads(next(r["payload"] for r in stored if r["event_type"] == "RoundPlayed"))
        first_round = next(e.event for e in events if isinstance(e.event, RoundPlayed))
        assert round_payload["policy_logprobs"] == first_round.policy_logprobs
        assert round_payload["story"] == first_round.story

        rounds = query.arrow("SELECT * FROM rounds ORDER BY seq")
        assert rounds.column("policy_logprobs").to_pylist() == [r.event.policy_logprobs for r in reader.rounds()]
        assert rounds.column("ts").type.tz is not None

        updates = query.polars("SELECT * FROM updates ORDER BY seq")
        expected = [e.event for e in events if e.event.event_type in ("MonitorUpdated", "PolicyUpdated")]
        assert updates["role"].to_list() == ["monitor" if e.event_type == "MonitorUpdated" else "policy" for e in expected]
        assert updates["n_rounds"].to_list() == [len(e.round_ids) for e in expected]
        assert updates["approx_kl"].to_list() == [e.diagnostics["approx_kl"] for e in expected]
        assert all(math.isnan(v) for v in updates["explained_variance"].to_list())

        lam = query.polars('SELECT * FROM "lambda" ORDER BY seq')
        lambda_events = [e.event for e in events if e.event.event_type == "LambdaUpdated"]
        assert lam["new"].to_list() == [e.new for e in lambda_events]
        assert lam["old"].to_list()[1:] == lam["new"].to_list()[:-1]
        assert isinstance(query.polars("SELECT 1 AS one"), pl.DataFrame)
        assert query.relation("SELECT count(*) FROM rounds").fetchall()[0][0] == len(reader.rounds())


def test_a_query_sees_segments_flushed_after_it_was_opened(tmp_path: Path) -> None:
    writer = RunWriter.create(tmp_path / "live", "live")
    writer.append(run_started())
    writer.flush()
    with RunsQuery(tmp_path / "live") as query:
        assert query.arrow("SELECT count(*) AS n FROM rounds").column(0)[0].as_py() == 0
        writer.append(round_played(0))
        writer.append(round_played(1))
        writer.flush()
        assert query.arrow("SELECT count(*) AS n FROM rounds").column(0)[0].as_py() == 2
    writer.close()


def test_write_statements_raise_user_errors_in_the_python_api(runs: Path) -> None:
    with RunsQuery(runs) as query:
        for statement in ("INSERT INTO rounds (seq) VALUES (1)", "CREATE TABLE t AS SELECT 1", "SELEC 1"):
            with pytest.raises(UserError):
                query.arrow(statement)


def test_views_leave_out_what_a_resume_superseded_but_all_events_keep_it(tmp_path: Path) -> None:
    """A killed run logged rounds after its last checkpoint; the resumed run played them again.
    Only the replayed ones count in events/rounds/updates, as in RunReader; all_events keeps everything."""
    from dataclasses import replace

    from storage import CheckpointSaved, PolicyUpdated, RunResumed

    run_dir = tmp_path / "resumed"
    with RunWriter.create(run_dir, "resumed") as writer:
        writer.append(run_started())                                            # seq 0
        for round_id in range(4):                                               # seq 1-4
            writer.append(replace(round_played(round_id), phase="train", window=0))
        writer.append(PolicyUpdated(version=1, round_ids=[0, 1, 2, 3], first_seq=1, last_seq=4,
                                    diagnostics={"approx_kl": 0.1}))            # seq 5
        checkpoint = writer.append(CheckpointSaved(path="checkpoints/1", policy_version=1, monitor_version=0,
                                                   lambda_value=1.0, next_round_id=4, last_round_seq=4))  # seq 6
        for round_id in range(4, 7):                                            # seq 7-9: superseded
            writer.append(replace(round_played(round_id), phase="train", window=1, truth="wrong"))
        writer.append(PolicyUpdated(version=2, round_ids=[4, 5, 6], first_seq=7, last_seq=9,
                                    diagnostics={"approx_kl": 9.9}))            # seq 10: superseded
    with RunWriter.open_existing(run_dir) as writer:  # the resumed process
        writer.append(RunResumed(checkpoint_seq=checkpoint.seq, next_round_id=7,
                                 discarded_after_seq=checkpoint.seq))           # seq 11
        for round_id in range(7, 10):                                           # seq 12-14
            writer.append(replace(round_played(round_id), phase="train", window=1, truth="correct"))

    with RunsQuery(run_dir) as q:
        assert q.arrow("SELECT seq FROM rounds ORDER BY seq").column("seq").to_pylist() == [1, 2, 3, 4, 12, 13, 14]
        assert q.arrow("SELECT approx_kl FROM updates").column("approx_kl").to_pylist() == [0.1]
        window_1 = q.polars("""SELECT count(*), avg(CAST(truth = 'correct' AS DOUBLE)) FROM rounds WHERE "window" = 1""")
        assert window_1.row(0) == (3, 1.0)
        assert q.arrow("SELECT count(*) AS n FROM events").column("n").to_pylist() == [11]  # seqs 7-10 left out
        assert q.arrow("SELECT count(*) AS n FROM all_events").column("n").to_pylist() == [15]

    reader = RunReader(run_dir)  # one resume rule: the reader folds the same way as the views
    assert [r.seq for r in reader.rounds()] == [1, 2, 3, 4, 12, 13, 14]
    assert [r.seq for r in reader.events()] == [0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 14]
    assert reader.rounds_table().column("seq").to_pylist() == [1, 2, 3, 4, 12, 13, 14]
    assert [r.seq for r in reader.events(include_superseded=True)] == list(range(15))
    assert [r.seq for r in reader.events(8, 12)] == [11, 12]  # a window that starts inside the range

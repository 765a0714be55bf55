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


def reference_metrics(rounds: list[RoundPlayed], delta: float) -> dict[str, float | None]:
    """GAME.md §4 written out by hand, independently of the SQL."""
    def rate(hits: list[bool]) -> float | None:
        return sum(hits) / len(hits) if hits else None

    right = [r.truth == "correct" for r in rounds]
    wrong = [r for r in rounds if r.truth != "correct"]
    correct = [r for r in rounds if r.truth == "correct"]
    out = {
        "n_rounds": len(rounds),
        "policy_accuracy": rate(right),
        "judge_accept_rate": rate([r.judge_accepts for r in rounds]),
        "judge_accuracy": rate([r.judge_accepts == ok for r, ok in zip(rounds, right)]),
        "deception_rate": rate([r.judge_accepts for r in wrong]),
        "policy_unparsed_rate": rate([r.policy_answer is None for r in rounds]),
        "mean_reward": sum(r.combined_reward for r in rounds) / len(rounds),
        "mean_p_accept": sum(r.p_accept for r in rounds) / len(rounds),
        "last_lambda": rounds[-1].lambda_value,
    }
    monitored = [r for r in rounds if r.monitor_output is not None]
    if not monitored:  # rlhf mode
        out.update(monitor_fidelity=None, false_accusation_rate=None, missed_error_rate=None, mean_f=None,
                   constraint_violation=None, monitor_unparsed_rate=None)
    else:
        # an unparsed verdict (None) disagrees with the truth whatever it is
        mean_f = sum(r.fidelity_penalty for r in monitored) / len(monitored)
        out.update(
            monitor_fidelity=rate([r.monitor_says_correct is not None and r.monitor_says_correct == (r.truth == "correct")
                                   for r in monitored]),
            false_accusation_rate=rate([r.monitor_says_correct in (False, None) for r in correct]),
            missed_error_rate=rate([r.monitor_says_correct in (True, None) for r in wrong]),
            mean_f=mean_f, constraint_violation=mean_f - delta,
            monitor_unparsed_rate=rate([r.monitor_says_correct is None for r in monitored]),
        )
    return out


@pytest.mark.parametrize("run_name", ["mm", "rl"])
def test_metrics_view_matches_hand_computed_definitions(runs: Path, run_name: str) -> None:
    reader = RunReader(runs / run_name)
    train = [r.event for r in reader.rounds(phase="train")]
    by_window: dict[int, list[RoundPlayed]] = {}
    for event in train:
        by_window.setdefault(event.window, []).append(event)
    with RunsQuery(runs) as query:
        rows = query.arrow(f"SELECT * FROM metrics WHERE run_id = '{run_name}' ORDER BY \"window\"").to_pylist()
    assert [row["window"] for row in rows] == sorted(by_window)
    non_trivial = set()
    for row in rows:
        expected = reference_metrics(by_window[row["window"]], SYNTHETIC_DELTA)
        for name, value in expected.items():
            if value is None:
                assert row[name] is None, (row["window"], name)
            else:
                assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (row["window"], name)
                if 0 < value < 1:
                    non_trivial.add(name)
    # the synthetic run exercises every rate (none stuck at 0 or 1 in every window)
    rates = {"policy_accuracy", "judge_accept_rate", "judge_accuracy", "deception_rate"}
    if run_name == "mm":
        rates |= {"monitor_fidelity", "false_accusation_rate", "missed_error_rate", "monitor_unparsed_rate"}
    assert rates <= non_trivial


def test_metrics_view_agrees_with_engine_window_metrics(runs: Path) -> None:
    """The SQL view and engine/metrics.py are two implementations of one definition."""
    from engine.metrics import window_metrics  # noqa: PLC0415 (only this test crosses layers)

    for run_name in ("mm", "rl"):
        reader = RunReader(runs / run_name)
        delta = reader.run_started().config["lagrangian"]["delta"]
        by_window: dict[int, list[RoundPlayed]] = {}
        for event in (r.event for r in reader.rounds(phase="train")):
            by_window.setdefault(event.window, []).append(event)
        with RunsQuery(runs / run_name) as query:
            rows = query.arrow('SELECT * FROM metrics ORDER BY "window"').to_pylist()
        for row in rows:
            expected = window_metrics(by_window[row["window"]], delta)
            for name, value in expected.items():
                assert (row[name] is None) == (value is None), (run_name, row["window"], name)
                if value is not None:
                    assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-12), (run_name, row["window"], name)


def test_conditional_rates_are_null_without_their_condition(tmp_path: Path) -> None:
    with RunWriter.create(tmp_path / "run", "all-right") as writer:
        writer.append(run_started())
        for round_id in range(4):  # every answer correct: no "policy wrong" rows
            event = round_played(round_id)
            writer.append(RoundPlayed(**{**event.to_dict(), "phase": "train", "window": 0, "truth": "correct",
                                         "policy_answer": 0, "monitor_says_correct": True}))
    with RunsQuery(tmp_path / "run") as query:
        row = query.arrow("SELECT * FROM metrics").to_pylist()[0]
    assert row["deception_rate"] is None and row["missed_error_rate"] is None
    assert row["false_accusation_rate"] == 0.0 and row["monitor_fidelity"] == 1.0
    assert row["constraint_violation"] == pytest.approx(-0.3 - (-0.2))


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


def test_views_leave_out_what_a_resume_superseded_but_events_keep_it(tmp_path: Path) -> None:
    """A killed run logged rounds after its last checkpoint; the resumed run played them again.
    Only the replayed ones count in rounds/updates/metrics; the raw log keeps everything."""
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
        window_1 = q.polars('SELECT n_rounds, policy_accuracy FROM metrics WHERE "window" = 1').row(0)
        assert window_1 == (3, 1.0)
        assert q.arrow("SELECT count(*) AS n FROM events").column("n").to_pylist() == [15]

"""Trackers: console, TensorBoard and the fan-out, read back and checked against the log.

Each test writes a real run with storage.RunWriter, publishes the Recorded envelopes the
writer returns (as the game loop does), then reads back what the backend wrote and compares
it with SQL over the same log or with the events themselves.
"""

from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.trackers import ConsoleTracker, Trackers, open_trackers, total_training_rounds
from storage import (
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    Recorded,
    RoundPlayed,
    RunFinished,
    RunStarted,
    RunWriter,
    UserError,
)
from tui.cli import main as cli_main

DELTA = -0.2


def write_fixture_run(
    run_dir: Path, mode: str, *, n_windows: int = 6, window_size: int = 8, k: int = 2, seed: int = 0
) -> list[Recorded]:
    """A small run shaped like the TTUR loop's log: windows, monitor updates + λ, policy updates.

    Outcomes are random but cover every case the metrics distinguish (unparsed answers and
    verdicts included). Returns the envelopes the writer produced, in order.
    """
    rng = random.Random(seed)
    minmax = mode == "minmax"
    n_states = n_windows * window_size // 2
    config = {
        "mode": mode,
        "training": {"samples_per_state": 1, "num_epochs": 2, "window_size": window_size},
        "lagrangian": {"delta": DELTA},
    }
    recorded: list[Recorded] = []
    with RunWriter.create(run_dir, run_dir.name) as writer:
        recorded.append(writer.append(RunStarted(
            mode=mode, config=config, seeds={"seed": seed}, package_versions={}, data_fingerprint="f" * 64,
            dataset_name="fixture", n_train_states=n_states, n_eval_states=0,
        )))
        lambda_value, policy_version, monitor_version, round_id = 0.5, 0, 0, 0
        window_records: list[Recorded] = []
        for window in range(n_windows):
            window_start = len(recorded)
            for _ in range(window_size):
                truth = rng.choice(["correct", "correct", "wrong", "unparsed"])
                verdict = rng.choice([True, False, None]) if minmax else None
                accepts = rng.random() < 0.5
                recorded.append(writer.append(RoundPlayed(
                    round_id=round_id, phase="train", window=window, state_id=f"s{round_id % n_states}",
                    sample_index=0, story="story", question="question?", choices=["yes", "no"],
                    correct_index=0, policy_prompt="prompt", policy_prompt_ids=[1, 2],
                    policy_output="Answer: A", policy_token_ids=[3], policy_logprobs=[-0.5],
                    policy_answer={"correct": 0, "wrong": 1, "unparsed": None}[truth],
                    monitor_prompt="critique?" if minmax else None,
                    monitor_prompt_ids=[4] if minmax else None,
                    monitor_output="CORRECT" if minmax else None,
                    monitor_token_ids=[5] if minmax else None,
                    monitor_logprobs=[-0.25] if minmax else None,
                    monitor_says_correct=verdict,
                    reward_policy=rng.gauss(0.0, 1.0),
                    reward_monitor=rng.gauss(0.0, 1.0) if minmax else None,
                    p_accept=0.75 if accepts else 0.25, judge_accepts=accepts, truth=truth,
                    combined_reward=rng.uniform(-1.0, 1.0),
                    fidelity_penalty=rng.uniform(-0.3, 1.0) if minmax else None,
                    lambda_value=lambda_value, policy_version=policy_version, monitor_version=monitor_version,
                )))
                round_id += 1
            this_window = recorded[window_start:]
            window_records.extend(this_window)
            if minmax:
                monitor_version += 1
                recorded.append(writer.append(MonitorUpdated(
                    version=monitor_version, round_ids=[r.event.round_id for r in this_window],
                    first_seq=this_window[0].seq, last_seq=this_window[-1].seq,
                    diagnostics={"policy_loss": rng.random(), "approx_kl": rng.random() / 100,
                                 "explained_variance": float("nan")},
                )))
                penalties = [r.event.fidelity_penalty for r in this_window]
                mean_f = sum(penalties) / len(penalties)
                new_lambda = max(0.0, lambda_value + 0.1 * (mean_f - DELTA))
                recorded.append(writer.append(LambdaUpdated(
                    old=lambda_value, new=new_lambda, mean_f=mean_f, delta=DELTA,
                    monitor_version=monitor_version, applied=True,
                )))
                lambda_value = new_lambda
            if (window + 1) % k == 0:
                policy_version += 1
                recorded.append(writer.append(PolicyUpdated(
                    version=policy_version, round_ids=[r.event.round_id for r in window_records],
                    first_seq=window_records[0].seq, last_seq=window_records[-1].seq,
                    diagnostics={"policy_loss": rng.random(), "approx_kl": rng.random() / 100,
                                 "clipfrac": rng.random() / 4, "kl_ref": rng.random() / 10,
                                 "entropy": 2.0 + rng.random(), "grad_norm": 1.0 + rng.random()},
                )))
                window_records = []
        recorded.append(writer.append(RunFinished(
            rounds=round_id, policy_updates=policy_version, monitor_updates=monitor_version, wall_seconds=61.0,
        )))
    return recorded


def publish_all(trackers: Trackers, recorded: list[Recorded]) -> None:
    for envelope in recorded:
        trackers.publish(envelope)
    trackers.close()


def read_tensorboard(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(point.step, point.value) for point in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def expected_window_scalars(recorded: list[Recorded]) -> dict[str, list[tuple[int, float]]]:
    """game/* per window, computed here from the raw rounds (not through engine.metrics)."""
    by_window: dict[int, list[RoundPlayed]] = {}
    for envelope in recorded:
        if isinstance(envelope.event, RoundPlayed):
            by_window.setdefault(envelope.event.window, []).append(envelope.event)
    expected: dict[str, list[tuple[int, float]]] = {}

    def add(name: str, step: int, hits: list[bool]) -> None:
        if hits:  # a rate is published with its n, and neither when n = 0
            expected.setdefault(name, []).append((step, sum(hits) / len(hits)))
            expected.setdefault(name.replace("game/", "game_n/"), []).append((step, float(len(hits))))

    for rounds in by_window.values():
        step = max(r.round_id for r in rounds) + 1
        wrong = [r for r in rounds if r.truth == "wrong"]  # parsed and wrong (docs/metrics.md)
        correct = [r for r in rounds if r.truth == "correct"]
        parsed = correct + wrong
        add("game/policy_accuracy", step, [r.truth == "correct" for r in rounds])
        add("game/deception_rate", step, [r.judge_accepts for r in wrong])
        add("game/judge_accept_rate", step, [r.judge_accepts for r in rounds])
        add("game/judge_accuracy", step, [r.judge_accepts == (r.truth == "correct") for r in parsed])
        add("game/unparsed_rate_policy", step, [r.policy_answer is None for r in rounds])
        expected.setdefault("game/mean_reward", []).append(
            (step, sum(r.combined_reward for r in rounds) / len(rounds))
        )
        if correct and wrong:  # the judge's AUROC over every (correct, wrong) pair; no n of its own
            pairs = [(c.p_accept > w.p_accept) + 0.5 * (c.p_accept == w.p_accept) for c in correct for w in wrong]
            expected.setdefault("game/judge_auroc", []).append((step, sum(pairs) / len(pairs)))
        quoted = [r for r in rounds if r.policy_quotes is not None]  # logs older than quote counts: none
        add("game/fabricated_quote_rate", step, [r.policy_quotes > r.policy_quotes_verified for r in quoted])
        add("game/verified_quote_fraction", step,
            [verified for r in quoted for verified in [True] * r.policy_quotes_verified
             + [False] * (r.policy_quotes - r.policy_quotes_verified)])
        if quoted:  # a mean count, n = answers
            expected.setdefault("game/quotes_per_answer", []).append((step, sum(r.policy_quotes for r in quoted) / len(quoted)))
            expected.setdefault("game_n/quotes_per_answer", []).append((step, float(len(quoted))))
        if rounds[0].monitor_output is not None:
            # monitor rates over parsed verdicts; the unparsed ones have their own rate
            add("game/monitor_fidelity", step,
                [r.monitor_says_correct == (r.truth == "correct") for r in parsed if r.monitor_says_correct is not None])
            add("game/false_accusation_rate", step,
                [r.monitor_says_correct is False for r in correct if r.monitor_says_correct is not None])
            add("game/missed_error_rate", step,
                [r.monitor_says_correct is True for r in wrong if r.monitor_says_correct is not None])
            add("game/unparsed_rate_monitor", step, [r.monitor_says_correct is None for r in rounds])
    return expected


def expected_update_scalars(recorded: list[Recorded]) -> dict[str, list[tuple[int, float]]]:
    """lambda/, monitor/ and policy/ straight from the update events, at the rounds played."""
    expected: dict[str, list[tuple[int, float]]] = {}
    rounds_played = 0
    for envelope in recorded:
        event = envelope.event
        if isinstance(event, RoundPlayed):
            rounds_played = event.round_id + 1
        elif isinstance(event, MonitorUpdated | PolicyUpdated):
            role = "monitor" if isinstance(event, MonitorUpdated) else "policy"
            for name, value in event.diagnostics.items():
                if value == value:  # NaN (no value head) is not published
                    expected.setdefault(f"{role}/{name}", []).append((rounds_played, value))
        elif isinstance(event, LambdaUpdated):
            expected.setdefault("lambda/value", []).append((rounds_played, event.new))
            expected.setdefault("lambda/mean_f", []).append((rounds_played, event.mean_f))
            expected.setdefault("lambda/constraint_violation", []).append((rounds_played, event.mean_f - event.delta))
    return expected


def assert_scalars_match(written: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]]) -> None:
    assert sorted(written) == sorted(expected)
    for name, points in expected.items():
        assert [step for step, _ in written[name]] == [step for step, _ in points], name
        # TensorBoard stores scalars as float32.
        assert [value for _, value in written[name]] == pytest.approx([value for _, value in points], rel=1e-6), name


# --- TensorBoard --------------------------------------------------------------------------


def test_tensorboard_scalars_equal_the_metrics_of_the_logged_rounds_and_updates(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    publish_all(open_trackers(["tensorboard"], run_dir, "minmax-run"), recorded)

    written = read_tensorboard(run_dir / "tensorboard")

    assert_scalars_match(written, {**expected_window_scalars(recorded), **expected_update_scalars(recorded)})
    assert len(written["game/policy_accuracy"]) == 6  # one point per window
    assert len(written["policy/approx_kl"]) == 3  # one per policy update (k = 2)


def test_rlhf_run_publishes_no_monitor_or_lambda_scalars(tmp_path: Path) -> None:
    run_dir = tmp_path / "rlhf-run"
    recorded = write_fixture_run(run_dir, "rlhf")
    publish_all(open_trackers(["tensorboard"], run_dir, "rlhf-run"), recorded)

    written = read_tensorboard(run_dir / "tensorboard")

    assert_scalars_match(written, {**expected_window_scalars(recorded), **expected_update_scalars(recorded)})
    assert not [name for name in written if name.startswith(("lambda/", "monitor/", "game/monitor"))]


# --- console --------------------------------------------------------------------------------


def test_console_prints_a_plain_line_per_window_and_policy_update_when_not_a_terminal(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    out = io.StringIO()
    publish_all(Trackers([ConsoleTracker(out)], io.StringIO()), recorded)

    lines = out.getvalue().splitlines()
    window_lines = [line for line in lines if line.startswith("window")]
    assert len(window_lines) == 6
    assert window_lines[-1].startswith("window    5 | rounds 48/48 |")  # 24 states × 1 sample × 2 epochs
    assert "monitor fidelity" in window_lines[0] and "λ 0.500" in window_lines[0]
    assert all("eta" in line for line in window_lines)
    assert "\x1b[" not in out.getvalue()  # no escape codes in a CI log
    assert len([line for line in lines if line.startswith("policy update v")]) == 3
    final_lambda = [r.event.new for r in recorded if isinstance(r.event, LambdaUpdated)][-1]
    assert lines[-1].startswith("finished: 48 rounds, 3 policy updates, 6 monitor updates in 1m01s")
    assert f"λ {final_lambda:5.3f}" in lines[-1]


def test_console_in_rlhf_mode_has_no_monitor_columns(tmp_path: Path) -> None:
    run_dir = tmp_path / "rlhf-run"
    recorded = write_fixture_run(run_dir, "rlhf")
    out = io.StringIO()
    publish_all(Trackers([ConsoleTracker(out)], io.StringIO()), recorded)

    window_lines = [line for line in out.getvalue().splitlines() if line.startswith("window")]
    assert len(window_lines) == 6
    assert not [line for line in window_lines if "monitor" in line or "λ" in line]


def test_console_on_a_terminal_draws_a_progress_bar_to_the_total(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    out = io.StringIO()
    publish_all(Trackers([ConsoleTracker(out, force_terminal=True)], io.StringIO()), recorded)

    text = out.getvalue()
    assert "48/48" in text and "eta" in text
    assert "finished: 48 rounds" in text


def test_total_rounds_reads_the_config_defensively(tmp_path: Path) -> None:
    def started(config: dict) -> RunStarted:
        return RunStarted(mode="minmax", config=config, seeds={}, package_versions={}, data_fingerprint="",
                          dataset_name="d", n_train_states=10, n_eval_states=0)

    assert total_training_rounds(started({"training": {"samples_per_state": 4, "num_epochs": 3}})) == 120
    assert total_training_rounds(started({})) == 10
    assert total_training_rounds(started({"training": "garbled"})) == 10


# --- failures never stop a run ----------------------------------------------------------------


def test_a_backend_that_raises_while_publishing_is_disabled_with_one_warning(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    closed_stream = io.StringIO()
    closed_stream.close()  # every write to it raises ValueError, as a vanished terminal would
    warnings = io.StringIO()
    trackers = Trackers([ConsoleTracker(closed_stream)], warnings)
    tensorboard = open_trackers(["tensorboard"], run_dir, "minmax-run").backends[0]
    trackers.backends.append(tensorboard)

    publish_all(trackers, recorded)

    warning_lines = warnings.getvalue().splitlines()
    assert len(warning_lines) == 1
    assert "tracker 'console' failed" in warning_lines[0] and "ValueError" in warning_lines[0]
    assert trackers.failed == ["console"]
    assert len(read_tensorboard(run_dir / "tensorboard")["game/policy_accuracy"]) == 6  # the others kept going


def test_metrics_that_cannot_be_computed_are_switched_off_with_one_warning(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    # A round whose penalty is not a number (as a corrupted or future-schema log might hold):
    # window_metrics raises on it when the first window closes.
    first_round = next(i for i, envelope in enumerate(recorded) if isinstance(envelope.event, RoundPlayed))
    broken = dataclasses.replace(recorded[first_round], event=dataclasses.replace(recorded[first_round].event, fidelity_penalty="high"))
    out, warnings = io.StringIO(), io.StringIO()

    publish_all(Trackers([ConsoleTracker(out)], warnings), [*recorded[:first_round], broken, *recorded[first_round + 1 :]])

    assert len(warnings.getvalue().splitlines()) == 1
    assert "tracker metrics failed" in warnings.getvalue()
    assert not [line for line in out.getvalue().splitlines() if line.startswith("window")]
    assert out.getvalue().splitlines()[-1].startswith("finished: 48 rounds")  # the run's output went on


def test_unknown_backend_name_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="logging.backends: unknown backend 'tensorbord'"):
        open_trackers(["console", "tensorbord"], tmp_path, "run")


# --- backfill -------------------------------------------------------------------------------


def test_backfill_into_tensorboard_writes_the_same_numbers_as_live_logging(tmp_path: Path) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    publish_all(open_trackers(["tensorboard"], run_dir, "minmax-run"), recorded)
    live = read_tensorboard(run_dir / "tensorboard")

    assert cli_main(["log", str(run_dir), "--to", "tensorboard", "--force"]) == 0

    assert read_tensorboard(run_dir / "tensorboard") == live


def test_backfill_refuses_to_mix_with_existing_tensorboard_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "minmax-run"
    recorded = write_fixture_run(run_dir, "minmax")
    publish_all(open_trackers(["tensorboard"], run_dir, "minmax-run"), recorded)
    capsys.readouterr()

    assert cli_main(["log", str(run_dir), "--to", "tensorboard"]) == 2

    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pass --force" in error


def test_backfill_of_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["log", str(tmp_path / "missing"), "--to", "tensorboard"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("minmax-engine log: error:") and error.count("\n") == 1


# --- against the SQL views, on a synthetic run with evaluations and checkpoints ----------------

# Every metric the trackers publish must equal the SQL `metrics` view over the same rounds
# (both count an unparsed verdict as disagreement, as GAME.md's d does).
VIEW_COLUMNS = {
    "game/policy_accuracy": "policy_accuracy",
    "game/deception_rate": "deception_rate",
    "game/judge_accept_rate": "judge_accept_rate",
    "game/judge_accuracy": "judge_accuracy",
    "game/monitor_fidelity": "monitor_fidelity",
    "game/false_accusation_rate": "false_accusation_rate",
    "game/missed_error_rate": "missed_error_rate",
    "game/unparsed_rate_policy": "policy_unparsed_rate",
    "game/unparsed_rate_monitor": "monitor_unparsed_rate",
    "game/mean_reward": "mean_reward",
    "game/judge_auroc": "judge_auroc",
    "game/fabricated_quote_rate": "fabricated_quote_rate",
    "game/verified_quote_fraction": "verified_quote_fraction",
    "game/quotes_per_answer": "quotes_per_answer",
}


@pytest.fixture(scope="module")
def synthetic_minmax_tensorboard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from storage import RunReader
    from storage.synthetic import write_synthetic_run

    run_dir = write_synthetic_run(tmp_path_factory.mktemp("runs") / "synthetic", 256, mode="minmax", k=2, seed=5)
    publish_all(open_trackers(["tensorboard"], run_dir, "synthetic"), RunReader(run_dir).events())
    return run_dir, read_tensorboard(run_dir / "tensorboard")


@pytest.mark.parametrize("name", list(VIEW_COLUMNS))
def test_window_scalars_equal_the_sql_metrics_view(synthetic_minmax_tensorboard: tuple[Path, dict], name: str) -> None:
    from engine.outcomes import game_views
    from storage import RunsQuery

    run_dir, written = synthetic_minmax_tensorboard
    query = RunsQuery(run_dir, extra_views=game_views())
    try:
        view = query.polars(
            f'SELECT w.step, m.{VIEW_COLUMNS[name]} AS value FROM metrics m JOIN '
            '(SELECT "window", max(round_id) + 1 AS step FROM rounds WHERE phase = \'train\' GROUP BY "window") w '
            f'USING ("window") WHERE m.{VIEW_COLUMNS[name]} IS NOT NULL ORDER BY w.step'
        )
    finally:
        query.close()
    assert view.height == 16  # 256 rounds in windows of 16
    assert [step for step, _ in written[name]] == view["step"].to_list()
    assert [value for _, value in written[name]] == pytest.approx(view["value"].to_list(), rel=1e-6)


def test_evaluations_are_published_under_eval(synthetic_minmax_tensorboard: tuple[Path, dict]) -> None:
    from storage import EvaluationCompleted, RunReader

    run_dir, written = synthetic_minmax_tensorboard
    evaluations = [r.event for r in RunReader(run_dir).events(types=["EvaluationCompleted"])]
    assert len(evaluations) == 2 and all(isinstance(event, EvaluationCompleted) for event in evaluations)
    for metric in evaluations[0].metrics:
        values = [event.metrics[metric] for event in evaluations if event.metrics[metric] is not None]
        assert [value for _, value in written.get(f"eval/{metric}", [])] == pytest.approx(values, rel=1e-6), metric



def test_monitored_evaluation_is_published_beside_the_deployment_headline() -> None:
    from engine.trackers import MetricStream
    from storage import EvaluationCompleted, Recorded

    def recorded(protocol: str, accuracy: float) -> Recorded:
        event = EvaluationCompleted(dataset="builtin", split="eval", n_rounds=4, policy_version=2, monitor_version=4,
                                    checkpoint=None, metrics={"policy_accuracy": accuracy}, protocol=protocol,
                                    samples_per_state=2, counts={"policy_accuracy": [int(4 * accuracy), 4]})
        return Recorded(run_id="r", seq=0, ts="", schema_version=1, prev_hash="", hash="", event=event)

    stream = MetricStream()
    (deployment,) = stream.observe(recorded("deployment", 0.5))
    (monitored,) = stream.observe(recorded("monitored", 0.75))
    assert (deployment.source, deployment.values) == ("eval", {"eval/policy_accuracy": 0.5})
    assert (monitored.source, monitored.values) == ("eval_monitored", {"eval_monitored/policy_accuracy": 0.75})


def test_a_resume_drops_the_unfinished_window_and_restarts_the_step_at_the_checkpoint(tmp_path: Path) -> None:
    from storage import CheckpointSaved, RunResumed

    source = [envelope.event for envelope in write_fixture_run(tmp_path / "source", "minmax")]
    rounds_of = {w: [e for e in source if isinstance(e, RoundPlayed) and e.window == w] for w in range(3)}
    first_policy_update = next(i for i, e in enumerate(source) if isinstance(e, PolicyUpdated))
    after_window_2 = [e for e in source if isinstance(e, MonitorUpdated | LambdaUpdated)][4:6]
    # Play to the first policy update and checkpoint; three rounds of window 2 are logged, the
    # process dies, and the resumed process plays window 2 again from the checkpoint.
    with RunWriter.create(tmp_path / "resumed-run", "resumed-run") as writer:
        recorded = [writer.append(event) for event in source[: first_policy_update + 1]]
        checkpoint = writer.append(CheckpointSaved(
            path="checkpoints/1", policy_version=1, monitor_version=2, lambda_value=0.5,
            next_round_id=16, last_round_seq=recorded[-2].seq,
        ))
        recorded.append(checkpoint)
        recorded += [writer.append(event) for event in rounds_of[2][:3]]
        recorded.append(writer.append(RunResumed(checkpoint_seq=checkpoint.seq, next_round_id=16, discarded_after_seq=checkpoint.seq)))
        replayed = [dataclasses.replace(event, truth="correct", policy_answer=0) for event in rounds_of[2]]
        recorded += [writer.append(event) for event in [*replayed, *after_window_2]]
    publish_all(open_trackers(["tensorboard"], tmp_path / "resumed-run", "resumed-run"), recorded)

    accuracy = read_tensorboard(tmp_path / "resumed-run" / "tensorboard")["game/policy_accuracy"]

    assert [step for step, _ in accuracy] == [8, 16, 24]
    assert accuracy[2][1] == 1.0  # the replayed window only, not the three discarded rounds


def test_a_resumed_run_shows_its_total_eta_and_lambda_on_the_console(tmp_path: Path) -> None:
    from storage import RunResumed

    source = write_fixture_run(tmp_path / "source", "minmax")
    run_started = source[0].event
    assert isinstance(run_started, RunStarted)
    window_2 = [r for r in source if isinstance(r.event, RoundPlayed) and r.event.window == 2]
    after = next(r for r in source if r.seq > window_2[-1].seq and isinstance(r.event, MonitorUpdated))
    with RunWriter.create(tmp_path / "resumed", "resumed") as writer:
        resumed = writer.append(RunResumed(checkpoint_seq=3, next_round_id=16, discarded_after_seq=3,
                                               rounds_played=16))
        replayed = [writer.append(r.event) for r in [*window_2, after]]
    out = io.StringIO()
    trackers = Trackers([ConsoleTracker(out)], io.StringIO())
    trackers.resume(run_started)  # what resume_run does: this process never publishes RunStarted
    publish_all(trackers, [resumed, *replayed])

    lines = out.getvalue().splitlines()
    assert lines[0] == "resumed from the checkpoint at seq 3: 16 of 48 rounds played"
    window_line = next(line for line in lines if line.startswith("window"))
    assert window_line.startswith("window    2 | rounds 24/48 |")
    # the minmax columns: the mode is known from RunStarted
    assert "monitor fidelity" in window_line and f"λ {window_2[-1].event.lambda_value:5.3f}" in window_line
    assert "eta ?" not in window_line

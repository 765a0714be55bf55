"""The TTUR loop on tiny random models: schedule, what each update trains on, what it changes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from engine.config import RunConfig, config_from_dict
from engine.data import load_dataset
from engine.game import Game, RunLog, set_table, start_run
from engine.trackers import open_trackers
from players import ModelPool
from storage import RunReader, RunWriter
from storage.errors import UserError
from storage.events import (
    CheckpointSaved,
    EvaluationCompleted,
    LambdaUpdated,
    MonitorUpdated,
    PolicyUpdated,
    RoundPlayed,
    RunFinished,
    RunStarted,
)


def tiny_config(model_dir: Path, run_dir: Path, **tables: dict) -> RunConfig:
    player = {"model": str(model_dir), "max_new_tokens": 6, "lora_r": 4}
    raw = {
        "mode": "minmax",
        "seed": 3,
        "run_dir": str(run_dir),
        "policy": player,
        "monitor": player,
        "reward": {"model": str(model_dir), "kind": "lm-yes-no"},
        "judge": {"model": str(model_dir)},
        "data": {"dataset": "builtin", "max_states": 8, "eval_fraction": 0.25},  # 6 train, 2 eval
        "training": {
            "policy_learning_rate": 1e-2, "monitor_learning_rate": 4e-2, "monitor_updates_per_policy": 2,
            "window_size": 2, "num_epochs": 2, "ppo_epochs": 1, "minibatch_size": 2,
            "checkpoint_every": 1, "eval_every": 2, "eval_samples_per_state": 1,
        },
        "lagrangian": {"lambda_init": 1.0, "delta": -0.2, "step_size": 0.5, "lambda_max": 5.0},
        "logging": {"backends": []},
    }
    for name, values in tables.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    return config_from_dict(raw, source="test")


def payloads(run_dir: Path) -> list:
    return [item.event for item in RunReader(run_dir).events()]


@pytest.fixture(scope="module")
def minmax_run(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("minmax")
    config = tiny_config(tiny_lm_dir, base)
    start_run(config, base / "run", pool=ModelPool(cache_dir=base / "cache"))
    return base / "run"


def test_minmax_run_follows_the_ttur_schedule(minmax_run: Path) -> None:
    events = payloads(minmax_run)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    started: RunStarted = events[0]
    assert started.config["training"]["monitor_updates_per_policy"] == 2
    assert started.n_train_states == 6 and started.n_eval_states == 2
    train = [e for e in events if isinstance(e, RoundPlayed) and e.phase == "train"]
    monitor_updates = [e for e in events if isinstance(e, MonitorUpdated)]
    policy_updates = [e for e in events if isinstance(e, PolicyUpdated)]
    assert len(train) == 12  # 2 epochs × 6 states
    assert len(monitor_updates) == 6 and len(policy_updates) == 3  # k = 2 monitor updates per policy update
    assert [u.version for u in monitor_updates] == [1, 2, 3, 4, 5, 6]
    assert [u.version for u in policy_updates] == [1, 2, 3]
    assert events[-1].rounds == 12 and events[-1].policy_updates == 3 and events[-1].monitor_updates == 6
    # every state is played once per epoch
    assert Counter(r.state_id for r in train) == Counter({state: 2 for state in {r.state_id for r in train}})

    by_id = {r.round_id: r for r in train}
    seen_by_monitor: set[int] = set()
    for update in monitor_updates:
        ids = set(update.round_ids)
        assert len(ids) == 2 and not ids & seen_by_monitor  # fresh rounds only, never retrained
        assert {by_id[i].monitor_version for i in ids} == {update.version - 1}  # played by the current monitor
        seen_by_monitor |= ids
    assert seen_by_monitor == set(by_id)
    for index, update in enumerate(policy_updates):
        # the last k windows, all played by the policy as it is now (on-policy)
        assert update.round_ids == [m for u in monitor_updates[2 * index: 2 * index + 2] for m in u.round_ids]
        assert {by_id[i].policy_version for i in update.round_ids} == {update.version - 1}


def test_event_order_and_lambda_in_force(minmax_run: Path) -> None:
    events = payloads(minmax_run)
    # diagnostics come when the random models' outputs cross a threshold, not on a schedule
    kinds = [type(e).__name__ for e in events
             if not (isinstance(e, RoundPlayed) and e.phase == "eval") and type(e).__name__ != "DiagnosticRaised"]
    window = ["RoundPlayed", "RoundPlayed", "MonitorUpdated", "LambdaUpdated"]
    expected = ["RunStarted", "JudgeCalibrated", "CheckpointSaved"]  # checkpoint 0: resumable from the first window
    for policy_version in (1, 2, 3):
        expected += window + window + ["PolicyUpdated"]
        if policy_version % 2 == 0:
            expected += ["EvaluationCompleted", "EvaluationCompleted"]  # deployment, then monitored
        expected += ["CheckpointSaved"]
    expected += ["RunFinished"]
    assert kinds == expected

    lam = 1.0
    for event in events:
        if isinstance(event, RoundPlayed) and event.phase == "train":
            assert event.lambda_value == lam
        if isinstance(event, LambdaUpdated):
            assert event.old == lam and event.delta == -0.2
            assert event.new == pytest.approx(min(max(lam + 0.5 * (event.mean_f + 0.2), 0.0), 5.0))
            lam = event.new
    train = [e for e in events if isinstance(e, RoundPlayed) and e.phase == "train"]
    lambdas = [e for e in events if isinstance(e, LambdaUpdated)]
    for index, step in enumerate(lambdas):
        window_rounds = train[2 * index: 2 * index + 2]
        assert step.mean_f == pytest.approx(sum(r.fidelity_penalty for r in window_rounds) / 2)


def test_evaluation_and_checkpoints_are_logged(minmax_run: Path) -> None:
    events = payloads(minmax_run)
    evaluations = [e for e in events if isinstance(e, EvaluationCompleted)]
    # 2 eval states × (the greedy answer + 1 sample), judged once per protocol
    assert [e.protocol for e in evaluations] == ["deployment", "monitored"]
    assert {(e.policy_version, e.n_rounds, e.samples_per_state) for e in evaluations} == {(2, 4, 2)}
    eval_rounds = [e for e in events if isinstance(e, RoundPlayed) and e.phase == "eval"]
    assert [r.round_id for r in eval_rounds] == list(range(8)) and {r.window for r in eval_rounds} == {-1}
    assert [r.protocol for r in eval_rounds] == ["deployment"] * 4 + ["monitored"] * 4
    # the greedy answers of both states, then their samples (training.eval_batch_size rows at a time)
    assert [r.sample_index for r in eval_rounds] == [0, 0, 1, 1] * 2
    for evaluation in evaluations:
        assert 0.0 <= evaluation.metrics["policy_accuracy"] <= 1.0
        hits, eligible = evaluation.counts["policy_accuracy"]
        assert eligible == 4 and evaluation.metrics["policy_accuracy"] == hits / eligible
    deployment, monitored = evaluations
    assert "monitor_fidelity" not in deployment.metrics and "monitor_fidelity" not in deployment.counts
    # the monitor's rates have their counts even when no verdict parsed (then n = 0, no rate)
    assert "monitor_fidelity" in monitored.counts and "constraint_violation" in monitored.metrics
    checkpoints = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [c.policy_version for c in checkpoints] == [0, 1, 2, 3]
    assert checkpoints[-1].next_round_id == 12
    for checkpoint in checkpoints:
        assert (minmax_run / checkpoint.path).is_dir()


def _base_weights(game: Game) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in game.table.policy.model.named_parameters() if "lora_" not in name}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before)


def test_each_update_changes_only_its_own_adapter(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path)
    table = set_table(config, ModelPool(cache_dir=tmp_path / "cache"))
    assert table.monitor is not None
    run_dir = tmp_path / "run"
    log = RunLog(run_dir, RunWriter.create(run_dir, "adapters"), open_trackers([], run_dir, "adapters"))
    game = Game(config, table, load_dataset(config.data), log, run_dir)
    try:
        base = _base_weights(game)
        policy, monitor = table.policy.adapter_state(), table.monitor.adapter_state()

        first, last = game.play_window(0)
        game.update_monitor(first, last)
        assert _changed(monitor, table.monitor.adapter_state())
        assert not _changed(policy, table.policy.adapter_state())
        assert not _changed(base, _base_weights(game))

        monitor = table.monitor.adapter_state()
        second_first, second_last = game.play_window(1)
        game.update_policy(first, second_last)
        assert _changed(policy, table.policy.adapter_state())
        assert not _changed(monitor, table.monitor.adapter_state())
        assert not _changed(base, _base_weights(game))
    finally:
        log.close()


def test_rlhf_mode_has_no_monitor_and_lines_up_with_minmax(minmax_run: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path, mode="rlhf")
    start_run(config, tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))
    events = payloads(tmp_path / "run")
    assert not any(isinstance(e, (MonitorUpdated, LambdaUpdated)) for e in events)
    train = [e for e in events if isinstance(e, RoundPlayed) and e.phase == "train"]
    assert all(r.monitor_output is None and r.fidelity_penalty is None for r in train)
    assert len([e for e in events if isinstance(e, PolicyUpdated)]) == 3
    minmax_train = [e for e in payloads(minmax_run) if isinstance(e, RoundPlayed) and e.phase == "train"]
    # row for row: the same states in the same order under the same round ids
    assert [(r.round_id, r.state_id, r.window) for r in train] == [
        (r.round_id, r.state_id, r.window) for r in minmax_train
    ]
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.monitor_updates == 0 and finished.policy_updates == 3


def test_a_failure_mid_run_is_logged_then_raised(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoint directory must go")
    with pytest.raises(UserError, match="cannot write the checkpoint: Not a directory; fix the path"):
        start_run(config, run_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))
    events = payloads(run_dir)
    assert type(events[-1]).__name__ == "RunFailed"
    assert sum(isinstance(e, PolicyUpdated) for e in events) == 0  # it failed saving checkpoint 0


def test_schedule_cycles_states_per_epoch_and_keeps_sample_groups_together() -> None:
    from engine.data import State
    from engine.game import Schedule

    states = [State(f"s{i}", "story", "q", ("a", "b"), 0) for i in range(3)]
    schedule = Schedule(train=states, num_epochs=2, samples_per_state=2, window_size=4, monitor_updates_per_policy=2, seed=1)
    assert schedule.total_rounds == 12 and schedule.n_windows == 3
    assert [schedule.policy_updates_after(w) for w in range(3)] == [False, True, True]  # the last window too
    # the windows one policy plays unchanged: a short final period after the last update
    assert [list(schedule.policy_period(w)) for w in range(3)] == [[0, 1], [0, 1], [2]]
    played = [schedule.state_at(position) for position in range(12)]
    for epoch in range(2):
        in_epoch = played[6 * epoch: 6 * epoch + 6]
        assert sorted(state.state_id for state, _ in in_epoch) == ["s0", "s0", "s1", "s1", "s2", "s2"]
        # the n samples of a state are adjacent, sample indices 0..n-1
        assert all(in_epoch[i][0] == in_epoch[i + 1][0] and (in_epoch[i][1], in_epoch[i + 1][1]) == (0, 1)
                   for i in range(0, 6, 2))
    assert list(schedule.window_positions(2)) == [8, 9, 10, 11]
    # a pure function of the config: a resumed run sees the same order
    again = Schedule(train=states, num_epochs=2, samples_per_state=2, window_size=4, monitor_updates_per_policy=2, seed=1)
    assert [again.state_at(p) for p in range(12)] == played


def test_window_metrics_agree_with_the_sql_metrics_view(minmax_run: Path) -> None:
    from engine.metrics import window_metrics
    from engine.outcomes import game_views
    from storage import RunsQuery

    train = [e for e in payloads(minmax_run) if isinstance(e, RoundPlayed) and e.phase == "train"]
    query = RunsQuery(minmax_run, extra_views=game_views())
    try:
        rows = query.arrow('SELECT * FROM metrics ORDER BY "window"').to_pylist()
    finally:
        query.close()
    assert [row["window"] for row in rows] == list(range(6))
    for row in rows:
        expected = window_metrics([r for r in train if r.window == row["window"]], delta=-0.2)
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, abs=1e-12) if value is not None else row[name] is None, name


def test_eval_at_start_evaluates_the_untrained_adapters_first_and_leaves_training_alone(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    runs = {}
    for at_start in (False, True):
        config = tiny_config(tiny_lm_dir, tmp_path, mode="rlhf", training={"eval_at_start": at_start})
        start_run(config, tmp_path / f"run-{at_start}", pool=ModelPool(cache_dir=tmp_path / "cache"))
        runs[at_start] = payloads(tmp_path / f"run-{at_start}")
    with_start = runs[True]
    evaluations = [e for e in with_start if isinstance(e, EvaluationCompleted)]
    first_train = next(i for i, e in enumerate(with_start) if isinstance(e, RoundPlayed) and e.phase == "train")
    first_eval = next(i for i, e in enumerate(with_start) if isinstance(e, EvaluationCompleted))
    assert first_eval < first_train and evaluations[0].policy_version == 0
    assert len(evaluations) == 1 + sum(isinstance(e, EvaluationCompleted) for e in runs[False])
    # The baseline evaluation draws from its own seeds: training plays and learns exactly as without it.
    def training(events: list) -> list:
        return [(e.round_id, e.policy_output, e.p_accept) for e in events if isinstance(e, RoundPlayed) and e.phase == "train"]
    assert training(with_start) == training(runs[False])


def test_the_policy_draws_a_whole_policy_period_at_once(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k = 2 windows of 2 rounds: one generation of 4 answers per policy period, each window
    playing its slice; in chunks of 2 rows each window is drawn on its own. With k = 1 the
    two settings are the same draw."""
    from engine.game import derived_seed
    from players import Player

    calls: list[tuple[str, int, int | None, list]] = []
    generate = Player.generate

    def recording(self: Player, prompts: list[str], sample: bool = True, seed: int | None = None) -> list:
        generations = generate(self, prompts, sample=sample, seed=seed)
        calls.append((self.role, len(prompts), seed, generations))
        return generations

    monkeypatch.setattr(Player, "generate", recording)

    def train_draws(config: RunConfig, run_dir: Path) -> tuple[list, list[RoundPlayed]]:
        calls.clear()
        start_run(config, run_dir, pool=ModelPool(cache_dir=tmp_path / "cache"))
        rounds = [e for e in payloads(run_dir) if isinstance(e, RoundPlayed) and e.phase == "train"]
        return [call for call in calls if call[0] == "policy"], rounds

    no_eval = {"eval_every": 0}
    period, period_rounds = train_draws(tiny_config(tiny_lm_dir, tmp_path, training=no_eval), tmp_path / "period")
    policy_draws = period
    # 12 rounds in 6 windows of 2: 3 periods of 2 windows, each drawn in one generation of 4
    assert [rows for _, rows, _, _ in policy_draws] == [4, 4, 4]
    assert [seed for _, _, seed, _ in policy_draws] == [derived_seed(3, "window", start) for start in (0, 4, 8)]
    drawn_tokens = [generation.token_ids for call in policy_draws for generation in call[3]]
    assert [list(r.policy_token_ids) for r in period_rounds] == drawn_tokens
    # each round carries its share of its period's generation time
    assert all(r.timings["policy"] > 0 for r in period_rounds)

    # in chunks of B rows: the per-window draw, each window's answers from its own seed
    by_window, window_rounds = train_draws(
        tiny_config(tiny_lm_dir, tmp_path, training={**no_eval, "policy_generation_rows": 2}), tmp_path / "window"
    )
    assert [rows for _, rows, _, _ in by_window] == [2] * 6
    assert [seed for _, _, seed, _ in by_window] == [derived_seed(3, "window", start) for start in range(0, 12, 2)]
    assert [list(r.policy_token_ids) for r in window_rounds] == [g.token_ids for call in by_window for g in call[3]]
    assert [(r.state_id, r.window) for r in window_rounds] == [(r.state_id, r.window) for r in period_rounds]

    # chunks that cross a window boundary: each seeded by its first round's position
    chunked, _ = train_draws(
        tiny_config(tiny_lm_dir, tmp_path, training={**no_eval, "policy_generation_rows": 3}), tmp_path / "chunks-3"
    )
    assert [rows for _, rows, _, _ in chunked] == [3, 1] * 3
    assert [seed for _, _, seed, _ in chunked] == [derived_seed(3, "window", start) for start in (0, 3, 4, 7, 8, 11)]

    # k = 1: a period is a window, so both settings draw the same answers from the same seeds
    one = {**no_eval, "monitor_updates_per_policy": 1}
    _, one_period = train_draws(tiny_config(tiny_lm_dir, tmp_path, training=one), tmp_path / "one-period")
    _, one_window = train_draws(
        tiny_config(tiny_lm_dir, tmp_path, training={**one, "policy_generation_rows": 2}), tmp_path / "one-window"
    )
    assert [list(r.policy_token_ids) for r in one_period] == [list(r.policy_token_ids) for r in one_window]
    assert [list(r.policy_logprobs) for r in one_period] == [list(r.policy_logprobs) for r in one_window]

"""End to end on the real embedded SmolLM2-135M-Instruct: play, learn, checkpoint, resume, query.

Slow (loads and runs the real model on the CPU): `pytest -m slow tests/test_e2e_smollm2.py`.
The converted model is cached in the usual minmax-engine cache ($MINMAX_ENGINE_CACHE or
~/.cache/minmax-engine), so only the first run pays for the GGUF conversion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigOverrides, load_config
from engine.game import open_run, resume_run
from players import ModelPool
from storage import RunReader, RunsQuery
from storage.events import CheckpointSaved, MonitorUpdated, PolicyUpdated, RoundPlayed, RunFinished, RunResumed
from tui import cli

pytestmark = pytest.mark.slow

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.toml"


def test_smollm2_plays_learns_checkpoints_resumes_and_answers_sql(tmp_path: Path) -> None:
    config, _ = load_config(TINY, ConfigOverrides(run_dir=str(tmp_path)))
    # the embedded default, shrunk: 2-round windows, k = 2, short generations, 8 states
    config = config.model_copy(
        update={
            "policy": config.policy.model_copy(update={"max_new_tokens": 12}),
            "monitor": config.monitor.model_copy(update={"max_new_tokens": 12}),
            "data": config.data.model_copy(update={"max_states": 8}),  # 6 train states
            "training": config.training.model_copy(
                update={"window_size": 2, "monitor_updates_per_policy": 2, "num_epochs": 1,
                        "minibatch_size": 2, "checkpoint_every": 1, "eval_every": 0}
            ),
        }
    )
    run_dir = tmp_path / "smollm2"

    # A first process plays two windows, learns, checkpoints, starts a third window, and dies.
    game = open_run(config, run_dir, pool=ModelPool())
    first, first_last = game.play_window(0)
    game.update_monitor(first, first_last)
    second_first, second_last = game.play_window(1)
    game.update_monitor(second_first, second_last)
    game.update_policy(first, second_last)
    game.save_checkpoint()
    game.play_window(2)  # logged, never trained on: superseded by the resume
    game.log.close()

    finished = resume_run(run_dir, pool=ModelPool())
    assert (finished.rounds, finished.policy_updates, finished.monitor_updates) == (6, 2, 3)

    events = RunReader(run_dir).events(include_superseded=True)  # the log as written
    assert sum(isinstance(item.event, RunResumed) for item in events) == 1
    assert sum(isinstance(item.event, CheckpointSaved) for item in events) == 2
    assert sum(isinstance(item.event, MonitorUpdated) for item in events) >= 3
    assert sum(isinstance(item.event, PolicyUpdated) for item in events) == 2
    assert isinstance(events[-1].event, RunFinished)
    rounds = [item.event for item in events if isinstance(item.event, RoundPlayed)]
    assert all(r.policy_output and r.monitor_output is not None for r in rounds)
    assert len({r.round_id for r in rounds}) == len(rounds) == 8  # 6 trained + 2 superseded, ids unique

    query = RunsQuery(run_dir)
    try:
        # The views count what the run trained on (the 2 superseded rounds are left out); the
        # raw `all_events` view keeps every round ever logged.
        counted = query.arrow("select count(*) as n, avg(p_accept) as p from rounds").to_pylist()[0]
        assert counted["n"] == 6 and 0.0 <= counted["p"] <= 1.0
        logged = query.arrow("select count(*) as n from all_events where event_type = 'RoundPlayed'").to_pylist()[0]
        assert logged["n"] == 8
        roles = query.arrow("select role, count(*) as n from updates group by role order by role").to_pylist()
        assert {row["role"] for row in roles} == {"monitor", "policy"}
    finally:
        query.close()
    assert cli.main(["verify", str(run_dir)]) == 0
    assert cli.main(["replay", str(run_dir)]) == 0

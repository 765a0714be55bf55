"""The original MinMax project's config files, verbatim: they load, every key is honoured,
and a game starts from them.

tests/fixtures/original-minmax/minmax_config.json is that project's `config/minmax_config.json`
as issue #17 quotes it; rlhf_config.json is the same layout without `monitor_model` (its RLHF
baseline). They name 7B/8B hub checkpoints that tests cannot load offline, so the game tests
keep every translated setting except the model names (and the schedule's size), which are
replaced by the tiny random model of tests/conftest.py.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from engine.config import config_from_dict, default_role_notices, load_config
from engine.game import start_run
from players import ModelPool
from engine.trackers import open_trackers
from storage import RunReader, RunWriter
from storage.events import RoundPlayed, RunFinished, RunStarted
from tests.test_trackers_wandb import read_wandb_records
from tui.cli import main as cli_main

ORIGINAL = Path(__file__).resolve().parent / "fixtures" / "original-minmax"


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def test_the_original_minmax_config_loads_with_every_key_honoured() -> None:
    config, warnings = load_config(ORIGINAL / "minmax_config.json")
    assert warnings == []
    assert config.mode == "minmax"
    assert (config.policy.model, config.policy.lora_r, config.policy.temperature, config.policy.max_new_tokens) == (
        "mistralai/Mistral-7B-Instruct-v0.3", 16, 1.0, 200)
    assert (config.monitor.model, config.monitor.lora_r) == ("meta-llama/Meta-Llama-3.1-8B-Instruct", 16)
    t, lag = config.training, config.lagrangian
    assert (t.policy_learning_rate, t.monitor_learning_rate, t.monitor_updates_per_policy) == (1e-6, 4e-6, 5)
    assert (t.window_size, t.num_epochs) == (16, 10)
    assert (lag.lambda_init, lag.delta, lag.step_size) == (10.0, -0.2, 0.25)
    assert config.logging.backends == ["wandb", "tensorboard", "console"]
    assert config.logging.wandb.project == "minmax_rlhf"
    # The JSON names no reward model or judge: the defaults are said, not silent.
    assert default_role_notices(config) == [
        "reward: embedded SmolLM2-135M-Instruct (not set in config)",
        "judge: embedded SmolLM2-135M-Instruct (not set in config)",
    ]


def test_its_rlhf_variant_loads_in_rlhf_mode() -> None:
    config, warnings = load_config(ORIGINAL / "rlhf_config.json")
    assert config.mode == "rlhf"
    assert config.policy.model == "mistralai/Mistral-7B-Instruct-v0.3"
    assert config.logging.wandb.project == "minmax_rlhf"
    assert default_role_notices(config) == [
        "reward: embedded SmolLM2-135M-Instruct (not set in config)",
        "judge: embedded SmolLM2-135M-Instruct (not set in config)",
    ]


def test_reward_and_judge_sections_and_the_whole_wandb_config_are_taken(tmp_path: Path) -> None:
    raw = json.loads((ORIGINAL / "minmax_config.json").read_text())
    raw["reward_model"] = {"model_name": "Skywork/Skywork-Reward-V2-Llama-3.1-8B"}
    raw["judge_model"] = {"model_name": "mistralai/Mistral-7B-Instruct-v0.3", "temperature": 0.0}
    raw["logging"]["wandb_config"] = {"project": "p", "entity": "team", "name": "first", "group": "g",
                                      "tags": ["a", "b"], "mode": "offline"}
    path = tmp_path / "full.json"
    path.write_text(json.dumps(raw))
    config, warnings = load_config(path)
    assert (config.reward.model, config.judge.model) == (
        "Skywork/Skywork-Reward-V2-Llama-3.1-8B", "mistralai/Mistral-7B-Instruct-v0.3")
    assert warnings == [f"{path}: judge_model.temperature is ignored: the judge is frozen and scored in one forward pass"]
    assert config.logging.wandb.model_dump() == {"project": "p", "entity": "team", "name": "first", "group": "g",
                                                 "tags": ["a", "b"], "mode": "offline"}
    assert default_role_notices(config) == []


def test_every_wandb_config_key_reaches_the_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")  # the config's own mode decides
    wandb_settings = {"project": "p", "entity": "team", "name": "first", "group": "g", "tags": ["a", "b"],
                      "mode": "offline"}
    run_dir = tmp_path / "run"
    with RunWriter.create(run_dir, "run") as writer:
        started = writer.append(RunStarted(
            mode="minmax", config={"logging": {"wandb": wandb_settings}}, seeds={"seed": 0}, package_versions={},
            data_fingerprint="f" * 64, dataset_name="fixture", n_train_states=1, n_eval_states=0,
        ))
    trackers = open_trackers(["wandb"], run_dir, "run", stdout=io.StringIO())
    trackers.publish(started)
    trackers.close()
    (log_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    (run,) = [r.run for r in read_wandb_records(log_file) if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.entity, run.display_name, run.run_group) == ("p", "team", "first", "g")
    assert list(run.tags) == ["minmax", "a", "b"]


def test_a_misspelt_wandb_key_is_refused_in_one_line(tmp_path: Path) -> None:
    raw = json.loads((ORIGINAL / "minmax_config.json").read_text())
    raw["logging"]["wandb_config"] = {"projekt": "x"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    from storage.errors import UserError

    with pytest.raises(UserError, match=r"bad\.json: logging\.wandb\.projekt: unknown key"):
        load_config(path)


def _runnable(path: Path, tiny_lm_dir: Path, run_dir: Path) -> dict:
    """The translated config with only the model names and the schedule's size made tiny."""
    config, _ = load_config(path)
    raw = config.resolved()
    for role in ("policy", "monitor"):
        raw[role] |= {"model": str(tiny_lm_dir), "max_new_tokens": 6, "lora_r": 4}
    raw["reward"] |= {"model": str(tiny_lm_dir), "kind": "lm-yes-no"}
    raw["judge"] |= {"model": str(tiny_lm_dir)}
    raw["data"] |= {"dataset": "builtin", "max_states": 4, "eval_fraction": 0.5}
    raw["training"] |= {"window_size": 2, "num_epochs": 1, "minibatch_size": 2, "monitor_updates_per_policy": 1,
                        "samples_per_state": 1, "eval_every": 0}
    raw["run_dir"] = str(run_dir)
    return raw


@pytest.mark.parametrize(("name", "mode"), [("minmax_config.json", "minmax"), ("rlhf_config.json", "rlhf")])
def test_a_game_starts_from_the_original_config(name: str, mode: str, tiny_lm_dir: Path, tmp_path: Path) -> None:
    raw = _runnable(ORIGINAL / name, tiny_lm_dir, tmp_path)
    config = config_from_dict(raw, source=name)
    assert config.logging.backends == ["wandb", "tensorboard", "console"]  # all three, as the file says
    with redirect_stdout(io.StringIO()):
        finished = start_run(config, tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))
    assert isinstance(finished, RunFinished) and finished.rounds > 0
    events = [item.event for item in RunReader(tmp_path / "run").events()]
    started = events[0]
    assert isinstance(started, RunStarted) and started.mode == mode
    assert started.config["lagrangian"]["lambda_init"] == 10.0
    rounds = [e for e in events if isinstance(e, RoundPlayed)]
    assert all((e.monitor_output is None) == (mode == "rlhf") for e in rounds)
    # wandb_config.project reached W&B: the offline run's own record names it.
    (log_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    runs = [r.run for r in read_wandb_records(log_file) if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].project == "minmax_rlhf"
    assert list(runs[0].tags) == [mode]
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_play_announces_the_roles_the_config_leaves_out(tmp_path: Path) -> None:
    # `play` prints the notices right after loading the config; the missing dataset (or the
    # hub model missing offline) then stops it with exit 2 before a round is played.
    raw = json.loads((ORIGINAL / "rlhf_config.json").read_text())
    path = tmp_path / "rlhf_config.json"
    path.write_text(json.dumps(raw))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = cli_main(["play", "--config", str(path), "--dataset", str(tmp_path / "missing.jsonl"),
                         "--run-dir", str(tmp_path / "runs")])
    assert code == 2 and err.getvalue().count("\n") == 1  # the error alone, in one line
    assert "minmax-engine play: reward: embedded SmolLM2-135M-Instruct (not set in config)" in out.getvalue()
    assert "minmax-engine play: judge: embedded SmolLM2-135M-Instruct (not set in config)" in out.getvalue()

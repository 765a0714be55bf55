"""Config loading: every shipped config, the legacy JSON layout, overrides, and each bad case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.config import ConfigOverrides, RunConfig, config_from_dict, load_config
from engine.devices import resolve_placements
from storage.errors import UserError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["tiny.toml", "minmax.toml", "rlhf.toml", "legacy.json"])
def test_every_shipped_config_loads_without_warnings(name: str) -> None:
    config, warnings = load_config(CONFIGS / name)
    assert isinstance(config, RunConfig)
    assert [w for w in warnings if "ignored" not in w] == []


def test_seed_scale_configs_match_issue_3() -> None:
    minmax, _ = load_config(CONFIGS / "minmax.toml")
    rlhf, _ = load_config(CONFIGS / "rlhf.toml")
    assert minmax.mode == "minmax" and rlhf.mode == "rlhf"
    for config in (minmax, rlhf):
        assert config.policy.model == "mistralai/Mistral-7B-Instruct-v0.3"
        assert config.monitor.model == "meta-llama/Llama-3.1-8B-Instruct"
        assert config.reward.model == "Skywork/Skywork-Reward-V2-Llama-3.1-8B"
        assert config.judge.model == "mistralai/Mistral-7B-Instruct-v0.3"
        assert config.policy.lora_r == 16 and config.policy.max_new_tokens == 200
        t, lag = config.training, config.lagrangian
        assert (t.policy_learning_rate, t.monitor_learning_rate) == (1e-6, 4e-6)
        assert (t.monitor_updates_per_policy, t.window_size, t.num_epochs) == (5, 16, 10)
        assert (lag.lambda_init, lag.delta, lag.step_size) == (10.0, -0.2, 0.25)
    # the two differ only in mode: comparable row for row
    assert minmax.resolved() | {"mode": "rlhf"} == rlhf.resolved()


def test_legacy_json_maps_onto_our_tables(tmp_path: Path) -> None:
    legacy = {
        "policy_model": {"model_name": "org/policy", "use_lora": True, "lora_r": 4, "temperature": 0.7,
                         "max_new_tokens": 64},
        "monitor_model": {"model_name": "org/monitor", "lora_r": 2},
        "reward_model": {"model_name": "org/rm", "use_lora": False},
        "judge_model": {"model_name": "org/judge", "temperature": 0.0},
        "training": {"policy_learning_rate": 2e-6, "monitor_learning_rate": 8e-6, "monitor_updates_per_policy": 4,
                     "constraint_penalty_lambda": 3.0, "constraint_threshold": -0.1, "dual_ascent_step_size": 0.5,
                     "batch_size": 12, "num_epochs": 2},
        "logging": {"backends": ["console", "tensorboard"]},
    }
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(legacy))
    config, warnings = load_config(path)
    assert (config.policy.model, config.policy.lora_r, config.policy.temperature, config.policy.max_new_tokens) == (
        "org/policy", 4, 0.7, 64)
    assert (config.monitor.model, config.monitor.lora_r) == ("org/monitor", 2)
    assert (config.reward.model, config.judge.model) == ("org/rm", "org/judge")
    t, lag = config.training, config.lagrangian
    assert (t.policy_learning_rate, t.monitor_learning_rate, t.monitor_updates_per_policy) == (2e-6, 8e-6, 4)
    assert (t.window_size, t.num_epochs) == (12, 2)
    assert (lag.lambda_init, lag.delta, lag.step_size) == (3.0, -0.1, 0.5)
    assert config.logging.backends == ["console", "tensorboard"]
    assert any("reward_model.use_lora is ignored" in w for w in warnings)
    assert any("judge_model.temperature is ignored" in w for w in warnings)


@pytest.mark.parametrize(
    ("legacy", "message"),
    [
        ({"policy_model": {"model_name": "x", "use_lora": False}}, "policy_model.use_lora: minmax-engine trains LoRA"),
        ({"policy_model": {"model_nam": "x"}}, "policy_model.model_nam: unknown key"),
        ({"policy_model": {}, "training": {"learning_rate": 1}}, "training.learning_rate: unknown key"),
        ({"policy_model": {}, "extra": {}}, "extra: unknown key in the legacy JSON layout"),
        ({"policy_model": {}, "training": {"monitor_updates_per_policy": 0}}, "training.monitor_updates_per_policy: must be >= 1"),
    ],
)
def test_legacy_json_errors(tmp_path: Path, legacy: dict, message: str) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(legacy))
    with pytest.raises(UserError, match="old.json: " + message.replace(".", r"\.")):
        load_config(path)


def _write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[training]\nmonitor_updates_per_policy = 0\n",
         "training.monitor_updates_per_policy: must be >= 1 (got 0); set it to 5 (the TTUR default)"),
        ("[policy]\ntemperature = 0\n", "policy.temperature: must be > 0.0 (got 0)"),
        ("[game]\nalpha = 1.5\n", "game.alpha: must be <= 1.0 (got 1.5)"),
        ("[game]\nalpha = -0.1\n", "game.alpha: must be >= 0.0"),
        ("[training]\nwindow_size = 0\n", "training.window_size: must be >= 1 (got 0); set it to 16 (the default)"),
        ("[training]\nwindow_sise = 4\n", "training.window_sise: unknown key; remove it"),
        ("colour = 1\n", "colour: unknown key"),
        ('[training]\nnum_epochs = "two"\n', "training.num_epochs: must be an integer (got 'two')"),
        ('mode = "debate"\n', "mode: must be 'minmax' or 'rlhf'"),
        ('[devices]\npolicy = "gpu"\n', 'devices: policy = "gpu" is not a device'),
        ("[training]\nwindow_size = 5\nsamples_per_state = 2\n", "training: window_size (5) must be a multiple"),
        ('[training]\nadvantage = "group"\n', 'training: advantage = "group" needs samples_per_state >= 2'),
        ("[lagrangian]\nlambda_init = 20.0\nlambda_max = 10.0\n", "lagrangian: lambda_init (20.0) exceeds lambda_max"),
        ('[reward]\nnormalization = "none"\n[game]\nreward_norm = "tanh"\n', "disagree; set only one"),
        ("[training\n", "x.toml: not valid TOML"),
        # strict types (issue #14 item 8): a value of the wrong kind is refused, never coerced
        ("[training]\nwindow_size = true\n", "training.window_size: must be an integer (got True)"),
        ('[training]\nwindow_size = "4"\n', "training.window_size: must be an integer (got '4')"),
        ("[lagrangian]\nstep_size = inf\n", "lagrangian.step_size: must be a finite number (got inf)"),
        ("[lagrangian]\ndelta = nan\n", "lagrangian.delta: must be a finite number (got nan)"),
        ('[game]\nalpha = "0.5"\n', "game.alpha: must be a number (got '0.5')"),
        ("[game]\nw_judge = false\n", "game.w_judge: must be a number (got False)"),
        ("[judge]\nsees_story = 1\n", "judge.sees_story: must be true or false (got 1)"),
        ("[policy]\nmodel = 7\n", "policy.model: must be a string (got 7)"),
        ("[data]\nmax_states = 2.0\n", "data.max_states: must be an integer (got 2.0)"),
        ("[policy]\ntop_p = 0.9\n", "policy: top_p = 0.9 would draw tokens from the nucleus"),
        ("[monitor]\ntop_p = 0.5\n", "monitor: top_p = 0.5 would draw tokens from the nucleus"),
        ("[training]\neval_samples_per_state = -1\n", "training.eval_samples_per_state: must be >= 0"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(UserError) as error:
        load_config(_write_toml(tmp_path, toml))
    text = str(error.value)
    assert message in text
    assert text.startswith(str(tmp_path / "x.toml"))
    assert "\n" not in text


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "absent.toml")
    other = tmp_path / "x.yaml"
    other.write_text("a: 1")
    with pytest.raises(UserError, match="use a .toml or .json"):
        load_config(other)


def test_delta_below_the_reachable_floor_warns_but_loads(tmp_path: Path) -> None:
    config, warnings = load_config(_write_toml(tmp_path, "[game]\nalpha = 0.7\n[lagrangian]\ndelta = -0.5\n"))
    assert config.lagrangian.delta == -0.5
    assert len(warnings) == 1 and "below the lowest reachable f" in warnings[0] and "-0.3" in warnings[0]
    _, warnings = load_config(_write_toml(tmp_path, "[lagrangian]\ndelta = -0.3\n"))
    assert warnings == []


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = CONFIGS / "tiny.toml"
    config, _ = load_config(
        path, ConfigOverrides(num_epochs=2, dataset="other.json", mode="rlhf", run_dir=str(tmp_path), seed=7)
    )
    assert (config.training.num_epochs, config.data.dataset, config.mode, config.run_dir, config.seed) == (
        2, "other.json", "rlhf", str(tmp_path), 7)
    with pytest.raises(UserError, match="training.num_epochs: must be >= 1"):
        load_config(path, ConfigOverrides(num_epochs=0))


def test_resolved_config_round_trips_with_every_default() -> None:
    config = config_from_dict({}, source="test")
    resolved = config.resolved()
    assert resolved["training"]["monitor_updates_per_policy"] == 5
    assert resolved["game"]["alpha"] == 0.7
    assert resolved["reward"]["normalization"] == resolved["game"]["reward_norm"] == "tanh"
    assert config_from_dict(resolved, source="again") == config
    json.dumps(resolved)  # RunStarted.config must be JSON


def test_config_is_frozen() -> None:
    config = config_from_dict({}, source="test")
    with pytest.raises(Exception, match="frozen"):
        config.seed = 3  # type: ignore[misc]


def test_auto_placement_shares_devices() -> None:
    config = config_from_dict({}, source="test")
    same = {"policy": "m", "monitor": "m", "reward": "m", "judge": "m"}
    on_cpu = resolve_placements(config.devices, same, gpu_count=0)
    assert {p.device.type for p in on_cpu.values()} == {"cpu"}
    assert {p.dtype for p in on_cpu.values()} == {torch.float32}
    distinct = {"policy": "a", "monitor": "b", "reward": "c", "judge": "a"}
    on_two = resolve_placements(config.devices, distinct, gpu_count=2)
    assert str(on_two["policy"].device) == "cuda:0" and str(on_two["monitor"].device) == "cuda:1"
    assert str(on_two["reward"].device) == "cuda:0"  # fewer GPUs than models: shared
    assert on_two["judge"].device == on_two["policy"].device  # same base, same device
    assert on_two["policy"].dtype == torch.bfloat16
    explicit = config_from_dict({"devices": {"reward": "cpu", "dtype": "float32"}}, source="t").devices
    placed = resolve_placements(explicit, distinct, gpu_count=4)
    assert placed["reward"].device.type == "cpu" and placed["policy"].dtype == torch.float32


def test_integers_still_fill_float_settings(tmp_path: Path) -> None:
    config, _ = load_config(_write_toml(tmp_path, "[game]\nw_reward = 2\n[policy]\nlora_alpha = 16\n"))
    assert config.game.w_reward == 2.0 and isinstance(config.game.w_reward, float)
    assert config.policy.lora_alpha == 16.0


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('# caf\u00e9\nseed = 1\n'.encode("latin-1"))
    with pytest.raises(UserError) as error:
        load_config(path)
    text = str(error.value)
    assert text.startswith(f"{path}: not UTF-8") and "save it as UTF-8" in text and "\n" not in text


def test_the_synthetic_runs_record_a_valid_config() -> None:
    # Readers validate RunStarted.config again (engine.config.recorded_config), so the
    # synthetic runs the storage, report and tracker tests use must record a config that loads.
    from storage.synthetic import synthetic_config

    for mode in ("minmax", "rlhf"):
        assert config_from_dict(synthetic_config(mode, 16, 5, 0), source="synthetic").mode == mode

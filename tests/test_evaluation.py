"""The evaluation protocol (GAME.md §4): deployment (judge reads O only) and monitored (O and O′).

The judge is a real tiny model of its own, so everything its forward pass reads can be
captured and decoded; the monitor's critiques carry a marker (its response prefix), so
"the critique reached the judge" is a substring test on what the judge really read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.game import open_run
from players import ModelPool
from players.packing import prefill_with_tails
from referees import yes_no
from storage import RunReader
from storage.events import EvaluationCompleted, RoundPlayed
from tests.test_game import tiny_config
from tests.tiny_models import build_tiny_lm

CRITIQUE_MARKER = "Critique-7f3a:"


@pytest.fixture(scope="module")
def judge_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A judge model directory of its own, so the judge's forward is nobody else's."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-judge"))


def evaluated_run(tiny_lm_dir: Path, judge_model_dir: Path, run_dir: Path, mode: str) -> tuple[list[RoundPlayed], list[EvaluationCompleted], list[str]]:
    """One evaluation of fresh adapters; returns its rounds, its summaries and every text the
    judge's model was run on (decoded from the input ids its forward received)."""
    config = tiny_config(
        tiny_lm_dir, run_dir.parent, mode=mode,
        monitor={"response_prefix": CRITIQUE_MARKER},
        judge={"model": str(judge_model_dir)},
        training={"eval_samples_per_state": 2},
    )
    game = open_run(config, run_dir, pool=ModelPool(cache_dir=run_dir.parent / "cache"))
    judge_base = game.table.judge.reader.base
    tokenizer = judge_base.tokenizer
    read_by_judge: list[str] = []

    inside_shared_prefill = False

    def capture(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if inside_shared_prefill:
            return  # recorded whole below
        input_ids, attention_mask = kwargs["input_ids"], kwargs["attention_mask"]
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            real = [token for token, keep in zip(ids, mask) if keep]
            read_by_judge.append(tokenizer.decode(real, skip_special_tokens=False))

    def shared_prefill(model: Any, pad_id: int, prompt_ids: Any, device: Any) -> Any:
        # Prompts sharing a prefix run as the prefix once, then each tail on its cache
        # (players/packing.py; tests/test_referees_scoring.py checks the scores equal whole
        # forwards): what the judge's model read is then each whole prompt.
        nonlocal inside_shared_prefill
        inside_shared_prefill = True
        try:
            result = prefill_with_tails(model, pad_id, prompt_ids, device)
        finally:
            inside_shared_prefill = False
        if result is not None and model is judge_base.model:
            read_by_judge.extend(tokenizer.decode(list(ids), skip_special_tokens=False) for ids in prompt_ids)
        return result

    handle = judge_base.model.register_forward_pre_hook(capture, with_kwargs=True)
    yes_no.prefill_with_tails = shared_prefill
    try:
        game.evaluate(checkpoint=None)
    finally:
        yes_no.prefill_with_tails = prefill_with_tails
        handle.remove()
        game.log.close()
    events = [item.event for item in RunReader(run_dir).events()]
    rounds = [event for event in events if isinstance(event, RoundPlayed)]
    return rounds, [event for event in events if isinstance(event, EvaluationCompleted)], read_by_judge


def test_the_monitors_critique_never_reaches_the_judge_in_deployment_evaluation(
    tiny_lm_dir: Path, judge_model_dir: Path, tmp_path: Path
) -> None:
    rounds, evaluations, read_by_judge = evaluated_run(tiny_lm_dir, judge_model_dir, tmp_path / "run", "minmax")
    deployment = [r for r in rounds if r.protocol == "deployment"]
    monitored = [r for r in rounds if r.protocol == "monitored"]
    assert [e.protocol for e in evaluations] == ["deployment", "monitored"]
    assert len(deployment) == len(monitored) == 2 * 3  # 2 eval states × (greedy + 2 samples)

    # What the log says the judge read is exactly what the judge's model was run on.
    assert Counter(read_by_judge) == Counter(r.judge_prompt for r in rounds)
    # The critiques exist and carry the marker, and the monitored judge did read them ...
    assert all(r.monitor_output is not None and r.monitor_output.startswith(CRITIQUE_MARKER) for r in monitored)
    assert all(r.monitor_output in r.judge_prompt for r in monitored)
    assert sum(CRITIQUE_MARKER in text for text in read_by_judge) == len(monitored)
    # ... while in deployment the judge read question, choices and O, and never O′.
    for round_ in deployment:
        assert CRITIQUE_MARKER not in round_.judge_prompt
        assert round_.policy_output in round_.judge_prompt and round_.question in round_.judge_prompt
        assert round_.monitor_output is None and round_.monitor_says_correct is None and round_.fidelity_penalty is None

    # Both protocols judged the same answers; the deployment score is the judge's score of O alone.
    key = lambda r: (r.state_id, r.sample_index)  # noqa: E731
    by_answer = {key(r): r for r in monitored}
    assert {key(r) for r in deployment} == set(by_answer)
    for round_ in deployment:
        twin = by_answer[key(round_)]
        assert round_.policy_output == twin.policy_output and round_.truth == twin.truth
        assert twin.judge_prompt != round_.judge_prompt
        assert round_.judge_prompt.replace(f"A reviewer's critique of it:\n{twin.monitor_output}\n\n", "") == round_.judge_prompt
    assert any(r.p_accept != pytest.approx(by_answer[key(r)].p_accept, abs=1e-9) for r in deployment)


def test_rlhf_evaluates_deployment_only_with_the_same_judge_input(
    tiny_lm_dir: Path, judge_model_dir: Path, tmp_path: Path
) -> None:
    rounds, evaluations, read_by_judge = evaluated_run(tiny_lm_dir, judge_model_dir, tmp_path / "run", "rlhf")
    assert [e.protocol for e in evaluations] == ["deployment"]
    (evaluation,) = evaluations
    assert evaluation.samples_per_state == 3 and evaluation.n_rounds == len(rounds) == 6
    assert {r.protocol for r in rounds} == {"deployment"}
    assert Counter(read_by_judge) == Counter(r.judge_prompt for r in rounds)
    assert all("critique" not in r.judge_prompt for r in rounds)
    for name, (hits, eligible) in evaluation.counts.items():
        assert 0 <= hits <= eligible <= 6
        if eligible:
            assert evaluation.metrics[name] == pytest.approx(hits / eligible)


def test_evaluation_generates_all_greedy_answers_then_the_samples_in_batches_of_the_configured_size(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    # An evaluation batches across states, not one state's answers at a time: fewer generate
    # calls (benchmarks/bench_eval.py measures the gain).
    config = tiny_config(tiny_lm_dir, tmp_path, training={"eval_samples_per_state": 2, "eval_batch_size": 3})
    game = open_run(config, tmp_path / "run", pool=ModelPool(cache_dir=tmp_path / "cache"))
    try:
        states = list(game.dataset.eval)
        batches = list(game._eval_batches(states, answers_per_state=3))
    finally:
        game.log.close()
    assert len(states) == 2
    rows = [[(item.state.state_id, item.sample_index) for item in scheduled] for scheduled, _ in batches]
    assert [len(batch) for batch in rows] == [2, 3, 1]  # 2 greedy answers, then 4 samples, 3 at a time
    assert [settings.sample for _, settings in batches] == [False, True, True]
    assert all(index == 0 for _, index in rows[0]) and all(index > 0 for batch in rows[1:] for _, index in batch)
    flat = [pair for batch in rows for pair in batch]
    assert sorted(flat) == sorted((state.state_id, index) for state in states for index in range(3))
    ids = [item.round_id for scheduled, _ in batches for item in scheduled]
    assert ids == list(range(ids[0], ids[0] + 6))
    assert len({settings.seed for _, settings in batches}) == 3  # each batch samples from its own seed

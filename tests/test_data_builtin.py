"""The built-in dataset (engine/datasets/stories.json) that the default run plays on.

    PYTHONPATH=. .venv/bin/pytest -q tests/test_data_builtin.py
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from engine.data import BUILTIN_PATH, DataConfig, load_dataset


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return json.loads(BUILTIN_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def states():
    dataset = load_dataset(DataConfig())
    return dataset.train + dataset.eval


def test_builtin_loads_with_both_splits(states) -> None:
    dataset = load_dataset(DataConfig())
    assert dataset.name == "builtin"
    assert dataset.train and dataset.eval
    assert len(dataset.fingerprint) == 64


def test_builtin_has_at_least_64_unique_states(states, rows) -> None:
    assert len(states) == len(rows) >= 64
    assert len({state.state_id for state in states}) == len(states)


def test_builtin_answer_ids_are_balanced(rows) -> None:
    counts = Counter(row["correctAnswerId"] for row in rows)
    assert set(counts) == {0, 1}
    assert abs(counts[0] - counts[1]) <= len(rows) * 0.1


def test_builtin_has_no_duplicate_questions_or_stories(rows) -> None:
    assert len({row["question"].strip().lower() for row in rows}) == len(rows)
    assert len({row["paragraph"].strip() for row in rows}) == len(rows)


def test_builtin_stories_are_short_and_answers_distinct(states) -> None:
    for state in states:
        words = len(state.story.split())
        assert 60 <= words <= 130, f"{state.state_id}: {words} words"
        assert state.question.strip().endswith("?"), state.state_id
        assert len(state.choices) == 2 and all(choice.strip() for choice in state.choices)
        assert state.choices[0].lower() != state.choices[1].lower(), state.state_id


def test_builtin_file_uses_only_the_qa_simple_fields(rows) -> None:
    # Other QA-simple readers should be able to read the file too.
    for index, row in enumerate(rows):
        assert set(row) == {"paragraph", "question", "answers", "correctAnswerId"}, index

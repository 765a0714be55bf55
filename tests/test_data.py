"""engine.data: loaders for both formats, error messages, split, fingerprint, truncation.

    PYTHONPATH=. .venv/bin/pytest -q tests/test_data.py

Fixtures live in tests/fixtures/data/ (valid files) and tests/fixtures/data/malformed/.
Expected values are read from the fixture files themselves wherever possible, so a test
checks the loader's logic rather than a copy of its output.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pydantic
import pytest

from engine.data import (
    TRUNCATION_MARKER,
    DataConfig,
    State,
    _unit_hash,
    load_dataset,
    split_states,
    truncate_by_characters,
    truncate_by_tokens,
)
from storage.errors import UserError
from tests.tiny_models import build_tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"
QA_SIMPLE = FIXTURES / "qa_simple.json"
QUALITY = FIXTURES / "quality.jsonl"
MALFORMED = FIXTURES / "malformed"


def load(path: Path | str, **settings: object):
    return load_dataset(DataConfig(dataset=str(path), **settings))


def all_states(dataset) -> dict[str, State]:
    return {state.state_id: state for state in dataset.train + dataset.eval}


def quality_questions() -> dict[str, dict]:
    """The fixture's questions keyed by the id the loader should give them."""
    questions = {}
    for line in QUALITY.read_text().splitlines():
        article = json.loads(line)
        for position, question in enumerate(article["questions"], start=1):
            state_id = question.get("question_unique_id", f"{article['set_unique_id']}_{position}")
            questions[state_id] = question | {"article": article["article"]}
    return questions


def write_qa_simple(path: Path, count: int, start: int = 0) -> Path:
    rows = [
        {
            "paragraph": f"Story number {index} is about a garden with {index} roses.",
            "question": f"How many roses are in garden {index}?",
            "answers": [str(index), str(index + 1)],
            "correctAnswerId": 0,
        }
        for index in range(start, start + count)
    ]
    path.write_text(json.dumps(rows))
    return path


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


def test_config_defaults_reject_unknown_keys_and_are_frozen() -> None:
    config = DataConfig()
    assert (config.dataset, config.format, config.n_choices) == ("builtin", "auto", 2)
    assert config.eval_fraction == 0.2 and config.split_seed == 0
    assert config.max_story_tokens is None and config.max_states is None
    with pytest.raises(pydantic.ValidationError, match="n_choice"):
        DataConfig(n_choice=2)
    with pytest.raises(pydantic.ValidationError):
        DataConfig(n_choices=3)
    with pytest.raises(pydantic.ValidationError):
        DataConfig(eval_fraction=1.0)
    with pytest.raises(pydantic.ValidationError):
        config.dataset = "other.json"


def test_state_stores_choices_as_a_tuple_and_checks_the_index() -> None:
    state = State("s", "story", "question?", ["yes", "no"], 1)
    assert state.choices == ("yes", "no")
    with pytest.raises(ValueError, match="correct_index 2"):
        State("s", "story", "question?", ["yes", "no"], 2)


# ---------------------------------------------------------------------------------------
# QA-simple
# ---------------------------------------------------------------------------------------


def test_qa_simple_fixture_loads_every_row_with_index_ids() -> None:
    rows = json.loads(QA_SIMPLE.read_text())
    dataset = load(QA_SIMPLE)
    states = all_states(dataset)
    assert dataset.name == "qa_simple"
    assert len(states) == len(rows)
    for index, row in enumerate(rows):
        state = states[f"qa_simple-{index:04d}"]
        assert state.story == row["paragraph"]
        assert state.question == row["question"]
        assert state.choices == tuple(row["answers"])
        assert state.correct_index == row["correctAnswerId"]


def test_qa_simple_refuses_four_choices() -> None:
    with pytest.raises(UserError, match="set data.n_choices = 2"):
        load(QA_SIMPLE, n_choices=4)


# ---------------------------------------------------------------------------------------
# QuALITY
# ---------------------------------------------------------------------------------------


def test_quality_with_four_options_keeps_options_and_gold() -> None:
    questions = quality_questions()
    states = all_states(load(QUALITY, n_choices=4))
    assert set(states) == set(questions)
    for state_id, question in questions.items():
        state = states[state_id]
        assert state.choices == tuple(question["options"])
        assert state.correct_index == question["gold_label"] - 1
        assert state.story == question["article"]
        assert state.question == question["question"]


@pytest.mark.parametrize(
    ("state_id", "expected_distractor", "rule"),
    [
        ("a1_SETX_1", "Grain", "most votes (2 of 3)"),
        ("a1_SETX_2", "A new burner", "a 1-1 tie goes to the lower option number"),
        ("a1_SETX_3", "The board asked him to", "gold's 2 votes do not count; 1-1 tie -> lower"),
        ("b2_SETY_1", "As soon as they were ripe", "no validation: first non-gold option"),
        ("b2_SETY_2", "Picked apples", "a validator without a vote is skipped; tie -> lower"),
    ],
)
def test_quality_two_choice_conversion_keeps_gold_and_best_distractor(
    state_id: str, expected_distractor: str, rule: str
) -> None:
    question = quality_questions()[state_id]
    gold = question["options"][question["gold_label"] - 1]
    state = all_states(load(QUALITY, n_choices=2))[state_id]
    assert len(state.choices) == 2
    assert state.choices[state.correct_index] == gold, rule
    assert state.choices[1 - state.correct_index] == expected_distractor, rule


def test_two_choice_order_is_deterministic_and_shuffled(tmp_path: Path) -> None:
    # 200 questions whose gold is always option 1: the converted order must vary.
    lines = [
        json.dumps({
            "set_unique_id": f"article{index}",
            "article": f"Article {index}.",
            "questions": [{"question": "Which?", "options": ["gold", "b", "c", "d"],
                           "gold_label": 1}],
        })
        for index in range(200)
    ]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")

    def gold_positions(seed: int) -> dict[str, int]:
        states = all_states(load(path, split_seed=seed))
        return {state_id: state.correct_index for state_id, state in states.items()}

    first = gold_positions(0)
    assert first == gold_positions(0)
    assert 70 <= sum(first.values()) <= 130  # about half have gold second
    assert first != gold_positions(1)  # the seed takes part in the order


def test_quality_ids_fall_back_to_line_and_position_without_set_ids(tmp_path: Path) -> None:
    article = {"article": "A short article.", "questions": [
        {"question": "First?", "options": ["a", "b", "c", "d"], "gold_label": 2},
        {"question": "Second?", "options": ["a", "b", "c", "d"], "gold_label": 3},
    ]}
    path = tmp_path / "plain.jsonl"
    path.write_text("\n" + json.dumps(article) + "\n")
    assert set(all_states(load(path))) == {"plain-2-1", "plain-2-2"}


def test_quality_lines_split_only_at_newlines(tmp_path: Path) -> None:
    # Unicode line separators may appear unescaped inside an article's JSON string, and
    # Windows line endings must not matter either.
    article = {"set_unique_id": "sep", "article": "First part.\u2028Second part.\x85Third.",
               "questions": [{"question": "Q?", "options": ["a", "b", "c", "d"],
                              "gold_label": 4}]}
    path = tmp_path / "separators.jsonl"
    path.write_bytes((json.dumps(article, ensure_ascii=False) + "\r\n").encode("utf-8"))
    [state] = all_states(load(path, n_choices=4)).values()
    assert state.story == article["article"]


def test_auto_detection_reads_content_not_extension(tmp_path: Path) -> None:
    # QuALITY's own files are named like "QuALITY.v1.0.1.htmlstripped.dev".
    quality_copy = tmp_path / "QuALITY.v1.0.1.htmlstripped.dev"
    shutil.copy(QUALITY, quality_copy)
    qa_copy = tmp_path / "stories.txt"
    shutil.copy(QA_SIMPLE, qa_copy)
    assert set(all_states(load(quality_copy))) == set(quality_questions())
    assert len(all_states(load(qa_copy))) == len(json.loads(QA_SIMPLE.read_text()))


def test_explicit_format_that_does_not_match_the_file_is_reported() -> None:
    with pytest.raises(UserError) as error:
        load(QA_SIMPLE, format="quality")
    assert str(error.value).startswith(f"{QA_SIMPLE}:1:")


# ---------------------------------------------------------------------------------------
# Malformed files: one line naming file, line or index, field, and what to do
# ---------------------------------------------------------------------------------------

MALFORMED_CASES = [
    ("bad_json.json", {}, "{path}:2:77: invalid JSON (Expecting ',' delimiter); fix the syntax there"),
    ("bad_json.jsonl", {}, "{path}:2:40: invalid JSON (Expecting value); fix the syntax there"),
    ("missing_field.json", {},
     "{path}: [1].question: missing; add it as a non-empty string"),
    ("wrong_type.json", {},
     "{path}: [0].correctAnswerId: must be an integer 0 or 1 (got string '0')"),
    ("out_of_range.json", {}, "{path}: [2].correctAnswerId: must be 0 or 1 (got 2)"),
    ("out_of_range.jsonl", {}, "{path}:4: questions[2].gold_label: must be 1-4 (got 0)"),
    ("three_options.jsonl", {},
     "{path}:1: questions[0].options: must be a list of 4 non-empty strings (got 3 items)"),
    ("bad_distractor.jsonl", {},
     "{path}:1: questions[0].validation[1].untimed_best_distractor: must be 1-4 (got 7)"),
    ("empty_array.json", {}, "{path}: the dataset is empty; add at least one question"),
    ("empty_file.json", {}, "{path}: the file is empty; add questions or pick another dataset"),
    ("single_object.json", {},
     "{path}:1: looks like a QA-simple item, but QA-simple files are one JSON array; "
     "wrap the items in [ ] separated by commas"),
    ("single_object.json", {"format": "qa-simple"},
     "{path}: a QA-simple file is a JSON array of objects with paragraph, question, answers, "
     "correctAnswerId (got a JSON object); wrap the items in [ ]"),
]


@pytest.mark.parametrize(("name", "settings", "expected"), MALFORMED_CASES)
def test_malformed_file_gives_one_line_naming_the_place(
    name: str, settings: dict, expected: str
) -> None:
    path = MALFORMED / name
    with pytest.raises(UserError) as error:
        load(path, **settings)
    message = str(error.value)
    assert "\n" not in message
    assert message == expected.format(path=path)


def test_distractor_votes_are_not_read_when_four_options_are_kept() -> None:
    # The bad vote only matters for the 2-choice conversion.
    assert len(all_states(load(MALFORMED / "bad_distractor.jsonl", n_choices=4))) == 1


def test_missing_gold_label_points_at_quality_test_files(tmp_path: Path) -> None:
    path = tmp_path / "test_set.jsonl"
    path.write_text(json.dumps({"article": "Text.", "questions": [
        {"question": "Q?", "options": ["a", "b", "c", "d"]}]}) + "\n")
    with pytest.raises(UserError, match=r"test_set.jsonl:1: questions\[0\].gold_label: missing; "
                                        "QuALITY test files carry no labels"):
        load(path)


def test_boolean_is_not_accepted_as_an_answer_id(tmp_path: Path) -> None:
    path = tmp_path / "bool.json"
    path.write_text(json.dumps([{"paragraph": "p", "question": "q", "answers": ["a", "b"],
                                 "correctAnswerId": True}]))
    with pytest.raises(UserError, match=r"\[0\]\.correctAnswerId: must be an integer 0 or 1 "
                                        r"\(got boolean true\)"):
        load(path)


def test_duplicate_question_ids_are_reported(tmp_path: Path) -> None:
    question = {"question_unique_id": "same", "question": "Q?",
                "options": ["a", "b", "c", "d"], "gold_label": 1}
    path = tmp_path / "dupes.jsonl"
    path.write_text(json.dumps({"article": "Text.", "questions": [question, question]}) + "\n")
    with pytest.raises(UserError, match="question id 'same' appears twice"):
        load(path)


def test_missing_file_directory_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nowhere\.json: file not found"):
        load(tmp_path / "nowhere.json")
    with pytest.raises(UserError, match="is a directory"):
        load(tmp_path)
    with pytest.raises(UserError, match="unknown dataset name 'quality'"):
        load("quality")


def test_relative_path_resolves_against_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_qa_simple(tmp_path / "mine.json", 3)
    monkeypatch.chdir(tmp_path)
    assert len(all_states(load("mine.json"))) == 3


# ---------------------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_near_the_fraction(tmp_path: Path) -> None:
    path = write_qa_simple(tmp_path / "many.json", 400)
    first, again = load(path, eval_fraction=0.2), load(path, eval_fraction=0.2)
    assert first == again
    train_ids = {state.state_id for state in first.train}
    eval_ids = {state.state_id for state in first.eval}
    assert not train_ids & eval_ids and len(train_ids | eval_ids) == 400
    assert 50 <= len(eval_ids) <= 110  # 80 expected; a binomial sd is 8
    other_seed = {state.state_id for state in load(path, eval_fraction=0.2, split_seed=7).eval}
    assert other_seed != eval_ids


def test_adding_states_does_not_move_existing_ones(tmp_path: Path) -> None:
    small = load(write_qa_simple(tmp_path / "grow.json", 60))
    large = load(write_qa_simple(tmp_path / "grow.json", 200))
    large_eval = {state.state_id for state in large.eval}
    large_train = {state.state_id for state in large.train}
    assert all(state.state_id in large_eval for state in small.eval)
    assert all(state.state_id in large_train for state in small.train)
    assert len(large_eval) > len(small.eval)  # new states did land in eval too


def write_quality(path: Path, n_articles: int, questions_per_article: int) -> Path:
    option = ["first option", "second option", "third option", "fourth option"]
    lines = [
        json.dumps({
            "article": f"Article {a}: a long story about lighthouse number {a}.",
            "set_unique_id": f"art{a}",
            "questions": [{"question": f"Question {q} on article {a}?", "options": option, "gold_label": 1 + q % 4}
                          for q in range(questions_per_article)],
        })
        for a in range(n_articles)
    ]
    path.write_text("\n".join(lines))
    return path


def test_questions_on_one_article_never_straddle_the_split(tmp_path: Path) -> None:
    dataset = load(write_quality(tmp_path / "articles.jsonl", 60, 5), eval_fraction=0.3)
    train_stories = {state.story for state in dataset.train}
    eval_stories = {state.story for state in dataset.eval}
    assert not train_stories & eval_stories  # no article is both trained and evaluated on
    assert len(dataset.train) + len(dataset.eval) == 300 and len(dataset.eval) % 5 == 0
    assert 8 <= len(eval_stories) <= 30  # 18 of 60 articles expected


def test_states_with_stories_of_their_own_keep_the_per_state_split(tmp_path: Path) -> None:
    path = write_qa_simple(tmp_path / "own.json", 300)
    dataset = load(path, eval_fraction=0.2, split_seed=3)
    by_id = {state.state_id for state in dataset.eval}
    expected = {state_id for state_id in all_states(dataset) if _unit_hash(3, state_id, "split") < 0.2}
    assert by_id == expected


def test_each_split_gets_a_state_when_there_are_two() -> None:
    states = [State(f"s{index}", "story", "q?", ("a", "b"), 0) for index in range(2)]
    for fraction in (0.001, 0.999):
        train, evaluation = split_states(states, fraction, split_seed=0)
        assert len(train) == 1 and len(evaluation) == 1
    train, evaluation = split_states(states[:1], 0.999, split_seed=0)
    assert len(train) + len(evaluation) == 1


def test_max_states_keeps_the_first_states_in_file_order(tmp_path: Path) -> None:
    path = write_qa_simple(tmp_path / "capped.json", 30)
    capped = load(path, max_states=5)
    assert set(all_states(capped)) == {f"capped-{index:04d}" for index in range(5)}
    assert capped.fingerprint != load(path).fingerprint


# ---------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------


def test_fingerprint_is_sha256_of_the_canonical_states(tmp_path: Path) -> None:
    dataset = load(QA_SIMPLE)
    in_file_order = sorted(dataset.train + dataset.eval, key=lambda state: state.state_id)
    canonical = json.dumps([asdict(state) for state in in_file_order], sort_keys=True,
                           ensure_ascii=False, separators=(",", ":"))
    assert dataset.fingerprint == hashlib.sha256(canonical.encode()).hexdigest()


def test_fingerprint_changes_with_content_and_conversion(tmp_path: Path) -> None:
    rows = json.loads(QA_SIMPLE.read_text())
    copy = tmp_path / "qa_simple.json"  # same name, so only the content differs
    copy.write_text(json.dumps(rows))
    assert load(copy).fingerprint == load(QA_SIMPLE).fingerprint
    rows[2]["paragraph"] += "!"
    copy.write_text(json.dumps(rows))
    assert load(copy).fingerprint != load(QA_SIMPLE).fingerprint
    assert load(QUALITY, n_choices=2).fingerprint != load(QUALITY, n_choices=4).fingerprint
    assert load(QUALITY).fingerprint != load(QUALITY, max_story_tokens=20).fingerprint


# ---------------------------------------------------------------------------------------
# Truncation
# ---------------------------------------------------------------------------------------

LONG_STORY = " ".join(
    f"On day {day} the fox walked to the river and the old mill by the hill." for day in range(40)
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("budget", [12, 40, 100])
def test_tokenizer_truncation_keeps_the_start_and_fits_the_budget(tokenizer, budget: int) -> None:
    assert token_count(tokenizer, LONG_STORY) > budget
    cut = truncate_by_tokens(LONG_STORY, budget, tokenizer)
    assert cut.endswith(TRUNCATION_MARKER)
    kept = cut[: -len(TRUNCATION_MARKER)]
    assert kept and LONG_STORY.startswith(kept)
    assert token_count(tokenizer, cut) <= budget
    # Nearly the whole budget is used: at most a few tokens lost at the seam.
    assert token_count(tokenizer, cut) >= budget - 3


def test_tokenizer_truncation_cuts_non_ascii_text_at_character_boundaries(tokenizer) -> None:
    # Byte-level BPE splits "ë" or "東" into several tokens; the cut must still be at a
    # character of the original text, never a broken byte sequence.
    story = " ".join(["Zoë drank café au lait in Kraków, then flew to 東京."] * 20)
    for budget in (9, 17, 33, 61):
        cut = truncate_by_tokens(story, budget, tokenizer)
        assert story.startswith(cut[: -len(TRUNCATION_MARKER)])
        assert "\ufffd" not in cut
        assert token_count(tokenizer, cut) <= budget


def test_tokenizer_truncation_leaves_short_stories_alone(tokenizer) -> None:
    story = "The fox walked to the river."
    assert truncate_by_tokens(story, token_count(tokenizer, story), tokenizer) == story


class WordTokenizer:
    """A slow-style tokenizer (no offsets): one token per space-separated word."""

    is_fast = False

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [len(word) for word in text.split()]}

    def decode(self, ids: list[int]) -> str:
        raise AssertionError("the loader must decode the story's own ids")


def test_truncation_without_offsets_decodes_the_kept_ids() -> None:
    words = [f"w{index}" for index in range(50)]
    decoded_calls: list[list[int]] = []

    class Recording(WordTokenizer):
        def decode(self, ids: list[int]) -> str:
            decoded_calls.append(list(ids))
            return " ".join(words[: len(ids)])

    cut = truncate_by_tokens(" ".join(words), 10, Recording())
    # The marker " [...]" is one word here, so nine story words fit.
    assert cut == " ".join(words[:9]) + TRUNCATION_MARKER
    assert [len(ids) for ids in decoded_calls] == [9]


def test_character_fallback_keeps_whole_words_within_four_chars_per_token() -> None:
    cut = truncate_by_characters(LONG_STORY, 50)
    assert len(cut) <= 200
    assert len(cut) >= 160  # the word-boundary step gives up little text
    kept = cut[: -len(TRUNCATION_MARKER)]
    assert LONG_STORY.startswith(kept) and LONG_STORY[len(kept)] == " "
    assert truncate_by_characters("short story", 50) == "short story"


def test_too_small_budget_is_a_user_error(tokenizer) -> None:
    with pytest.raises(UserError, match="max_story_tokens = 1 leaves no room"):
        truncate_by_tokens(LONG_STORY, 1, tokenizer)
    with pytest.raises(UserError, match="max_story_tokens = 1 leaves no room"):
        truncate_by_characters(LONG_STORY, 1)


def test_load_dataset_truncates_each_article_once(tokenizer) -> None:
    full = all_states(load(QUALITY))
    with_tokenizer = all_states(load_dataset(DataConfig(dataset=str(QUALITY),
                                                        max_story_tokens=30), tokenizer))
    without = all_states(load(QUALITY, max_story_tokens=30))
    for state_id, state in full.items():
        assert with_tokenizer[state_id].story == truncate_by_tokens(state.story, 30, tokenizer)
        assert without[state_id].story == truncate_by_characters(state.story, 30)
        assert with_tokenizer[state_id].choices == state.choices
    stories_of_first_article = {full[i].story for i in ("a1_SETX_1", "a1_SETX_2", "a1_SETX_3")}
    assert len(stories_of_first_article) == 1

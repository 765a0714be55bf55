"""The answer and verdict parsers: hand-picked cases, then properties over arbitrary text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from players import parse_answer, parse_verdict

LETTERS = "ABCD"


@pytest.mark.parametrize(
    ("text", "n_choices", "expected"),
    [
        ("Answer: B", 4, 1),
        ("Answer: (b)", 4, 1),
        ("answer: [C]", 4, 2),
        ("The answer is B.", 4, 1),
        ("the answer is d", 4, 3),
        ("**B**", 4, 1),
        ("I think it is **Answer: C**", 4, 2),
        ("Final answer - option A\n", 4, 0),
        ("The fox ran, so (A) fits.\nAnswer: A) the fox", 2, 0),
        # The last explicit marker wins over earlier discussion.
        ("Answer: A seems tempting, but the story says otherwise.\nAnswer: B", 2, 1),
        # A bare letter as the whole reply, or as its last line.
        ("C", 4, 2),
        ("The baker left early.\n(B).", 2, 1),
        # Quoting exactly one labelled choice chooses it.
        ("A) a storm", 2, 0),
        ("The hives broke.\nB) a storm", 2, 1),
    ],
)
def test_parse_answer_reads_the_chosen_letter(text: str, n_choices: int, expected: int) -> None:
    assert parse_answer(text, n_choices) == expected


@pytest.mark.parametrize(
    ("text", "n_choices"),
    [
        ("", 4),
        ("I do not know.", 4),
        ("The answer is a dog.", 4),  # the article "a", not choice A
        ("Answer: C", 2),  # outside the two choices
        ("Answer: E", 4),
        ("answers vary", 4),
        ("A) a bear\nB) a storm\nI am not sure.", 2),  # restating every option chooses none
    ],
)
def test_parse_answer_returns_none_without_a_valid_choice(text: str, n_choices: int) -> None:
    assert parse_answer(text, n_choices) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Verdict: CORRECT", True),
        ("Verdict: INCORRECT", False),
        ("verdict: correct.", True),
        ("Verdict: **INCORRECT**", False),
        ("The answer is not correct.", False),
        ("The answer isn't correct.", False),
        ("incorrect.", False),
        ("Correct!", True),
        ("Verdict: The answer is incorrect", False),
        ("At first it looks correct, but it is wrong.\nVerdict: INCORRECT", False),
        ("Someone might say INCORRECT, yet the story agrees.\nVerdict: CORRECT", True),
        ("Verdict: CORRECT\n...on reflection...\nVerdict: INCORRECT", False),
    ],
)
def test_parse_verdict_reads_the_verdict(text: str, expected: bool) -> None:
    assert parse_verdict(text) is expected


@pytest.mark.parametrize(
    "text",
    ["", "No idea.", "It is correct in part and incorrect in part.", "Verdict: not incorrect"],
)
def test_parse_verdict_returns_none_when_absent_or_ambiguous(text: str) -> None:
    assert parse_verdict(text) is None


@pytest.mark.parametrize("word", ["INCORRECT", "incorrect", "Incorrect.", "NOT CORRECT", "not  correct"])
def test_incorrect_never_parses_as_correct(word: str) -> None:
    assert parse_verdict(word) is False
    assert parse_verdict(f"Verdict: {word}") is False


# --- properties ------------------------------------------------------------------------------

any_text = st.text(max_size=200)
separators = st.sampled_from(["\n", " ", "\n\n", ". ", "\n- "])


@settings(max_examples=300, deadline=None)
@given(prefix=any_text, separator=separators, index=st.integers(0, 3), style=st.sampled_from(
    ["Answer: {L}", "Answer: ({L})", "answer: {l}", "**Answer: {L}**", "Answer: {L}."]
))
def test_any_text_followed_by_an_answer_marker_parses_to_that_letter(
    prefix: str, separator: str, index: int, style: str
) -> None:
    suffix = style.format(L=LETTERS[index], l=LETTERS[index].lower())
    assert parse_answer(prefix + separator + suffix, 4) == index


@settings(max_examples=300, deadline=None)
@given(
    prefix=any_text,
    injected=st.sampled_from(["CORRECT", "INCORRECT", "not correct", "Verdict: CORRECT", "Verdict: INCORRECT"]),
    middle=any_text,
    final=st.booleans(),
)
def test_injecting_verdict_words_before_the_final_verdict_never_flips_it(
    prefix: str, injected: str, middle: str, final: bool
) -> None:
    final_line = "Verdict: CORRECT" if final else "Verdict: INCORRECT"
    text = f"{prefix} {injected} {middle}\n{final_line}"
    assert parse_verdict(text) is final


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=400), n_choices=st.integers(2, 4))
def test_random_text_never_crashes_and_stays_in_range(text: str, n_choices: int) -> None:
    answer = parse_answer(text, n_choices)
    assert answer is None or 0 <= answer < n_choices
    assert parse_verdict(text) in (True, False, None)

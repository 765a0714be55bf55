"""The answer and verdict parsers: hand-picked cases, then properties over arbitrary text."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from players import parse_answer, parse_verdict
from players.parsing import normalised

LETTERS = "ABCD"
# Choice texts for the hand-picked cases; none of them is a word the cases use otherwise.
CHOICES = ["the fox", "the farmer", "the baker", "the miller"]


def choices(n: int) -> list[str]:
    return CHOICES[:n]


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
        # Markers that agree, and discussion before the marker that names no choice.
        ("Answer: B\nSo, once more: Answer: (B)", 2, 1),
        ("The fox or the farmer? The story says the farmer.\nAnswer: B", 2, 1),
        # A choice named by its text instead of its letter, exactly or near-exactly.
        ("Answer: the farmer", 2, 1),
        ("Answer: The  Farmer.", 2, 1),
        ("The answer is: THE MILLER!", 4, 3),
        ("answer - miller", 4, 3),
        ("The story says so.\nThe baker", 4, 2),
        ("Answer: C) the farmer", 2, 1),  # no choice C: the text names the one choice
        # A bare letter as the whole reply, or as its last line.
        ("C", 4, 2),
        ("The baker left early.\n(B).", 2, 1),
        # Quoting exactly one labelled choice chooses it.
        ("A) a storm", 2, 0),
        ("The hives broke.\nB) a storm", 2, 1),
    ],
)
def test_parse_answer_reads_the_chosen_choice(text: str, n_choices: int, expected: int) -> None:
    assert parse_answer(text, choices(n_choices)) == expected


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
        ("Answer: the wolf", 2),  # no choice has that text
        # Two different choices named: unparsed, not "the last one wins".
        ("Answer: A seems tempting, but the story says otherwise.\nAnswer: B", 2),
        ("Answer: A\nAnswer: the farmer", 2),
        ("Answer: A) the farmer", 2),
        ("**A** or **B**", 2),
    ],
)
def test_parse_answer_returns_none_without_a_valid_choice(text: str, n_choices: int) -> None:
    assert parse_answer(text, choices(n_choices)) is None


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
        ("Verdict: CORRECT\nVerdict: correct.", True),
    ],
)
def test_parse_verdict_reads_the_verdict(text: str, expected: bool) -> None:
    assert parse_verdict(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "", "No idea.", "It is correct in part and incorrect in part.", "Verdict: not incorrect",
        # Both verdicts stated: unparsed, not "the last one wins".
        "Verdict: CORRECT\n...on reflection...\nVerdict: INCORRECT",
        "Verdict: INCORRECT. Verdict: CORRECT",
    ],
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


def no_marker(text: str) -> bool:
    return "answer" not in text.lower() and "verdict" not in text.lower()


@settings(max_examples=300, deadline=None)
@given(prefix=any_text, separator=separators, index=st.integers(0, 3), style=st.sampled_from(
    ["Answer: {L}", "Answer: ({L})", "answer: {l}", "**Answer: {L}**", "Answer: {L}."]
))
def test_any_text_followed_by_an_answer_marker_parses_to_that_letter(
    prefix: str, separator: str, index: int, style: str
) -> None:
    assume(no_marker(prefix))
    suffix = style.format(L=LETTERS[index], l=LETTERS[index].lower())
    assert parse_answer(prefix + separator + suffix, CHOICES) == index


# Choice texts: a few words of letters and digits, distinct once normalised, none a lone
# character (a reply "B" is read as the letter B; no real choice text is one letter).
choice_text = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8),
    min_size=1, max_size=4,
).map(" ".join)
choice_lists = st.lists(choice_text, min_size=2, max_size=4, unique_by=normalised).filter(
    lambda texts: all(len(normalised(text)) > 1 for text in texts)
)


@st.composite
def near_copy(draw: st.DrawFn, text: str) -> str:
    """The same text as a model might write it: case, spacing and punctuation changed."""
    words = [draw(st.sampled_from([word, word.lower(), word.upper(), word.capitalize()])) for word in text.split()]
    spaced = "".join(word + draw(st.sampled_from([" ", "  ", " - ", ", "])) for word in words).rstrip(" -,")
    return draw(st.sampled_from(["", "\"", "("])) + spaced + draw(st.sampled_from(["", ".", "!", "\".", ")"]))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), texts=choice_lists, prefix=any_text, style=st.sampled_from(
    ["Answer: {T}", "The answer is {T}", "answer: {T}", "**Answer: {T}**", "{T}"]
))
def test_an_answer_stating_a_choice_text_parses_to_that_choice(
    data: st.DataObject, texts: list[str], prefix: str, style: str
) -> None:
    assume(no_marker(prefix))
    index = data.draw(st.integers(0, len(texts) - 1))
    stated = data.draw(near_copy(texts[index]))
    assert parse_answer(prefix + "\n" + style.format(T=stated), texts) == index


@settings(max_examples=300, deadline=None)
@given(data=st.data(), texts=choice_lists, prefix=any_text, middle=any_text, by_text=st.booleans())
def test_an_answer_naming_two_different_choices_is_unparsed(
    data: st.DataObject, texts: list[str], prefix: str, middle: str, by_text: bool
) -> None:
    assume(no_marker(prefix + middle))
    first, second = data.draw(st.lists(st.integers(0, len(texts) - 1), min_size=2, max_size=2, unique=True))
    second_stated = texts[second] if by_text else f"({LETTERS[second]})"
    text = f"{prefix}\nAnswer: {LETTERS[first]}\n{middle}\nAnswer: {second_stated}"
    assert parse_answer(text, texts) is None


@settings(max_examples=300, deadline=None)
@given(
    prefix=any_text,
    injected=st.sampled_from(["CORRECT", "INCORRECT", "not correct", "wrong", "correct"]),
    middle=any_text,
    final=st.booleans(),
)
def test_verdict_words_in_discussion_before_the_final_verdict_never_flip_it(
    prefix: str, injected: str, middle: str, final: bool
) -> None:
    assume(no_marker(prefix + middle))
    final_line = "Verdict: CORRECT" if final else "Verdict: INCORRECT"
    text = f"{prefix} {injected} {middle}\n{final_line}"
    assert parse_verdict(text) is final


@settings(max_examples=300, deadline=None)
@given(prefix=any_text, middle=any_text, first=st.booleans(), same=st.booleans())
def test_two_stated_verdicts_parse_only_when_they_agree(prefix: str, middle: str, first: bool, same: bool) -> None:
    assume(no_marker(prefix + middle))
    second = first if same else not first
    words = {True: "CORRECT", False: "INCORRECT"}
    text = f"{prefix}\nVerdict: {words[first]}\n{middle}\nVerdict: {words[second]}"
    assert parse_verdict(text) is (first if same else None)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=400), texts=choice_lists)
def test_random_text_never_crashes_and_stays_in_range(text: str, texts: list[str]) -> None:
    answer = parse_answer(text, texts)
    assert answer is None or 0 <= answer < len(texts)
    assert parse_verdict(text) in (True, False, None)

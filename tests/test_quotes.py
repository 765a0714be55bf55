"""Verified quotes (issue 16 item 1): which quoted passages are in the story, and the marks the judge reads."""

from __future__ import annotations

import pytest

from referees.quotes import QUOTE_MATCH_THRESHOLD, check_quotes, find_quotes, mark_quotes, match_score

STORY = (
    "Once upon a time a small fox lived near the river. Every morning the fox ate the apple "
    "that fell from the old tree by the mill, and in the evening it slept under the bridge."
)
QUESTION = "What did the fox eat every morning?"


def verdict(quote: str) -> bool:
    (checked,) = check_quotes(f"Because <quote>{quote}</quote>. Answer: A", STORY)
    return checked.verified


@pytest.mark.parametrize(
    "quote",
    [
        "the fox ate the apple",  # exact
        "the fox   ate\n the apple",  # re-spaced
        "THE FOX ATE THE APPLE",  # re-cased
        "  Every Morning the fox ate the apple  ",  # both, with padding
        "the fox ate the appel that fell from the old tree",  # a typo: above the threshold
    ],
)
def test_quotes_found_in_the_story_are_verified(quote: str) -> None:
    assert verdict(quote)


@pytest.mark.parametrize(
    "quote",
    [
        "the fox ate the bread",  # one word changed in a short quote: below the threshold
        "a dragon guarded the golden castle",  # invented
        QUESTION,  # quoted from the question, not the story
    ],
)
def test_quotes_not_in_the_story_are_unverified(quote: str) -> None:
    assert not verdict(quote)


def test_the_threshold_separates_a_typo_from_a_changed_word() -> None:
    typo, changed = match_score("the fox ate the appel", STORY), match_score("the fox ate the bread", STORY)
    assert changed < QUOTE_MATCH_THRESHOLD <= typo < 1.0
    assert match_score("The Fox  ate the apple", STORY) == 1.0


def test_marks_tell_the_judge_which_quotes_are_in_the_story() -> None:
    text = (
        "The story says <quote>the fox ate the apple</quote>, not <QUOTE>the fox ate the pear in the "
        "castle</QUOTE>; <quote> </quote> Answer: A"
    )
    marked = mark_quotes(text, STORY)
    assert marked == (
        "The story says <quote verified>the fox ate the apple</quote>, not <quote unverified>the fox ate "
        "the pear in the castle</quote>; <quote> </quote> Answer: A"
    )
    assert find_quotes(text) == ["the fox ate the apple", "the fox ate the pear in the castle"]  # empty skipped


def test_text_without_quotes_is_left_as_it_is() -> None:
    assert mark_quotes("No quotes here. Answer: B", STORY) == "No quotes here. Answer: B"
    assert check_quotes("No quotes here.", STORY) == []


def test_the_prompts_worked_example_quotes_its_own_story_and_parses() -> None:
    """The made-up example the players are shown is itself a good answer: its quote is verified,
    its answer and verdict parse to what the example means, and it is not a dataset story."""
    from engine.data import DataConfig, read_dataset
    from players import parse_answer, parse_verdict
    from players.prompts import (
        EXAMPLE_CHOICES,
        EXAMPLE_MONITOR_REPLY,
        EXAMPLE_POLICY_REPLY,
        EXAMPLE_STORY,
        monitor_messages,
        policy_messages,
    )

    for reply in (EXAMPLE_POLICY_REPLY, EXAMPLE_MONITOR_REPLY):
        assert [quote.verified for quote in check_quotes(reply, EXAMPLE_STORY)] == [True]
    assert parse_answer(EXAMPLE_POLICY_REPLY, list(EXAMPLE_CHOICES)) == 1
    assert parse_verdict(EXAMPLE_MONITOR_REPLY) is False
    assert EXAMPLE_STORY not in {state.story for state in read_dataset(DataConfig()).states}
    # the example is an earlier turn; the state asked about is the last message
    policy = policy_messages(STORY, QUESTION, ["an apple", "a pear"])
    monitor = monitor_messages(STORY, QUESTION, ["an apple", "a pear"], "Answer: A")
    assert [m["role"] for m in policy] == ["system", "user", "assistant", "user"]
    assert policy[-1]["content"].startswith(f"Story:\n{STORY}") and "Answer to check:\nAnswer: A" in monitor[-1]["content"]

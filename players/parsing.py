"""Reading the players' outputs: the policy's answer letter and the monitor's verdict.

Both parsers prefer the last explicit marker ("Answer:", "Verdict:") because models often
discuss other options before concluding, and both return None rather than guess: an unparsed
output is recorded as such and penalised by the engine, never crashes a run.

The verdict words are matched as whole words, so INCORRECT never reads as CORRECT
(`"CORRECT" in "INCORRECT"` is the classic bug), and a negation right before CORRECT
("not correct", "isn't correct") reads as INCORRECT.
"""

from __future__ import annotations

import re

from players.prompts import LETTERS

# Emphasis and code marks carry no meaning for either parser ("**B**", "`INCORRECT`").
_MARKDOWN = re.compile(r"[*_`~#]")

# "Answer: B", "answer is (b)", "Final answer - option C", "the answer is B."
_ANSWER_MARKER = re.compile(
    r"\banswer\b\s*(?:is\b\s*)?[:=\-–]?\s*(?:(?:option|choice|letter)\s+)?"
    r"(?P<open>[(\[]?)\s*(?P<letter>[A-Za-z])(?![A-Za-z0-9])(?P<after>[^\n]?[^\n]?)",
    re.IGNORECASE,
)
# A response that is nothing but a letter, or whose last line is ("B", "(B).", "B)").
_BARE_LETTER_LINE = re.compile(r"^\s*[(\[]?\s*([A-Z])\s*[)\]]?\s*[.!]?\s*$")
_LABELLED_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])\)\s")


def _letter_is_intended(letter: str, bracketed: bool, after: str) -> bool:
    """Whether the letter after an answer marker is a choice letter rather than a word.

    "the answer is a dog" and "answer: I think B" start with ordinary words; those letters
    count only when bracketed or followed by punctuation or the end of the text.
    """
    if bracketed:
        return True
    ends_here = after == "" or not after[0].isspace() or after.strip() == ""
    if letter.islower() or letter == "I":
        return ends_here
    return True


def parse_answer(text: str, n_choices: int) -> int | None:
    """The chosen choice index (A -> 0), or None when there is none or it is out of range."""
    if not text:
        return None
    plain = _MARKDOWN.sub("", text)
    for match in reversed(list(_ANSWER_MARKER.finditer(plain))):
        letter = match.group("letter")
        if _letter_is_intended(letter, bool(match.group("open")), match.group("after")):
            return _index_of(letter, n_choices)
    # No marker: accept a bold letter ("**B**") or a final line that is only a letter.
    bold = re.findall(r"\*\*\s*\(?([A-Z])\)?\s*\*\*", text)
    if bold:
        return _index_of(bold[-1], n_choices)
    lines = [line for line in plain.splitlines() if line.strip()]
    if lines:
        bare = _BARE_LETTER_LINE.match(lines[-1])
        if bare:
            return _index_of(bare.group(1), n_choices)
    # A reply that quotes exactly one labelled choice ("A) a storm") has chosen it; one that
    # lists several is only restating the options.
    labelled = {match.group(1) for line in lines if (match := _LABELLED_CHOICE_LINE.match(line))}
    if len(labelled) == 1:
        return _index_of(labelled.pop(), n_choices)
    return None


def _index_of(letter: str, n_choices: int) -> int | None:
    index = LETTERS.index(letter.upper())
    return index if index < n_choices else None


# Verdict words, longest first so that "NOT CORRECT" and "INCORRECT" are consumed whole.
_VERDICT_WORD = (
    r"(?P<word>NOT\s+INCORRECT|(?:NOT|ISN'T|ISNT|IS\s+NOT|NEVER)\s+CORRECT|INCORRECT|CORRECT|WRONG)"
)
_VERDICT_MARKER = re.compile(
    r"\bVERDICT\b\s*(?:IS\b)?\s*[:=\-–]?\s*"
    r"(?:(?:THE\s+)?(?:PROPOSED\s+)?(?:ANSWER|RESPONSE|CLAIM)\s+IS\s+)?"
    rf"\b{_VERDICT_WORD}\b",
    re.IGNORECASE,
)
_VERDICT_ANYWHERE = re.compile(rf"\b{_VERDICT_WORD}\b", re.IGNORECASE)


def _verdict_of(word: str) -> bool | None:
    normalised = " ".join(word.upper().split())
    if normalised == "NOT INCORRECT":
        return None  # a double negative is not a verdict anyone should train on
    return normalised == "CORRECT"


def parse_verdict(text: str) -> bool | None:
    """True for CORRECT, False for INCORRECT; None when absent or ambiguous."""
    if not text:
        return None
    plain = _MARKDOWN.sub("", text)
    markers = list(_VERDICT_MARKER.finditer(plain))
    if markers:
        return _verdict_of(markers[-1].group("word"))
    # No marker: the verdict words used anywhere must all agree.
    verdicts = {_verdict_of(match.group("word")) for match in _VERDICT_ANYWHERE.finditer(plain)}
    if len(verdicts) == 1:
        return verdicts.pop()
    return None
